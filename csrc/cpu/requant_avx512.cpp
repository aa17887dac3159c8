// cpu/requant_avx512.cpp -- AVX-512 requantizing epilogue (formula in
// cpu/requant_internal.h): 16 accumulators per step converted to float,
// multiplied, rounded half to even (vrndscaleps), clamped in float, narrowed.
// Bit-identical to the scalar version.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/requant_avx512.h"
#include "cpu/requant_internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

inline __mmask16 mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

template <class TY>
void requantize_impl(const RequantBlock& b, const Requant& r, TY* y, int64_t ldy) {
  constexpr bool kSigned = std::is_same<TY, int8_t>::value;
  constexpr int32_t kMin = kSigned ? -128 : 0, kMax = kSigned ? 127 : 255;
  const int32_t lower = r.relu ? std::max(kMin, r.y_zero_point) : kMin;
  const __m512 lo = _mm512_set1_ps(static_cast<float>(lower - r.y_zero_point));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(kMax - r.y_zero_point));
  const __m512i zp = _mm512_set1_epi32(r.y_zero_point);
  for (int64_t i = 0; i < b.rows; ++i) {
    const int32_t* a = b.acc + i * b.lda;
    TY* out = y + i * ldy;
    const int64_t row_ch = b.ch0 + i;
    const __m512 m_row = _mm512_set1_ps(b.per_row ? r.multiplier[row_ch] : 0.0f);
    const __m512i bias_row = _mm512_set1_epi32(b.per_row && r.bias ? r.bias[row_ch] : 0);
    for (int64_t j = 0; j < b.cols; j += 16) {
      const __mmask16 k = mask16(b.cols - j);
      __m512i acc = _mm512_maskz_loadu_epi32(k, a + j);
      __m512 m = m_row;
      __m512i bias = bias_row;
      if (!b.per_row) {
        m = _mm512_maskz_loadu_ps(k, r.multiplier + b.ch0 + j);
        bias = r.bias ? _mm512_maskz_loadu_epi32(k, r.bias + b.ch0 + j) : _mm512_setzero_si512();
      }
      acc = _mm512_add_epi32(acc, bias);  // wraps modulo 2^32, as the accumulators
      const __m512i q = requant16(acc, m, lo, hi, zp);
      // In range by the clamp, so the saturating narrow is a plain narrow.
      const __m128i bytes = kSigned ? _mm512_cvtsepi32_epi8(q) : _mm512_cvtusepi32_epi8(q);
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
