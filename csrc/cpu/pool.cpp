// cpu/pool.cpp -- 2-D max/average pooling, NCHW, forward and backward: the
// OpenMP partition (over planes, or plane x row-block when there are few
// planes), and the generic templates used for float64, for float32 on ISA
// "generic", and for the max-pool-with-indices path. The AVX-512/AVX2 float32
// max-pool rows live in pool_avx512.cpp / pool_avx2.cpp. Semantics (tap order,
// NaN, padding, avg divisors) are specified in pool.h; the descriptor checks
// (validate*) live in geometry/pool.cpp, shared with the CUDA module.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/internal.h"
#include "lepton/pool.h"

namespace lepton {
namespace {

using detail::PoolPlan;
using detail::tap_range;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class T>
inline T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;  // keeps a NaN a; takes a NaN b
}

// The padded scratch row is used only while it stays within this multiple of
// the input and output rows (plus a constant for small planes); beyond it the
// plan clips, so memory follows the data, never the stride or padding.
constexpr int64_t kPaddedRowFactor = 32, kPaddedRowSlack = 4096;

// padded_row: the caller can use the padded layout (the max-pool rows); the
// average passes always clip.
PoolPlan make_plan(const Pool2dDesc& d, bool padded_row) {
  PoolPlan p{};
  p.h = d.h, p.w = d.w, p.out_h = d.out_h, p.out_w = d.out_w;
  p.kh = d.kernel_h, p.kw = d.kernel_w, p.sh = d.stride_h, p.sw = d.stride_w;
  p.pt = d.pad_top, p.pl = d.pad_left, p.dh = d.dilation_h, p.dw = d.dilation_w;
  // Room for the horizontal SIMD passes, which read whole vectors past out_w.
  // validate() keeps every factor below 2^31; __int128 keeps the sum exact.
  const __int128 need = __int128(p.sw) * (ceil_div(p.out_w, 16) * 16) + __int128(p.kw - 1) * p.dw + 16;
  const __int128 padded = (std::max<__int128>(p.pl + p.w, need) + 15) / 16 * 16 + 16;
  p.clipped = !padded_row || padded > kPaddedRowFactor * (p.w + p.out_w) + kPaddedRowSlack;
  p.tmp_len = p.clipped ? ceil_div(p.w, 16) * 16 + 16 : static_cast<int64_t>(padded);
  return p;
}

// Per output column: its taps [lo, hi) that fall inside the input row.
struct ColumnTaps {
  std::vector<int64_t> lo, hi;
  explicit ColumnTaps(const PoolPlan& p)
      : lo(static_cast<size_t>(p.out_w)), hi(static_cast<size_t>(p.out_w)) {
    for (int64_t o = 0; o < p.out_w; ++o) tap_range(o * p.sw - p.pl, p.kw, p.dw, p.w, &lo[o], &hi[o]);
  }
};

// Runs rows(plane, oh0, oh1, tmp) over every plane and output row, split into
// plane x row-block units so that even one plane keeps all threads busy. Each
// thread gets a tmp row of plan.tmp_len elements pre-filled with `fill`.
template <class T, class Rows>
Status for_rows(const PoolPlan& p, int64_t planes, T fill, Rows rows) {
  const int64_t work = planes * (p.h * p.w + p.out_h * p.out_w);
  const int nt = detail::threads_for(work);
  int64_t blocks = 1;
  if (planes < 4 * nt) blocks = std::max<int64_t>(1, std::min(p.out_h, ceil_div(4 * nt, planes)));
  const int64_t per = std::max<int64_t>(1, ceil_div(p.out_h, blocks));
  blocks = std::max<int64_t>(1, ceil_div(p.out_h, per));
  const int64_t units = planes * blocks;
  detail::AlignedBuffer<T> buf;
  if (!buf.allocate(static_cast<size_t>(nt * p.tmp_len))) return Status::Internal("out of memory");
  auto unit = [&](int64_t u, T* tmp) {
    int64_t plane = u / blocks, b = u % blocks;
    rows(plane, b * per, std::min(p.out_h, (b + 1) * per), tmp);
  };
  if (nt <= 1) {
    std::fill(buf.get(), buf.get() + p.tmp_len, fill);
    for (int64_t u = 0; u < units; ++u) unit(u, buf.get());
    return Status::Ok();
  }
#pragma omp parallel num_threads(nt)
  {
    T* tmp = buf.get() + omp_get_thread_num() * p.tmp_len;
    std::fill(tmp, tmp + p.tmp_len, fill);
#pragma omp for schedule(static)
    for (int64_t u = 0; u < units; ++u) unit(u, tmp);
  }
  return Status::Ok();
}

// Calls fn(plane) for every plane in parallel (backward passes own a plane).
template <class F>
void for_planes(int64_t planes, int64_t work, F fn) {
  const int nt = detail::threads_for(work);
  if (nt <= 1) {
    for (int64_t q = 0; q < planes; ++q) fn(q);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t q = 0; q < planes; ++q) fn(q);
}

// ---- max pooling ------------------------------------------------------------

// Generic separable max over rows [oh0, oh1) of one plane (no indices).
template <class T>
void max_rows_generic(const PoolPlan& p, const T* x, T* y, int64_t oh0, int64_t oh1, T* tmp) {
  const T ninf = detail::pool_lowest<T>();
  T* t = tmp + p.pl;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    T* yr = y + oh * p.out_w;
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, p.dh, p.h, &lo, &hi);
    if (lo == hi || p.w == 0) {
      std::fill(yr, yr + p.out_w, ninf);
      continue;
    }
    const T* r0 = x + (ih0 + lo * p.dh) * p.w;
    std::copy(r0, r0 + p.w, t);
    for (int64_t k = 1; k < hi - lo; ++k) {
      const T* r = r0 + k * p.dh * p.w;
      for (int64_t c = 0; c < p.w; ++c) t[c] = nan_max(t[c], r[c]);
    }
    for (int64_t o = 0; o < p.out_w; ++o) {
      const T* b = tmp + o * p.sw;
      T m = b[0];
      for (int64_t j = 1; j < p.kw; ++j) m = nan_max(m, b[j * p.dw]);
      yr[o] = m;
    }
  }
}

