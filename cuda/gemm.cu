// cuda/gemm.cu -- launchers for the tiled GEMM kernels of cuda/kernels/gemm.cuh (the
// same source CuPy compiles with NVRTC): matmul, linear forward/backward and the
// fixed-order bias-gradient reduction (also used by conv2d_backward). Row-major
// buffers; semantics of lepton/linear.h. Launch shapes: gemm_plan in launch.h.
#include "launch.h"
#include "kernels/gemm.cuh"

namespace lepton_cuda {
namespace {

// The kernel of one (op, dtype suffix, tile): lk_<op>_<sfx> large tile, lk_<op>_s_<sfx> small.
#define LK_PICK(op, sfx, small) ((small) ? lk_##op##_s_##sfx : lk_##op##_##sfx)

template <typename T>
const T* in(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* out(void* p) {
  return static_cast<T*>(p);
}

dim3 grid_of(const GemmPlan& p) { return dim3(p.gx, p.gy, p.gz); }

}  // namespace

cudaError_t matmul(DType dtype, const void* a, const void* b, void* c, int64_t m, int64_t k, int64_t n,
                   cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  const GemmPlan p = gemm_plan(dtype, m, n, 1);
  if (dtype == DType::f32)
    LK_PICK(matmul, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<float>(a), in<float>(b), out<float>(c), m, k, n);
  else
    LK_PICK(matmul, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<double>(a), in<double>(b), out<double>(c), m, k, n);
  return cudaGetLastError();
}

cudaError_t linear(DType dtype, const lepton::LinearDesc& d, const void* x, const void* w,
                   const void* bias, void* y, cudaStream_t stream) {
  if (d.m <= 0 || d.n <= 0) return cudaSuccess;
  const GemmPlan p = gemm_plan(dtype, d.m, d.n, 1);
  const int relu = d.relu ? 1 : 0;
  if (dtype == DType::f32)
    LK_PICK(linear, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<float>(x), in<float>(w), in<float>(bias), out<float>(y), d.m, d.k, d.n, relu);
  else
    LK_PICK(linear, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<double>(x), in<double>(w), in<double>(bias), out<double>(y), d.m, d.k, d.n, relu);
  return cudaGetLastError();
}

cudaError_t bias_grad(DType dtype, int64_t n, int64_t c, int64_t s, const void* grad_out, const void* y,
                      void* grad_b, cudaStream_t stream) {
  if (c <= 0) return cudaSuccess;
  const unsigned grid = bias_grad_grid(c, s);
  if (dtype == DType::f32)
    lk_bias_grad_f32<<<grid, kGemmThreads, 0, stream>>>(in<float>(grad_out), in<float>(y),
                                                        out<float>(grad_b), n, c, s);
  else
    lk_bias_grad_f64<<<grid, kGemmThreads, 0, stream>>>(in<double>(grad_out), in<double>(y),
                                                        out<double>(grad_b), n, c, s);
  return cudaGetLastError();
}

// grad_x (m, k) = g' @ w: GEMM (m, k, n); grad_w (n, k) = g'^T @ x: GEMM (n, k, m);
// grad_b = column sums of g'. Three independent kernels on one stream.
cudaError_t linear_backward(DType dtype, const lepton::LinearDesc& d, const void* grad_out, const void* x,
                            const void* w, const void* y, void* grad_x, void* grad_w, void* grad_b,
                            cudaStream_t stream) {
  if (grad_x != nullptr && d.m > 0 && d.k > 0) {
    const GemmPlan p = gemm_plan(dtype, d.m, d.k, 1);
    if (dtype == DType::f32)
      LK_PICK(linear_grad_x, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<float>(grad_out), in<float>(y), in<float>(w), out<float>(grad_x), d.m, d.k, d.n);
    else
      LK_PICK(linear_grad_x, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<double>(grad_out), in<double>(y), in<double>(w), out<double>(grad_x), d.m, d.k, d.n);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_w != nullptr && d.n > 0 && d.k > 0) {
    const GemmPlan p = gemm_plan(dtype, d.n, d.k, 1);
    if (dtype == DType::f32)
      LK_PICK(linear_grad_w, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<float>(grad_out), in<float>(y), in<float>(x), out<float>(grad_w), d.m, d.k, d.n);
    else
      LK_PICK(linear_grad_w, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<double>(grad_out), in<double>(y), in<double>(x), out<double>(grad_w), d.m, d.k, d.n);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_b != nullptr) return bias_grad(dtype, d.m, d.n, 1, grad_out, y, grad_b, stream);
  return cudaSuccess;
}

#undef LK_PICK

}  // namespace lepton_cuda
