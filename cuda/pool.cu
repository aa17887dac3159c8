// cuda/pool.cu -- launchers for the 2-D pooling kernels of cuda/kernels/pool.cuh
// (the same source CuPy compiles with NVRTC). NCHW; geometry as in lepton/pool.h.
// Each launcher picks the 32-bit-index kernel variant when every index the kernel
// forms fits (see largest_index), else the 64-bit one. max_pool2d_backward needs no
// geometry: one warp per plane scatters through the indices. max_pool2d_int8 runs the
// same max-pool kernel on int8 / uint8 (forward only).
#include <initializer_list>

#include "launch.h"
#include "kernels/pool.cuh"

namespace lepton_cuda {
namespace {

int64_t max2(int64_t a, int64_t b) { return a > b ? a : b; }

// An upper bound on every index, product and loop bound the pooling kernels form.
// Any single size of 2^31 or more already rules out 32-bit math, and bounding them
// first keeps the products below from overflowing int64.
int64_t largest_index(const lepton::Pool2dDesc& d) {
  const int64_t big = int64_t(1) << 31;
  for (int64_t v : {d.h, d.w, d.out_h, d.out_w, d.kernel_h, d.kernel_w, d.stride_h, d.stride_w,
                    d.pad_top, d.pad_bottom, d.pad_left, d.pad_right, d.dilation_h, d.dilation_w,
                    d.divisor_override}) {
    if (v >= big) return v;
  }
  const int64_t nc = d.n * d.c;
  const int64_t in = nc * d.h * d.w, out = nc * d.out_h * d.out_w;
  const int64_t span_h = (d.out_h + 1) * d.stride_h + (d.kernel_h + 1) * d.dilation_h + d.h +
                         d.pad_top + d.pad_bottom;
  const int64_t span_w = (d.out_w + 1) * d.stride_w + (d.kernel_w + 1) * d.dilation_w + d.w +
                         d.pad_left + d.pad_right;
  const int64_t pool = (d.kernel_h + d.pad_top + d.pad_bottom + d.h) *
                       (d.kernel_w + d.pad_left + d.pad_right + d.w);
  return max2(max2(max2(in, out), max2(span_h, span_w)), max2(pool, d.divisor_override));
}

// Kernel arguments after the pointers, in the order of the kernel signatures.
#define LK_MAX_GEOM(d)                                                                          \
  (d).n * (d).c, (d).h, (d).w, (d).out_h, (d).out_w, (d).kernel_h, (d).kernel_w, (d).stride_h, \
      (d).stride_w, (d).pad_top, (d).pad_left, (d).dilation_h, (d).dilation_w
#define LK_AVG_GEOM(d)                                                                          \
  (d).n * (d).c, (d).h, (d).w, (d).out_h, (d).out_w, (d).kernel_h, (d).kernel_w, (d).stride_h, \
      (d).stride_w, (d).pad_top, (d).pad_bottom, (d).pad_left, (d).pad_right,                   \
      static_cast<int>((d).count_include_pad), (d).divisor_override

}  // namespace

cudaError_t max_pool2d(DType dtype, const lepton::Pool2dDesc& d, const void* x, void* y,
                       int64_t* indices, cudaStream_t stream) {
  const int64_t work = d.n * d.c * d.out_h * d.out_w;
  if (work <= 0) return cudaSuccess;
  const unsigned grid = grid_for(work);
  const bool i32 = fits_i32(largest_index(d));
  long long* ind = reinterpret_cast<long long*>(indices);
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_max_pool2d_f32_i32 : lk_max_pool2d_f32;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(x), static_cast<float*>(y), ind,
                                   LK_MAX_GEOM(d));
  } else {
    auto* k = i32 ? lk_max_pool2d_f64_i32 : lk_max_pool2d_f64;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(x), static_cast<double*>(y), ind,
                                   LK_MAX_GEOM(d));
  }
  return cudaGetLastError();
}

