// cuda/kernels/optim.cuh -- fused optimizer updates, in place: torch.optim.SGD and
// torch.optim.Adam / AdamW, one tensor per launch (the host loops over the list).
//
// Device code only, with no #include at all: nvcc (through cuda/optim.cu) and CuPy's
// NVRTC (lepton_kernels.cupy_backend) compile this same text. Semantics are those of
// csrc/lepton/optim.h; every element is read and written once, in the tensor's dtype.
// The host computes the per-step scalars in double and passes them rounded to T:
// damp_c = 1 - dampening; beta1_c = 1 - beta1, beta2_c = 1 - beta2, decay = 1 - lr*wd,
// step_size = lr / (1 - beta1^step), bias2_sqrt = sqrt(1 - beta2^step); sign = -1 to maximize.
//
// Kernels (extern "C"; SFX = f32 | f64), grid-stride loops correct for any launch shape:
//   lk_sgd_step_SFX(p, g, buf, n, lr, momentum, damp_c, wd, sign, flags)
//       flags: LK_SGD_MOMENTUM | LK_SGD_NESTEROV | LK_SGD_FIRST | LK_SGD_WD; buf unused (may be
//       null) without LK_SGD_MOMENTUM
//   lk_adam_step_SFX(p, g, m, v, vmax, n, beta1_c, beta2, beta2_c, eps, wd, decay, step_size,
//                    bias2_sqrt, sign, flags)
//       flags: LK_ADAM_WD | LK_ADAM_DECOUPLED | LK_ADAM_AMSGRAD; vmax unused without AMSGRAD
#ifndef LEPTON_CUDA_KERNELS_OPTIM_CUH
#define LEPTON_CUDA_KERNELS_OPTIM_CUH

#define LK_SGD_MOMENTUM 1
#define LK_SGD_NESTEROV 2
#define LK_SGD_FIRST 4
#define LK_SGD_WD 8
#define LK_ADAM_WD 1
#define LK_ADAM_DECOUPLED 2
#define LK_ADAM_AMSGRAD 4

namespace lk_opt {

__device__ __forceinline__ double sqrt_t(double x) { return sqrt(x); }
__device__ __forceinline__ float sqrt_t(float x) { return sqrtf(x); }

// The flags are the same in every thread: the branches never diverge.
template <typename T>
__device__ void sgd(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, long long n, T lr,
                    T momentum, T damp_c, T wd, T sign, int flags) {
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const T pi = p[i];
    T d = sign * g[i];
    if (flags & LK_SGD_WD) d += wd * pi;
    if (flags & LK_SGD_MOMENTUM) {
      const T b = (flags & LK_SGD_FIRST) ? d : momentum * buf[i] + damp_c * d;
      buf[i] = b;
      d = (flags & LK_SGD_NESTEROV) ? d + momentum * b : b;
    }
    p[i] = pi - lr * d;
  }
}

template <typename T>
__device__ void adam(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                     T* __restrict__ vmax, long long n, T beta1_c, T beta2, T beta2_c, T eps, T wd, T decay,
                     T step_size, T bias2_sqrt, T sign, int flags) {
  const long long step = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    T grad = sign * g[i];
    T param = p[i];
    if (flags & LK_ADAM_WD) {
      if (flags & LK_ADAM_DECOUPLED)
        param *= decay;
      else
        grad += wd * param;
    }
    const T mo = m[i];
    const T mi = mo + beta1_c * (grad - mo);
    T vi = beta2 * v[i] + beta2_c * grad * grad;
    m[i] = mi;
    v[i] = vi;
    if (flags & LK_ADAM_AMSGRAD) {
      const T old = vmax[i];
      vi = (old > vi || old != old) ? old : vi;  // torch.maximum: NaN wins
      vmax[i] = vi;
    }
    p[i] = param - step_size * (mi / (sqrt_t(vi) / bias2_sqrt + eps));
  }
}

}  // namespace lk_opt

#define LK_OPT_DEFINE(SFX, T)                                                                        \
  extern "C" __global__ void lk_sgd_step_##SFX(T* p, const T* g, T* buf, long long n, T lr,          \
                                               T momentum, T damp_c, T wd, T sign, int flags) {      \
    lk_opt::sgd<T>(p, g, buf, n, lr, momentum, damp_c, wd, sign, flags);                             \
  }                                                                                                  \
  extern "C" __global__ void lk_adam_step_##SFX(T* p, const T* g, T* m, T* v, T* vmax, long long n,  \
                                                T beta1_c, T beta2, T beta2_c, T eps, T wd, T decay, \
                                                T step_size, T bias2_sqrt, T sign, int flags) {      \
    lk_opt::adam<T>(p, g, m, v, vmax, n, beta1_c, beta2, beta2_c, eps, wd, decay, step_size,         \
                    bias2_sqrt, sign, flags);                                                        \
  }

LK_OPT_DEFINE(f32, float)
LK_OPT_DEFINE(f64, double)

#undef LK_OPT_DEFINE

#endif  // LEPTON_CUDA_KERNELS_OPTIM_CUH
