// Modulated deformable convolution (DCNv2) on the CPU: the sampling halves, one frame per call.
//
// The GEMMs with the weight stay in PyTorch (MKL); this file only does what ATen has no fast op for:
// bilinear sampling of every (group, tap, pixel) into columns, and the transposed scatter in backward.
// Input is channels-last (H x W x C) so each sampled point reads and writes its group's Cg channels as
// one contiguous run of vector loads; columns are P x (K*C), ordered (tap, channel).
// Offsets and masks keep torchvision's layout: offset (G, K, 2=(dy,dx), P), mask (G, K, P).

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
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
    // y, x > -1 here, so truncating y + 1 gives floor(y) + 1, the row in the bordered image.
    const int64_t row = static_cast<int64_t>(y + T(1)), col = static_cast<int64_t>(x + T(1));
    top_left = (row * (g.width + 2) + col) * g.channels;
    ly = y + T(1) - T(row);
    lx = x + T(1) - T(col);
    hy = T(1) - ly;
    hx = T(1) - lx;
    w00 = hy * hx;
    w01 = hy * lx;
    w10 = ly * hx;
    w11 = ly * lx;
  }
};

constexpr int64_t kPixelBlock = 64;  // columns of 64 pixels (64 x K*C values) stay in L2 while filled

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
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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
  TORCH_CHECK(input.dim() == 3 && input.is_contiguous() && input.size(0) > 2 && input.size(1) > 2,
              "lgfn_dcn: input must be a contiguous (H+2) x (W+2) x C tensor (zero border of one pixel)");
  TORCH_CHECK(groups > 0 && input.size(2) % groups == 0, "lgfn_dcn: channels must divide into offset groups");
  return Geometry{input.size(0) - 2, input.size(1) - 2, input.size(2), groups, kernel[0], kernel[1],
                  out_hw[0],     out_hw[1],     stride[0],     stride[1], padding[0], padding[1],
                  dilation[0],   dilation[1]};
}

void check_like(const at::Tensor& t, const at::Tensor& input, at::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.scalar_type() == input.scalar_type() && t.device() == input.device(), "lgfn_dcn: ", name,
              " must match the input's dtype and device");
  TORCH_CHECK(t.is_contiguous() && t.sizes() == shape, "lgfn_dcn: ", name, " must be contiguous with shape ",
              shape, ", got ", t.sizes());
}

// input (H+2) x (W+2) x C (channels last, zero border), offset (2*G*K) x Ho x Wo, mask (G*K) x Ho x Wo
// -> cols (Ho*Wo) x (K*C).
// The caller owns `cols` so one buffer serves every frame: a fresh multi-MB tensor per frame costs more in
// page faults than the sampling itself.
void columns(const at::Tensor& input, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
             const at::Tensor& cols, int64_t groups, at::IntArrayRef kernel, at::IntArrayRef stride,
             at::IntArrayRef padding, at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, groups, kernel, stride, padding, dilation,
                                 {offset.size(-2), offset.size(-1)});
  check_like(offset, input, {2 * groups * g.taps(), g.out_h, g.out_w}, "offset");
  if (mask) check_like(*mask, input, {groups * g.taps(), g.out_h, g.out_w}, "mask");
  check_like(cols, input, {g.pixels(), g.taps() * g.channels}, "cols");
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lgfn_dcn_columns", [&] {
    const scalar_t* mask_ptr = mask ? mask->const_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, g.pixels(), 4 * kPixelBlock, [&](int64_t begin, int64_t end) {
      run_columns<scalar_t>(input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), mask_ptr,
                            cols.mutable_data_ptr<scalar_t>(), g, begin, end);
    });
  });
}

// The transpose of `columns`: accumulates into grad_input (shaped like input, border included), writes
// grad_offset / grad_mask, and refills `cols` with the forward's columns (for the weight gradient).
void columns_backward(const at::Tensor& input, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                      const at::Tensor& grad_cols, const std::optional<at::Tensor>& grad_input,
                      const std::optional<at::Tensor>& grad_offset, const std::optional<at::Tensor>& grad_mask,
                      const std::optional<at::Tensor>& cols, int64_t groups, at::IntArrayRef kernel, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation) {
  const Geometry g = geometry_of(input, groups, kernel, stride, padding, dilation,
                                 {offset.size(-2), offset.size(-1)});
  check_like(offset, input, {2 * groups * g.taps(), g.out_h, g.out_w}, "offset");
  check_like(grad_cols, input, {g.pixels(), g.taps() * g.channels}, "grad_cols");
  if (mask) check_like(*mask, input, {groups * g.taps(), g.out_h, g.out_w}, "mask");
  if (grad_input) check_like(*grad_input, input, input.sizes(), "grad_input");
  if (grad_offset) check_like(*grad_offset, input, offset.sizes(), "grad_offset");
  if (grad_mask) check_like(*grad_mask, input, {groups * g.taps(), g.out_h, g.out_w}, "grad_mask");
  if (cols) check_like(*cols, input, {g.pixels(), g.taps() * g.channels}, "cols");
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lgfn_dcn_columns_backward", [&] {
    const scalar_t* mask_ptr = mask ? mask->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gi = grad_input ? grad_input->mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* go = grad_offset ? grad_offset->mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gm = grad_mask ? grad_mask->mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* cols_ptr = cols ? cols->mutable_data_ptr<scalar_t>() : nullptr;
    // One thread per offset group: each group owns its channels of grad_input, so the scatter needs no atomics.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      run_columns_backward<scalar_t>(input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(), mask_ptr,
                                     grad_cols.const_data_ptr<scalar_t>(), gi, go, gm, cols_ptr, g, begin, end);
    });
  });
}

}  // namespace

TORCH_LIBRARY(lgfn_dcn, m) {
  m.def(
      "columns(Tensor input, Tensor offset, Tensor? mask, Tensor(a!) cols, int groups, int[2] kernel, "
      "int[2] stride, int[2] padding, int[2] dilation) -> ()");
  m.def(
      "columns_backward(Tensor input, Tensor offset, Tensor? mask, Tensor grad_cols, Tensor(a!)? grad_input, "
      "Tensor(b!)? grad_offset, Tensor(c!)? grad_mask, Tensor(d!)? cols, int groups, int[2] kernel, int[2] stride, "
      "int[2] padding, int[2] dilation) -> ()");
}

TORCH_LIBRARY_IMPL(lgfn_dcn, CPU, m) {
  m.impl("columns", &columns);
  m.impl("columns_backward", &columns_backward);
}
