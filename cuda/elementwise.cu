// cuda/elementwise.cu -- launchers for the ReLU / bias+ReLU kernels of
// cuda/kernels/elementwise.cuh (the same source CuPy compiles with NVRTC).
// Layout: dense buffers; bias_relu views x as (n, c, s).
#include "launch.h"
#include "kernels/elementwise.cuh"

namespace lepton_cuda {

cudaError_t relu(DType dtype, const void* x, void* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const unsigned grid = grid_for(count);
  if (dtype == DType::f32)
    lk_relu_f32<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(x), static_cast<float*>(y), count);
  else
    lk_relu_f64<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(x), static_cast<double*>(y), count);
  return cudaGetLastError();
}

cudaError_t relu_backward(DType dtype, const void* grad_out, const void* x, void* grad_in,
                          int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  const unsigned grid = grid_for(count);
  if (dtype == DType::f32)
    lk_relu_backward_f32<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(grad_out),
                                                      static_cast<const float*>(x),
                                                      static_cast<float*>(grad_in), count);
  else
    lk_relu_backward_f64<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(grad_out),
                                                      static_cast<const double*>(x),
                                                      static_cast<double*>(grad_in), count);
  return cudaGetLastError();
}

cudaError_t bias_relu(DType dtype, const lepton::BiasReluDesc& d, const void* x, const void* bias,
                      void* y, cudaStream_t stream) {
  const int64_t count = d.n * d.c * d.s;
  if (count <= 0) return cudaSuccess;
  const unsigned grid = grid_for(count);
  const bool i32 = fits_i32(count);
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_bias_relu_f32_i32 : lk_bias_relu_f32;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const float*>(x), static_cast<const float*>(bias),
                                   static_cast<float*>(y), d.n, d.c, d.s);
  } else {
    auto* k = i32 ? lk_bias_relu_f64_i32 : lk_bias_relu_f64;
    k<<<grid, kBlock, 0, stream>>>(static_cast<const double*>(x), static_cast<const double*>(bias),
                                   static_cast<double*>(y), d.n, d.c, d.s);
  }
  return cudaGetLastError();
}

cudaError_t bias_relu_backward(DType dtype, const lepton::BiasReluDesc& d, const void* grad_out,
                               const void* y, void* grad_x, void* grad_bias, cudaStream_t stream) {
  const int64_t count = d.n * d.c * d.s;
  if (d.c <= 0) return cudaSuccess;
  if (count > 0) {
    const unsigned grid = grid_for(count);
    if (dtype == DType::f32)
      lk_bias_relu_backward_f32<<<grid, kBlock, 0, stream>>>(
          static_cast<const float*>(grad_out), static_cast<const float*>(y),
          static_cast<float*>(grad_x), count);
    else
      lk_bias_relu_backward_f64<<<grid, kBlock, 0, stream>>>(
          static_cast<const double*>(grad_out), static_cast<const double*>(y),
          static_cast<double*>(grad_x), count);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess || grad_bias == nullptr) return err;
  } else if (grad_bias == nullptr) {
    return cudaSuccess;
  }
  // One block per channel, ordered after the grad_x kernel on the same stream. With
  // n*s == 0 the blocks write zeros, which is the right sum over nothing.
  const unsigned grid = static_cast<unsigned>(d.c < kMaxGrid ? d.c : kMaxGrid);
  const bool i32 = fits_i32(count > d.c ? count : d.c);
  if (dtype == DType::f32) {
    auto* k = i32 ? lk_bias_relu_backward_bias_f32_i32 : lk_bias_relu_backward_bias_f32;
    k<<<grid, LK_REDUCE_THREADS, 0, stream>>>(static_cast<const float*>(grad_x),
                                              static_cast<float*>(grad_bias), d.n, d.c, d.s);
  } else {
    auto* k = i32 ? lk_bias_relu_backward_bias_f64_i32 : lk_bias_relu_backward_bias_f64;
    k<<<grid, LK_REDUCE_THREADS, 0, stream>>>(static_cast<const double*>(grad_x),
                                              static_cast<double*>(grad_bias), d.n, d.c, d.s);
  }
  return cudaGetLastError();
}

}  // namespace lepton_cuda
