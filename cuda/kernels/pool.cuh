// cuda/kernels/pool.cuh -- 2-D max and average pooling, NCHW, forward and backward.
//
// Device code only, with no #include at all: nvcc (through cuda/pool.cu) and CuPy's
// NVRTC (lepton_kernels.cupy_backend) compile this same text. Semantics are those
// of csrc/lepton/pool.h; in short, output row oh reads input rows
// ih0 + i*dilation_h with ih0 = oh*stride_h - pad_top (columns likewise), taps
// outside the input are padding, and out_h/out_w are given by the caller.
//
// Kernels (extern "C"; SFX = f32 | f64; the _i32 variants use 32-bit index math and
// are only correct when the launcher has checked every index fits, see pool.cu):
//   lk_max_pool2d_SFX[_i32](x, y, indices_or_null, nc, h, w, out_h, out_w,
//                           kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
//                           dilation_h, dilation_w)
//   lk_max_pool2d_u8[_i32], lk_max_pool2d_s8[_i32]: the same for uint8 / int8 (quantized
//                           activations; max commutes with the monotone quantization).
//                           Forward only: there is no int8 backward or average pooling.
//   lk_max_pool2d_backward_SFX[_i32](grad_out, indices, grad_in, nc, in_plane, out_plane)
//                           in_plane = h*w, out_plane = out_h*out_w; no geometry: the
//                           indices carry it. One warp per plane: blockDim.x % 32 == 0.
//   lk_avg_pool2d_SFX[_i32](x, y, nc, h, w, out_h, out_w, kernel_h, kernel_w,
//                           stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right,
//                           count_include_pad (int), divisor_override (0 = none))
//   lk_avg_pool2d_backward_SFX[_i32](grad_out, grad_in, <same sizes>)
// nc = n*c planes. All sizes are long long in the signatures.
//
// No atomics anywhere, so the backward kernels are deterministic and equal (bit for
// bit) to a sequential scatter in row-major output order. Average-pool backward
// GATHERS: one thread per input element sums the windows that contain it, in
// row-major window order. Max-pool backward SCATTERS through the indices, one warp
// per plane applying them in output order (see max_pool2d_backward below); an index
// outside [0, h*w) (-1, or corrupt) is skipped, never used as an address.
#ifndef LEPTON_CUDA_KERNELS_POOL_CUH
#define LEPTON_CUDA_KERNELS_POOL_CUH

namespace lk_pool {

// The value of a max-pool window lying entirely in the padding: -inf for the float
// types, the type's minimum for the int8 types (which have no -inf).
template <typename T>
__device__ __forceinline__ T neg_inf();
template <>
__device__ __forceinline__ float neg_inf<float>() {
  return -__int_as_float(0x7f800000);
}
template <>
__device__ __forceinline__ double neg_inf<double>() {
  return -__longlong_as_double(0x7ff0000000000000ll);
}
template <>
__device__ __forceinline__ unsigned char neg_inf<unsigned char>() {
  return static_cast<unsigned char>(0);
}
template <>
__device__ __forceinline__ signed char neg_inf<signed char>() {
  return static_cast<signed char>(-128);
}

template <typename I>
__device__ __forceinline__ I imin(I a, I b) {
  return a < b ? a : b;
}
template <typename I>
__device__ __forceinline__ I imax(I a, I b) {
  return a > b ? a : b;
}

// Taps k in [k_begin, k_end) of a window starting at i0 with dilation d land inside [0, n).
template <typename I>
__device__ __forceinline__ void valid_taps(I i0, I n, I kernel, I d, I& k_begin, I& k_end) {
  k_begin = i0 < 0 ? (-i0 + d - 1) / d : 0;
  k_end = n - i0 > 0 ? imin(kernel, (n - i0 + d - 1) / d) : 0;
}

// Windows o in [o_begin, o_end) whose span [o*stride - pad, o*stride - pad + reach]
// contains i, for reach = (kernel-1)*dilation. i + pad >= 0 because pads are >= 0.
template <typename I>
__device__ __forceinline__ void covering_windows(I i, I pad, I stride, I reach, I out,
                                                 I& o_begin, I& o_end) {
  const I hi = i + pad;       // largest o*stride
  const I lo = hi - reach;    // smallest o*stride
  o_begin = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  o_end = imin(hi / stride + 1, out);
}

template <typename I>
__device__ __forceinline__ I first_thread() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}
template <typename I>
__device__ __forceinline__ I thread_step() {
  return static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
}

