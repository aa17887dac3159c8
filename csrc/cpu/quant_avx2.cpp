// cpu/quant_avx2.cpp -- AVX2 quantize / dequantize / min-max kernels on one
// contiguous run (quant.cpp splits the layout and the threads). Same numerics
// as quant_avx512.cpp: float32 division, then the float32 quotient rounded
// half to even, as ONNX. Tails (and
// int32 dequantize) go to the generic kernels, which give identical results.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/igemm_internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

inline __m256 quant8(__m256 x, __m256 s, __m256 zpf, __m256 lo, __m256 hi) {
  const __m256 y = _mm256_div_ps(x, s);  // float32 division, as ONNX
  const __m256 r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zpf), lo), hi);
  return _mm256_blendv_ps(v, zpf, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

template <bool SIGNED, class Q>
void quantize_run(const float* x, Q* q, int64_t n, const float* scale, const int32_t* zp,
                  bool per_lane, bool stream) {
  const __m256 lo = _mm256_set1_ps(SIGNED ? -128.f : 0.f), hi = _mm256_set1_ps(SIGNED ? 127.f : 255.f);
  const __m256 s1 = _mm256_set1_ps(scale[0]), z1 = _mm256_set1_ps(static_cast<float>(zp[0]));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i v[4];
    for (int u = 0; u < 4; ++u) {
      const int64_t j = i + 8 * u;
      const __m256 s = per_lane ? _mm256_loadu_ps(scale + j) : s1;
      const __m256 z = per_lane ? _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + j))) : z1;
      v[u] = _mm256_cvtps_epi32(quant8(_mm256_loadu_ps(x + j), s, z, lo, hi));
    }
    const __m256i ab = _mm256_packs_epi32(v[0], v[1]), cd = _mm256_packs_epi32(v[2], v[3]);
    const __m256i bytes = SIGNED ? _mm256_packs_epi16(ab, cd) : _mm256_packus_epi16(ab, cd);
    const __m256i out = _mm256_permutevar8x32_epi32(bytes, order);
    if (stream && (reinterpret_cast<uintptr_t>(q + i) & 31) == 0)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(q + i), out);
    else
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), out);
  }
  if (stream) _mm_sfence();
  if (i < n) {
    if (SIGNED)
      qgeneric::quantize_s8(x + i, reinterpret_cast<int8_t*>(q + i), n - i, per_lane ? scale + i : scale,
                            per_lane ? zp + i : zp, per_lane, false);
    else
      qgeneric::quantize_u8(x + i, reinterpret_cast<uint8_t*>(q + i), n - i, per_lane ? scale + i : scale,
                            per_lane ? zp + i : zp, per_lane, false);
  }
}

template <class Widen>
int64_t dequantize_run(float* y, int64_t n, const float* scale, const int32_t* zp, bool per_lane,
                       bool stream, Widen widen) {
  const __m256 s1 = _mm256_set1_ps(scale[0]);
  const __m256i z1 = _mm256_set1_epi32(zp[0]);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 s = per_lane ? _mm256_loadu_ps(scale + i) : s1;
    const __m256i z = per_lane ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zp + i)) : z1;
    const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(widen(i), z)), s);
    if (stream && (reinterpret_cast<uintptr_t>(y + i) & 31) == 0)
      _mm256_stream_ps(y + i, v);
    else
      _mm256_storeu_ps(y + i, v);
  }
  if (stream) _mm_sfence();
  return i;
}

}  // namespace

void quantize_s8(const float* x, int8_t* q, int64_t n, const float* scale, const int32_t* zp,
                 bool per_lane, bool stream) {
  quantize_run<true>(x, q, n, scale, zp, per_lane, stream);
}
void quantize_u8(const float* x, uint8_t* q, int64_t n, const float* scale, const int32_t* zp,
                 bool per_lane, bool stream) {
  quantize_run<false>(x, q, n, scale, zp, per_lane, stream);
}
void dequantize_s8(const int8_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                   bool per_lane, bool stream) {
  const int64_t i = dequantize_run(y, n, scale, zp, per_lane, stream, [q](int64_t j) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j)));
  });
  if (i < n)
    qgeneric::dequantize_s8(q + i, y + i, n - i, per_lane ? scale + i : scale, per_lane ? zp + i : zp,
                            per_lane, false);
}
void dequantize_u8(const uint8_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                   bool per_lane, bool stream) {
  const int64_t i = dequantize_run(y, n, scale, zp, per_lane, stream, [q](int64_t j) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j)));
  });
  if (i < n)
    qgeneric::dequantize_u8(q + i, y + i, n - i, per_lane ? scale + i : scale, per_lane ? zp + i : zp,
                            per_lane, false);
}
void dequantize_s32(const int32_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                    bool per_lane, bool stream) {
  qgeneric::dequantize_s32(q, y, n, scale, zp, per_lane, stream);
}

bool minmax_finite(const float* x, int64_t n, float* lo, float* hi) {
  __m256 a = _mm256_set1_ps(x[0]), b = a;
  const __m256i expo = _mm256_set1_epi32(0x7F800000);
  __m256i bad = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expo), expo));
    a = _mm256_min_ps(a, v);
    b = _mm256_max_ps(b, v);
  }
  alignas(32) float la[8], lb[8];
  _mm256_store_ps(la, a);
  _mm256_store_ps(lb, b);
  float mn = la[0], mx = lb[0];
  for (int j = 1; j < 8; ++j) {
    mn = la[j] < mn ? la[j] : mn;
    mx = lb[j] > mx ? lb[j] : mx;
  }
  bool finite = _mm256_testz_si256(bad, bad);
  for (; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  *lo = mn;
  *hi = mx;
  return finite;
}

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
