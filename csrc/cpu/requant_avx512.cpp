// cpu/requant_avx512.cpp -- AVX-512 requantizing epilogue (formula in
// cpu/requant_internal.h): 8 accumulators per step widened to double,
// multiplied, rounded half to even (vrndscalepd), clamped in double, narrowed
// with saturation. Bit-identical to the scalar version.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/requant_internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

inline __mmask8 mask8(int64_t n) { return n >= 8 ? __mmask8(0xFF) : __mmask8((1u << n) - 1u); }

// 8 results (int32, zero point added) from 8 biased accumulators and multipliers.
inline __m256i requant8(__m256i acc, __m512d m, __m512d lo, __m512d hi, __m256i zp) {
  __m512d v = _mm512_mul_pd(_mm512_cvtepi32_pd(acc), m);
  v = _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm512_min_pd(_mm512_max_pd(v, lo), hi);
  return _mm256_add_epi32(_mm512_cvtpd_epi32(v), zp);
}

template <class TY>
void requantize_impl(const RequantBlock& b, const Requant& r, TY* y, int64_t ldy) {
  constexpr bool kSigned = std::is_same<TY, int8_t>::value;
  constexpr int32_t kMin = kSigned ? -128 : 0, kMax = kSigned ? 127 : 255;
  const int32_t lower = r.relu ? std::max(kMin, r.y_zero_point) : kMin;
  const __m512d lo = _mm512_set1_pd(static_cast<double>(lower - r.y_zero_point));
  const __m512d hi = _mm512_set1_pd(static_cast<double>(kMax - r.y_zero_point));
  const __m256i zp = _mm256_set1_epi32(r.y_zero_point);
  for (int64_t i = 0; i < b.rows; ++i) {
    const int32_t* a = b.acc + i * b.lda;
    TY* out = y + i * ldy;
    const int64_t row_ch = b.ch0 + i;
    const __m512d m_row = _mm512_set1_pd(b.per_row ? r.multiplier[row_ch] : 0.0);
    const __m256i bias_row = _mm256_set1_epi32(b.per_row && r.bias ? r.bias[row_ch] : 0);
    for (int64_t j = 0; j < b.cols; j += 8) {
      const __mmask8 k = mask8(b.cols - j);
      __m256i acc = _mm256_maskz_loadu_epi32(k, a + j);
      __m512d m = m_row;
      __m256i bias = bias_row;
      if (!b.per_row) {
        m = _mm512_maskz_loadu_pd(k, r.multiplier + b.ch0 + j);
        bias = r.bias ? _mm256_maskz_loadu_epi32(k, r.bias + b.ch0 + j) : _mm256_setzero_si256();
      }
      acc = _mm256_add_epi32(acc, bias);  // wraps modulo 2^32, as the accumulators
      const __m256i q = requant8(acc, m, lo, hi, zp);
      // In range by the clamp, so the saturating narrow is a plain narrow.
      const __m128i bytes = kSigned ? _mm256_cvtsepi32_epi8(q) : _mm256_cvtusepi32_epi8(q);
      _mm_mask_storeu_epi8(out + j, k, bytes);
    }
  }
}

}  // namespace

void requantize_u8(const RequantBlock& b, const Requant& r, uint8_t* y, int64_t ldy) {
  requantize_impl(b, r, y, ldy);
}
void requantize_s8(const RequantBlock& b, const Requant& r, int8_t* y, int64_t ldy) {
  requantize_impl(b, r, y, ldy);
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