// One thread per output element. The first valid tap seeds the maximum (value and
// index, as PyTorch does, so an all -inf window still points at a real element);
// after that a strictly greater value wins and the first NaN ends the search (for
// the integer types v != v is never true, so that test is free of effect).
template <typename T, typename I>
__device__ void max_pool2d(const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ ind,
                           I nc, I h, I w, I out_h, I out_w, I kh, I kw, I sh, I sw, I pt, I pl,
                           I dh, I dw) {
  const I total = nc * out_h * out_w;
  for (I i = first_thread<I>(); i < total; i += thread_step<I>()) {
    const I ow = i % out_w;
    const I t = i / out_w;
    const I oh = t % out_h;
    const I plane = t / out_h;
    const T* xp = x + plane * h * w;
    const I ih0 = oh * sh - pt, iw0 = ow * sw - pl;
    I ki0, ki1, kj0, kj1;
    valid_taps(ih0, h, kh, dh, ki0, ki1);
    valid_taps(iw0, w, kw, dw, kj0, kj1);
    T best = neg_inf<T>();
    long long best_i = -1;
    bool seeded = false, nan = false;
    for (I ki = ki0; ki < ki1 && !nan; ++ki) {
      const I ih = ih0 + ki * dh;
      for (I kj = kj0; kj < kj1; ++kj) {
        const I pos = ih * w + iw0 + kj * dw;
        const T v = xp[pos];
        if (!seeded || v > best || v != v) {
          best = v;
          best_i = static_cast<long long>(pos);
          seeded = true;
          if (v != v) {
            nan = true;
            break;
          }
        }
      }
    }
    y[i] = best;
    if (ind != nullptr) ind[i] = best_i;
  }
}

// Deterministic index scatter, one warp per (n, c) plane; the pooling geometry is
// not needed (the indices carry it). blockDim.x must be a multiple of 32 (the
// launchers use 256). The warp zeroes its plane, then walks grad_out in chunks of
// 32 outputs loaded coalesced (lane l holds output k0 + l). In a chunk, the lanes
// holding the same index form a group whose lowest lane (the leader) reads that
// grad_in element once, adds the group's gradients in ascending lane order and
// writes it back; distinct indices have distinct leaders, so no two lanes write
// one element, and __syncwarp orders a chunk's writes before the next chunk's
// reads. Each grad_in element therefore receives its terms one at a time, in the
// array's dtype, in row-major output order: bit for bit the sequential scatter of
// the C++ kernel. When no index repeats inside a chunk (non-overlapping windows)
// every lane just adds its own term. An index outside [0, in_plane) (-1, or a
// corrupt one) is skipped and never used as an address.
template <typename T, typename I>
__device__ void max_pool2d_backward(const T* __restrict__ go, const long long* __restrict__ ind,
                                    T* gi, I nc, I in_plane, I out_plane) {
  const unsigned all = 0xffffffffu;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const unsigned self = 1u << lane;
  const I warps = thread_step<I>() / 32;
  for (I q = first_thread<I>() / 32; q < nc; q += warps) {  // q is uniform across the warp
    T* dst = gi + q * in_plane;
    for (I e = lane; e < in_plane; e += 32) dst[e] = T(0);
    __syncwarp();
    const T* src = go + q * out_plane;
    const long long* idx = ind + q * out_plane;
    for (I k0 = 0; k0 < out_plane; k0 += 32) {
      const int m = static_cast<int>(imin(out_plane - k0, I(32)));  // lanes with an output
      long long at = -1;
      T v = T(0);
      if (lane < m) {
        at = idx[k0 + lane];
        v = src[k0 + lane];
      }
      const bool valid = at >= 0 && at < static_cast<long long>(in_plane);
      unsigned same = 0;  // the lanes of this chunk holding the same index as this one
      for (int j = 0; j < m; ++j) {
        if (__shfl_sync(all, at, j) == at) same |= 1u << j;
      }
      if (__any_sync(all, valid && same != self)) {
        const bool leader = valid && (same & (self - 1u)) == 0u;
        T acc = leader ? dst[at] : T(0);
        for (int j = 0; j < m; ++j) {
          const T vj = __shfl_sync(all, v, j);
          if (leader && ((same >> j) & 1u)) acc += vj;
        }
        if (leader) dst[at] = acc;
      } else if (valid) {
        dst[at] += v;
      }
      __syncwarp();
    }
  }
}

