// cpu/optim_internal.h -- private interface between the optimizer driver
// (optim.cpp: checks, chunking across tensors, OpenMP) and the per-ISA element
// loops (optim_avx512.cpp, optim_avx2.cpp, and the generic copy in optim.cpp).
// The loop bodies below are plain C++ that each translation unit compiles with
// its own ISA flags (the compiler vectorizes them); the flags that change the
// formula are template parameters, so every inner loop is branch-free. They sit
// in an anonymous namespace: each ISA's copy stays private to its own file.
// Semantics: csrc/lepton/optim.h; math in the tensor's dtype T.
#ifndef LEPTON_CPU_OPTIM_INTERNAL_H
#define LEPTON_CPU_OPTIM_INTERNAL_H
#include <cmath>
#include <cstdint>

namespace lepton {
namespace detail {

enum class SgdMode : int { plain = 0, momentum = 1, nesterov = 2 };

// Per-call scalars in the tensor's dtype (bias corrections computed in double first).
template <class T>
struct SgdScalars {
  T lr, momentum, dampening_c /* 1 - dampening */, weight_decay, sign /* -1 when maximize */;
  SgdMode mode;
  bool first_step, has_wd;
};

template <class T>
struct AdamScalars {
  T beta1_c /* 1 - beta1 */, beta2, beta2_c /* 1 - beta2 */, eps, weight_decay;
  T decay_factor /* 1 - lr * wd */, step_size, bias2_sqrt, sign;
  bool has_wd, decoupled, amsgrad;
};

#define LEPTON_DECLARE_OPTIM_KERNELS                                                                \
  void sgd_range_f32(const SgdScalars<float>& s, float* p, const float* g, float* buf, int64_t n);  \
  void sgd_range_f64(const SgdScalars<double>& s, double* p, const double* g, double* buf,          \
                     int64_t n);                                                                    \
  void adam_range_f32(const AdamScalars<float>& s, float* p, const float* g, float* m, float* v,    \
                      float* vmax, int64_t n);                                                      \
  void adam_range_f64(const AdamScalars<double>& s, double* p, const double* g, double* m,          \
                      double* v, double* vmax, int64_t n);

namespace generic {
LEPTON_DECLARE_OPTIM_KERNELS
}
namespace avx2 {
LEPTON_DECLARE_OPTIM_KERNELS
}
namespace avx512 {
LEPTON_DECLARE_OPTIM_KERNELS
}
#undef LEPTON_DECLARE_OPTIM_KERNELS

namespace {

// Element loops. __restrict__: callers guarantee that the updated arrays are
// disjoint from each other and from the gradient (checked by the binding).
template <class T, bool WD, SgdMode M, bool First>
void sgd_loop(const SgdScalars<T>& s, T* __restrict__ p, const T* __restrict__ g,
              T* __restrict__ buf, int64_t n) {
  const T lr = s.lr, mom = s.momentum, damp_c = s.dampening_c, wd = s.weight_decay, sign = s.sign;
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i];
    T d = sign * g[i];  // exact: x * 1 and x * -1 round nothing
    if (WD) d += wd * pi;
    if (M != SgdMode::plain) {
      const T b = First ? d : mom * buf[i] + damp_c * d;
      buf[i] = b;
      d = (M == SgdMode::nesterov) ? d + mom * b : b;
    }
    p[i] = pi - lr * d;
  }
}

template <class T, bool WD, SgdMode M>
void sgd_first(const SgdScalars<T>& s, T* p, const T* g, T* buf, int64_t n) {
  if (s.first_step)
    sgd_loop<T, WD, M, true>(s, p, g, buf, n);
  else
    sgd_loop<T, WD, M, false>(s, p, g, buf, n);
}

template <class T, bool WD>
void sgd_mode(const SgdScalars<T>& s, T* p, const T* g, T* buf, int64_t n) {
  switch (s.mode) {
    case SgdMode::plain: return sgd_loop<T, WD, SgdMode::plain, false>(s, p, g, buf, n);
    case SgdMode::momentum: return sgd_first<T, WD, SgdMode::momentum>(s, p, g, buf, n);
    case SgdMode::nesterov: return sgd_first<T, WD, SgdMode::nesterov>(s, p, g, buf, n);
  }
}

template <class T>
void sgd_range(const SgdScalars<T>& s, T* p, const T* g, T* buf, int64_t n) {
  if (s.has_wd)
    sgd_mode<T, true>(s, p, g, buf, n);
  else
    sgd_mode<T, false>(s, p, g, buf, n);
}

// WD: 0 none, 1 L2 (added to the gradient), 2 decoupled (AdamW).
template <class T, int WD, bool Ams>
void adam_loop(const AdamScalars<T>& s, T* __restrict__ p, const T* __restrict__ g,
               T* __restrict__ m, T* __restrict__ v, T* __restrict__ vmax, int64_t n) {
  const T b1c = s.beta1_c, b2 = s.beta2, b2c = s.beta2_c, eps = s.eps, wd = s.weight_decay;
  const T decay = s.decay_factor, step_size = s.step_size, b2s = s.bias2_sqrt, sign = s.sign;
  for (int64_t i = 0; i < n; ++i) {
    T grad = sign * g[i];
    T param = p[i];
    if (WD == 2) param *= decay;
    if (WD == 1) grad += wd * param;
    const T mi = m[i] + b1c * (grad - m[i]);
    T vi = b2 * v[i] + b2c * grad * grad;
    m[i] = mi;
    v[i] = vi;
    if (Ams) {
      const T old = vmax[i];
      vi = (old > vi || old != old) ? old : vi;  // torch.maximum: a NaN on either side wins
      vmax[i] = vi;
    }
    p[i] = param - step_size * (mi / (std::sqrt(vi) / b2s + eps));
  }
}

template <class T, int WD>
void adam_ams(const AdamScalars<T>& s, T* p, const T* g, T* m, T* v, T* vmax, int64_t n) {
  if (s.amsgrad)
    adam_loop<T, WD, true>(s, p, g, m, v, vmax, n);
  else
    adam_loop<T, WD, false>(s, p, g, m, v, vmax, n);
}

template <class T>
void adam_range(const AdamScalars<T>& s, T* p, const T* g, T* m, T* v, T* vmax, int64_t n) {
  if (!s.has_wd)
    adam_ams<T, 0>(s, p, g, m, v, vmax, n);
  else if (s.decoupled)
    adam_ams<T, 2>(s, p, g, m, v, vmax, n);
  else
    adam_ams<T, 1>(s, p, g, m, v, vmax, n);
}

}  // namespace
}  // namespace detail
}  // namespace lepton

// Defines the four entry points of one ISA namespace from the templates above.
#define LEPTON_DEFINE_OPTIM_KERNELS                                                                \
  void sgd_range_f32(const SgdScalars<float>& s, float* p, const float* g, float* buf, int64_t n) { \
    sgd_range<float>(s, p, g, buf, n);                                                              \
  }                                                                                                 \
  void sgd_range_f64(const SgdScalars<double>& s, double* p, const double* g, double* buf,          \
                     int64_t n) {                                                                   \
    sgd_range<double>(s, p, g, buf, n);                                                             \
  }                                                                                                 \
  void adam_range_f32(const AdamScalars<float>& s, float* p, const float* g, float* m, float* v,    \
                      float* vmax, int64_t n) {                                                     \
    adam_range<float>(s, p, g, m, v, vmax, n);                                                      \
  }                                                                                                 \
  void adam_range_f64(const AdamScalars<double>& s, double* p, const double* g, double* m,          \
                      double* v, double* vmax, int64_t n) {                                         \
    adam_range<double>(s, p, g, m, v, vmax, n);                                                     \
  }

#endif  // LEPTON_CPU_OPTIM_INTERNAL_H
