// cpu/elementwise.cpp -- ReLU and fused bias+ReLU (forward/backward), the
// dispatchers: argument checks, OpenMP partitioning, and the choice between the
// AVX-512 / AVX2 float32 kernels and the generic templates (float64 always,
// float32 on ISA "generic"). Layout: bias_relu views x as (n, c, s).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/internal.h"
#include "lepton/elementwise.h"

namespace lepton {
namespace {

using detail::threads_for;

constexpr int64_t kAlign = 16;        // chunk boundaries in elements (one cache line of floats)
constexpr int64_t kMinPlane = 16;     // planes shorter than this use an expanded bias row
constexpr int64_t kBiasPeriod = 4096;  // minimum length of the expanded bias row
constexpr int64_t kSumBlock = 32768;  // grad_bias partial-sum block (independent of threads)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls fn(begin, end) over [0, count) in one chunk per thread.
template <class F>
void parallel_ranges(int64_t count, F fn) {
  const int nt = threads_for(count);
  if (nt <= 1) {
    fn(int64_t(0), count);
    return;
  }
  const int64_t chunk = ceil_div(ceil_div(count, nt), kAlign) * kAlign;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int t = 0; t < nt; ++t) {
    int64_t b = std::min(count, t * chunk), e = std::min(count, b + chunk);
    if (b < e) fn(b, e);
  }
}

// ---- generic scalar kernels (the compiler vectorizes them) ----------------
template <class T>
void relu_range(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];  // keeps -0 and NaN, as torch
}
template <class T>
void relu_backward_range(const T* g, const T* x, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] <= T(0) ? T(0) : g[i];
}
template <class T>
void bias_relu_range(const T* x, T b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i] + b;
    y[i] = v < T(0) ? T(0) : v;
  }
}
template <class T>
void bias_relu_vec_range(const T* x, const T* b, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i] + b[i];
    y[i] = v < T(0) ? T(0) : v;
  }
}
template <class T>
double bias_relu_backward_range(const T* g, const T* y, T* gx, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    T v = y[i] <= T(0) ? T(0) : g[i];
    gx[i] = v;
    s += static_cast<double>(v);
  }
  return s;
}

// ---- per-type kernel tables -------------------------------------------------
template <class T>
struct Kernels {
  void (*relu)(const T*, T*, int64_t, bool);
  void (*relu_backward)(const T*, const T*, T*, int64_t, bool);
  void (*bias_relu)(const T*, T, T*, int64_t, bool);
  void (*bias_relu_vec)(const T*, const T*, T*, int64_t, bool);
  double (*bias_relu_backward)(const T*, const T*, T*, int64_t);
};

template <class T>
Kernels<T> generic_kernels() {
  return {[](const T* x, T* y, int64_t n, bool) { relu_range(x, y, n); },
          [](const T* g, const T* x, T* o, int64_t n, bool) { relu_backward_range(g, x, o, n); },
          [](const T* x, T b, T* y, int64_t n, bool) { bias_relu_range(x, b, y, n); },
          [](const T* x, const T* b, T* y, int64_t n, bool) { bias_relu_vec_range(x, b, y, n); },
          [](const T* g, const T* y, T* gx, int64_t n) {
            return bias_relu_backward_range(g, y, gx, n);
          }};
}

template <class T>
Kernels<T> kernels_for_active_isa() {
  return generic_kernels<T>();
}
template <>
Kernels<float> kernels_for_active_isa<float>() {
  switch (active_isa()) {
    case Isa::avx512:
      return {detail::avx512::relu_f32, detail::avx512::relu_backward_f32,
              detail::avx512::bias_relu_f32, detail::avx512::bias_relu_vec_f32,
              detail::avx512::bias_relu_backward_f32};
    case Isa::avx2:
      return {detail::avx2::relu_f32, detail::avx2::relu_backward_f32,
              detail::avx2::bias_relu_f32, detail::avx2::bias_relu_vec_f32,
              detail::avx2::bias_relu_backward_f32};
    default:
      return generic_kernels<float>();
  }
}

Status check_count(int64_t count, const void* a, const void* b) {
  if (count < 0) return Status::Invalid("element count must be non-negative");
  if (count > 0 && (!a || !b)) return Status::Invalid("null data pointer");
  return Status::Ok();
}