// Per-axis extent of an average window (no dilation): the window is clipped to the
// padded input [-pad_lo, n + pad_hi); `pool` counts its taps with padding, `count`
// those inside [0, n).
template <typename I>
__device__ __forceinline__ void avg_extent(I o, I stride, I pad_lo, I pad_hi, I kernel, I n,
                                           I& begin, I& end, I& pool, I& count) {
  const I i0 = o * stride - pad_lo;
  const I iend = imin(i0 + kernel, n + pad_hi);
  pool = iend - i0;
  begin = imax(i0, I(0));
  end = imin(iend, n);
  count = end > begin ? end - begin : I(0);
}

template <typename I>
__device__ __forceinline__ I avg_divisor(I pool_h, I pool_w, I count_h, I count_w,
                                         int include_pad, long long divisor_override) {
  if (divisor_override > 0) return static_cast<I>(divisor_override);
  return include_pad ? pool_h * pool_w : count_h * count_w;
}

template <typename T, typename I>
__device__ void avg_pool2d(const T* __restrict__ x, T* __restrict__ y, I nc, I h, I w, I out_h,
                           I out_w, I kh, I kw, I sh, I sw, I pt, I pb, I pl, I pr,
                           int include_pad, long long divisor_override) {
  const I total = nc * out_h * out_w;
  for (I i = first_thread<I>(); i < total; i += thread_step<I>()) {
    const I ow = i % out_w;
    const I t = i / out_w;
    const I oh = t % out_h;
    const I plane = t / out_h;
    I h0, h1, pool_h, count_h, w0, w1, pool_w, count_w;
    avg_extent(oh, sh, pt, pb, kh, h, h0, h1, pool_h, count_h);
    avg_extent(ow, sw, pl, pr, kw, w, w0, w1, pool_w, count_w);
    if (count_h == 0 || count_w == 0) {  // window entirely in padding
      y[i] = T(0);
      continue;
    }
    const T* xp = x + plane * h * w;
    T acc = T(0);
    for (I ih = h0; ih < h1; ++ih) {
      for (I iw = w0; iw < w1; ++iw) acc += xp[ih * w + iw];
    }
    const I div = avg_divisor(pool_h, pool_w, count_h, count_w, include_pad, divisor_override);
    y[i] = acc / static_cast<T>(div);
  }
}

template <typename T, typename I>
__device__ void avg_pool2d_backward(const T* __restrict__ go, T* __restrict__ gi, I nc, I h, I w,
                                    I out_h, I out_w, I kh, I kw, I sh, I sw, I pt, I pb, I pl,
                                    I pr, int include_pad, long long divisor_override) {
  const I total = nc * h * w;
  for (I i = first_thread<I>(); i < total; i += thread_step<I>()) {
    const I iw = i % w;
    const I t = i / w;
    const I ih = t % h;
    const I plane = t / h;
    // A window starting at i0 holds rows [i0, min(i0 + kernel, n + pad_hi)); since
    // ih < h <= h + pad_hi, "contains ih" is just i0 <= ih < i0 + kernel.
    I oh0, oh1, ow0, ow1;
    covering_windows(ih, pt, sh, kh - 1, out_h, oh0, oh1);
    covering_windows(iw, pl, sw, kw - 1, out_w, ow0, ow1);
    const T* gp = go + plane * out_h * out_w;
    T acc = T(0);
    for (I oh = oh0; oh < oh1; ++oh) {
      I h0, h1, pool_h, count_h;
      avg_extent(oh, sh, pt, pb, kh, h, h0, h1, pool_h, count_h);
      for (I ow = ow0; ow < ow1; ++ow) {
        I w0, w1, pool_w, count_w;
        avg_extent(ow, sw, pl, pr, kw, w, w0, w1, pool_w, count_w);
        const I div = avg_divisor(pool_h, pool_w, count_h, count_w, include_pad, divisor_override);
        acc += gp[oh * out_w + ow] / static_cast<T>(div);
      }
    }
    gi[i] = acc;
  }
}

}  // namespace lk_pool

