// cpu/pool_avx512.cpp -- float32 max pooling without indices, NCHW, AVX-512.
// Separable per output row: the valid kernel rows are reduced vertically into
// a padded temp row (columns outside the input hold -inf, filled once by the
// caller), then a horizontal pass reduces kernel columns: stride 1 with
// unaligned loads at tap offsets, stride 2 by de-interleaving even/odd lanes
// with vpermt2ps, other strides with a scalar loop. Stride 2 with kernel
// width 2 or 3 (dilation 1) skips the temp row: see row_s2().
// The with-indices variant (strides 1 and 2) vectorizes the outputs whose
// window lies horizontally inside the input, walking taps in row-major order
// with masked selects; border outputs use the scalar max_with_index().
// vmax() propagates NaN from either operand, so a NaN anywhere in the window
// makes the output NaN.
// GCC 12's _mm512_undefined_ps() self-initializes and trips -Wuninitialized
// inside the intrinsic headers (GCC PR105593, fixed in 12.3/13); silence it
// for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu/internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

// max(acc, v) that propagates a NaN from either side: vmaxps(v, acc) returns
// acc when either is NaN (so a NaN acc sticks), and a NaN v is moved in.
inline __m512 vmax(__m512 acc, __m512 v) {
  return _mm512_mask_mov_ps(_mm512_max_ps(v, acc), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
}

// The fast pass uses plain vmaxps and only records whether an input was NaN;
// a row that saw a NaN is redone with the exact (NaN-propagating) vmax.
template <bool Exact>
inline __m512 pmax(__m512 acc, __m512 v) {
  return Exact ? vmax(acc, v) : _mm512_max_ps(v, acc);
}

inline float smax(float a, float b) { return (b > a || b != b) ? b : a; }

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

inline __mmask16 nan_lanes(__m512 v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }

// t[0, w) = max over K (or `taps`) rows starting at r0, `step` floats apart.
// Returns non-zero when the fast pass met a NaN.
template <bool Exact, int K>
inline __mmask16 vertical_fixed(const float* r0, int64_t step, int64_t taps, int64_t w, float* t) {
  const int64_t nk = K > 0 ? K : taps;
  __mmask16 nan = 0;
  for (int64_t x = 0; x < w; x += 16) {
    const __mmask16 m = tail_mask(w - x);
    __m512 v = _mm512_maskz_loadu_ps(m, r0 + x);
    if (!Exact) nan |= nan_lanes(v);
    for (int64_t k = 1; k < nk; ++k) {
      __m512 u = _mm512_maskz_loadu_ps(m, r0 + k * step + x);
      if (!Exact) nan |= nan_lanes(u);
      v = pmax<Exact>(v, u);
    }
    _mm512_mask_storeu_ps(t + x, m, v);
  }
  return nan;
}

template <bool Exact>
__mmask16 vertical(const float* r0, int64_t step, int64_t taps, int64_t w, float* t) {
  switch (taps) {
    case 1: return vertical_fixed<Exact, 1>(r0, step, taps, w, t);
    case 2: return vertical_fixed<Exact, 2>(r0, step, taps, w, t);
    case 3: return vertical_fixed<Exact, 3>(r0, step, taps, w, t);
    case 4: return vertical_fixed<Exact, 4>(r0, step, taps, w, t);
    default: return vertical_fixed<Exact, 0>(r0, step, taps, w, t);
  }
}

// Even lanes of the 32 floats at p: p[0], p[2], ..., p[30].
inline __m512 even(const float* p, __m512i idx) {
  return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}

// y[o] = max_j t[o*sw + j*dw] for o in [0, out_w); t may be read up to
// sw*roundup16(out_w) + (kw-1)*dw + 16 floats (the plan sizes it so).
template <bool Exact>
void horizontal(const PoolPlan& p, const float* t, float* y) {
  const int64_t ow = p.out_w, kw = p.kw, dw = p.dw;
  if (p.sw == 1) {
    for (int64_t o = 0; o < ow; o += 16) {
      __m512 v = _mm512_loadu_ps(t + o);
      for (int64_t j = 1; j < kw; ++j) v = pmax<Exact>(v, _mm512_loadu_ps(t + o + j * dw));
      _mm512_mask_storeu_ps(y + o, tail_mask(ow - o), v);
    }
    return;
  }
  if (p.sw == 2) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    if (dw == 1 && (kw == 2 || kw == 3)) {
      for (int64_t o = 0; o < ow; o += 16) {
        const float* b = t + 2 * o;
        __m512 lo = _mm512_loadu_ps(b), hi = _mm512_loadu_ps(b + 16);
        __m512 v = pmax<Exact>(_mm512_permutex2var_ps(lo, ie, hi), _mm512_permutex2var_ps(lo, io, hi));
        if (kw == 3) v = pmax<Exact>(v, even(b + 2, ie));
        _mm512_mask_storeu_ps(y + o, tail_mask(ow - o), v);
      }
      return;
    }
    for (int64_t o = 0; o < ow; o += 16) {
      const float* b = t + 2 * o;
      __m512 v = even(b, ie);
      for (int64_t j = 1; j < kw; ++j) v = pmax<Exact>(v, even(b + j * dw, ie));
      _mm512_mask_storeu_ps(y + o, tail_mask(ow - o), v);
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

// Fused path for stride 2, dilation 1, kernel width 2 or 3 (the common CNN
// pools): vertical maxima are built in registers, 16 padded columns at a time
// (padding lanes = -inf through merge-masked loads), and de-interleaved
// without a round trip through memory (a temp row re-read at other offsets
// than it was written defeats store-to-load forwarding).
template <bool Exact>
inline __m512 vblock(const PoolPlan& p, const float* r0, int64_t step, int64_t nr, int64_t c,
                     __mmask16* nan) {
  const int64_t ic = c - p.pl;  // input column of lane 0
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  if (ic >= 0 && ic + 16 <= p.w) {
    __m512 v = _mm512_loadu_ps(r0 + ic);
    if (!Exact) *nan |= nan_lanes(v);
    for (int64_t k = 1; k < nr; ++k) {
      __m512 u = _mm512_loadu_ps(r0 + k * step + ic);
      if (!Exact) *nan |= nan_lanes(u);
      v = pmax<Exact>(v, u);
    }
    return v;
  }
  const int64_t lo = ic < 0 ? -ic : 0, hi = p.w - ic < 16 ? p.w - ic : 16;
  if (hi <= lo) return ninf;
  const __mmask16 m = static_cast<__mmask16>(tail_mask(hi) & ~tail_mask(lo));
  __m512 v = _mm512_mask_loadu_ps(ninf, m, r0 + ic);
  if (!Exact) *nan |= nan_lanes(v);
  for (int64_t k = 1; k < nr; ++k) {
    __m512 u = _mm512_mask_loadu_ps(ninf, m, r0 + k * step + ic);
    if (!Exact) *nan |= nan_lanes(u);
    v = pmax<Exact>(v, u);
  }
  return v;
}

template <bool Exact, int KW>
__mmask16 row_s2(const PoolPlan& p, const float* r0, int64_t step, int64_t nr, float* yr) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i i1 = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
  __mmask16 nan = 0;
  __m512 b0 = vblock<Exact>(p, r0, step, nr, 0, &nan);
  for (int64_t o = 0; o < p.out_w; o += 16) {
    const int64_t c = 2 * o;
    __m512 b1 = vblock<Exact>(p, r0, step, nr, c + 16, &nan);
    __m512 e = _mm512_permutex2var_ps(b0, ie, b1);
    __m512 v = pmax<Exact>(e, _mm512_permutex2var_ps(b0, io, b1));
    __m512 b2 = vblock<Exact>(p, r0, step, nr, c + 32, &nan);
    if (KW == 3) v = pmax<Exact>(v, _mm512_permutex2var_ps(e, i1, b2));
    _mm512_mask_storeu_ps(yr + o, tail_mask(p.out_w - o), v);
    b0 = b2;
  }
  return nan;
}

}  // namespace

void max_pool_rows_f32(const PoolPlan& p, const float* x, float* y, int64_t oh0, int64_t oh1,
                       float* tmp) {
  const float ninf = -INFINITY;
  const bool s2 = p.sw == 2 && p.dw == 1;
  const bool fused2 = s2 && p.kw == 2, fused3 = s2 && p.kw == 3;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    float* yr = y + oh * p.out_w;
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, p.dh, p.h, &lo, &hi);
    if (lo == hi || p.w == 0) {
      for (int64_t o = 0; o < p.out_w; ++o) yr[o] = ninf;
      continue;
    }
    const float* r0 = x + (ih0 + lo * p.dh) * p.w;
    const int64_t step = p.dh * p.w, nr = hi - lo;
    if (fused3) {
      if (row_s2<false, 3>(p, r0, step, nr, yr)) row_s2<true, 3>(p, r0, step, nr, yr);
      continue;
    }
    if (fused2) {
      if (row_s2<false, 2>(p, r0, step, nr, yr)) row_s2<true, 2>(p, r0, step, nr, yr);
      continue;
    }
    if (!vertical<false>(r0, p.dh * p.w, hi - lo, p.w, tmp + p.pl)) {
      horizontal<false>(p, tmp, yr);
    } else {
      vertical<true>(r0, p.dh * p.w, hi - lo, p.w, tmp + p.pl);
      horizontal<true>(p, tmp, yr);
    }
  }
}