// Max with indices, scalar: every output through max_with_index().
// ind may be null (the clipped plan without indices): each index then goes to a
// throw-away slot.
template <class T>
void max_rows_indices(const PoolPlan& p, const int64_t* col_lo, const int64_t* col_hi,
                      const T* x, T* y, int64_t* ind, int64_t oh0, int64_t oh1) {
  int64_t unused;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, p.dh, p.h, &lo, &hi);
    for (int64_t o = 0; o < p.out_w; ++o)
      detail::max_with_index(p, x, ih0, lo, hi, o, col_lo[o], col_hi[o], y + oh * p.out_w + o,
                             ind ? ind + oh * p.out_w + o : &unused);
  }
}

inline void flat_max_pool_2x2(const uint8_t* x, uint8_t* y, int64_t pairs, int64_t w) {
  detail::avx512::max_pool_2x2_u8(x, y, pairs, w);
}
inline void flat_max_pool_2x2(const int8_t* x, int8_t* y, int64_t pairs, int64_t w) {
  detail::avx512::max_pool_2x2_s8(x, y, pairs, w);
}
inline void flat_max_pool_2x2(const float* x, float* y, int64_t pairs, int64_t w) {
  detail::avx512::max_pool_2x2_f32(x, y, pairs, w);
}
inline void flat_max_pool_2x2(const double*, double*, int64_t, int64_t) {}  // never chosen

