// cuda/launch.h -- host launchers for the kernels in cuda/kernels/*.cuh (private to
// the _lepton_cuda module; not installed).
//
// Every launcher enqueues on `stream` and returns cudaGetLastError() after the
// launch (cudaSuccess without launching when there is nothing to compute). They
// trust their arguments: cuda/bind_cuda.cpp checks pointers, sizes and geometry
// first. Buffers are dense C-contiguous device memory of `dtype` (indices int64).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "lepton/elementwise.h"
#include "lepton/pool.h"

namespace lepton_cuda {

enum class DType : int { f32 = 0, f64 = 1 };

// y = relu(x); y may be exactly x.
cudaError_t relu(DType dtype, const void* x, void* y, int64_t count, cudaStream_t stream);
// grad_in = (x <= 0) ? 0 : grad_out
cudaError_t relu_backward(DType dtype, const void* grad_out, const void* x, void* grad_in,
                          int64_t count, cudaStream_t stream);
// y[n,c,s] = relu(x[n,c,s] + bias[c]); y may be exactly x.
cudaError_t bias_relu(DType dtype, const lepton::BiasReluDesc& d, const void* x, const void* bias,
                      void* y, cudaStream_t stream);
// grad_x = (y <= 0) ? 0 : grad_out; then, unless grad_bias is null, grad_bias[c] =
// sum of grad_x over (n, s), reduced in a fixed order (deterministic).
cudaError_t bias_relu_backward(DType dtype, const lepton::BiasReluDesc& d, const void* grad_out,
                               const void* y, void* grad_x, void* grad_bias, cudaStream_t stream);

// Pooling: d.n .. d.dilation_w as in lepton/pool.h. indices may be null (forward only).
cudaError_t max_pool2d(DType dtype, const lepton::Pool2dDesc& d, const void* x, void* y,
                       int64_t* indices, cudaStream_t stream);
// grad_in (planes, in_plane) is overwritten: zero, then grad_out (planes, out_plane)
// scattered to its plane's indices in output order (deterministic, bit-equal to a
// sequential scatter). Needs no geometry; an index outside [0, in_plane) is skipped.
cudaError_t max_pool2d_backward(DType dtype, int64_t planes, int64_t in_plane, int64_t out_plane,
                                const void* grad_out, const int64_t* indices, void* grad_in,
                                cudaStream_t stream);
cudaError_t avg_pool2d(DType dtype, const lepton::Pool2dDesc& d, const void* x, void* y,
                       cudaStream_t stream);
cudaError_t avg_pool2d_backward(DType dtype, const lepton::Pool2dDesc& d, const void* grad_out,
                                void* grad_in, cudaStream_t stream);

// Launch shape shared by every element-wise / pooling launcher (grid-stride loops).
constexpr int kBlock = 256;  // a multiple of kWarp (max_pool2d_backward: a warp per plane)
constexpr int64_t kWarp = 32;
static_assert(kBlock % kWarp == 0, "kBlock must be whole warps");
constexpr int64_t kMaxGrid = 65536;
inline unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kBlock - 1) / kBlock;
  return static_cast<unsigned>(blocks < kMaxGrid ? (blocks < 1 ? 1 : blocks) : kMaxGrid);
}
// True when 32-bit index math is safe for `largest` (the largest index or product a
// kernel forms): grid-stride loops overshoot by at most kMaxGrid * kBlock threads.
inline bool fits_i32(int64_t largest) {
  return largest >= 0 && largest + kMaxGrid * kBlock < (int64_t(1) << 31);
}

}  // namespace lepton_cuda
