// cpu/gemm_avx512.cpp -- AVX-512 GEMM micro-kernels and packing.
// float: MR x NR register tile of MR rows x (NV x 16) columns; each k step
// loads NV vectors of the packed B panel, broadcasts MR values of the packed A
// panel and issues MR*NV FMAs into zmm accumulators. The epilogue (C add, bias,
// ReLU) is applied on the tile's single store with column masks, so edge tiles
// never touch memory outside C. double: the same kernel with 8-lane vectors.
// Packing of the transposed layouts (row-major A, transposed B) goes through
// 16x16 register transposes.
// GCC 12's _mm512_undefined_ps() self-initializes and trips -Wuninitialized
// inside the intrinsic headers (GCC PR105593); silence it for the header only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/gemm_internal.h"

namespace lepton {
namespace detail {
namespace avx512 {
namespace {

template <class T>
struct Vec;
template <>
struct Vec<float> {
  using R = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R relu(R v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }  // NaN passes (2nd operand)
  static R loadm(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void storem(float* p, M m, R v) { _mm512_mask_storeu_ps(p, m, v); }
  static M mask(int n) { return n >= 16 ? M(0xFFFF) : n <= 0 ? M(0) : M((1u << n) - 1u); }
  // Sum of the 16 lanes, pairing lanes i + i+8, then i + i+4, i + i+2, i + i+1.
  static float hsum(R v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_permute_ps(q, _MM_SHUFFLE(2, 3, 0, 1))));
  }
  // hsum of v[0..3] into out[0..3] with the same pairings and operand order
  // (so bit for bit the same), sharing the shuffles and adds of four.
  static void hsum4(const R* v, float* out) {
    // ab: lanes 0-7 = v[0] (i + i+8), lanes 8-15 = v[1] (i + i+8); cd likewise.
    const R ab =
        _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x44), _mm512_shuffle_f32x4(v[0], v[1], 0xEE));
    const R cd =
        _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], 0x44), _mm512_shuffle_f32x4(v[2], v[3], 0xEE));
    // t: 128-bit block q = v[q] (i + i+4); then within each block i + i+2, i + i+1.
    R t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(lanes, t)));
  }
};
template <>
struct Vec<double> {
  using R = __m512d;
  using M = __mmask8;
  static constexpr int W = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R set1(double v) { return _mm512_set1_pd(v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R relu(R v) { return _mm512_max_pd(_mm512_setzero_pd(), v); }
  static R loadm(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static void storem(double* p, M m, R v) { _mm512_mask_storeu_pd(p, m, v); }
  static M mask(int n) { return n >= 8 ? M(0xFF) : n <= 0 ? M(0) : M((1u << n) - 1u); }
  static double hsum(R v) { return _mm512_reduce_add_pd(v); }
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
  // The C tile is read/written only after the k loop: start its cache misses now.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
#pragma GCC unroll 4
    for (int l = 0; l < (NR * int(sizeof(T)) + 63) / 64; ++l)
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc) + 64 * l, _MM_HINT_T0);
  }
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
  R bcol[NV];
  if (ep.last && ep.bias_mode == BiasMode::per_col) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bcol[v] = X::loadm(mk[v], ep.bias + v * W);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
    T* cr = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      R x = acc[i][v];
      if (ep.load_c) x = X::add(X::loadm(mk[v], cr + v * W), x);
      if (ep.last) {
        if (ep.bias_mode == BiasMode::per_row) x = X::add(x, X::set1(ep.bias[i]));
        if (ep.bias_mode == BiasMode::per_col) x = X::add(x, bcol[v]);
        if (ep.relu) x = X::relu(x);
      }
      X::storem(cr + v * W, mk[v], x);
    }
  }
}