template <class T>
Status max_pool_impl(const Pool2dDesc& d, const T* x, T* y, int64_t* ind) {
  Status st = validate(d);
  if (!st.ok()) return st;
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.out_h * d.out_w;
  if (planes == 0 || out_plane == 0) return Status::Ok();
  if (!y || (in_plane > 0 && !x)) return Status::Invalid("null data pointer");
  const PoolPlan p = make_plan(d, true);
  const T ninf = detail::pool_lowest<T>();
  if (ind || p.clipped) {
    const ColumnTaps cols(p);
    const int64_t *clo = cols.lo.data(), *chi = cols.hi.data();
    using IdxFn = void (*)(const PoolPlan&, const int64_t*, const int64_t*, const T*, T*,
                           int64_t*, int64_t, int64_t);
    IdxFn rows = max_rows_indices<T>;
    if constexpr (std::is_same<T, float>::value) {
      // The SIMD variant keeps tap offsets in int32 lanes.
      const bool small = __int128(p.kh) * p.dh * (p.w + 1) + __int128(p.kw) * p.dw < (int64_t(1) << 31);
      if (ind && active_isa() == Isa::avx512 && small && (p.sw == 1 || p.sw == 2))
        rows = detail::avx512::max_pool_rows_idx_f32;
    }
    return for_rows<T>(p, planes, ninf, [&](int64_t q, int64_t oh0, int64_t oh1, T*) {
      rows(p, clo, chi, x + q * in_plane, y + q * out_plane, ind ? ind + q * out_plane : nullptr,
           oh0, oh1);
    });
  }
  // The common 2x2 / 2 pooling of even planes (no indices) as one flat pass over row pairs.
  constexpr bool flat_type = sizeof(T) == 1 || std::is_same<T, float>::value;
  const bool plain_2x2 = d.kernel_h == 2 && d.kernel_w == 2 && d.stride_h == 2 && d.stride_w == 2 &&
                         d.dilation_h == 1 && d.dilation_w == 1 && d.pad_top == 0 && d.pad_left == 0 &&
                         d.h % 2 == 0 && d.w % 2 == 0 && d.out_h == d.h / 2 && d.out_w == d.w / 2;
  if (flat_type && plain_2x2 && active_isa() == Isa::avx512) {
    const int64_t pairs = planes * d.out_h;
    const int nt = detail::threads_for(planes * in_plane);
#pragma omp parallel num_threads(nt)
    {
      const int id = omp_get_thread_num(), team = omp_get_num_threads();
      const int64_t r0 = pairs * id / team, r1 = pairs * (id + 1) / team;
      flat_max_pool_2x2(x + r0 * 2 * d.w, y + r0 * d.out_w, r1 - r0, d.w);
    }
    return Status::Ok();
  }
  using RowsFn = void (*)(const PoolPlan&, const T*, T*, int64_t, int64_t, T*);
  RowsFn rows = max_rows_generic<T>;
  if constexpr (std::is_same<T, float>::value) {
    if (active_isa() == Isa::avx512) rows = detail::avx512::max_pool_rows_f32;
    if (active_isa() == Isa::avx2) rows = detail::avx2::max_pool_rows_f32;
  }
  return for_rows<T>(p, planes, ninf, [&](int64_t q, int64_t oh0, int64_t oh1, T* tmp) {
    rows(p, x + q * in_plane, y + q * out_plane, oh0, oh1, tmp);
  });
}

template <class T>
Status max_pool_backward_impl(const Pool2dDesc& d, const T* g, const int64_t* ind, T* gi) {
  Status st = validate_sizes(d);  // the scatter follows the indices; the window geometry is unused
  if (!st.ok()) return st;
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.out_h * d.out_w;
  if (planes == 0) return Status::Ok();
  if ((in_plane > 0 && !gi) || (out_plane > 0 && (!g || !ind)))
    return Status::Invalid("null data pointer");
  int bad = 0;
  auto plane = [&](int64_t q) {
    T* dst = gi + q * in_plane;
    std::fill(dst, dst + in_plane, T(0));
    const T* src = g + q * out_plane;
    const int64_t* idx = ind + q * out_plane;
    int local_bad = 0;
    for (int64_t k = 0; k < out_plane; ++k) {
      const int64_t at = idx[k];
      if (at >= 0 && at < in_plane)
        dst[at] += src[k];
      else if (at != -1)
        local_bad = 1;
    }
    if (local_bad) {
#pragma omp atomic write
      bad = 1;
    }
  };
  for_planes(planes, planes * (in_plane + 2 * out_plane), plane);
  if (bad)
    return Status::Invalid("indices must lie in [-1, h*w) = [-1, " + std::to_string(in_plane) +
                           ")");
  return Status::Ok();
}

// ---- average pooling --------------------------------------------------------

