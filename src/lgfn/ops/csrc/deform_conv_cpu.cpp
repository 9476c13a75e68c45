// Modulated deformable convolution (DCNv2) on the CPU, forward and backward.
//
// Bilinear sampling of every (group, tap, pixel) into columns and its transposed scatter are hand-written
// (ATen has no fast op for them); the products with the weight are ATen GEMMs (MKL) on pixel blocks.
// Input is channels-last (H x W x C) so each sampled point reads and writes its group's Cg channels as
// one contiguous run of vector loads; columns are P x (K*C), ordered (tap, channel).
// Offsets and masks keep torchvision's layout: offset (G, K, 2=(dy,dx), P), mask (G, K, P).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

namespace lgfn_dcn_shared {

struct Geometry {
  int64_t height, width, channels, groups, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t taps() const { return kh * kw; }
  int64_t pixels() const { return out_h * out_w; }
  int64_t group_channels() const { return channels / groups; }
};

// One sampling point's bilinear corners. The input carries a one-pixel zero border, so every corner of a
// point inside (-1, H) x (-1, W) is addressable without bounds checks: outside corners read the border's
// zeros (and their gradient lands in the border, which the caller drops).
template <typename T>
struct Corners {
  bool inside;          // false: the point lies a pixel or more outside the image and samples zero
  int64_t top_left;     // element offset of corner (y0, x0) in the bordered H+2 x W+2 x C input
  T ly, lx, hy, hx;     // fractional position and its complement
  T w00, w01, w10, w11;  // bilinear weights of (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)

  Corners(T y, T x, const Geometry& g) {
    inside = y > T(-1) && y < T(g.height) && x > T(-1) && x < T(g.width);
    if (!inside) return;
    // floor(y) for y > -1 without libm: truncation, or -1 below 0. Not by truncating y + 1: for y just
    // below H, y + 1 rounds up to H + 1 and the lower corner would fall outside the border.
    const int64_t y0 = y >= T(0) ? static_cast<int64_t>(y) : -1;
    const int64_t x0 = x >= T(0) ? static_cast<int64_t>(x) : -1;
    top_left = ((y0 + 1) * (g.width + 2) + (x0 + 1)) * g.channels;  // corner (y0, x0) in the bordered image
    ly = y - T(y0);
    lx = x - T(x0);
    hy = T(1) - ly;
    hx = T(1) - lx;
    w00 = hy * hx;
    w01 = hy * lx;
    w10 = ly * hx;
    w11 = ly * lx;
  }
};

// Pixels per block: a block's columns (128 x K*C values, 295 KB in float32 for the alignment's 64 channels
// and 3x3 taps) stay in L2 between the sampling and the GEMM. 64 to 256 measured alike on the alignment
// shape; 32 was slower (GEMMs too small).
constexpr int64_t kPixelBlock = 128;

// Where each tap of the kernel sits relative to the output pixel's top-left input position.
struct TapTable {
  std::vector<int64_t> dy, dx;
  explicit TapTable(const Geometry& g) {
    for (int64_t k = 0; k < g.taps(); ++k) {
      dy.push_back((k / g.kw) * g.dil_h);
      dx.push_back((k % g.kw) * g.dil_w);
    }
  }
};

}  // namespace lgfn_dcn_shared

// Baseline x86-64 (or whatever the compiler targets by default) and AVX2+FMA builds of the same kernels.
namespace lgfn_dcn_base {
using namespace ::lgfn_dcn_shared;
#include "dcn_kernels.h"
}  // namespace lgfn_dcn_base

#if defined(__x86_64__) && defined(__GNUC__)
#define LGFN_DCN_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace lgfn_dcn_avx2 {
using namespace ::lgfn_dcn_shared;
#include "dcn_kernels.h"
}  // namespace lgfn_dcn_avx2
#pragma GCC pop_options
#endif

