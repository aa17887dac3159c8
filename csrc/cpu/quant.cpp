// cpu/quant.cpp -- quantize / dequantize / dynamic_quantize (ONNX numerics, see
// lepton/quant.h): argument checks, the per-channel layout (outer, channels,
// inner) turned into contiguous runs, the thread split, and the generic kernels.
// Runs: per-tensor = one run; channels last (inner 1) or short inner = rows of
// per-element scale arrays (expanded once); otherwise one run per (outer, channel).
// The generic kernels divide in float64 and round with the 1.5 * 2^52 trick
// (round half to even under the default rounding mode), as the reference.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "cpu/igemm_internal.h"
#include "cpu/internal.h"
#include "lepton/quant.h"

namespace lepton {
namespace detail {
namespace qgeneric {
namespace {

// round_half_to_even(v) for |v| <= 2^51 in the default rounding mode.
inline double rint_even(double v) {
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  return (v + magic) - magic;               // not folded: no -ffast-math
}

template <class Q>
inline Q quantize_one(float x, float s, int32_t zp, double lo, double hi) {
  if (x != x) return static_cast<Q>(zp);
  // ONNX divides in float32; the float32 quotient is then rounded half to even.
  double v = static_cast<double>(x / s);
  v = std::min(std::max(v, -1.0e12), 1.0e12);  // saturates the same; keeps rint_even exact
  double r = rint_even(v) + zp;
  r = std::min(std::max(r, lo), hi);
  return static_cast<Q>(static_cast<int32_t>(r));
}

template <class Q>
void quantize_run(const float* x, Q* q, int64_t n, const float* scale, const int32_t* zp,
                  bool per_lane, double lo, double hi) {
  if (per_lane) {
    for (int64_t i = 0; i < n; ++i) q[i] = quantize_one<Q>(x[i], scale[i], zp[i], lo, hi);
  } else {
    const float s = scale[0];
    const int32_t z = zp[0];
    for (int64_t i = 0; i < n; ++i) q[i] = quantize_one<Q>(x[i], s, z, lo, hi);
  }
}

template <class Q>
void dequantize_small(const Q* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                      bool per_lane) {
  // (q - zp) has at most 9 bits: one float32 rounding of the exact product.
  if (per_lane) {
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int32_t>(q[i]) - zp[i]) * scale[i];
  } else {
    const float s = scale[0];
    const int32_t z = zp[0];
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int32_t>(q[i]) - z) * s;
  }
}

}  // namespace

void quantize_s8(const float* x, int8_t* q, int64_t n, const float* scale, const int32_t* zp,
                 bool per_lane, bool) {
  quantize_run(x, q, n, scale, zp, per_lane, -128.0, 127.0);
}
void quantize_u8(const float* x, uint8_t* q, int64_t n, const float* scale, const int32_t* zp,
                 bool per_lane, bool) {
  quantize_run(x, q, n, scale, zp, per_lane, 0.0, 255.0);
}
void dequantize_s8(const int8_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                   bool per_lane, bool) {
  dequantize_small(q, y, n, scale, zp, per_lane);
}
void dequantize_u8(const uint8_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                   bool per_lane, bool) {
  dequantize_small(q, y, n, scale, zp, per_lane);
}
void dequantize_s32(const int32_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                    bool per_lane, bool) {
  // As the reference: float64 (q - zp) * scale, then float32.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = per_lane ? i : 0;
    y[i] = static_cast<float>((static_cast<double>(q[i]) - static_cast<double>(zp[j])) *
                              static_cast<double>(scale[j]));
  }
}
bool minmax_finite(const float* x, int64_t n, float* lo, float* hi) {
  float a = x[0], b = x[0];
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    finite = finite && std::isfinite(v);
    a = v < a ? v : a;
    b = v > b ? v : b;
  }
  *lo = a;
  *hi = b;
  return finite;
}

}  // namespace qgeneric
}  // namespace detail

