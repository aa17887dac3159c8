// cpu/elementwise_avx2.cpp -- float32 ReLU / bias+ReLU forward and backward
// over one contiguous range, AVX2. Same structure as the AVX-512 file: masked
// tails (vmaskmov never faults on masked-out lanes) and optional non-temporal
// stores after peeling the destination to 32-byte alignment.
#include <immintrin.h>

#include <cstdint>

#include "cpu/internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

alignas(64) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lane mask with the first n (0..8) lanes on.
inline __m256i tail_mask(int64_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
}

struct Lanes {
  bool full;
  __m256i mask;
};

inline __m256 load(const float* p, const Lanes& l) {
  return l.full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, l.mask);
}

template <class F>
inline void store_range(float* y, int64_t n, bool stream, F f) {
  const Lanes full{true, _mm256_setzero_si256()};
  int64_t i = 0;
  if (stream) {
    int64_t mis = static_cast<int64_t>((reinterpret_cast<uintptr_t>(y) & 31) / sizeof(float));
    if (mis) {
      int64_t head = 8 - mis < n ? 8 - mis : n;
      Lanes l{false, tail_mask(head)};
      _mm256_maskstore_ps(y, l.mask, f(0, l));
      i = head;
    }
    for (; i + 16 <= n; i += 16) {
      __m256 a = f(i, full), b = f(i + 8, full);
      _mm256_stream_ps(y + i, a);
      _mm256_stream_ps(y + i + 8, b);
    }
    for (; i + 8 <= n; i += 8) _mm256_stream_ps(y + i, f(i, full));
  } else {
    for (; i + 16 <= n; i += 16) {
      __m256 a = f(i, full), b = f(i + 8, full);
      _mm256_storeu_ps(y + i, a);
      _mm256_storeu_ps(y + i + 8, b);
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(i, full));
  }
  if (i < n) {
    Lanes l{false, tail_mask(n - i)};
    _mm256_maskstore_ps(y + i, l.mask, f(i, l));
  }
  if (stream) _mm_sfence();
}

// max(0, v): vmaxps returns the second operand on NaN, so NaN propagates.
inline __m256 relu_vec(__m256 v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }

// g where NOT (v <= 0) (positive or NaN), else 0.
inline __m256 pass(__m256 v, __m256 g) {
  return _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NLE_UQ), g);
}

}  // namespace

void relu_f32(const float* x, float* y, int64_t n, bool stream) {
  store_range(y, n, stream, [x](int64_t i, const Lanes& l) { return relu_vec(load(x + i, l)); });
}

void relu_backward_f32(const float* g, const float* x, float* out, int64_t n, bool stream) {
  store_range(out, n, stream,
              [g, x](int64_t i, const Lanes& l) { return pass(load(x + i, l), load(g + i, l)); });
}

void bias_relu_f32(const float* x, float b, float* y, int64_t n, bool stream) {
  const __m256 vb = _mm256_set1_ps(b);
  store_range(y, n, stream, [x, vb](int64_t i, const Lanes& l) {
    return relu_vec(_mm256_add_ps(load(x + i, l), vb));
  });
}

void bias_relu_vec_f32(const float* x, const float* b, float* y, int64_t n, bool stream) {
  store_range(y, n, stream, [x, b](int64_t i, const Lanes& l) {
    return relu_vec(_mm256_add_ps(load(x + i, l), load(b + i, l)));
  });
}

// Double accumulation in an order fixed by n alone (reproducible run to run).
double bias_relu_backward_f32(const float* g, const float* y, float* gx, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  auto step = [&](__m256 v) {
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = pass(_mm256_loadu_ps(y + i), _mm256_loadu_ps(g + i));
    _mm256_storeu_ps(gx + i, v);
    step(v);
  }
  if (i < n) {
    __m256i m = tail_mask(n - i);
    __m256 v = pass(_mm256_maskload_ps(y + i, m), _mm256_maskload_ps(g + i, m));
    _mm256_maskstore_ps(gx + i, m, v);
    step(v);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
