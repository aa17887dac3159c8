// cpu/norm.cpp -- the batch-normalization passes of lepton/norm.h. Each pass is a
// loop over channels (split over threads) of loops over the batch and the plane,
// whose inner loop is contiguous (the compiler vectorizes it); per-channel sums
// accumulate in double, in an order fixed by the build (the inner sums are SIMD
// reductions: the lanes are added in a fixed pattern), so results do not depend on the
// thread count or the run.
#include <omp.h>

#include <cstdint>

#include "cpu/internal.h"
#include "lepton/norm.h"

namespace lepton {
namespace {

Status check(const BatchNormDesc& d) {
  if (d.n < 0 || d.c < 0 || d.s < 0) return Status::Invalid("batch_norm: n, c and s must be non-negative");
  int64_t count = 0;
  if (__builtin_mul_overflow(d.n, d.c, &count) || __builtin_mul_overflow(count, d.s, &count))
    return Status::Invalid("batch_norm: n*c*s overflows int64");
  return Status::Ok();
}

// f(c) for every channel, split over threads when the work is large enough.
template <class F>
void for_channels(const BatchNormDesc& d, F f) {
  const int nt = detail::threads_for(d.n * d.c * d.s);
  if (nt <= 1 || d.c <= 1) {
    for (int64_t c = 0; c < d.c; ++c) f(c);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t c = 0; c < d.c; ++c) f(c);
}

// The gradient the ReLU lets through: 0 where the forward output is <= 0 (NaN passes).
template <class T>
inline T masked(const T* g, const T* y, int64_t i) {
  return (y && y[i] <= T(0)) ? T(0) : g[i];
}

template <class T>
Status stats_impl(const BatchNormDesc& d, const T* x, T* mean, T* var) {
  Status st = check(d);
  if (!st.ok()) return st;
  if (d.n * d.s == 0) return Status::Invalid("batch_norm: statistics need at least one value per channel");
  const double count = static_cast<double>(d.n * d.s);
  for_channels(d, [&](int64_t c) {
    double sum = 0.0;
    for (int64_t n = 0; n < d.n; ++n) {
      const T* row = x + (n * d.c + c) * d.s;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < d.s; ++i) sum += row[i];
    }
    const double m = sum / count;
    double sq = 0.0;
    for (int64_t n = 0; n < d.n; ++n) {
      const T* row = x + (n * d.c + c) * d.s;
#pragma omp simd reduction(+ : sq)
      for (int64_t i = 0; i < d.s; ++i) {
        const double v = row[i] - m;
        sq += v * v;
      }
    }
    mean[c] = static_cast<T>(m);
    var[c] = static_cast<T>(sq / count);
  });
  return Status::Ok();
}

template <class T>
Status apply_impl(const BatchNormDesc& d, const T* x, const T* scale, const T* shift, bool relu, T* y) {
  Status st = check(d);
  if (!st.ok()) return st;
  for_channels(d, [&](int64_t c) {
    const T a = scale[c], b = shift[c];
    for (int64_t n = 0; n < d.n; ++n) {
      const T* in = x + (n * d.c + c) * d.s;
      T* out = y + (n * d.c + c) * d.s;
      if (relu) {
        for (int64_t i = 0; i < d.s; ++i) {
          const T v = in[i] * a + b;
          out[i] = v < T(0) ? T(0) : v;  // NaN kept
        }
      } else {
        for (int64_t i = 0; i < d.s; ++i) out[i] = in[i] * a + b;
      }
    }
  });
  return Status::Ok();
}

template <class T>
Status reduce_impl(const BatchNormDesc& d, const T* g, const T* x, const T* mean, const T* y, T* sum_g, T* sum_gx) {
  Status st = check(d);
  if (!st.ok()) return st;
  for_channels(d, [&](int64_t c) {
    double sg = 0.0, sgx = 0.0;
    const double m = mean[c];
    for (int64_t n = 0; n < d.n; ++n) {
      const int64_t at = (n * d.c + c) * d.s;
      if (y == nullptr) {  // no mask: a loop the compiler vectorizes without the test
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t i = 0; i < d.s; ++i) {
          const double gv = g[at + i];
          sg += gv;
          sgx += gv * (x[at + i] - m);
        }
        continue;
      }
#pragma omp simd reduction(+ : sg, sgx)
      for (int64_t i = 0; i < d.s; ++i) {
        const double gv = masked(g, y, at + i);
        sg += gv;
        sgx += gv * (x[at + i] - m);
      }
    }
    sum_g[c] = static_cast<T>(sg);
    sum_gx[c] = static_cast<T>(sgx);
  });
  return Status::Ok();
}

template <class T>
Status backward_apply_impl(const BatchNormDesc& d, const T* g, const T* x, const T* mean, const T* y, const T* k1,
                           const T* k2, const T* k3, T* gx) {
  Status st = check(d);
  if (!st.ok()) return st;
  for_channels(d, [&](int64_t c) {
    const T a = k1[c], b = k2[c], e = k3[c], m = mean[c];
    for (int64_t n = 0; n < d.n; ++n) {
      const int64_t at = (n * d.c + c) * d.s;
      if (y == nullptr)
        for (int64_t i = 0; i < d.s; ++i) gx[at + i] = a * g[at + i] + b * (x[at + i] - m) + e;
      else
        for (int64_t i = 0; i < d.s; ++i) gx[at + i] = a * masked(g, y, at + i) + b * (x[at + i] - m) + e;
    }
  });
  return Status::Ok();
}

}  // namespace

Status batch_norm_stats(const BatchNormDesc& d, const float* x, float* mean, float* var) {
  return stats_impl(d, x, mean, var);
}
Status batch_norm_stats(const BatchNormDesc& d, const double* x, double* mean, double* var) {
  return stats_impl(d, x, mean, var);
}
Status batch_norm_apply(const BatchNormDesc& d, const float* x, const float* scale, const float* shift, bool relu,
                        float* y) {
  return apply_impl(d, x, scale, shift, relu, y);
}
Status batch_norm_apply(const BatchNormDesc& d, const double* x, const double* scale, const double* shift,
                        bool relu, double* y) {
  return apply_impl(d, x, scale, shift, relu, y);
}
Status batch_norm_backward_reduce(const BatchNormDesc& d, const float* g, const float* x, const float* mean,
                                  const float* y, float* sum_g, float* sum_gx) {
  return reduce_impl(d, g, x, mean, y, sum_g, sum_gx);
}
Status batch_norm_backward_reduce(const BatchNormDesc& d, const double* g, const double* x, const double* mean,
                                  const double* y, double* sum_g, double* sum_gx) {
  return reduce_impl(d, g, x, mean, y, sum_g, sum_gx);
}
Status batch_norm_backward_apply(const BatchNormDesc& d, const float* g, const float* x, const float* mean,
                                 const float* y, const float* k1, const float* k2, const float* k3, float* grad_x) {
  return backward_apply_impl(d, g, x, mean, y, k1, k2, k3, grad_x);
}
Status batch_norm_backward_apply(const BatchNormDesc& d, const double* g, const double* x, const double* mean,
                                 const double* y, const double* k1, const double* k2, const double* k3,
                                 double* grad_x) {
  return backward_apply_impl(d, g, x, mean, y, k1, k2, k3, grad_x);
}

}  // namespace lepton