namespace {

// Columns c0 + l*sw (+ tap offset already in p) for the first n lanes; reads
// only the floats those lanes need, so nothing past the input is touched.
inline __m512 load_cols(const float* ptr, int64_t sw, int64_t n, __m512i ie) {
  if (sw == 1) return _mm512_maskz_loadu_ps(tail_mask(n), ptr);
  const int64_t need = 2 * n - 1;
  __m512 lo = _mm512_maskz_loadu_ps(tail_mask(need), ptr);
  __m512 hi = _mm512_maskz_loadu_ps(need > 16 ? tail_mask(need - 16) : 0, ptr + 16);
  return _mm512_permutex2var_ps(lo, ie, hi);
}

}  // namespace

void max_pool_rows_idx_f32(const PoolPlan& p, const int64_t* col_lo, const int64_t* col_hi,
                           const float* x, float* y, int64_t* ind, int64_t oh0, int64_t oh1) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int64_t sw = p.sw;
  // Outputs [a, b) have every horizontal tap inside [0, w).
  const int64_t a = std::min(p.out_w, (p.pl + sw - 1) / sw);
  const int64_t last = p.w - 1 + p.pl - (p.kw - 1) * p.dw;
  const int64_t b = std::max(a, std::min(p.out_w, last >= 0 ? last / sw + 1 : 0));
  const __m512i lane8 = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    float* yr = y + oh * p.out_w;
    int64_t* ir = ind + oh * p.out_w;
    const int64_t ih0 = oh * p.sh - p.pt;
    int64_t lo, hi;
    tap_range(ih0, p.kh, p.dh, p.h, &lo, &hi);
    for (int64_t o = 0; o < a; ++o)
      max_with_index(p, x, ih0, lo, hi, o, col_lo[o], col_hi[o], yr + o, ir + o);
    for (int64_t o = b; o < p.out_w; ++o)
      max_with_index(p, x, ih0, lo, hi, o, col_lo[o], col_hi[o], yr + o, ir + o);
    if (lo == hi) {
      for (int64_t o = a; o < b; ++o) yr[o] = -INFINITY, ir[o] = -1;
      continue;
    }
    const int64_t first_row = ih0 + lo * p.dh;
    for (int64_t o = a; o < b; o += 16) {
      const int64_t n = std::min<int64_t>(16, b - o);
      const int64_t c0 = o * sw - p.pl;
      const float* base = x + first_row * p.w + c0;
      __m512 m = load_cols(base, sw, n, ie);
      __m512i off = _mm512_setzero_si512();
      for (int64_t i = 0; i < hi - lo; ++i) {
        const int64_t roff = i * p.dh * p.w;
        for (int64_t j = (i == 0 ? 1 : 0); j < p.kw; ++j) {
          const int64_t t = roff + j * p.dw;
          __m512 v = load_cols(base + t, sw, n, ie);
          __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) |
                           (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) &
                            _mm512_cmp_ps_mask(m, m, _CMP_ORD_Q));
          m = _mm512_mask_mov_ps(m, take, v);
          off = _mm512_mask_mov_epi32(off, take, _mm512_set1_epi32(static_cast<int32_t>(t)));
        }
      }
      const __mmask16 mk = tail_mask(n);
      _mm512_mask_storeu_ps(yr + o, mk, m);
      // index = first_row*w + c0 + lane*sw + off
      const __m512i b64 = _mm512_set1_epi64(first_row * p.w + c0);
      const __m512i step = _mm512_set1_epi64(sw);
      __m512i i0 = _mm512_add_epi64(_mm512_add_epi64(b64, _mm512_mullo_epi64(lane8, step)),
                                    _mm512_cvtepi32_epi64(_mm512_castsi512_si256(off)));
      __m512i i1 = _mm512_add_epi64(
          _mm512_add_epi64(b64, _mm512_mullo_epi64(_mm512_add_epi64(lane8, _mm512_set1_epi64(8)), step)),
          _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(off, 1)));
      _mm512_mask_storeu_epi64(ir + o, static_cast<__mmask8>(mk & 0xFF), i0);
      _mm512_mask_storeu_epi64(ir + o + 8, static_cast<__mmask8>(mk >> 8), i1);
    }
  }
}