namespace {

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

// Per-ISA kernel table.
struct QuantOps {
  decltype(&detail::qgeneric::quantize_s8) q_s8;
  decltype(&detail::qgeneric::quantize_u8) q_u8;
  decltype(&detail::qgeneric::dequantize_s8) dq_s8;
  decltype(&detail::qgeneric::dequantize_u8) dq_u8;
  decltype(&detail::qgeneric::dequantize_s32) dq_s32;
  decltype(&detail::qgeneric::minmax_finite) minmax;
};

QuantOps ops_for_active_isa() {
  switch (active_isa()) {
    case Isa::avx512: {
      namespace k = detail::avx512;
      return {k::quantize_s8, k::quantize_u8, k::dequantize_s8, k::dequantize_u8, k::dequantize_s32, k::minmax_finite};
    }
    case Isa::avx2: {
      namespace k = detail::avx2;
      return {k::quantize_s8, k::quantize_u8, k::dequantize_s8, k::dequantize_u8, k::dequantize_s32, k::minmax_finite};
    }
    default: {
      namespace k = detail::qgeneric;
      return {k::quantize_s8, k::quantize_u8, k::dequantize_s8, k::dequantize_u8, k::dequantize_s32, k::minmax_finite};
    }
  }
}

template <class T>
struct TypeRange;
template <>
struct TypeRange<int8_t> {
  static constexpr int64_t lo = -128, hi = 127;
};
template <>
struct TypeRange<uint8_t> {
  static constexpr int64_t lo = 0, hi = 255;
};
template <>
struct TypeRange<int32_t> {
  static constexpr int64_t lo = INT32_MIN, hi = INT32_MAX;
};

template <class Q>
Status check(const QuantDesc& d, const void* src, const float* scale,
             const int32_t* zp, const void* dst) {
  if (d.outer < 0 || d.channels < 1 || d.inner < 0)
    return Status::Invalid("outer and inner must be >= 0 and channels >= 1");
  if (!scale || !zp) return Status::Invalid("null scale or zero_point");
  for (int64_t c = 0; c < d.channels; ++c) {
    if (!(std::isfinite(scale[c]) && scale[c] > 0))
      return Status::Invalid("scale must be finite and > 0, got " + std::to_string(scale[c]) +
                             " (channel " + std::to_string(c) + ")");
    if (zp[c] < TypeRange<Q>::lo || zp[c] > TypeRange<Q>::hi)
      return Status::Invalid("zero_point " + std::to_string(zp[c]) +
                             " is outside the quantized type's range (channel " + std::to_string(c) + ")");
  }
  if (d.outer > 0 && d.inner > 0) {
    if (d.outer > (int64_t(1) << 40) / d.channels / d.inner) return Status::Invalid("sizes too large");
    if (!src || !dst) return Status::Invalid("null input or output");
  }
  return Status::Ok();
}

// How the (outer, channels, inner) layout maps to runs: rows of length L;
// per_lane rows read scale/zp at the offset in the row, others at row % channels.
struct RunPlan {
  int64_t total = 0, L = 0;
  bool per_lane = false;
  std::vector<float> scale;  // expanded (per_lane with inner > 1)
  std::vector<int32_t> zp;
};

RunPlan plan_runs(const QuantDesc& d, const float* scale, const int32_t* zp) {
  RunPlan p;
  p.total = d.outer * d.channels * d.inner;
  if (d.channels == 1) {
    p.L = std::max<int64_t>(p.total, 1);
  } else if (d.inner == 1) {
    p.L = d.channels;
    p.per_lane = true;
  } else if (d.inner < 64 && d.channels * d.inner <= (int64_t(1) << 20)) {
    p.L = d.channels * d.inner;
    p.per_lane = true;
    p.scale.resize(static_cast<size_t>(p.L));
    p.zp.resize(static_cast<size_t>(p.L));
    for (int64_t c = 0; c < d.channels; ++c)
      for (int64_t i = 0; i < d.inner; ++i) {
        p.scale[c * d.inner + i] = scale[c];
        p.zp[c * d.inner + i] = zp[c];
      }
  } else {
    p.L = d.inner;
  }
  // Short per-element rows: repeat the pattern so a run spans several outer
  // slices (a call per 64 elements would cost more than the work).
  if (p.per_lane && p.L < 4096 && d.outer > 1) {
    const int64_t rep = std::min<int64_t>(d.outer, 4096 / p.L);
    if (rep > 1) {
      if (p.scale.empty()) {
        p.scale.assign(scale, scale + p.L);
        p.zp.assign(zp, zp + p.L);
      }
      p.scale.resize(static_cast<size_t>(p.L * rep));
      p.zp.resize(static_cast<size_t>(p.L * rep));
      for (int64_t r = 1; r < rep; ++r) {
        std::copy(p.scale.begin(), p.scale.begin() + p.L, p.scale.begin() + r * p.L);
        std::copy(p.zp.begin(), p.zp.begin() + p.L, p.zp.begin() + r * p.L);
      }
      p.L *= rep;
    }
  }
  return p;
}

// Calls f(pos, len, scale_ptr, zp_ptr, per_lane) over contiguous pieces, split by threads.
template <class F>
void for_runs(const QuantDesc& d, const RunPlan& p, const float* scale, const int32_t* zp, F f) {
  const float* sp = p.scale.empty() ? scale : p.scale.data();
  const int32_t* zpp = p.zp.empty() ? zp : p.zp.data();
  const int nt = detail::threads_for(p.total / 4);
  const int64_t chunk = ((p.total + nt - 1) / nt + 1023) / 1024 * 1024;
  auto body = [&](int64_t s, int64_t e) {
    while (s < e) {
      const int64_t row = s / p.L, off = s % p.L, len = std::min(p.L - off, e - s);
      if (p.per_lane)
        f(s, len, sp + off, zpp + off, true);
      else
        f(s, len, sp + row % d.channels, zpp + row % d.channels, false);
      s += len;
    }
  };
  if (nt <= 1) {
    body(0, p.total);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int64_t t = omp_get_thread_num();
    body(std::min(p.total, t * chunk), std::min(p.total, (t + 1) * chunk));
  }
}

template <class Q>
Status quantize_impl(const QuantDesc& d, const float* x, const float* scale, const int32_t* zp,
                     Q* q) {
  Status st = check<Q>(d, x, scale, zp, q);
  if (!st.ok()) return st;
  const RunPlan p = plan_runs(d, scale, zp);
  if (p.total == 0) return Status::Ok();
  const QuantOps ops = ops_for_active_isa();
  const bool stream = detail::use_streaming(p.total * static_cast<int64_t>(sizeof(Q)));
  for_runs(d, p, scale, zp, [&](int64_t pos, int64_t len, const float* s, const int32_t* z, bool lane) {
    if constexpr (std::is_same<Q, int8_t>::value)
      ops.q_s8(x + pos, q + pos, len, s, z, lane, stream);
    else
      ops.q_u8(x + pos, q + pos, len, s, z, lane, stream);
  });
  return Status::Ok();
}

template <class Q>
Status dequantize_impl(const QuantDesc& d, const Q* q, const float* scale, const int32_t* zp,
                       float* y) {
  Status st = check<Q>(d, q, scale, zp, y);
  if (!st.ok()) return st;
  const RunPlan p = plan_runs(d, scale, zp);
  if (p.total == 0) return Status::Ok();
  const QuantOps ops = ops_for_active_isa();
  const bool stream = detail::use_streaming(p.total * static_cast<int64_t>(sizeof(float)));
  for_runs(d, p, scale, zp, [&](int64_t pos, int64_t len, const float* s, const int32_t* z, bool lane) {
    if constexpr (std::is_same<Q, int8_t>::value)
      ops.dq_s8(q + pos, y + pos, len, s, z, lane, stream);
    else if constexpr (std::is_same<Q, uint8_t>::value)
      ops.dq_u8(q + pos, y + pos, len, s, z, lane, stream);
    else
      ops.dq_s32(q + pos, y + pos, len, s, z, lane, stream);
  });
  return Status::Ok();
}

Status dynamic_impl(int64_t n, const float* x, uint8_t* q, float* scale, uint8_t* zero_point) {
  if (n < 0) return Status::Invalid("n must be >= 0");
  if (!scale || !zero_point) return Status::Invalid("null scale or zero_point");
  float lo = 0.f, hi = 0.f;
  if (n > 0) {
    if (!x || !q) return Status::Invalid("null input or output");
    const QuantOps ops = ops_for_active_isa();
    const int nt = detail::threads_for(n / 4);
    std::vector<float> los(static_cast<size_t>(nt), 0.f), his(static_cast<size_t>(nt), 0.f);
    std::vector<char> fin(static_cast<size_t>(nt), 1);
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      const int64_t s = n * t / team, e = n * (t + 1) / team;
      if (e > s) fin[t] = ops.minmax(x + s, e - s, &los[t], &his[t]) ? 1 : 0;
    }
    for (int t = 0; t < nt; ++t) {
      if (!fin[t]) return Status::Invalid("x must be finite (NaN or inf found)");
      lo = std::min(lo, los[t]);
      hi = std::max(hi, his[t]);
    }
  }
  // float32 arithmetic, as ONNX.
  const float s = (hi - lo) / 255.0f;
  if (s == 0.0f) {
    if (n > 0) std::memset(q, 0, static_cast<size_t>(n));
    *scale = 0.0f;
    *zero_point = 0;
    return Status::Ok();
  }
  float z = std::nearbyint(0.0f - lo / s);
  z = std::min(255.0f, std::max(0.0f, z));
  *scale = s;
  *zero_point = static_cast<uint8_t>(z);
  const int32_t zp = static_cast<int32_t>(z);
  QuantDesc d;
  d.inner = n;
  return quantize_impl(d, x, &s, &zp, q);
}

}  // namespace

Status quantize(const QuantDesc& d, const float* x, const float* scale, const int32_t* zp,
                int8_t* q) {
  return guarded([&] { return quantize_impl(d, x, scale, zp, q); });
}
Status quantize(const QuantDesc& d, const float* x, const float* scale, const int32_t* zp,
                uint8_t* q) {
  return guarded([&] { return quantize_impl(d, x, scale, zp, q); });
}
Status dequantize(const QuantDesc& d, const int8_t* q, const float* scale, const int32_t* zp,
                  float* y) {
  return guarded([&] { return dequantize_impl(d, q, scale, zp, y); });
}
Status dequantize(const QuantDesc& d, const uint8_t* q, const float* scale, const int32_t* zp,
                  float* y) {
  return guarded([&] { return dequantize_impl(d, q, scale, zp, y); });
}
Status dequantize(const QuantDesc& d, const int32_t* q, const float* scale, const int32_t* zp,
                  float* y) {
  return guarded([&] { return dequantize_impl(d, q, scale, zp, y); });
}
Status dynamic_quantize(int64_t n, const float* x, uint8_t* q, float* scale, uint8_t* zero_point) {
  return guarded([&] { return dynamic_impl(n, x, q, scale, zero_point); });
}

}  // namespace lepton
