// cpu/conv_avx2.cpp -- float32 direct convolution kernels, AVX2 + FMA (8 lanes):
// the forward tile (up to 8 output channels x 1-6 vectors of 8 outputs in
// ymm accumulators, one load per tap and vector, weights broadcast) and the
// weight-gradient tiles (3 channels x 3 taps reduced over the outputs; and
// 1-3 channel vectors x 4-12 taps reduced over a transposed gradient). The
// bodies are shared with AVX-512 through conv_internal.h; see there for layouts.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/conv_internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

struct V {
  static constexpr int L = 8;
  using R = __m256;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static void store_n(float* p, R v, int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane), v);
  }
  // Zero the lanes where v <= 0 (a NaN lane compares "not <= 0" and is kept).
  static R relu(R v) { return _mm256_andnot_ps(_mm256_cmp_ps(v, zero(), _CMP_LE_OQ), v); }
};


void copy_rows(const float* src, int64_t sstride, float* dst, int64_t dstride, int64_t rows,
               int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * sstride;
    float* d = dst + r * dstride;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + i));
    if (i < n) {
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)), lane);
      _mm256_maskstore_ps(d + i, m, _mm256_maskload_ps(s + i, m));
    }
  }
}

}  // namespace

#define LEPTON_CONV_KERNEL_BODY
#include "cpu/conv_internal.h"

ConvDirectKernels conv_direct_kernels() {
  ConvDirectKernels k;
  k.lanes = V::L;
  k.max_ob = 6;
  k.fwd = fwd_any;
  k.wgrad = wgrad_any;
  k.copy_rows = copy_rows;
  k.wgrad_t = wgrad_t_any;
  k.transpose = transpose_any;
  k.mask = mask_any;
  return k;
}

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