// 2x2 stride-2 max pooling of int8/uint8 planes with even H and W and no
// padding: the planes are one flat run of row pairs. Each pair's vertical max
// (one vector of W bytes per 64 columns), then the max of each byte pair
// (shift within 16-bit words) narrowed to W / 2 bytes: one output row.
template <bool SIGNED>
inline __m512i max_bytes(__m512i a, __m512i b) {
  return SIGNED ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
}

// w = 8 (8x8 planes, the digits CNN): one 128-bit lane holds a whole row pair,
// so a vector does 4 pairs: vertical max against the lane shifted by 8 bytes,
// horizontal max within words, then bytes 0, 2, 4, 6 of each lane.
template <bool SIGNED>
int64_t max_pool_2x2_w8(const uint8_t* x, uint8_t* y, int64_t pairs) {
  const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0);  // dword 0 of each lane after the narrowing
  int64_t r = 0;
  for (; r + 4 <= pairs; r += 4) {
    __m512i v = _mm512_loadu_si512(x + 16 * r);
    v = max_bytes<SIGNED>(v, _mm512_bsrli_epi128(v, 8));
    v = max_bytes<SIGNED>(v, _mm512_srli_epi16(v, 8));
    const __m256i words = _mm512_cvtepi16_epi8(v);  // per lane: 4 results, 4 unused bytes
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + 4 * r),
                     _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(words, pick)));
  }
  return r;
}

