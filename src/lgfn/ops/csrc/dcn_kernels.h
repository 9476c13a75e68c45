// The DCN sampling kernels. deform_conv_cpu.cpp includes this file twice, inside two namespaces: once for
// the baseline x86-64 instruction set and once compiled for AVX2+FMA, and picks one at run time.
// Shared definitions (Geometry, Corners, TapTable) come from the including file.

// Channels are processed kLanes at a time as one GCC vector (32 bytes: one AVX register, two SSE ones).
template <typename T>
struct Lanes {
  static constexpr int64_t kLanes = 32 / sizeof(T);
  typedef T vec __attribute__((vector_size(32)));
  static vec load(const T* p) {
    vec v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) { __builtin_memcpy(p, &v, sizeof v); }
  typedef T half __attribute__((vector_size(16)));
  static T sum(vec v) {  // add the two 16-byte halves first: one vector add instead of half the lane adds
    half lo, hi;
    __builtin_memcpy(&lo, &v, sizeof lo);
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    const half both = lo + hi;
    T s = 0;
    for (int64_t i = 0; i < kLanes / 2; ++i) s += both[i];
    return s;
  }
};

// Columns of pixels [p_begin, p_end): row p - p_begin of `cols` holds, for every tap k and group, the
// group's Cg channels sampled bilinearly at the tap's offset position and scaled by its mask.
template <typename T>
void columns_kernel(const T* input, const T* offset, const T* mask, T* cols, const Geometry& g, int64_t p_begin,
                    int64_t p_end) {
  using L = Lanes<T>;
  const int64_t taps = g.taps(), pixels = g.pixels(), channels = g.channels, cg = g.group_channels();
  const int64_t row_stride = (g.width + 2) * channels;
  const TapTable tap(g);
  // Offsets and masks are tap-major rows of P values: with pixels innermost each (tap, group) reads its rows
  // sequentially; the caller keeps [p_begin, p_end) small so the block's columns stay in cache.
  for (int64_t k = 0; k < taps; ++k) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t idx = grp * taps + k;
      const T* off_y = offset + (2 * idx) * pixels;
      const T* off_x = offset + (2 * idx + 1) * pixels;
      const T* msk = mask ? mask + idx * pixels : nullptr;
      int64_t oh = p_begin / g.out_w, ow = p_begin % g.out_w;
      for (int64_t p = p_begin; p < p_end; ++p, ++ow) {
        if (ow == g.out_w) ow = 0, ++oh;
        const T y = T(oh * g.stride_h - g.pad_h + tap.dy[k]) + off_y[p];
        const T x = T(ow * g.stride_w - g.pad_w + tap.dx[k]) + off_x[p];
        T* dst = cols + ((p - p_begin) * taps + k) * channels + grp * cg;
        const Corners<T> c(y, x, g);
        if (!c.inside) {
          std::fill(dst, dst + cg, T(0));
          continue;
        }
        const T m = msk ? msk[p] : T(1);
        const T w0 = c.w00 * m, w1 = c.w01 * m, w2 = c.w10 * m, w3 = c.w11 * m;
        const T* a = input + c.top_left + grp * cg;
        const T* b = a + channels;
        const T* d = a + row_stride;
        const T* e = d + channels;
        int64_t ch = 0;
        for (; ch + L::kLanes <= cg; ch += L::kLanes) {
          L::store(dst + ch, w0 * L::load(a + ch) + w1 * L::load(b + ch) + w2 * L::load(d + ch) +
                                 w3 * L::load(e + ch));
        }
        for (; ch < cg; ++ch) dst[ch] = w0 * a[ch] + w1 * b[ch] + w2 * d[ch] + w3 * e[ch];
      }
    }
  }
}