cudaError_t max_pool2d_int8(bool is_signed, const lepton::Pool2dDesc& d, const void* x, void* y,
                            int64_t* indices, cudaStream_t stream) {
  const int64_t work = d.n * d.c * d.out_h * d.out_w;
  if (work <= 0) return cudaSuccess;
  const unsigned grid = grid_for(work);
  const bool i32 = fits_i32(largest_index(d));
  long long* ind = reinterpret_cast<long long*>(indices);
  if (is_signed) {
    auto* k = i32 ? lk_max_pool2d_s8_i32 : lk_max_pool2d_s8;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const signed char*>(x), static_cast<signed char*>(y), ind,
                                   LK_MAX_GEOM(d));
  } else {
    auto* k = i32 ? lk_max_pool2d_u8_i32 : lk_max_pool2d_u8;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const unsigned char*>(x), static_cast<unsigned char*>(y), ind,
                                   LK_MAX_GEOM(d));
  }
  return cudaGetLastError();
}

cudaError_t max_pool2d_backward(DType dtype, int64_t planes, int64_t in_plane, int64_t out_plane,
                                const void* grad_out, const int64_t* indices, void* grad_in,
                                cudaStream_t stream) {
  if (planes <= 0 || in_plane <= 0) return cudaSuccess;  // grad_in is empty
  // One warp per plane; the clamp keeps planes * kWarp from overflowing (the grid is
  // capped at kMaxGrid blocks anyway, and the kernel strides over the rest).
  const int64_t warps_wanted = planes < kMaxGrid * kBlock / kWarp ? planes : kMaxGrid * kBlock / kWarp;
  const unsigned grid = grid_for(warps_wanted * kWarp);
  const bool i32 = fits_i32(max2(planes * in_plane, planes * out_plane));
  const long long* ind = reinterpret_cast<const long long*>(indices);
  const long long nc = planes, in = in_plane, out = out_plane;
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_max_pool2d_backward_f32_i32 : lk_max_pool2d_backward_f32;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(grad_out), ind,
                                   static_cast<float*>(grad_in), nc, in, out);
  } else {
    auto* k = i32 ? lk_max_pool2d_backward_f64_i32 : lk_max_pool2d_backward_f64;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(grad_out), ind,
                                   static_cast<double*>(grad_in), nc, in, out);
  }
  return cudaGetLastError();
}

cudaError_t avg_pool2d(DType dtype, const lepton::Pool2dDesc& d, const void* x, void* y,
                       cudaStream_t stream) {
  const int64_t work = d.n * d.c * d.out_h * d.out_w;
  if (work <= 0) return cudaSuccess;
  const unsigned grid = grid_for(work);
  const bool i32 = fits_i32(largest_index(d));
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_avg_pool2d_f32_i32 : lk_avg_pool2d_f32;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(x), static_cast<float*>(y),
                                   LK_AVG_GEOM(d));
  } else {
    auto* k = i32 ? lk_avg_pool2d_f64_i32 : lk_avg_pool2d_f64;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(x), static_cast<double*>(y),
                                   LK_AVG_GEOM(d));
  }
  return cudaGetLastError();
}

cudaError_t avg_pool2d_backward(DType dtype, const lepton::Pool2dDesc& d, const void* grad_out,
                                void* grad_in, cudaStream_t stream) {
  const int64_t work = d.n * d.c * d.h * d.w;
  if (work <= 0) return cudaSuccess;
  const unsigned grid = grid_for(work);
  const bool i32 = fits_i32(largest_index(d));
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_avg_pool2d_backward_f32_i32 : lk_avg_pool2d_backward_f32;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(grad_out),
                                   static_cast<float*>(grad_in), LK_AVG_GEOM(d));
  } else {
    auto* k = i32 ? lk_avg_pool2d_backward_f64_i32 : lk_avg_pool2d_backward_f64;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(grad_out),
                                   static_cast<double*>(grad_in), LK_AVG_GEOM(d));
  }
  return cudaGetLastError();
}

#undef LK_MAX_GEOM
#undef LK_AVG_GEOM

}  // namespace lepton_cuda