#define LK_POOL_MAX_PARAMS                                                                  \
  long long nc, long long h, long long w, long long out_h, long long out_w, long long kh,   \
      long long kw, long long sh, long long sw, long long pt, long long pl, long long dh,   \
      long long dw
#define LK_POOL_MAX_ARGS(I)                                                                 \
  static_cast<I>(nc), static_cast<I>(h), static_cast<I>(w), static_cast<I>(out_h),          \
      static_cast<I>(out_w), static_cast<I>(kh), static_cast<I>(kw), static_cast<I>(sh),    \
      static_cast<I>(sw), static_cast<I>(pt), static_cast<I>(pl), static_cast<I>(dh),       \
      static_cast<I>(dw)
#define LK_POOL_AVG_PARAMS                                                                  \
  long long nc, long long h, long long w, long long out_h, long long out_w, long long kh,   \
      long long kw, long long sh, long long sw, long long pt, long long pb, long long pl,   \
      long long pr, int include_pad, long long divisor_override
#define LK_POOL_AVG_ARGS(I)                                                                 \
  static_cast<I>(nc), static_cast<I>(h), static_cast<I>(w), static_cast<I>(out_h),          \
      static_cast<I>(out_w), static_cast<I>(kh), static_cast<I>(kw), static_cast<I>(sh),    \
      static_cast<I>(sw), static_cast<I>(pt), static_cast<I>(pb), static_cast<I>(pl),       \
      static_cast<I>(pr), include_pad, divisor_override

#define LK_POOL_DEFINE(NAME, T, I)                                                          \
  extern "C" __global__ void lk_max_pool2d_##NAME(const T* x, T* y, long long* indices,     \
                                                  LK_POOL_MAX_PARAMS) {                     \
    lk_pool::max_pool2d<T, I>(x, y, indices, LK_POOL_MAX_ARGS(I));                          \
  }                                                                                         \
  extern "C" __global__ void lk_max_pool2d_backward_##NAME(                                 \
      const T* grad_out, const long long* indices, T* grad_in, long long nc,                \
      long long in_plane, long long out_plane) {                                            \
    lk_pool::max_pool2d_backward<T, I>(grad_out, indices, grad_in, static_cast<I>(nc),      \
                                       static_cast<I>(in_plane), static_cast<I>(out_plane)); \
  }                                                                                         \
  extern "C" __global__ void lk_avg_pool2d_##NAME(const T* x, T* y, LK_POOL_AVG_PARAMS) {   \
    lk_pool::avg_pool2d<T, I>(x, y, LK_POOL_AVG_ARGS(I));                                   \
  }                                                                                         \
  extern "C" __global__ void lk_avg_pool2d_backward_##NAME(const T* grad_out, T* grad_in,   \
                                                           LK_POOL_AVG_PARAMS) {            \
    lk_pool::avg_pool2d_backward<T, I>(grad_out, grad_in, LK_POOL_AVG_ARGS(I));             \
  }

LK_POOL_DEFINE(f32, float, long long)
LK_POOL_DEFINE(f64, double, long long)
LK_POOL_DEFINE(f32_i32, float, int)
LK_POOL_DEFINE(f64_i32, double, int)

// int8 / uint8: max-pool forward only (quantized models pool their activations directly).
#define LK_POOL_MAX_DEFINE(NAME, T, I)                                                      \
  extern "C" __global__ void lk_max_pool2d_##NAME(const T* x, T* y, long long* indices,     \
                                                  LK_POOL_MAX_PARAMS) {                     \
    lk_pool::max_pool2d<T, I>(x, y, indices, LK_POOL_MAX_ARGS(I));                          \
  }

LK_POOL_MAX_DEFINE(u8, unsigned char, long long)
LK_POOL_MAX_DEFINE(s8, signed char, long long)
LK_POOL_MAX_DEFINE(u8_i32, unsigned char, int)
LK_POOL_MAX_DEFINE(s8_i32, signed char, int)

#undef LK_POOL_DEFINE
#undef LK_POOL_MAX_DEFINE
#undef LK_POOL_MAX_PARAMS
#undef LK_POOL_MAX_ARGS
#undef LK_POOL_AVG_PARAMS
#undef LK_POOL_AVG_ARGS

#endif  // LEPTON_CUDA_KERNELS_POOL_CUH