// The transpose of columns_kernel for pixels [p_begin, p_end) (grad_cols and cols hold rows p - p_begin):
// scatter-adds grad_cols into grad_input (bordered like the input) and writes the offset and mask gradients.
// It reads the same corners as the forward, so it also rebuilds the forward's columns into `cols` for the
// weight gradient at the cost of a store. Any output may be null.
template <typename T>
void columns_backward_kernel(const T* input, const T* offset, const T* mask, const T* grad_cols, T* grad_input,
                             T* grad_offset, T* grad_mask, T* cols, const Geometry& g, int64_t p_begin,
                             int64_t p_end) {
  using L = Lanes<T>;
  using vec = typename L::vec;
  const int64_t taps = g.taps(), pixels = g.pixels(), channels = g.channels, cg = g.group_channels();
  const int64_t row_stride = (g.width + 2) * channels;
  const TapTable tap(g);
  for (int64_t k = 0; k < taps; ++k) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t idx = grp * taps + k;
      const T* off_y = offset + (2 * idx) * pixels;
      const T* off_x = offset + (2 * idx + 1) * pixels;
      const T* msk = mask ? mask + idx * pixels : nullptr;
      T* grad_y = grad_offset ? grad_offset + (2 * idx) * pixels : nullptr;
      T* grad_x = grad_offset ? grad_offset + (2 * idx + 1) * pixels : nullptr;
      T* grad_m = grad_mask ? grad_mask + idx * pixels : nullptr;
      int64_t oh = p_begin / g.out_w, ow = p_begin % g.out_w;
      for (int64_t p = p_begin; p < p_end; ++p, ++ow) {
        if (ow == g.out_w) ow = 0, ++oh;
        const T y = T(oh * g.stride_h - g.pad_h + tap.dy[k]) + off_y[p];
        const T x = T(ow * g.stride_w - g.pad_w + tap.dx[k]) + off_x[p];
        const Corners<T> c(y, x, g);
        const int64_t at = ((p - p_begin) * taps + k) * channels + grp * cg;
        T* col = cols ? cols + at : nullptr;
        if (!c.inside) {
          if (grad_offset) grad_y[p] = grad_x[p] = T(0);
          if (grad_m) grad_m[p] = T(0);
          if (col) std::fill(col, col + cg, T(0));
          continue;
        }
        const T m = msk ? msk[p] : T(1);
        const T* src[4] = {input + c.top_left + grp * cg, nullptr, nullptr, nullptr};
        src[1] = src[0] + channels;
        src[2] = src[0] + row_stride;
        src[3] = src[2] + channels;
        T* dst[4] = {nullptr, nullptr, nullptr, nullptr};
        if (grad_input) {
          dst[0] = grad_input + c.top_left + grp * cg;
          dst[1] = dst[0] + channels;
          dst[2] = dst[0] + row_stride;
          dst[3] = dst[2] + channels;
        }
        const T* gv = grad_cols + at;
        const T hy = c.hy, hx = c.hx, ly = c.ly, lx = c.lx;
        const T w0 = c.w00, w1 = c.w01, w2 = c.w10, w3 = c.w11;
        vec sum_value = {}, sum_dy = {}, sum_dx = {};
        int64_t ch = 0;
        for (; ch + L::kLanes <= cg; ch += L::kLanes) {
          const vec v00 = L::load(src[0] + ch), v01 = L::load(src[1] + ch);
          const vec v10 = L::load(src[2] + ch), v11 = L::load(src[3] + ch);
          const vec gr = L::load(gv + ch);
          const vec value = w0 * v00 + w1 * v01 + w2 * v10 + w3 * v11;
          sum_value += gr * value;
          if (col) L::store(col + ch, m * value);
          sum_dy += gr * (hx * (v10 - v00) + lx * (v11 - v01));
          sum_dx += gr * (hy * (v01 - v00) + ly * (v11 - v10));
          if (grad_input) {
            const vec gm = m * gr;
            L::store(dst[0] + ch, L::load(dst[0] + ch) + w0 * gm);
            L::store(dst[1] + ch, L::load(dst[1] + ch) + w1 * gm);
            L::store(dst[2] + ch, L::load(dst[2] + ch) + w2 * gm);
            L::store(dst[3] + ch, L::load(dst[3] + ch) + w3 * gm);
          }
        }
        T value = L::sum(sum_value), dy = L::sum(sum_dy), dx = L::sum(sum_dx);
        for (; ch < cg; ++ch) {
          const T v00 = src[0][ch], v01 = src[1][ch], v10 = src[2][ch], v11 = src[3][ch], gr = gv[ch];
          const T sample = w0 * v00 + w1 * v01 + w2 * v10 + w3 * v11;
          value += gr * sample;
          if (col) col[ch] = m * sample;
          dy += gr * (hx * (v10 - v00) + lx * (v11 - v01));
          dx += gr * (hy * (v01 - v00) + ly * (v11 - v10));
          if (grad_input) {
            dst[0][ch] += w0 * m * gr;
            dst[1][ch] += w1 * m * gr;
            dst[2][ch] += w2 * m * gr;
            dst[3][ch] += w3 * m * gr;
          }
        }
        if (grad_offset) {
          grad_y[p] = m * dy;
          grad_x[p] = m * dx;
        }
        if (grad_m) grad_m[p] = value;
      }
    }
  }
}
