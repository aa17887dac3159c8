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

#include "lepton/conv.h"
#include "lepton/elementwise.h"
#include "lepton/linear.h"
#include "lepton/loss.h"
#include "lepton/optim.h"
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
// The same for int8 (is_signed) or uint8 x and y, forward only: a window entirely in
// the padding gives the type's minimum (-128 / 0) and index -1. (DType stays float-only.)
cudaError_t max_pool2d_int8(bool is_signed, const lepton::Pool2dDesc& d, const void* x, void* y,
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

// ---------------------------------------------------------------- GEMM and convolution
// (cuda/gemm.cu, cuda/conv.cu over cuda/kernels/gemm.cuh and conv.cuh). Semantics of
// lepton/linear.h and lepton/conv.h; y (the forward's ReLU output) may be null (no
// mask); a null gradient output is skipped. The reductions are deterministic.
// Requirements checked by cuda/bind_cuda.cpp: every GEMM dimension (see the header of
// conv.cuh) at most kGemmMaxDim, h + pads and w + pads below 2^30.

// c (m, n) = a (m, k) @ b (k, n)
cudaError_t matmul(DType dtype, const void* a, const void* b, void* c, int64_t m, int64_t k, int64_t n,
                   cudaStream_t stream);
cudaError_t linear(DType dtype, const lepton::LinearDesc& d, const void* x, const void* w,
                   const void* bias, void* y, cudaStream_t stream);
cudaError_t linear_backward(DType dtype, const lepton::LinearDesc& d, const void* grad_out, const void* x,
                            const void* w, const void* y, void* grad_x, void* grad_w, void* grad_b,
                            cudaStream_t stream);
// grad_b[ch] = sum over (b, j) of g'[b, ch, j], g viewed as (n, c, s); fixed order.
cudaError_t bias_grad(DType dtype, int64_t n, int64_t c, int64_t s, const void* grad_out, const void* y,
                      void* grad_b, cudaStream_t stream);
cudaError_t conv2d(DType dtype, const lepton::Conv2dDesc& d, const void* x, const void* w, const void* bias,
                   void* y, cudaStream_t stream);
cudaError_t conv2d_backward(DType dtype, const lepton::Conv2dDesc& d, const void* grad_out, const void* x,
                            const void* w, const void* y, void* grad_x, void* grad_w, void* grad_b,
                            cudaStream_t stream);

// Launch shape of every tiled GEMM kernel (mirrored by lepton_kernels.cupy_backend._gemm_plan):
// 256 threads; the small tile of the dtype (f32 64x64, f64 32x32) when m or n fits in
// it or the large tile (f32 128x128, f64 64x64) would give fewer than
// kLargeTileMinBlocks blocks, else the large one;
// grid.x = column tiles, grid.y = row tiles and grid.z = groups, the last two clamped
// to kMaxGridYZ (the kernels walk them grid-stride).
constexpr int kGemmThreads = 256;  // LK_GEMM_THREADS
constexpr int64_t kGemmMaxDim = (int64_t(1) << 31) - 4096;
constexpr int64_t kLargeTileMinBlocks = 264;  // about two waves of blocks on an H100 (132 SMs)
constexpr int64_t kMaxGridYZ = 65535;
struct GemmPlan {
  bool small;
  unsigned gx, gy, gz;
};
inline int64_t gemm_tile(DType dtype, bool small) {
  return dtype == DType::f32 ? (small ? 64 : 128) : (small ? 32 : 64);
}
inline GemmPlan gemm_plan(DType dtype, int64_t m, int64_t n, int64_t groups) {
  auto tiles = [](int64_t v, int64_t t) { return (v + t - 1) / t; };
  const int64_t big = gemm_tile(dtype, false);
  GemmPlan p;
  const int64_t little = gemm_tile(dtype, true);
  p.small = m <= little || n <= little || tiles(m, big) * tiles(n, big) * groups < kLargeTileMinBlocks;
  const int64_t t = gemm_tile(dtype, p.small);
  auto clamp = [](int64_t v) { return static_cast<unsigned>(v < 1 ? 1 : (v > kMaxGridYZ ? kMaxGridYZ : v)); };
  p.gx = static_cast<unsigned>(tiles(n, t));
  p.gy = clamp(tiles(m, t));
  p.gz = clamp(groups);
  return p;
}
// lk_bias_grad: 32 channels per block when s == 1, else a block per channel.
inline unsigned bias_grad_grid(int64_t c, int64_t s) {
  const int64_t blocks = s == 1 ? (c + 31) / 32 : c;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxGridYZ ? kMaxGridYZ : blocks));
}

// ---------------------------------------------------------------- optimizers and losses
// (cuda/optim.cu, cuda/loss.cu over cuda/kernels/optim.cuh and loss.cuh). Semantics of
// lepton/optim.h and lepton/loss.h. The optimizer launchers update `num` tensors in
// list order, one grid-stride launch per non-empty tensor (grid_for(count) x kBlock),
// all on `stream`; entry i of each pointer table is tensor i (bufs / max_exp_avg_sqs
// may be null tables when momentum == 0 / without amsgrad). The per-step scalars are
// computed in double once per call and passed rounded to the dtype.
cudaError_t sgd_step(DType dtype, const lepton::SgdParams& p, int64_t num, void* const* params,
                     const void* const* grads, void* const* bufs, const int64_t* counts, cudaStream_t stream);
cudaError_t adam_step(DType dtype, const lepton::AdamParams& p, int64_t num, void* const* params,
                      const void* const* grads, void* const* exp_avgs, void* const* exp_avg_sqs,
                      void* const* max_exp_avg_sqs, const int64_t* counts, cudaStream_t stream);
// One block of ce_block(c) threads per row (grid min(n, kMaxGrid), grid-stride over rows);
// weight and dlogits may be null. Targets are trusted to be in [0, c) or ignore_index (a
// target outside gives a NaN row, never an out-of-bounds read).
cudaError_t cross_entropy(DType dtype, const lepton::CrossEntropyDesc& d, const void* logits,
                          const int64_t* target, const void* weight, void* losses, void* dlogits,
                          cudaStream_t stream);
constexpr int kCeThreads = 256;  // LK_CE_THREADS in kernels/loss.cuh
// Whole warps, enough to cover a row of c classes once, at most kCeThreads.
inline unsigned ce_block(int64_t c) {
  const int64_t t = (c + kWarp - 1) / kWarp * kWarp;
  return static_cast<unsigned>(t < kWarp ? kWarp : (t > kCeThreads ? kCeThreads : t));
}
inline unsigned ce_grid(int64_t n) {
  return static_cast<unsigned>(n < 1 ? 1 : (n > kMaxGrid ? kMaxGrid : n));
}

}  // namespace lepton_cuda
