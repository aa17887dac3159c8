// cuda/optim.cu -- launchers for the SGD / Adam kernels of cuda/kernels/optim.cuh (the
// same source CuPy compiles with NVRTC): the per-step scalars (Adam's bias corrections
// in double, as torch), then one grid-stride launch per non-empty tensor of the list.
#include <cmath>

#include "launch.h"
#include "kernels/optim.cuh"

namespace lepton_cuda {
namespace {

// Overloads pick the dtype's kernel.
void launch_sgd(unsigned grid, cudaStream_t s, float* p, const float* g, float* b, int64_t n, float lr, float mom,
                float damp_c, float wd, float sign, int flags) {
  lk_sgd_step_f32<<<grid, kBlock, 0, s>>>(p, g, b, n, lr, mom, damp_c, wd, sign, flags);
}
void launch_sgd(unsigned grid, cudaStream_t s, double* p, const double* g, double* b, int64_t n, double lr,
                double mom, double damp_c, double wd, double sign, int flags) {
  lk_sgd_step_f64<<<grid, kBlock, 0, s>>>(p, g, b, n, lr, mom, damp_c, wd, sign, flags);
}
template <typename T>
struct AdamScalars {
  T beta1_c, beta2, beta2_c, eps, wd, decay, step_size, bias2_sqrt, sign;
};
void launch_adam(unsigned grid, cudaStream_t s, float* p, const float* g, float* m, float* v, float* vmax,
                 int64_t n, const AdamScalars<float>& a, int flags) {
  lk_adam_step_f32<<<grid, kBlock, 0, s>>>(p, g, m, v, vmax, n, a.beta1_c, a.beta2, a.beta2_c, a.eps, a.wd,
                                           a.decay, a.step_size, a.bias2_sqrt, a.sign, flags);
}
void launch_adam(unsigned grid, cudaStream_t s, double* p, const double* g, double* m, double* v, double* vmax,
                 int64_t n, const AdamScalars<double>& a, int flags) {
  lk_adam_step_f64<<<grid, kBlock, 0, s>>>(p, g, m, v, vmax, n, a.beta1_c, a.beta2, a.beta2_c, a.eps, a.wd,
                                           a.decay, a.step_size, a.bias2_sqrt, a.sign, flags);
}

template <typename T>
cudaError_t sgd_all(const lepton::SgdParams& p, int64_t num, void* const* params, const void* const* grads,
                    void* const* bufs, const int64_t* counts, cudaStream_t stream) {
  const bool use_buf = p.momentum != 0;
  const int flags = (use_buf ? LK_SGD_MOMENTUM : 0) | (use_buf && p.nesterov ? LK_SGD_NESTEROV : 0) |
                    (p.first_step ? LK_SGD_FIRST : 0) | (p.weight_decay != 0 ? LK_SGD_WD : 0);
  const T lr = static_cast<T>(p.lr), mom = static_cast<T>(p.momentum);
  const T damp_c = static_cast<T>(1.0 - p.dampening), wd = static_cast<T>(p.weight_decay);
  const T sign = p.maximize ? T(-1) : T(1);
  for (int64_t i = 0; i < num; ++i) {
    if (counts[i] <= 0) continue;
    launch_sgd(grid_for(counts[i]), stream, static_cast<T*>(params[i]), static_cast<const T*>(grads[i]),
               use_buf ? static_cast<T*>(bufs[i]) : nullptr, counts[i], lr, mom, damp_c, wd, sign, flags);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t adam_all(const lepton::AdamParams& p, int64_t num, void* const* params, const void* const* grads,
                     void* const* exp_avgs, void* const* exp_avg_sqs, void* const* vmaxs, const int64_t* counts,
                     cudaStream_t stream) {
  const int flags = (p.weight_decay != 0 ? LK_ADAM_WD : 0) | (p.decoupled ? LK_ADAM_DECOUPLED : 0) |
                    (p.amsgrad ? LK_ADAM_AMSGRAD : 0);
  const double step = static_cast<double>(p.step);
  AdamScalars<T> a;
  a.beta1_c = static_cast<T>(1.0 - p.beta1);
  a.beta2 = static_cast<T>(p.beta2);
  a.beta2_c = static_cast<T>(1.0 - p.beta2);
  a.eps = static_cast<T>(p.eps);
  a.wd = static_cast<T>(p.weight_decay);
  a.decay = static_cast<T>(1.0 - p.lr * p.weight_decay);
  a.step_size = static_cast<T>(p.lr / (1.0 - std::pow(p.beta1, step)));
  a.bias2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(p.beta2, step)));
  a.sign = p.maximize ? T(-1) : T(1);
  for (int64_t i = 0; i < num; ++i) {
    if (counts[i] <= 0) continue;
    launch_adam(grid_for(counts[i]), stream, static_cast<T*>(params[i]), static_cast<const T*>(grads[i]),
                static_cast<T*>(exp_avgs[i]), static_cast<T*>(exp_avg_sqs[i]),
                p.amsgrad ? static_cast<T*>(vmaxs[i]) : nullptr, counts[i], a, flags);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t sgd_step(DType dtype, const lepton::SgdParams& p, int64_t num, void* const* params,
                     const void* const* grads, void* const* bufs, const int64_t* counts, cudaStream_t stream) {
  return dtype == DType::f32 ? sgd_all<float>(p, num, params, grads, bufs, counts, stream)
                             : sgd_all<double>(p, num, params, grads, bufs, counts, stream);
}

cudaError_t adam_step(DType dtype, const lepton::AdamParams& p, int64_t num, void* const* params,
                      const void* const* grads, void* const* exp_avgs, void* const* exp_avg_sqs,
                      void* const* max_exp_avg_sqs, const int64_t* counts, cudaStream_t stream) {
  return dtype == DType::f32
             ? adam_all<float>(p, num, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, counts, stream)
             : adam_all<double>(p, num, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, counts, stream);
}

}  // namespace lepton_cuda