Status check_desc(const BiasReluDesc& d, int64_t* total) {
  if (d.n < 0 || d.c < 0 || d.s < 0) return Status::Invalid("n, c and s must be non-negative");
  if (d.c > 0 && d.s > 0 && d.n > INT64_MAX / d.c / d.s)
    return Status::Invalid("n*c*s overflows int64");
  *total = d.n * d.c * d.s;
  return Status::Ok();
}

// ---- templates behind the public overloads --------------------------------
template <class T>
Status relu_impl(const T* x, T* y, int64_t count) {
  Status st = check_count(count, x, y);
  if (!st.ok() || count == 0) return st;
  const Kernels<T> k = kernels_for_active_isa<T>();
  const bool stream = x != y && detail::use_streaming(count * int64_t(sizeof(T)));
  parallel_ranges(count, [&](int64_t b, int64_t e) { k.relu(x + b, y + b, e - b, stream); });
  return Status::Ok();
}

template <class T>
Status relu_backward_impl(const T* g, const T* x, T* out, int64_t count) {
  Status st = check_count(count, g, x);
  if (st.ok()) st = check_count(count, out, out);
  if (!st.ok() || count == 0) return st;
  const Kernels<T> k = kernels_for_active_isa<T>();
  const bool stream =
      out != g && out != x && detail::use_streaming(count * int64_t(sizeof(T)));
  parallel_ranges(count, [&](int64_t b, int64_t e) {
    k.relu_backward(g + b, x + b, out + b, e - b, stream);
  });
  return Status::Ok();
}

template <class T>
Status bias_relu_impl(const BiasReluDesc& d, const T* x, const T* bias, T* y) {
  int64_t total = 0;
  Status st = check_desc(d, &total);
  if (st.ok()) st = check_count(total, x, y);
  if (st.ok() && total > 0 && !bias) st = Status::Invalid("null bias pointer");
  if (!st.ok() || total == 0) return st;
  const Kernels<T> k = kernels_for_active_isa<T>();
  const bool stream = x != y && detail::use_streaming(total * int64_t(sizeof(T)));
  const int64_t s = d.s, c = d.c;
  if (s >= kMinPlane) {
    // Each thread walks its flat range plane by plane with a scalar bias.
    parallel_ranges(total, [&](int64_t b, int64_t e) {
      while (b < e) {
        int64_t plane = b / s, len = std::min(e - b, (plane + 1) * s - b);
        k.bias_relu(x + b, bias[plane % c], y + b, len, stream);
        b += len;
      }
    });
    return Status::Ok();
  }
  // Short planes (e.g. 2-D (N, C) input): repeat the bias pattern into a row
  // of at least kBiasPeriod elements and apply it as a vector.
  const int64_t row = c * s;
  const int64_t period = row * std::max<int64_t>(1, kBiasPeriod / row);
  const T* pattern = bias;
  detail::AlignedBuffer<T> expanded;
  if (period != c || s != 1) {
    if (!expanded.allocate(static_cast<size_t>(period))) return Status::Internal("out of memory");
    T* p = expanded.get();
    for (int64_t i = 0; i < period; ++i) p[i] = bias[(i / s) % c];
    pattern = p;
  }
  parallel_ranges(total, [&](int64_t b, int64_t e) {
    while (b < e) {
      int64_t off = b % period, len = std::min(e - b, period - off);
      k.bias_relu_vec(x + b, pattern + off, y + b, len, stream);
      b += len;
    }
  });
  return Status::Ok();
}

// grad_bias with long planes: fixed blocks of kSumBlock elements give partial
// sums that are then added per channel in (n, block) order, so the result does
// not depend on the number of threads.
template <class T>
Status bias_grad_blocked(const BiasReluDesc& d, const Kernels<T>& k, const T* g, const T* y,
                         T* gx, T* gb) {
  const int64_t planes = d.n * d.c, s = d.s;
  const int64_t bpp = ceil_div(s, kSumBlock), units = planes * bpp;
  std::vector<double> partial;
  try {
    partial.resize(static_cast<size_t>(units));
  } catch (...) {
    return Status::Internal("out of memory");
  }
  double* part = partial.data();
  auto unit = [&](int64_t u) {
    int64_t plane = u / bpp, blk = u % bpp;
    int64_t b = plane * s + blk * kSumBlock, len = std::min(kSumBlock, s - blk * kSumBlock);
    part[u] = k.bias_relu_backward(g + b, y + b, gx + b, len);
  };
  const int nt = threads_for(planes * s);
  if (nt <= 1) {
    for (int64_t u = 0; u < units; ++u) unit(u);
  } else {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t u = 0; u < units; ++u) unit(u);
  }
  for (int64_t ch = 0; ch < d.c; ++ch) {
    double acc = 0;
    for (int64_t nn = 0; nn < d.n; ++nn)
      for (int64_t blk = 0; blk < bpp; ++blk) acc += part[(nn * d.c + ch) * bpp + blk];
    gb[ch] = static_cast<T>(acc);
  }
  return Status::Ok();
}