// In-register transpose of 16 rows of 16 floats: r[j] lane i <- r[i] lane j.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 q[4][4];  // q[g][c], 128-bit block b: column 4b+c of rows 4g..4g+3
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    const __m512d a0 = _mm512_castps_pd(t[4 * g]), a1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d a2 = _mm512_castps_pd(t[4 * g + 2]), a3 = _mm512_castps_pd(t[4 * g + 3]);
    q[g][0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    q[g][1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    q[g][2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    q[g][3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512 u0 = _mm512_shuffle_f32x4(q[0][c], q[1][c], 0x88);
    const __m512 u1 = _mm512_shuffle_f32x4(q[0][c], q[1][c], 0xDD);
    const __m512 u2 = _mm512_shuffle_f32x4(q[2][c], q[3][c], 0x88);
    const __m512 u3 = _mm512_shuffle_f32x4(q[2][c], q[3][c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
    r[4 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
  }
}

inline __mmask16 mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

// Loads `rows` rows (stride ld) of `len` <= 16 floats, zero elsewhere, and
// transposes: out[q] lane i = src[i * ld + q].
inline void load_transpose(const float* src, int64_t ld, int64_t rows, int64_t len, __m512 r[16]) {
  const __mmask16 m = mask16(len);
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_ps(m, src + i * ld) : _mm512_setzero_ps();
  transpose16(r);
}

// A panels of MR <= 16 rows. Row-major A goes through 16x16 transposes;
// transposed A is already MR-contiguous per k.
template <int MR>
void pack_a_f32(const float* a, int64_t lda, bool trans, int64_t mb, int64_t kc, float* dst) {
  const __mmask16 full = mask16(MR);
  for (int64_t i0 = 0; i0 < mb; i0 += MR) {
    const int64_t rows = mb - i0 < MR ? mb - i0 : MR;
    if (trans) {
      const __mmask16 m = mask16(rows);
      for (int64_t p = 0; p < kc; ++p)
        _mm512_mask_storeu_ps(dst + p * MR, full, _mm512_maskz_loadu_ps(m, a + p * lda + i0));
    } else {
      const float* src = a + i0 * lda;
      for (int64_t p0 = 0; p0 < kc; p0 += 16) {
        const int64_t len = kc - p0 < 16 ? kc - p0 : 16;
        __m512 r[16];
        load_transpose(src + p0, lda, rows, len, r);
        for (int64_t q = 0; q < len; ++q) _mm512_mask_storeu_ps(dst + (p0 + q) * MR, full, r[q]);
      }
    }
    dst += kc * MR;
  }
}

// B panels of NR = 16 * NV columns. Transposed B goes through 16x16 transposes.
template <int NV>
void pack_b_f32(const float* b, int64_t ldb, bool trans, int64_t kc, int64_t nb, float* dst) {
  constexpr int NR = NV * 16;
  for (int64_t j0 = 0; j0 < nb; j0 += NR) {
    const int64_t cols = nb - j0 < NR ? nb - j0 : NR;
    if (!trans) {
      __mmask16 mk[NV];
      for (int v = 0; v < NV; ++v) mk[v] = mask16(cols - 16 * v);
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + p * ldb + j0;
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          _mm512_storeu_ps(dst + p * NR + 16 * v, _mm512_maskz_loadu_ps(mk[v], src + 16 * v));
      }
    } else {
      for (int v = 0; v < NV; ++v) {
        const int64_t vc = cols - 16 * v;
        if (vc <= 0) {
          for (int64_t p = 0; p < kc; ++p) _mm512_storeu_ps(dst + p * NR + 16 * v, _mm512_setzero_ps());
          continue;
        }
        const float* src = b + (j0 + 16 * v) * ldb;
        for (int64_t p0 = 0; p0 < kc; p0 += 16) {
          const int64_t len = kc - p0 < 16 ? kc - p0 : 16;
          __m512 r[16];
          load_transpose(src + p0, ldb, vc, len, r);
          for (int64_t q = 0; q < len; ++q) _mm512_storeu_ps(dst + (p0 + q) * NR + 16 * v, r[q]);
        }
      }
    }
    dst += kc * NR;
  }
}

// In-register transpose of 8 rows of 8 doubles (same scheme as transpose16).
inline void transpose8(__m512d r[8]) {
  __m512d t[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  // t[2p + c], 128-bit block b: column 2b+c of rows 2p, 2p+1
#pragma GCC unroll 2
  for (int c = 0; c < 2; ++c) {
    const __m512d u0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88);
    const __m512d u1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xDD);
    const __m512d u2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
    const __m512d u3 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xDD);
    r[c] = _mm512_shuffle_f64x2(u0, u2, 0x88);
    r[4 + c] = _mm512_shuffle_f64x2(u0, u2, 0xDD);
    r[2 + c] = _mm512_shuffle_f64x2(u1, u3, 0x88);
    r[6 + c] = _mm512_shuffle_f64x2(u1, u3, 0xDD);
  }
}

inline __mmask8 mask8(int64_t n) {
  return n >= 8 ? __mmask8(0xFF) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1u);
}

inline void load_transpose8(const double* src, int64_t ld, int64_t rows, int64_t len, __m512d r[8]) {
  const __mmask8 m = mask8(len);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_pd(m, src + i * ld) : _mm512_setzero_pd();
  transpose8(r);
}

// double A panels of MR <= 16 rows, in chunks of 8 rows.
template <int MR>
void pack_a_f64(const double* a, int64_t lda, bool trans, int64_t mb, int64_t kc, double* dst) {
  for (int64_t i0 = 0; i0 < mb; i0 += MR) {
    const int64_t rows = mb - i0 < MR ? mb - i0 : MR;
    for (int h = 0; h * 8 < MR; ++h) {
      const __mmask8 sm = mask8(MR - 8 * h);
      const int64_t hr = rows - 8 * h;
      if (trans) {
        const __mmask8 lm = mask8(hr);
        for (int64_t p = 0; p < kc; ++p)
          _mm512_mask_storeu_pd(dst + p * MR + 8 * h, sm,
                                _mm512_maskz_loadu_pd(lm, a + p * lda + i0 + 8 * h));
        continue;
      }
      const double* src = a + (i0 + 8 * h) * lda;
      for (int64_t p0 = 0; p0 < kc; p0 += 8) {
        const int64_t len = kc - p0 < 8 ? kc - p0 : 8;
        __m512d r[8];
        load_transpose8(src + p0, lda, hr, len, r);
        for (int64_t q = 0; q < len; ++q) _mm512_mask_storeu_pd(dst + (p0 + q) * MR + 8 * h, sm, r[q]);
      }
    }
    dst += kc * MR;
  }
}

// double B panels of NR = 8 * NV columns.
template <int NV>
void pack_b_f64(const double* b, int64_t ldb, bool trans, int64_t kc, int64_t nb, double* dst) {
  constexpr int NR = NV * 8;
  for (int64_t j0 = 0; j0 < nb; j0 += NR) {
    const int64_t cols = nb - j0 < NR ? nb - j0 : NR;
    for (int v = 0; v < NV; ++v) {
      const int64_t vc = cols - 8 * v;
      if (!trans) {
        const __mmask8 m = mask8(vc);
        for (int64_t p = 0; p < kc; ++p)
          _mm512_storeu_pd(dst + p * NR + 8 * v, _mm512_maskz_loadu_pd(m, b + p * ldb + j0 + 8 * v));
        continue;
      }
      if (vc <= 0) {
        for (int64_t p = 0; p < kc; ++p) _mm512_storeu_pd(dst + p * NR + 8 * v, _mm512_setzero_pd());
        continue;
      }
      const double* src = b + (j0 + 8 * v) * ldb;
      for (int64_t p0 = 0; p0 < kc; p0 += 8) {
        const int64_t len = kc - p0 < 8 ? kc - p0 : 8;
        __m512d r[8];
        load_transpose8(src + p0, ldb, vc, len, r);
        for (int64_t q = 0; q < len; ++q) _mm512_storeu_pd(dst + (p0 + q) * NR + 8 * v, r[q]);
      }
    }
    dst += kc * NR;
  }
}

}  // namespace