namespace {
using namespace ::lgfn_dcn_shared;

bool use_avx2() {
#ifdef LGFN_DCN_AVX2
  // LGFN_DCN_NO_AVX2 forces the baseline build, so machines with AVX2 can test it too.
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && std::getenv("LGFN_DCN_NO_AVX2") == nullptr;
  return supported;
#else
  return false;
#endif
}

template <typename T>
void run_columns(const T* input, const T* offset, const T* mask, T* cols, const Geometry& g, int64_t begin,
                 int64_t end) {
#ifdef LGFN_DCN_AVX2
  if (use_avx2()) return lgfn_dcn_avx2::columns_kernel<T>(input, offset, mask, cols, g, begin, end);
#endif
  lgfn_dcn_base::columns_kernel<T>(input, offset, mask, cols, g, begin, end);
}

template <typename T>
void run_columns_backward(const T* input, const T* offset, const T* mask, const T* grad_cols, T* grad_input,
                          T* grad_offset, T* grad_mask, T* cols, const Geometry& g, int64_t begin, int64_t end) {
#ifdef LGFN_DCN_AVX2
  if (use_avx2()) {
    return lgfn_dcn_avx2::columns_backward_kernel<T>(input, offset, mask, grad_cols, grad_input, grad_offset,
                                                     grad_mask, cols, g, begin, end);
  }
#endif
  lgfn_dcn_base::columns_backward_kernel<T>(input, offset, mask, grad_cols, grad_input, grad_offset, grad_mask,
                                            cols, g, begin, end);
}

Geometry geometry_of(const at::Tensor& input, int64_t groups, at::IntArrayRef kernel, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, at::IntArrayRef out_hw) {
  TORCH_CHECK(input.dim() == 4 && input.is_contiguous() && input.size(1) > 2 && input.size(2) > 2,
              "lgfn_dcn: input must be a contiguous B x (H+2) x (W+2) x C tensor (zero border of one pixel)");
  TORCH_CHECK(groups > 0 && input.size(3) % groups == 0, "lgfn_dcn: channels must divide into offset groups");
  return Geometry{input.size(1) - 2, input.size(2) - 2, input.size(3), groups, kernel[0], kernel[1],
                  out_hw[0],     out_hw[1],     stride[0],     stride[1], padding[0], padding[1],
                  dilation[0],   dilation[1]};
}

void check_like(const at::Tensor& t, const at::Tensor& input, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.scalar_type() == input.scalar_type() && t.device() == input.device(), "lgfn_dcn: ", name,
              " must match the input's dtype and device");
  TORCH_CHECK(t.is_contiguous() && t.sizes() == shape, "lgfn_dcn: ", name, " must be contiguous with shape ",
              shape, ", got ", t.sizes());
}

void check_frames(const at::Tensor& input, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                  const Geometry& g) {
  const int64_t batch = input.size(0);
  check_like(offset, input, {batch, 2 * g.groups * g.taps(), g.out_h, g.out_w}, "offset");
  if (mask) check_like(*mask, input, {batch, g.groups * g.taps(), g.out_h, g.out_w}, "mask");
}

// out[b] = columns(b) @ weight_t for every frame b, block by block: each thread samples kPixelBlock pixels
// into its own small columns buffer and multiplies it at once, so the columns never leave the cache.
// input B x (H+2) x (W+2) x C (channels last, zero border), offset B x 2*G*K x Ho x Wo, mask B x G*K x Ho x Wo,
// weight_t (K*C) x Cout in (tap, channel) row order -> out B x (Ho*Wo) x Cout.
void forward(const at::Tensor& input, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
             const at::Tensor& weight_t, const at::Tensor& out, int64_t groups, at::IntArrayRef kernel,
             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, groups, kernel, stride, padding, dilation, {offset.size(-2), offset.size(-1)});
  check_frames(input, offset, mask, g);
  const int64_t batch = input.size(0), row = g.taps() * g.channels, out_ch = weight_t.size(1);
  TORCH_CHECK(weight_t.dim() == 2 && weight_t.size(0) == row && weight_t.scalar_type() == input.scalar_type(),
              "lgfn_dcn: weight_t must be (K*C) x Cout = ", row, " x Cout of the input's dtype, got ", weight_t.sizes());
  check_like(out, input, {batch, g.pixels(), out_ch}, "out");
  // Worker threads run ATen ops (the block GEMMs): give them the caller's inference / grad mode.
  const at::ThreadLocalState caller_state;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lgfn_dcn_forward", [&] {
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* frame = input[b].const_data_ptr<scalar_t>();
      const scalar_t* off = offset[b].const_data_ptr<scalar_t>();
      const scalar_t* msk = mask ? (*mask)[b].const_data_ptr<scalar_t>() : nullptr;
      const at::Tensor frame_out = out[b];
      at::parallel_for(0, g.pixels(), kPixelBlock, [&](int64_t begin, int64_t end) {
        const at::ThreadLocalStateGuard tls_guard(caller_state);
        at::Tensor cols = at::empty({kPixelBlock, row}, input.options());
        for (int64_t block = begin; block < end; block += kPixelBlock) {
          const int64_t n = std::min(kPixelBlock, end - block);
          run_columns<scalar_t>(frame, off, msk, cols.mutable_data_ptr<scalar_t>(), g, block, block + n);
          at::Tensor out_rows = frame_out.narrow(0, block, n);
          at::mm_out(out_rows, cols.narrow(0, 0, n), weight_t);
        }
      });
    }
  });
}

