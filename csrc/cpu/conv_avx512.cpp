// cpu/conv_avx512.cpp -- float32 direct convolution kernels, AVX-512 (16 lanes):
// the forward tile (up to 8 output channels x 3-8 vectors of 16 outputs in
// zmm accumulators, one load per tap and vector, weights broadcast) and the
// weight-gradient tile (5 channels x 4 taps reduced over the outputs). The
// bodies are shared with AVX2 through conv_internal.h; see there for layouts.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/conv_internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

struct V {
  static constexpr int L = 16;
  using R = __m512;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static void store_n(float* p, R v, int64_t n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
  }
  // Zero the lanes where v <= 0 (ordered compare: a NaN lane is kept).
  static R relu(R v) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_NLE_UQ), v); }
};


void copy_rows(const float* src, int64_t sstride, float* dst, int64_t dstride, int64_t rows,
               int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * sstride;
    float* d = dst + r * dstride;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
      _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
    }
  }
}

}  // namespace

#define LEPTON_CONV_KERNEL_BODY
#include "cpu/conv_internal.h"

ConvDirectKernels conv_direct_kernels() {
  ConvDirectKernels k;
  k.lanes = V::L;
  k.max_ob = 8;
  k.fwd = fwd_any;
  k.wgrad = wgrad_any;
  k.copy_rows = copy_rows;
  return k;
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
