// cpu/igemm_avx2.cpp -- AVX2 integer GEMM micro-kernel on the "i16" packed
// format (igemm_internal.h): operands already shifted by their zero points and
// widened to int16, k in pairs. Each pair: NV ymm loads of B (8 columns x 2
// int16), MR dword broadcasts of A, MR*NV vpmaddwd + vpaddd. vpmaddwd sums two
// int16 products into int32 without saturation for these ranges (|a|,|b| <= 255),
// which avoids vpmaddubsw's int16 saturation trap; results are exact.
#include <immintrin.h>

#include <cstdint>

#include "cpu/igemm_internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
namespace {

inline __m256i mask8(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

template <int MR, int NV>
void micro(int64_t kc, const void* pav, const void* pbv, int32_t* c, int64_t ldc, int mv, int nv,
           const IgemmEpilogue& ep) {
  const int32_t* pa = static_cast<const int32_t*>(pav);
  const int16_t* pb = static_cast<const int16_t*>(pbv);
  constexpr int NR = NV * 8;
  __m256i acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_si256();
  const int64_t pairs = kc / 2;
  for (int64_t g = 0; g < pairs; ++g) {
    __m256i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + 16 * v));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_set1_epi32(pa[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(av, bv[v]));
    }
    pa += MR;
    pb += 2 * NR;
  }
  __m256i mk[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mk[v] = mask8(nv - 8 * v);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
    int* cr = reinterpret_cast<int*>(c + i * ldc);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m256i x = acc[i][v];
      if (ep.load_c) x = _mm256_add_epi32(x, _mm256_maskload_epi32(cr + 8 * v, mk[v]));
      _mm256_maskstore_epi32(cr + 8 * v, mk[v], x);
    }
  }
}

template <int MR, int NV>
IgemmKernel make() {
  IgemmKernel k;
  k.fmt = IgemmFormat::i16;
  k.mr = MR;
  k.nr = NV * 8;
  k.group = 2;
  k.esize = 2;
  k.micro = micro<MR, NV>;
  return k;
}

}  // namespace

int igemm_kernels(IgemmKernel* out, int max) {
  const IgemmKernel all[] = {make<6, 2>(), make<4, 3>()};
  int n = 0;
  for (const auto& k : all)
    if (n < max) out[n++] = k;
  return n;
}

}  // namespace avx2
}  // namespace detail
}  // namespace lepton