// grad_bias with short planes: threads own channel ranges and sum each channel
// in (n, s) order. `acc` holds c doubles, allocated by the caller (no
// allocation inside the parallel region).
template <class T>
void bias_grad_by_channel(const BiasReluDesc& d, const T* g, const T* y, T* gx, T* gb,
                          double* acc) {
  const int64_t c = d.c, s = d.s, row = c * s;
  auto channels = [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) acc[ch] = 0.0;
    for (int64_t nn = 0; nn < d.n; ++nn) {
      const int64_t base = nn * row;
      for (int64_t ch = c0; ch < c1; ++ch) {
        double a = 0;
        for (int64_t j = 0; j < s; ++j) {
          int64_t i = base + ch * s + j;
          T v = y[i] <= T(0) ? T(0) : g[i];
          gx[i] = v;
          a += static_cast<double>(v);
        }
        acc[ch] += a;
      }
    }
    for (int64_t ch = c0; ch < c1; ++ch) gb[ch] = static_cast<T>(acc[ch]);
  };
  const int nt = threads_for(d.n * row);
  if (nt <= 1 || c < 2) {
    channels(0, c);
    return;
  }
  const int64_t chunk = ceil_div(c, nt);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int t = 0; t < nt; ++t) {
    int64_t c0 = std::min(c, t * chunk), c1 = std::min(c, c0 + chunk);
    if (c0 < c1) channels(c0, c1);
  }
}

template <class T>
Status bias_relu_backward_impl(const BiasReluDesc& d, const T* g, const T* y, T* gx, T* gb) {
  int64_t total = 0;
  Status st = check_desc(d, &total);
  if (st.ok()) st = check_count(total, g, y);
  if (st.ok()) st = check_count(total, gx, gx);
  if (!st.ok()) return st;
  if (gb && total == 0) {
    for (int64_t ch = 0; ch < d.c; ++ch) gb[ch] = T(0);
    return Status::Ok();
  }
  if (total == 0) return Status::Ok();
  if (!gb) return relu_backward_impl(g, y, gx, total);
  if (d.s >= kMinPlane) return bias_grad_blocked(d, kernels_for_active_isa<T>(), g, y, gx, gb);
  detail::AlignedBuffer<double> acc;
  if (!acc.allocate(static_cast<size_t>(d.c))) return Status::Internal("out of memory");
  bias_grad_by_channel(d, g, y, gx, gb, acc.get());
  return Status::Ok();
}

}  // namespace

Status relu(const float* x, float* y, int64_t count) { return relu_impl(x, y, count); }
Status relu(const double* x, double* y, int64_t count) { return relu_impl(x, y, count); }

Status relu_backward(const float* g, const float* x, float* out, int64_t count) {
  return relu_backward_impl(g, x, out, count);
}
Status relu_backward(const double* g, const double* x, double* out, int64_t count) {
  return relu_backward_impl(g, x, out, count);
}

Status bias_relu(const BiasReluDesc& d, const float* x, const float* bias, float* y) {
  return bias_relu_impl(d, x, bias, y);
}
Status bias_relu(const BiasReluDesc& d, const double* x, const double* bias, double* y) {
  return bias_relu_impl(d, x, bias, y);
}

Status bias_relu_backward(const BiasReluDesc& d, const float* g, const float* y, float* gx,
                          float* gb) {
  return bias_relu_backward_impl(d, g, y, gx, gb);
}
Status bias_relu_backward(const BiasReluDesc& d, const double* g, const double* y, double* gx,
                          double* gb) {
  return bias_relu_backward_impl(d, g, y, gx, gb);
}

}  // namespace lepton
