// cuda/quant.cu -- launchers for the int8 kernels of cuda/kernels/quant.cuh (the same
// source CuPy compiles with NVRTC): quantize / dequantize / dynamic_quantize as grid-stride
// launches (launch.h's kBlock / grid_for), the integer GEMM and convolution (plain int32 or
// requantized to int8 / uint8) on the dp4a tile of qgemm_grid in launch_quant.h.
#include "launch_quant.h"
#include "kernels/quant.cuh"

namespace lepton_cuda {
namespace {

using uchar = unsigned char;
using schar = signed char;

const uchar* bytes(const void* p) { return static_cast<const uchar*>(p); }

// Kernel arguments after the pointers, in the order of LK_QCONV_GEOM_PARAMS.
#define LK_QGEOM(d)                                                                         \
  (d).n, (d).c_in, (d).h, (d).w, (d).c_out, (d).kernel_h, (d).kernel_w, (d).out_h,          \
      (d).out_w, (d).stride_h, (d).stride_w, (d).pad_top, (d).pad_left, (d).dilation_h,     \
      (d).dilation_w, (d).groups

}  // namespace

cudaError_t quantize(QType out, const lepton::QuantDesc& d, const float* x, const float* scale,
                     const int32_t* zero_point, void* q, cudaStream_t stream) {
  const int64_t count = d.outer * d.channels * d.inner;
  if (count <= 0) return cudaSuccess;
  if (out == QType::s8)
    lk_quantize_s8<<<grid_for(count), kBlock, 0, stream>>>(x, scale, zero_point, static_cast<schar*>(q), d.outer,
                                                           d.channels, d.inner);
  else
    lk_quantize_u8<<<grid_for(count), kBlock, 0, stream>>>(x, scale, zero_point, static_cast<uchar*>(q), d.outer,
                                                           d.channels, d.inner);
  return cudaGetLastError();
}

cudaError_t dequantize(QType in, const lepton::QuantDesc& d, const void* q, const float* scale,
                       const int32_t* zero_point, float* y, cudaStream_t stream) {
  const int64_t count = d.outer * d.channels * d.inner;
  if (count <= 0) return cudaSuccess;
  const unsigned grid = grid_for(count);
  if (in == QType::s8)
    lk_dequantize_s8<<<grid, kBlock, 0, stream>>>(static_cast<const schar*>(q), scale, zero_point, y, d.outer,
                                                  d.channels, d.inner);
  else if (in == QType::u8)
    lk_dequantize_u8<<<grid, kBlock, 0, stream>>>(bytes(q), scale, zero_point, y, d.outer, d.channels, d.inner);
  else
    lk_dequantize_s32<<<grid, kBlock, 0, stream>>>(static_cast<const int*>(q), scale, zero_point, y, d.outer,
                                                   d.channels, d.inner);
  return cudaGetLastError();
}

cudaError_t dynamic_quantize(int64_t n, const float* x, uint8_t* q, float* scale, uint8_t* zero_point,
                             cudaStream_t stream) {
  *scale = 0.0f;
  *zero_point = 0;
  if (n <= 0) return cudaSuccess;
  const unsigned blocks = minmax_blocks(n);
  float* buf = nullptr;
  cudaError_t err = cudaMalloc(&buf, (2 * static_cast<size_t>(blocks) + 2) * sizeof(float));
  if (err != cudaSuccess) return err;
  float* params = buf + 2 * static_cast<size_t>(blocks);  // scale (float), zero point (int32)
  int* zp = reinterpret_cast<int*>(params + 1);
  lk_minmax_f32<<<blocks, kQuantThreads, 0, stream>>>(x, n, buf);
  lk_dynamic_qparams<<<1, kQuantThreads, 0, stream>>>(buf, blocks, params, zp);
  lk_quantize_u8<<<grid_for(n), kBlock, 0, stream>>>(x, params, zp, q, 1, 1, n);
  err = cudaGetLastError();
  struct {
    float s;
    int32_t z;
  } host{0.0f, 0};
  if (err == cudaSuccess) err = cudaMemcpyAsync(&host, params, sizeof(host), cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  const cudaError_t freed = cudaFree(buf);
  if (err == cudaSuccess) err = freed;
  if (err == cudaSuccess) {
    *scale = host.s;
    *zero_point = static_cast<uint8_t>(host.z);
  }
  return err;
}

cudaError_t matmul_integer(const void* a, bool a_unsigned, const void* b, bool b_unsigned, int32_t a_zp,
                           const int32_t* b_zp, int32_t* c, int64_t m, int64_t k, int64_t n,
                           cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  lk_matmul_integer<<<qgemm_grid(m, n, 1), kQuantThreads, 0, stream>>>(
      bytes(a), bytes(b), c, a_zp, b_zp, m, k, n, a_unsigned ? 1 : 0, b_unsigned ? 1 : 0);
  return cudaGetLastError();
}

cudaError_t qlinear_matmul(QType out, const void* a, bool a_unsigned, const void* b, bool b_unsigned,
                           int32_t a_zp, const int32_t* b_zp, const int32_t* bias, const float* mult,
                           int32_t y_zp, bool relu, void* y, int64_t m, int64_t k, int64_t n,
                           cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  const dim3 grid = qgemm_grid(m, n, 1);
  const int au = a_unsigned ? 1 : 0, bu = b_unsigned ? 1 : 0, r = relu ? 1 : 0;
  if (out == QType::s8)
    lk_qlinear_matmul_s8<<<grid, kQuantThreads, 0, stream>>>(bytes(a), bytes(b), bias, mult, static_cast<schar*>(y),
                                                             a_zp, b_zp, y_zp, r, m, k, n, au, bu);
  else
    lk_qlinear_matmul_u8<<<grid, kQuantThreads, 0, stream>>>(bytes(a), bytes(b), bias, mult, static_cast<uchar*>(y),
                                                             a_zp, b_zp, y_zp, r, m, k, n, au, bu);
  return cudaGetLastError();
}

// Per group: (c_out/groups) x (n*out_h*out_w) outputs, reduced over c_in/groups*kh*kw.
cudaError_t conv2d_integer(const lepton::Conv2dDesc& d, const void* x, bool x_unsigned, const void* w,
                           bool w_unsigned, int32_t x_zp, const int32_t* w_zp, int32_t* y,
                           cudaStream_t stream) {
  if (d.n <= 0 || d.c_out <= 0 || d.out_h <= 0 || d.out_w <= 0) return cudaSuccess;
  lk_conv2d_integer<<<qgemm_grid(d.c_out / d.groups, d.n * d.out_h * d.out_w, d.groups), kQuantThreads, 0,
                      stream>>>(bytes(x), bytes(w), y, x_zp, w_zp, LK_QGEOM(d), x_unsigned ? 1 : 0,
                                w_unsigned ? 1 : 0);
  return cudaGetLastError();
}

cudaError_t qlinear_conv2d(QType out, const lepton::Conv2dDesc& d, const void* x, bool x_unsigned,
                           const void* w, bool w_unsigned, int32_t x_zp, const int32_t* w_zp,
                           const int32_t* bias, const float* mult, int32_t y_zp, bool relu, void* y,
                           cudaStream_t stream) {
  if (d.n <= 0 || d.c_out <= 0 || d.out_h <= 0 || d.out_w <= 0) return cudaSuccess;
  const dim3 grid = qgemm_grid(d.c_out / d.groups, d.n * d.out_h * d.out_w, d.groups);
  const int xu = x_unsigned ? 1 : 0, wu = w_unsigned ? 1 : 0, r = relu ? 1 : 0;
  if (out == QType::s8)
    lk_qlinear_conv2d_s8<<<grid, kQuantThreads, 0, stream>>>(bytes(x), bytes(w), bias, mult, static_cast<schar*>(y),
                                                             x_zp, w_zp, y_zp, r, LK_QGEOM(d), xu, wu);
  else
    lk_qlinear_conv2d_u8<<<grid, kQuantThreads, 0, stream>>>(bytes(x), bytes(w), bias, mult, static_cast<uchar*>(y),
                                                             x_zp, w_zp, y_zp, r, LK_QGEOM(d), xu, wu);
  return cudaGetLastError();
}

#undef LK_QGEOM

}  // namespace lepton_cuda
