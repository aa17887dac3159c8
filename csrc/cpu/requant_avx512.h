// cpu/requant_avx512.h -- the 16-lane requantization step (formula in
// cpu/requant_internal.h), shared by the requantizing epilogue
// (requant_avx512.cpp) and the direct convolution's micro-kernel
// (igemm_vnni.cpp). Include only from translation units built with AVX-512.
#pragma once
#include <immintrin.h>

namespace lepton {
namespace detail {
namespace avx512 {

// 16 results (int32, zero point added) from 16 biased accumulators: float
// conversion (nearest even), one float multiply, rounding half to even, the
// clamp [lo, hi] in float (so no lane overflows), conversion back.
inline __m512i requant16(__m512i acc, __m512 m, __m512 lo, __m512 hi, __m512i zp) {
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), m);
  v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
  return _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