template <bool SIGNED>
void max_pool_2x2_bytes(const uint8_t* x, uint8_t* y, int64_t pairs, int64_t w) {
  const int64_t done = w == 8 ? max_pool_2x2_w8<SIGNED>(x, y, pairs) : 0;
  for (int64_t r = done; r < pairs; ++r) {
    const uint8_t* top = x + 2 * r * w;
    uint8_t* out = y + r * (w / 2);
    for (int64_t j = 0; j < w; j += 64) {
      const int64_t n = w - j < 64 ? w - j : 64;
      const __mmask64 m = n == 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1;
      const __m512i a = _mm512_maskz_loadu_epi8(m, top + j), b = _mm512_maskz_loadu_epi8(m, top + w + j);
      __m512i v = SIGNED ? _mm512_max_epi8(a, b) : _mm512_max_epu8(a, b);
      const __m512i odd = _mm512_srli_epi16(v, 8);  // byte 2k+1 moved under byte 2k
      v = SIGNED ? _mm512_max_epi8(v, odd) : _mm512_max_epu8(v, odd);
      // Low byte of each word: the 2x2 max (the high bytes are discarded by the narrowing).
      const __m256i packed = _mm512_cvtepi16_epi8(v);
      _mm256_mask_storeu_epi8(out + j / 2, static_cast<__mmask32>((n == 64 ? ~0ull : ((1ull << (n / 2)) - 1))),
                              packed);
    }
  }
}

// float32 2x2 / stride 2 on even planes without indices: per row pair and 32
// columns, lanes (2k, 2k+1) of each row paired by two-source permutes, then the
// two rows. NaN propagates as in max_rows (a NaN operand wins).
inline __m512 nan_max16(__m512 a, __m512 b) {
  // b if b > a or b is NaN; else a (a NaN a stays)
  const __mmask16 take = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(a, take & ~_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), b);
}

void max_pool_2x2_f32(const float* x, float* y, int64_t pairs, int64_t w) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t r = 0; r < pairs; ++r) {
    const float* top = x + 2 * r * w;
    float* out = y + r * (w / 2);
    for (int64_t j = 0; j < w; j += 32) {
      const int64_t n = w - j < 32 ? w - j : 32;
      const __mmask16 m0 = n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
      const __mmask16 m1 = n <= 16 ? __mmask16(0) : n >= 32 ? __mmask16(0xFFFF) : __mmask16((1u << (n - 16)) - 1u);
      // Each row's pairs first, then the two rows: the taps in row-major order, so a tie
      // (0.0 against -0.0) keeps the first tap, as the reference.
      const __m512 a0 = _mm512_maskz_loadu_ps(m0, top + j), a1 = _mm512_maskz_loadu_ps(m1, top + j + 16);
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, top + w + j), b1 = _mm512_maskz_loadu_ps(m1, top + w + j + 16);
      const __m512 ha = nan_max16(_mm512_permutex2var_ps(a0, even, a1), _mm512_permutex2var_ps(a0, odd, a1));
      const __m512 hb = nan_max16(_mm512_permutex2var_ps(b0, even, b1), _mm512_permutex2var_ps(b0, odd, b1));
      _mm512_mask_storeu_ps(out + j / 2, static_cast<__mmask16>((1u << (n / 2)) - 1u), nan_max16(ha, hb));
    }
  }
}

void max_pool_2x2_u8(const uint8_t* x, uint8_t* y, int64_t pairs, int64_t w) {
  max_pool_2x2_bytes<false>(x, y, pairs, w);
}
void max_pool_2x2_s8(const int8_t* x, int8_t* y, int64_t pairs, int64_t w) {
  max_pool_2x2_bytes<true>(reinterpret_cast<const uint8_t*>(x), reinterpret_cast<uint8_t*>(y), pairs, w);
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
