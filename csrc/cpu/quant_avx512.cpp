// cpu/quant_avx512.cpp -- AVX-512 quantize / dequantize / min-max kernels on one
// contiguous run (quant.cpp splits the layout and the threads).
// quantize divides in float32 and rounds the float32 quotient half to even
// (vrndscaleps), exactly as ONNX QuantizeLinear (and lepton_kernels.reference)
// computes it. Edge elements use masks; large outputs are written
// with non-temporal stores once the destination is 64-byte aligned.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/igemm_internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// saturate(round_half_to_even(x / s) + zp) as an exact float in [lo, hi]; NaN -> zp.
inline __m512 quant16(__m512 x, __m512 s, __m512 zpf, __m512 lo, __m512 hi) {
  const __m512 y = _mm512_div_ps(x, s);  // float32 division, as ONNX (not a reciprocal multiply)
  const __m512 r = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, zpf), lo), hi);
  return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), zpf);
}

template <bool SIGNED>
inline __m128i narrow(__m512 v) {
  const __m512i i = _mm512_cvtps_epi32(v);
  return SIGNED ? _mm512_cvtsepi32_epi8(i) : _mm512_cvtusepi32_epi8(i);
}

template <bool SIGNED, class Q>
void quantize_run(const float* x, Q* q, int64_t n, const float* scale, const int32_t* zp,
                  bool per_lane, bool stream) {
  const __m512 lo = _mm512_set1_ps(SIGNED ? -128.f : 0.f), hi = _mm512_set1_ps(SIGNED ? 127.f : 255.f);
  const __m512 s1 = _mm512_set1_ps(scale[0]), z1 = _mm512_set1_ps(static_cast<float>(zp[0]));
  auto params = [&](int64_t i, __mmask16 m, __m512* s, __m512* z) {
    if (per_lane) {
      *s = _mm512_mask_loadu_ps(_mm512_set1_ps(1.f), m, scale + i);
      *z = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, zp + i));
    } else {
      *s = s1;
      *z = z1;
    }
  };
  auto masked = [&](int64_t i, int64_t len) {
    const __mmask16 m = mask16(len);
    __m512 s, z;
    params(i, m, &s, &z);
    const __m512 v = quant16(_mm512_maskz_loadu_ps(m, x + i), s, z, lo, hi);
    _mm_mask_storeu_epi8(q + i, m, narrow<SIGNED>(v));
  };
  int64_t i = 0;
  if (stream) {  // align q to 64 bytes for the streaming stores
    const int64_t head = static_cast<int64_t>((64 - (reinterpret_cast<uintptr_t>(q) & 63)) & 63);
    const int64_t h = head < n ? head : n;
    for (; i < h; i += 16) masked(i, h - i < 16 ? h - i : 16);
    i = h;
  }
  for (; i + 64 <= n; i += 64) {
    __m128i p[4];
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      __m512 s, z;
      params(i + 16 * u, 0xFFFF, &s, &z);
      p[u] = narrow<SIGNED>(quant16(_mm512_loadu_ps(x + i + 16 * u), s, z, lo, hi));
    }
    __m512i out = _mm512_castsi128_si512(p[0]);
    out = _mm512_inserti32x4(out, p[1], 1);
    out = _mm512_inserti32x4(out, p[2], 2);
    out = _mm512_inserti32x4(out, p[3], 3);
    if (stream)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(q + i), out);
    else
      _mm512_storeu_si512(q + i, out);
  }
  for (; i < n; i += 16) masked(i, n - i < 16 ? n - i : 16);
  if (stream) _mm_sfence();
}

template <class Load>
void dequantize_run(float* y, int64_t n, const float* scale, const int32_t* zp, bool per_lane,
                    bool stream, Load load) {
  const __m512 s1 = _mm512_set1_ps(scale[0]);
  const __m512i z1 = _mm512_set1_epi32(zp[0]);
  auto one = [&](int64_t i, __mmask16 m, bool nt) {
    const __m512 s = per_lane ? _mm512_maskz_loadu_ps(m, scale + i) : s1;
    const __m512i z = per_lane ? _mm512_maskz_loadu_epi32(m, zp + i) : z1;
    // (q - zp) is exact in float32 (<= 9 bits): one rounding of the exact product.
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(load(i, m), z)), s);
    if (nt)
      _mm512_stream_ps(y + i, v);
    else
      _mm512_mask_storeu_ps(y + i, m, v);
  };
  int64_t i = 0;
  if (stream) {
    const int64_t head = static_cast<int64_t>(((64 - (reinterpret_cast<uintptr_t>(y) & 63)) & 63) / 4);
    const int64_t h = head < n ? head : n;
    if (h > 0) one(0, mask16(h), false);
    i = h;
  }
  for (; i + 16 <= n; i += 16) one(i, 0xFFFF, stream);
  if (i < n) one(i, mask16(n - i), false);
  if (stream) _mm_sfence();
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
  dequantize_run(y, n, scale, zp, per_lane, stream, [q](int64_t i, __mmask16 m) {
    return _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + i));
  });
}
void dequantize_u8(const uint8_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                   bool per_lane, bool stream) {
  dequantize_run(y, n, scale, zp, per_lane, stream, [q](int64_t i, __mmask16 m) {
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, q + i));
  });
}
void dequantize_s32(const int32_t* q, float* y, int64_t n, const float* scale, const int32_t* zp,
                    bool per_lane, bool stream) {
  // float64 (q - zp) * scale, then float32, as the reference.
  const __m512d s1 = _mm512_set1_pd(scale[0]), z1 = _mm512_set1_pd(zp[0]);
  auto half = [&](int64_t i, __mmask8 m) {
    const __m512d s = per_lane ? _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, scale + i)) : s1;
    const __m512d z = per_lane ? _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, zp + i)) : z1;
    const __m512d v = _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, q + i));
    return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(v, z), s));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, half(i, 0xFF));
  if (i < n) {
    const __mmask8 m = static_cast<__mmask8>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_ps(y + i, m, half(i, m));
  }
  (void)stream;
}

bool minmax_finite(const float* x, int64_t n, float* lo, float* hi) {
  __m512 a = _mm512_set1_ps(x[0]), b = a;
  __mmask16 bad = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN, SNaN, +inf, -inf
    a = _mm512_min_ps(a, v);
    b = _mm512_max_ps(b, v);
  }
  if (i < n) {
    const __mmask16 m = mask16(n - i);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(x[0]), m, x + i);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);
    a = _mm512_min_ps(a, v);
    b = _mm512_max_ps(b, v);
  }
  *lo = _mm512_reduce_min_ps(a);
  *hi = _mm512_reduce_max_ps(b);
  return bad == 0;
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
