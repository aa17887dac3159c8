// cpu/activation.cpp -- the activations of lepton/activation.h: one loop per activation
// over a contiguous range (each thread its own range), its element function inlined.
#include <omp.h>

#include <cmath>
#include <cstdint>

#include "cpu/internal.h"
#include "lepton/activation.h"

namespace lepton {
namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;      // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kKappa = 0.044715;

template <class T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
inline T forward_one(Activation a, T x, T slope) {
  switch (a) {
    case Activation::relu6: return x != x ? x : (x < T(0) ? T(0) : (x > T(6) ? T(6) : x));
    case Activation::leaky_relu: return x > T(0) ? x : x * slope;
    case Activation::sigmoid: return sigmoid(x);
    case Activation::tanh: return std::tanh(x);
    case Activation::silu: return x * sigmoid(x);
    case Activation::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kSqrt1_2)));
    case Activation::gelu_tanh:
      return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kKappa) * x * x * x)));
    case Activation::hardswish:
      return x != x ? x : (x <= T(-3) ? T(0) : (x >= T(3) ? x : x * (x + T(3)) / T(6)));
  }
  return x;
}

template <class T>
inline T backward_one(Activation a, T g, T s, T slope) {
  switch (a) {
    case Activation::relu6: return (s <= T(0) || s >= T(6)) ? T(0) : g;
    case Activation::leaky_relu: return s > T(0) ? g : g * slope;
    case Activation::sigmoid: return g * s * (T(1) - s);
    case Activation::tanh: return g * (T(1) - s * s);
    case Activation::silu: {
      const T sg = sigmoid(s);
      return g * sg * (T(1) + s * (T(1) - sg));
    }
    case Activation::gelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(s * T(kSqrt1_2)));
      const T pdf = std::exp(T(-0.5) * s * s) * T(kInvSqrt2Pi);
      return g * (cdf + s * pdf);
    }
    case Activation::gelu_tanh: {
      const T inner = T(kSqrt2OverPi) * (s + T(kKappa) * s * s * s);
      const T t = std::tanh(inner);
      const T right = T(1) + t;
      const T dright = (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * kKappa) * s * s);
      return g * (T(0.5) * right + T(0.5) * s * dright);
    }
    case Activation::hardswish: return s <= T(-3) ? T(0) : (s < T(3) ? g * (s / T(3) + T(0.5)) : g);
  }
  return g;
}

// f(begin, end) over [0, n), split into one contiguous range per thread.
template <class F>
void for_ranges(int64_t n, F f) {
  const int nt = detail::threads_for(n);
  if (nt <= 1) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
    f(n * t / team, n * (t + 1) / team);
  }
}

Status check(int64_t n, const void* a, const void* b) {
  if (n < 0) return Status::Invalid("activation: count must be non-negative");
  if (n > 0 && (!a || !b)) return Status::Invalid("activation: null data pointer");
  return Status::Ok();
}

template <class T>
Status forward_impl(Activation a, const T* x, T* y, int64_t n, double param) {
  Status st = check(n, x, y);
  if (!st.ok()) return st;
  const T slope = static_cast<T>(param);
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = forward_one(a, x[i], slope);
  });
  return Status::Ok();
}

template <class T>
Status backward_impl(Activation a, const T* g, const T* s, T* out, int64_t n, double param) {
  Status st = check(n, g, out);
  if (!st.ok()) return st;
  if (n > 0 && !s) return Status::Invalid("activation_backward: null data pointer");
  const T slope = static_cast<T>(param);
  for_ranges(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = backward_one(a, g[i], s[i], slope);
  });
  return Status::Ok();
}

}  // namespace

Status activation(Activation a, const float* x, float* y, int64_t n, double p) { return forward_impl(a, x, y, n, p); }
Status activation(Activation a, const double* x, double* y, int64_t n, double p) { return forward_impl(a, x, y, n, p); }
Status activation_backward(Activation a, const float* g, const float* s, float* out, int64_t n, double p) {
  return backward_impl(a, g, s, out, n, p);
}
Status activation_backward(Activation a, const double* g, const double* s, double* out, int64_t n, double p) {
  return backward_impl(a, g, s, out, n, p);
}

}  // namespace lepton