// Per output position along one axis: window size clipped to the padded
// input (pool) and the part inside the input (count).
void avg_axis(int64_t in, int64_t out, int64_t k, int64_t s, int64_t pa, int64_t pb,
              std::vector<int64_t>* pool, std::vector<int64_t>* count) {
  pool->resize(static_cast<size_t>(out));
  count->resize(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * s - pa, end = std::min(start + k, in + pb);
    (*pool)[o] = end - start;
    (*count)[o] = std::max<int64_t>(0, std::min(end, in) - std::max<int64_t>(start, 0));
  }
}

struct AvgDivisors {
  std::vector<int64_t> pool_h, count_h, pool_w, count_w;
  int64_t override_ = 0;
  bool include_pad = true;
  // 0 means "the window has no input tap (or no positive divisor): output 0".
  double at(int64_t oh, int64_t ow) const {
    if (count_h[oh] * count_w[ow] == 0) return 0;
    if (override_ > 0) return static_cast<double>(override_);
    int64_t v = include_pad ? pool_h[oh] * pool_w[ow] : count_h[oh] * count_w[ow];
    return v > 0 ? static_cast<double>(v) : 0.0;
  }
};

AvgDivisors make_divisors(const Pool2dDesc& d) {
  AvgDivisors dv;
  avg_axis(d.h, d.out_h, d.kernel_h, d.stride_h, d.pad_top, d.pad_bottom, &dv.pool_h, &dv.count_h);
  avg_axis(d.w, d.out_w, d.kernel_w, d.stride_w, d.pad_left, d.pad_right, &dv.pool_w, &dv.count_w);
  dv.override_ = d.divisor_override;
  dv.include_pad = d.count_include_pad;
  return dv;
}

// Separable: sum the valid kernel rows into the temp row (the input columns),
// then sum each output's columns inside the input and divide (padding adds 0).
template <class T>
void avg_rows(const PoolPlan& p, const AvgDivisors& dv, const ColumnTaps& cols, const T* x, T* y,
              int64_t oh0, int64_t oh1, T* t) {
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    T* yr = y + oh * p.out_w;
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, 1, p.h, &lo, &hi);
    if (lo == hi || p.w == 0) {
      std::fill(yr, yr + p.out_w, T(0));
      continue;
    }
    const T* r0 = x + (ih0 + lo) * p.w;
    std::copy(r0, r0 + p.w, t);
    for (int64_t k = 1; k < hi - lo; ++k) {
      const T* r = r0 + k * p.w;
      for (int64_t c = 0; c < p.w; ++c) t[c] += r[c];
    }
    for (int64_t o = 0; o < p.out_w; ++o) {
      const int64_t c0 = o * p.sw - p.pl;  // may be negative: index, never a pointer, outside t
      T s = T(0);
      for (int64_t j = cols.lo[o]; j < cols.hi[o]; ++j) s += t[c0 + j];
      const double div = dv.at(oh, o);
      yr[o] = div > 0 ? static_cast<T>(s / static_cast<T>(div)) : T(0);
    }
  }
}

template <class T>
Status avg_pool_impl(const Pool2dDesc& d, const T* x, T* y) {
  Status st = validate_avg_pool(d);
  if (!st.ok()) return st;
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.out_h * d.out_w;
  if (planes == 0 || out_plane == 0) return Status::Ok();
  if (!y || (in_plane > 0 && !x)) return Status::Invalid("null data pointer");
  const PoolPlan p = make_plan(d, false);
  const AvgDivisors dv = make_divisors(d);
  const ColumnTaps cols(p);
  return for_rows<T>(p, planes, T(0), [&](int64_t q, int64_t oh0, int64_t oh1, T* tmp) {
    avg_rows(p, dv, cols, x + q * in_plane, y + q * out_plane, oh0, oh1, tmp);
  });
}