template <int MR, int NV>
GemmKernel<float> make_f32() {
  GemmKernel<float> k;
  k.mr = MR;
  k.nr = NV * 16;
  k.micro = micro<float, MR, NV>;
  k.pack_a = pack_a_f32<MR>;
  k.pack_b = pack_b_f32<NV>;
  return k;
}

int sgemm_kernels(GemmKernel<float>* out, int max) {
  const GemmKernel<float> all[] = {make_f32<12, 2>(), make_f32<8, 3>(), make_f32<6, 4>(),
                                   make_f32<8, 2>()};
  int n = 0;
  for (const auto& k : all)
    if (n < max) out[n++] = k;
  return n;
}

GemmKernel<double> dgemm_kernel() {
  constexpr int MR = 12, NV = 2;
  GemmKernel<double> k;
  k.mr = MR;
  k.nr = NV * 8;
  k.micro = micro<double, MR, NV>;
  k.pack_a = pack_a_f64<MR>;
  k.pack_b = pack_b_f64<NV>;
  return k;
}

GemvKernel<float> sgemv_kernel() { return make_gemv<Vec<float>, float, 32>(); }  // 32 zmm
GemvKernel<double> dgemv_kernel() { return make_gemv<Vec<double>, double, 32>(); }

}  // namespace avx512
}  // namespace detail
}  // namespace lepton
