// cpu/pool_avx2.cpp -- float32 max pooling without indices, NCHW, AVX2.
// Same separable scheme as pool_avx512.cpp (vertical reduce into a padded temp
// row, then a horizontal pass; stride 2 de-interleaves with shuffle +
// permute). AVX2 has no NaN-propagating max, so vmax() ORs an all-ones NaN
// into lanes where the new value is NaN; vmaxps(new, acc) keeps a NaN acc.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

alignas(64) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i tail_mask(int64_t n) {
  if (n > 8) n = 8;
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
}

inline __m256 vmax(__m256 acc, __m256 v) {
  return _mm256_or_ps(_mm256_max_ps(v, acc), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

inline float smax(float a, float b) { return (b > a || b != b) ? b : a; }

template <int K>
inline void vertical_fixed(const float* r0, int64_t step, int64_t w, float* t) {
  int64_t x = 0;
  for (; x + 8 <= w; x += 8) {
    __m256 v = _mm256_loadu_ps(r0 + x);
    for (int k = 1; k < K; ++k) v = vmax(v, _mm256_loadu_ps(r0 + k * step + x));
    _mm256_storeu_ps(t + x, v);
  }
  if (x < w) {
    __m256i m = tail_mask(w - x);
    __m256 v = _mm256_maskload_ps(r0 + x, m);
    for (int k = 1; k < K; ++k) v = vmax(v, _mm256_maskload_ps(r0 + k * step + x, m));
    _mm256_maskstore_ps(t + x, m, v);
  }
}

void vertical(const float* r0, int64_t step, int64_t taps, int64_t w, float* t) {
  switch (taps) {
    case 1: vertical_fixed<1>(r0, step, w, t); return;
    case 2: vertical_fixed<2>(r0, step, w, t); return;
    case 3: vertical_fixed<3>(r0, step, w, t); return;
    case 4: vertical_fixed<4>(r0, step, w, t); return;
    default: break;
  }
  for (int64_t x = 0; x < w; x += 8) {
    __m256i m = tail_mask(w - x);
    __m256 v = _mm256_maskload_ps(r0 + x, m);
    for (int64_t k = 1; k < taps; ++k) v = vmax(v, _mm256_maskload_ps(r0 + k * step + x, m));
    _mm256_maskstore_ps(t + x, m, v);
  }
}

// Even (odd) lanes of the 16 floats at p, in order.
inline __m256 pick(__m256 lo, __m256 hi, bool odd) {
  __m256 s = odd ? _mm256_shuffle_ps(lo, hi, 0xDD) : _mm256_shuffle_ps(lo, hi, 0x88);
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8));
}
inline __m256 even(const float* p) { return pick(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), false); }

inline void store_out(float* y, int64_t o, int64_t ow, __m256 v) {
  if (ow - o >= 8)
    _mm256_storeu_ps(y + o, v);
  else
    _mm256_maskstore_ps(y + o, tail_mask(ow - o), v);
}

void horizontal(const PoolPlan& p, const float* t, float* y) {
  const int64_t ow = p.out_w, kw = p.kw, dw = p.dw;
  if (p.sw == 1) {
    for (int64_t o = 0; o < ow; o += 8) {
      __m256 v = _mm256_loadu_ps(t + o);
      for (int64_t j = 1; j < kw; ++j) v = vmax(v, _mm256_loadu_ps(t + o + j * dw));
      store_out(y, o, ow, v);
    }
    return;
  }
  if (p.sw == 2) {
    if (dw == 1 && (kw == 2 || kw == 3)) {
      for (int64_t o = 0; o < ow; o += 8) {
        const float* b = t + 2 * o;
        __m256 lo = _mm256_loadu_ps(b), hi = _mm256_loadu_ps(b + 8);
        __m256 v = vmax(pick(lo, hi, false), pick(lo, hi, true));
        if (kw == 3) v = vmax(v, even(b + 2));
        store_out(y, o, ow, v);
      }
      return;
    }
    for (int64_t o = 0; o < ow; o += 8) {
      const float* b = t + 2 * o;
      __m256 v = even(b);
      for (int64_t j = 1; j < kw; ++j) v = vmax(v, even(b + j * dw));
      store_out(y, o, ow, v);
    }
    return;
  }
  for (int64_t o = 0; o < ow; ++o) {
    const float* b = t + o * p.sw;
    float m = b[0];
    for (int64_t j = 1; j < kw; ++j) m = smax(m, b[j * dw]);
    y[o] = m;
  }
}

}  // namespace

void max_pool_rows_f32(const PoolPlan& p, const float* x, float* y, int64_t oh0, int64_t oh1,
                       float* tmp) {
  const float ninf = -INFINITY;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    float* yr = y + oh * p.out_w;
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, p.dh, p.h, &lo, &hi);
    if (lo == hi || p.w == 0) {
      for (int64_t o = 0; o < p.out_w; ++o) yr[o] = ninf;
      continue;
    }
    vertical(x + (ih0 + lo * p.dh) * p.w, p.dh * p.w, hi - lo, p.w, tmp + p.pl);
    horizontal(p, tmp, yr);
  }
}

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