// The backward of `forward` given grad_out B x Cout x (Ho*Wo) and weight_rows Cout x (K*C): writes
// grad_input (bordered like input), grad_offset and grad_mask, and adds the weight gradient to grad_weight
// (Cout x K*C). Block by block as in forward: grad_cols = grad_out_block^T @ weight_rows, the scatter kernel
// (which also rebuilds the block's columns), then grad_weight += grad_out_block @ columns. Threads take
// pixel ranges, so the scatter into grad_input goes to one private buffer per extra thread, summed after
// each frame. Any output may be absent.
void backward(const at::Tensor& input, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
              const at::Tensor& grad_out, const at::Tensor& weight_rows, const std::optional<at::Tensor>& grad_input,
              const std::optional<at::Tensor>& grad_offset, const std::optional<at::Tensor>& grad_mask,
              const std::optional<at::Tensor>& grad_weight, int64_t groups, at::IntArrayRef kernel,
              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, groups, kernel, stride, padding, dilation, {offset.size(-2), offset.size(-1)});
  check_frames(input, offset, mask, g);
  const int64_t batch = input.size(0), row = g.taps() * g.channels, out_ch = weight_rows.size(0);
  check_like(weight_rows, input, {out_ch, row}, "weight_rows");
  check_like(grad_out, input, {batch, out_ch, g.pixels()}, "grad_out");
  if (grad_input) check_like(*grad_input, input, input.sizes(), "grad_input");
  if (grad_offset) check_like(*grad_offset, input, offset.sizes(), "grad_offset");
  if (grad_mask) {
    TORCH_CHECK(mask.has_value(), "lgfn_dcn: grad_mask given without a mask");
    check_like(*grad_mask, input, mask->sizes(), "grad_mask");
  }
  if (grad_weight) check_like(*grad_weight, input, {out_ch, row}, "grad_weight");
  const bool need_sampling = grad_input || grad_offset || grad_mask;
  if (!need_sampling && !grad_weight) return;
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> private_input(threads), private_weight(threads);
  const at::ThreadLocalState caller_state;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lgfn_dcn_backward", [&] {
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* frame = input[b].const_data_ptr<scalar_t>();
      const scalar_t* off = offset[b].const_data_ptr<scalar_t>();
      const scalar_t* msk = mask ? (*mask)[b].const_data_ptr<scalar_t>() : nullptr;
      scalar_t* g_off = grad_offset ? (*grad_offset)[b].mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* g_msk = grad_mask ? (*grad_mask)[b].mutable_data_ptr<scalar_t>() : nullptr;
      const at::Tensor frame_grad_out = grad_out[b];
      at::parallel_for(0, g.pixels(), kPixelBlock, [&](int64_t begin, int64_t end) {
        const at::ThreadLocalStateGuard tls_guard(caller_state);
        const int tid = at::get_thread_num();
        scalar_t* g_in = nullptr;
        if (grad_input) {
          if (tid == 0) {
            g_in = (*grad_input)[b].mutable_data_ptr<scalar_t>();
          } else {
            if (!private_input[tid].defined()) private_input[tid] = at::zeros(input[b].sizes(), input.options());
            g_in = private_input[tid].mutable_data_ptr<scalar_t>();
          }
        }
        if (grad_weight && !private_weight[tid].defined()) private_weight[tid] = at::zeros({out_ch, row}, input.options());
        at::Tensor grad_cols = need_sampling ? at::empty({kPixelBlock, row}, input.options()) : at::Tensor();
        at::Tensor cols = grad_weight ? at::empty({kPixelBlock, row}, input.options()) : at::Tensor();
        for (int64_t block = begin; block < end; block += kPixelBlock) {
          const int64_t n = std::min(kPixelBlock, end - block);
          const at::Tensor grad_out_block = frame_grad_out.narrow(1, block, n);  // Cout x n
          scalar_t* cols_ptr = grad_weight ? cols.mutable_data_ptr<scalar_t>() : nullptr;
          if (need_sampling) {
            at::Tensor grad_cols_rows = grad_cols.narrow(0, 0, n);
            at::mm_out(grad_cols_rows, grad_out_block.t(), weight_rows);
            run_columns_backward<scalar_t>(frame, off, msk, grad_cols.const_data_ptr<scalar_t>(), g_in, g_off, g_msk,
                                           cols_ptr, g, block, block + n);
          } else {
            run_columns<scalar_t>(frame, off, msk, cols_ptr, g, block, block + n);
          }
          if (grad_weight) private_weight[tid].addmm_(grad_out_block, cols.narrow(0, 0, n));
        }
      });
      if (grad_input) {
        at::Tensor frame_grad = (*grad_input)[b];
        for (int t = 1; t < threads; ++t) {
          if (!private_input[t].defined()) continue;
          frame_grad.add_(private_input[t]);
          private_input[t].zero_();
        }
      }
    }
  });
  if (grad_weight) {
    for (const at::Tensor& part : private_weight) {
      if (part.defined()) grad_weight->add_(part);
    }
  }
}

}  // namespace

TORCH_LIBRARY(lgfn_dcn, m) {
  m.def(
      "forward(Tensor input, Tensor offset, Tensor? mask, Tensor weight_t, Tensor(a!) out, int groups, "
      "int[2] kernel, int[2] stride, int[2] padding, int[2] dilation) -> ()");
  m.def(
      "backward(Tensor input, Tensor offset, Tensor? mask, Tensor grad_out, Tensor weight_rows, "
      "Tensor(a!)? grad_input, Tensor(b!)? grad_offset, Tensor(c!)? grad_mask, Tensor(d!)? grad_weight, "
      "int groups, int[2] kernel, int[2] stride, int[2] padding, int[2] dilation) -> ()");
}

TORCH_LIBRARY_IMPL(lgfn_dcn, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}
