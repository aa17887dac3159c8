// cpu/conv_avx512.cpp -- float32 direct convolution kernels, AVX-512 (16 lanes):
// the forward tile (up to 8 output channels x 2-8 vectors of 16 outputs in
// zmm accumulators, one load per tap and vector, weights broadcast), the
// weight-gradient tiles (6 channels x 4 taps reduced over the outputs; and
// 1-4 channel vectors x 6-12 taps reduced over a transposed gradient), and
// stride-2 row gathers/scatters (two-source permutes, masked ends). The
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

// Stride-2 gathers/scatters with two-source permutes and masked loads/stores;
// other steps element by element.
void gather_rows(const float* src, int64_t sstride, float* dst, int64_t dstride, int64_t rows,
                 int64_t n, int64_t step) {
  if (n <= 0) return;
  if (step != 2) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) dst[r * dstride + i] = src[r * sstride + i * step];
    return;
  }
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const int64_t full = (n - 1) / 16 * 16;  // blocks before the last read 32 floats
  const int64_t cnt = n - full, need = 2 * cnt - 1;  // the last block: outputs, floats read
  const __mmask16 m0 = static_cast<__mmask16>(need >= 16 ? 0xffffu : (1u << need) - 1u);
  const __mmask16 m1 = static_cast<__mmask16>(need > 16 ? (1u << (need - 16)) - 1u : 0u);
  const __mmask16 ms = static_cast<__mmask16>(cnt == 16 ? 0xffffu : (1u << cnt) - 1u);
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * sstride;
    float* d = dst + r * dstride;
    for (int64_t i = 0; i < full; i += 16)
      _mm512_storeu_ps(d + i, _mm512_permutex2var_ps(_mm512_loadu_ps(s + 2 * i), even,
                                                     _mm512_loadu_ps(s + 2 * i + 16)));
    const __m512 a = _mm512_maskz_loadu_ps(m0, s + 2 * full);
    const __m512 b = _mm512_maskz_loadu_ps(m1, s + 2 * full + 16);
    _mm512_mask_storeu_ps(d + full, ms, _mm512_permutex2var_ps(a, even, b));
  }
}

void scatter_rows(const float* src, int64_t sstride, float* dst, int64_t dstride, int64_t rows,
                  int64_t n, int64_t step) {
  const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * sstride;
    float* d = dst + r * dstride;
    if (step != 2) {
      for (int64_t i = 0; i < n; ++i) d[i * step] = s[i];
      continue;
    }
    for (int64_t i = 0; i < n; i += 16) {
      const int64_t cnt = n - i < 16 ? n - i : 16;
      const __m512 v = _mm512_maskz_loadu_ps(
          static_cast<__mmask16>(cnt == 16 ? 0xffffu : (1u << cnt) - 1u), s + i);
      // Even destination lanes only: element j goes to d[2*(i + j)].
      const int64_t need = 2 * cnt - 1;
      const uint32_t m0 = 0x5555u & (need >= 16 ? 0xffffu : (1u << need) - 1u);
      const uint32_t m1 = 0x5555u & (need > 16 ? (1u << (need - 16)) - 1u : 0u);
      _mm512_mask_storeu_ps(d + 2 * i, static_cast<__mmask16>(m0), _mm512_permutexvar_ps(lo, v));
      if (m1) _mm512_mask_storeu_ps(d + 2 * i + 16, static_cast<__mmask16>(m1), _mm512_permutexvar_ps(hi, v));
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
  k.wgrad_t = wgrad_t_any;
  k.transpose = transpose_any;
  k.mask = mask_any;
  k.gather_rows = gather_rows;
  k.scatter_rows = scatter_rows;
  return k;
}

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
