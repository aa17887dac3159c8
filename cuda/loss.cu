// cuda/loss.cu -- launcher for the fused cross-entropy kernel of cuda/kernels/loss.cuh
// (the same source CuPy compiles with NVRTC): one block of ce_block(c) threads per row.
// Layout: logits / dlogits (n, c) row-major, target int64 (n,).
#include "launch.h"
#include "kernels/loss.cuh"

namespace lepton_cuda {

cudaError_t cross_entropy(DType dtype, const lepton::CrossEntropyDesc& d, const void* logits,
                          const int64_t* target, const void* weight, void* losses, void* dlogits,
                          cudaStream_t stream) {
  if (d.n <= 0) return cudaSuccess;
  const unsigned grid = ce_grid(d.n), block = ce_block(d.c);
  const auto* t = reinterpret_cast<const long long*>(target);
  if (dtype == DType::f32)
    lk_cross_entropy_f32<<<grid, block, 0, stream>>>(
        static_cast<const float*>(logits), t, static_cast<const float*>(weight), static_cast<float*>(losses),
        static_cast<float*>(dlogits), d.n, d.c, d.ignore_index, d.label_smoothing);
  else
    lk_cross_entropy_f64<<<grid, block, 0, stream>>>(
        static_cast<const double*>(logits), t, static_cast<const double*>(weight), static_cast<double*>(losses),
        static_cast<double*>(dlogits), d.n, d.c, d.ignore_index, d.label_smoothing);
  return cudaGetLastError();
}

}  // namespace lepton_cuda