// Per plane: scatter each output row's scaled gradient horizontally into a
// zeroed temp row (the input columns; taps in the padding are dropped), then
// add that row to every input row of the window.
template <class T>
Status avg_pool_backward_impl(const Pool2dDesc& d, const T* g, T* gi) {
  Status st = validate_avg_pool(d);
  if (!st.ok()) return st;
  const int64_t planes = d.n * d.c, in_plane = d.h * d.w, out_plane = d.out_h * d.out_w;
  if (planes == 0 || in_plane == 0) return Status::Ok();
  if (!gi || (out_plane > 0 && !g)) return Status::Invalid("null data pointer");
  const PoolPlan p = make_plan(d, false);
  const AvgDivisors dv = make_divisors(d);
  const ColumnTaps cols(p);
  const int nt = detail::threads_for(planes * (in_plane + out_plane));
  detail::AlignedBuffer<T> buf;
  if (!buf.allocate(static_cast<size_t>(nt * p.tmp_len))) return Status::Internal("out of memory");
  auto plane = [&](int64_t q, T* tmp) {
    T* dst = gi + q * in_plane;
    const T* src = g + q * out_plane;
    std::fill(dst, dst + in_plane, T(0));
    for (int64_t oh = 0; oh < p.out_h; ++oh) {
      const int64_t ih0 = oh * p.sh - p.pt;
      int64_t lo, hi;
      tap_range(ih0, p.kh, 1, p.h, &lo, &hi);
      if (lo == hi) continue;
      std::fill(tmp, tmp + p.tmp_len, T(0));
      for (int64_t o = 0; o < p.out_w; ++o) {
        const double div = dv.at(oh, o);
        if (!(div > 0)) continue;
        const T v = static_cast<T>(src[oh * p.out_w + o] / static_cast<T>(div));
        const int64_t c0 = o * p.sw - p.pl;
        for (int64_t j = cols.lo[o]; j < cols.hi[o]; ++j) tmp[c0 + j] += v;
      }
      for (int64_t i = lo; i < hi; ++i) {
        T* r = dst + (ih0 + i) * p.w;
        for (int64_t c = 0; c < p.w; ++c) r[c] += tmp[c];
      }
    }
  };
  if (nt <= 1) {
    for (int64_t q = 0; q < planes; ++q) plane(q, buf.get());
    return Status::Ok();
  }
#pragma omp parallel num_threads(nt)
  {
    T* tmp = buf.get() + omp_get_thread_num() * p.tmp_len;
#pragma omp for schedule(static)
    for (int64_t q = 0; q < planes; ++q) plane(q, tmp);
  }
  return Status::Ok();
}

// Entry points never throw: an allocation failure becomes Status::Internal.
template <class F>
Status guarded(F f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::Internal("out of memory");
  } catch (...) {
    return Status::Internal("unexpected C++ exception");
  }
}

}  // namespace

Status max_pool2d(const Pool2dDesc& d, const float* x, float* y, int64_t* indices) {
  return guarded([&] { return max_pool_impl(d, x, y, indices); });
}
Status max_pool2d(const Pool2dDesc& d, const double* x, double* y, int64_t* indices) {
  return guarded([&] { return max_pool_impl(d, x, y, indices); });
}
Status max_pool2d(const Pool2dDesc& d, const uint8_t* x, uint8_t* y, int64_t* indices) {
  return guarded([&] { return max_pool_impl(d, x, y, indices); });
}
Status max_pool2d(const Pool2dDesc& d, const int8_t* x, int8_t* y, int64_t* indices) {
  return guarded([&] { return max_pool_impl(d, x, y, indices); });
}
Status max_pool2d_backward(const Pool2dDesc& d, const float* g, const int64_t* ind, float* gi) {
  return guarded([&] { return max_pool_backward_impl(d, g, ind, gi); });
}
Status max_pool2d_backward(const Pool2dDesc& d, const double* g, const int64_t* ind,
                           double* gi) {
  return guarded([&] { return max_pool_backward_impl(d, g, ind, gi); });
}
Status avg_pool2d(const Pool2dDesc& d, const float* x, float* y) { return guarded([&] { return avg_pool_impl(d, x, y); }); }
Status avg_pool2d(const Pool2dDesc& d, const double* x, double* y) {
  return guarded([&] { return avg_pool_impl(d, x, y); });
}
Status avg_pool2d_backward(const Pool2dDesc& d, const float* g, float* gi) {
  return guarded([&] { return avg_pool_backward_impl(d, g, gi); });
}
Status avg_pool2d_backward(const Pool2dDesc& d, const double* g, double* gi) {
  return guarded([&] { return avg_pool_backward_impl(d, g, gi); });
}

}  // namespace lepton
