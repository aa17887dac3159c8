// cpu/elementwise_avx512.cpp -- float32 ReLU / bias+ReLU forward and backward
// over one contiguous range, AVX-512. Tails use masked loads/stores so nothing
// outside the range is touched; large outputs use non-temporal stores after
// peeling the destination to 64-byte alignment (the caller decides, see
// use_streaming()).
// GCC 12's _mm512_undefined_ps() self-initializes and trips -Wuninitialized
// inside the intrinsic headers (GCC PR105593, fixed in 12.3/13); silence it
// for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Writes y[i] = f(i, mask) for i in [0, n) in vectors of 16; f must load its
// inputs with the given mask. `stream` selects non-temporal stores.
template <class F>
inline void store_range(float* y, int64_t n, bool stream, F f) {
  int64_t i = 0;
  if (stream) {
    int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(y) & 63) / sizeof(float));
    if (mis) {
      int64_t head = 16 - mis < n ? 16 - mis : n;
      __mmask16 m = tail_mask(head);
      _mm512_mask_storeu_ps(y, m, f(0, m));
      i = head;
    }
    for (; i + 32 <= n; i += 32) {
      __m512 a = f(i, 0xFFFF), b = f(i + 16, 0xFFFF);
      _mm512_stream_ps(y + i, a);
      _mm512_stream_ps(y + i + 16, b);
    }
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, f(i, 0xFFFF));
  } else {
    for (; i + 32 <= n; i += 32) {
      __m512 a = f(i, 0xFFFF), b = f(i + 16, 0xFFFF);
      _mm512_storeu_ps(y + i, a);
      _mm512_storeu_ps(y + i + 16, b);
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f(i, 0xFFFF));
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, f(i, m));
  }
  if (stream) _mm_sfence();
}

inline __m512 load(const float* p, __mmask16 m) {
  return m == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

// max(0, v) with 0 as the FIRST operand: vmaxps returns the second operand
// when either is NaN, so a NaN input propagates.
inline __m512 relu_vec(__m512 v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }

// Lanes where NOT (v <= 0): true for positive values and NaN.
inline __mmask16 pass_mask(__m512 v) {
  return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ);
}

}  // namespace

void relu_f32(const float* x, float* y, int64_t n, bool stream) {
  store_range(y, n, stream, [x](int64_t i, __mmask16 m) { return relu_vec(load(x + i, m)); });
}

void relu_backward_f32(const float* g, const float* x, float* out, int64_t n, bool stream) {
  store_range(out, n, stream, [g, x](int64_t i, __mmask16 m) {
    return _mm512_maskz_mov_ps(pass_mask(load(x + i, m)), load(g + i, m));
  });
}

void bias_relu_f32(const float* x, float b, float* y, int64_t n, bool stream) {
  const __m512 vb = _mm512_set1_ps(b);
  store_range(y, n, stream, [x, vb](int64_t i, __mmask16 m) {
    return relu_vec(_mm512_add_ps(load(x + i, m), vb));
  });
}

void bias_relu_vec_f32(const float* x, const float* b, float* y, int64_t n, bool stream) {
  store_range(y, n, stream, [x, b](int64_t i, __mmask16 m) {
    return relu_vec(_mm512_add_ps(load(x + i, m), load(b + i, m)));
  });
}

// The sum is accumulated in double, in an order fixed by n alone (no
// alignment peeling), so it is reproducible run to run.
double bias_relu_backward_f32(const float* g, const float* y, float* gx, int64_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_maskz_mov_ps(pass_mask(_mm512_loadu_ps(y + i)), _mm512_loadu_ps(g + i));
    _mm512_storeu_ps(gx + i, v);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    __m512 v = _mm512_maskz_mov_ps(pass_mask(_mm512_maskz_loadu_ps(m, y + i)),
                                   _mm512_maskz_loadu_ps(m, g + i));
    _mm512_mask_storeu_ps(gx + i, m, v);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
