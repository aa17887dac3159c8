// cuda/launch_quant.h -- host launchers for the int8 kernels of cuda/kernels/quant.cuh
// (cuda/quant.cu; private to the _lepton_cuda module, not installed).
//
// Semantics: the int8 section of lepton_kernels.reference / csrc/lepton/quant.h, and the
// fused requantize epilogue of the qlinear ops (float32, as ONNX Runtime):
//   y = clip(rint(float(int32(acc + bias[ch])) * mult[ch]) + y_zp, relu ? max(lo, y_zp) : lo, hi).
// Every launcher enqueues on `stream` and returns cudaGetLastError() after the launch
// (cudaSuccess without launching when there is nothing to compute), except
// dynamic_quantize, which also waits for the stream (it returns the scale and zero point
// to the host). They trust their arguments: cuda/bind_cuda.cpp checks pointers, sizes,
// zero-point ranges and the GEMM / convolution limits of launch.h first. Buffers are
// dense C-contiguous device memory; int8 / uint8 operands are passed as bytes with a
// flag saying uint8.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.h"
#include "lepton/conv.h"
#include "lepton/quant.h"

namespace lepton_cuda {

// Integer element types of the int8 kernels.
enum class QType : int { s8 = 0, u8 = 1, s32 = 2 };

// Launch shape of the integer GEMM kernels (mirrored by lepton_kernels.cupy_backend):
// LK_QUANT_THREADS threads, a LK_QGEMM_BM x LK_QGEMM_BN output tile per block, grid.x =
// column tiles, grid.y = row tiles and grid.z = groups (both clamped to kMaxGridYZ).
constexpr int kQuantThreads = 256;     // LK_QUANT_THREADS
constexpr int64_t kQgemmTile = 64;     // LK_QGEMM_BM == LK_QGEMM_BN
constexpr int64_t kMinmaxBlocks = 1024;  // most blocks of the dynamic_quantize range pass

// q (outer, channels, inner) of type out (s8 | u8) = quantize(x, scale[c], zp[c]).
cudaError_t quantize(QType out, const lepton::QuantDesc& d, const float* x, const float* scale,
                     const int32_t* zero_point, void* q, cudaStream_t stream);
// y = dequantize(q) for q of type in (s8 | u8 | s32).
cudaError_t dequantize(QType in, const lepton::QuantDesc& d, const void* q, const float* scale,
                       const int32_t* zero_point, float* y, cudaStream_t stream);
// Range pass, parameters and quantize on `stream`, then waits for it: *scale, *zero_point
// (0, 0 for an all-zero input). Uses a temporary device buffer of 2*kMinmaxBlocks+2 floats.
cudaError_t dynamic_quantize(int64_t n, const float* x, uint8_t* q, float* scale, uint8_t* zero_point,
                             cudaStream_t stream);

// c (m, n) int32 = (a - a_zp) @ (b - b_zp[col]), wrapping in int32; b_zp null = 0.
cudaError_t matmul_integer(const void* a, bool a_unsigned, const void* b, bool b_unsigned, int32_t a_zp,
                           const int32_t* b_zp, int32_t* c, int64_t m, int64_t k, int64_t n,
                           cudaStream_t stream);
// y (m, n) of type out (s8 | u8): the requantized matmul_integer; bias (null = none), mult
// (float32) and b_zp per column.
cudaError_t qlinear_matmul(QType out, const void* a, bool a_unsigned, const void* b, bool b_unsigned,
                           int32_t a_zp, const int32_t* b_zp, const int32_t* bias, const float* mult,
                           int32_t y_zp, bool relu, void* y, int64_t m, int64_t k, int64_t n,
                           cudaStream_t stream);
// y NCHW int32 = conv of (x - x_zp) and (w - w_zp[o]) (lepton/conv.h geometry; d.relu unused).
cudaError_t conv2d_integer(const lepton::Conv2dDesc& d, const void* x, bool x_unsigned, const void* w,
                           bool w_unsigned, int32_t x_zp, const int32_t* w_zp, int32_t* y,
                           cudaStream_t stream);
// y NCHW of type out: the requantized conv2d_integer; w_zp, bias, mult per output channel.
cudaError_t qlinear_conv2d(QType out, const lepton::Conv2dDesc& d, const void* x, bool x_unsigned,
                           const void* w, bool w_unsigned, int32_t x_zp, const int32_t* w_zp,
                           const int32_t* bias, const float* mult, int32_t y_zp, bool relu, void* y,
                           cudaStream_t stream);

inline unsigned minmax_blocks(int64_t n) {
  const int64_t b = (n + kQuantThreads - 1) / kQuantThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > kMinmaxBlocks ? kMinmaxBlocks : b));
}
inline dim3 qgemm_grid(int64_t m, int64_t n, int64_t groups) {
  auto clamp = [](int64_t v) { return static_cast<unsigned>(v < 1 ? 1 : (v > kMaxGridYZ ? kMaxGridYZ : v)); };
  return dim3(static_cast<unsigned>((n + kQgemmTile - 1) / kQgemmTile), clamp((m + kQgemmTile - 1) / kQgemmTile),
              clamp(groups));
}

}  // namespace lepton_cuda
