// cpu/gemm_avx2.cpp -- AVX2+FMA GEMM micro-kernels and packing.
// float: 6 x 16 register tile (12 ymm accumulators, 2 B vectors, 1 broadcast);
// double: 6 x 8. The epilogue (C add, bias, ReLU) is fused into the tile's
// store; edge columns use vmaskmov loads/stores so nothing outside C is
// touched (masked-off lanes never fault). Row-major A and transposed B are
// packed through 8x8 register transposes.
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

template <class T>
struct Vec;
template <>
struct Vec<float> {
  using R = __m256;
  using M = __m256i;
  static constexpr int W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R relu(R v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }  // NaN passes (2nd operand)
  static R loadm(M m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void storem(float* p, M m, R v) { _mm256_maskstore_ps(p, m, v); }
  static M mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static float hsum(R v) {  // (lanes i + i+4), then pairs, then the last two
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static void hsum4(const R* v, float* out) {
    for (int q = 0; q < 4; ++q) out[q] = hsum(v[q]);
  }
};
template <>
struct Vec<double> {
  using R = __m256d;
  using M = __m256i;
  static constexpr int W = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R set1(double v) { return _mm256_set1_pd(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R relu(R v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
  static R loadm(M m, const double* p) { return _mm256_maskload_pd(p, m); }
  static void storem(double* p, M m, R v) { _mm256_maskstore_pd(p, m, v); }
  static M mask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static double hsum(R v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static void hsum4(const R* v, double* out) {
    for (int q = 0; q < 4; ++q) out[q] = hsum(v[q]);
  }
};

template <class T, int MR, int NV>
void micro(int64_t kc, const T* pa, const T* pb, T* c, int64_t ldc, int mv, int nv,
           const GemmEpilogue<T>& ep) {
  using X = Vec<T>;
  using R = typename X::R;
  constexpr int W = X::W, NR = NV * W;
  R acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = X::zero();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; ++p) {
    R bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = X::load(pb + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R av = X::set1(pa[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = X::fma(av, bv[v], acc[i][v]);
    }
    pa += MR;
    pb += NR;
  }
  typename X::M mk[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mk[v] = X::mask(nv - v * W);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
    T* cr = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (nv <= v * W) break;
      R x = acc[i][v];
      if (ep.load_c) x = X::add(X::loadm(mk[v], cr + v * W), x);
      if (ep.last) {
        if (ep.bias_mode == BiasMode::per_row) x = X::add(x, X::set1(ep.bias[i]));
        if (ep.bias_mode == BiasMode::per_col) x = X::add(x, X::loadm(mk[v], ep.bias + v * W));
        if (ep.relu) x = X::relu(x);
      }
      X::storem(cr + v * W, mk[v], x);
    }
  }
}

inline __m256i mask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 8 ? n : 8)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Loads `rows` rows (stride ld) of `len` <= 8 floats, zero elsewhere, and
// transposes in registers: r[q] lane i = src[i * ld + q].
inline void load_transpose8(const float* src, int64_t ld, int64_t rows, int64_t len, __m256 r[8]) {
  const __m256i m = mask8(len);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_maskload_ps(src + i * ld, m) : _mm256_setzero_ps();
  __m256 t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int g = 0; g < 2; ++g) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

// A panels of MR <= 8 rows (row-major A through 8x8 transposes).
template <int MR>
void pack_a_f32(const float* a, int64_t lda, bool trans, int64_t mb, int64_t kc, float* dst) {
  if (trans) {
    pack_a_ref<float, MR>(a, lda, trans, mb, kc, dst);
    return;
  }
  const __m256i sm = mask8(MR);
  for (int64_t i0 = 0; i0 < mb; i0 += MR) {
    const int64_t rows = mb - i0 < MR ? mb - i0 : MR;
    const float* src = a + i0 * lda;
    for (int64_t p0 = 0; p0 < kc; p0 += 8) {
      const int64_t len = kc - p0 < 8 ? kc - p0 : 8;
      __m256 r[8];
      load_transpose8(src + p0, lda, rows, len, r);
      for (int64_t q = 0; q < len; ++q) _mm256_maskstore_ps(dst + (p0 + q) * MR, sm, r[q]);
    }
    dst += kc * MR;
  }
}

// B panels of NR = 8 * NV columns (transposed B through 8x8 transposes).
template <int NV>
void pack_b_f32(const float* b, int64_t ldb, bool trans, int64_t kc, int64_t nb, float* dst) {
  constexpr int NR = NV * 8;
  if (!trans) {
    pack_b_ref<float, NR>(b, ldb, trans, kc, nb, dst);
    return;
  }
  for (int64_t j0 = 0; j0 < nb; j0 += NR) {
    const int64_t cols = nb - j0 < NR ? nb - j0 : NR;
    for (int v = 0; v < NV; ++v) {
      const int64_t vc = cols - 8 * v;
      const float* src = b + (j0 + 8 * v) * ldb;
      for (int64_t p0 = 0; p0 < kc; p0 += 8) {
        const int64_t len = kc - p0 < 8 ? kc - p0 : 8;
        __m256 r[8];
        if (vc > 0) {
          load_transpose8(src + p0, ldb, vc, len, r);
        } else {
          for (int q = 0; q < 8; ++q) r[q] = _mm256_setzero_ps();
        }
        for (int64_t q = 0; q < len; ++q) _mm256_storeu_ps(dst + (p0 + q) * NR + 8 * v, r[q]);
      }
    }
    dst += kc * NR;
  }
}

}  // namespace

GemmKernel<float> sgemm_kernel() {
  constexpr int MR = 6, NV = 2;
  GemmKernel<float> k;
  k.mr = MR;
  k.nr = NV * 8;
  k.micro = micro<float, MR, NV>;
  k.pack_a = pack_a_f32<MR>;
  k.pack_b = pack_b_f32<NV>;
  return k;
}

GemmKernel<double> dgemm_kernel() {
  constexpr int MR = 6, NV = 2;
  GemmKernel<double> k;
  k.mr = MR;
  k.nr = NV * 4;
  k.micro = micro<double, MR, NV>;
  k.pack_a = pack_a_ref<double, MR>;
  k.pack_b = pack_b_ref<double, NV * 4>;
  return k;
}

GemvKernel<float> sgemv_kernel() { return make_gemv<Vec<float>, float, 16>(); }  // 16 ymm
GemvKernel<double> dgemv_kernel() { return make_gemv<Vec<double>, double, 16>(); }

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
