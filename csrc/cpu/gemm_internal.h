// cpu/gemm_internal.h -- private interface between the GEMM driver (gemm.cpp)
// and the per-ISA micro-kernels (gemm_avx512.cpp, gemm_avx2.cpp).
//
// Packed layouts (BLIS style): op(A) rows are packed in panels of MR rows,
// each panel k-major (kc x MR, element (i, p) at p*MR + i); op(B) columns in
// panels of NR columns, each k-major (kc x NR, element (p, j) at p*NR + j).
// Edge panels are zero-padded to full MR / NR, so a micro-kernel always runs
// its full register tile and only masks the store to the mv x nv valid part.
//
// The packing templates live in an anonymous namespace so each translation
// unit gets its own copy compiled with its own ISA flags (a shared template
// instantiation would let the linker pick an AVX-512 body for generic code).
#pragma once
#include <cstdint>
#include <cstring>

#include "lepton/gemm.h"

namespace lepton {
namespace detail {

// How a micro-kernel stores its tile.
template <class T>
struct GemmEpilogue {
  bool load_c;     // add the current C (accumulate, or a k-block after the first)
  bool last;       // final k-block: add the bias, then ReLU
  BiasMode bias_mode;
  const T* bias;   // first element for this tile: bias + row0 (per_row) or + col0 (per_col)
  bool relu;
};

// C tile (mv x nv valid of an mr x nr register tile) = epilogue(A panel . B panel)
// over kc steps. pa/pb are packed panels (see above), c points at the tile.
template <class T>
using GemmMicroFn = void (*)(int64_t kc, const T* pa, const T* pb, T* c, int64_t ldc, int mv,
                             int nv, const GemmEpilogue<T>& ep);
// Packs an mb x kc block of op(A) starting at `a` (already offset to the
// block's first element) into ceil(mb/MR) zero-padded panels.
template <class T>
using GemmPackAFn = void (*)(const T* a, int64_t lda, bool trans, int64_t mb, int64_t kc, T* dst);
// Packs a kc x nb block of op(B) into ceil(nb/NR) zero-padded panels.
template <class T>
using GemmPackBFn = void (*)(const T* b, int64_t ldb, bool trans, int64_t kc, int64_t nb, T* dst);

template <class T>
struct GemmKernel {
  int mr = 0, nr = 0;
  GemmMicroFn<T> micro = nullptr;
  GemmPackAFn<T> pack_a = nullptr;
  GemmPackBFn<T> pack_b = nullptr;
};

constexpr int kMaxGemmVariants = 8;
// Test hook: force tile variant v (index into the active ISA's list, modulo
// its length) for every call; -1 restores the automatic choice.
void gemm_force_variant(int v);

// gemm()'s argument checks (sizes, leading dimensions, null pointers), for
// the drivers that share its contract.
Status gemm_check(const GemmDesc& d, const float* a, const float* b, const float* bias, const float* c);
Status gemm_check(const GemmDesc& d, const double* a, const double* b, const double* bias,
                  const double* c);

// Below this many flops (2mnk) one thread is faster than waking a team
// (measured: 64x120x84 = 1.3 MFLOP takes 6.7 us on one thread, 4.4 us on two).
constexpr double kMinParallelFlops = 1.0e6;

// ---- few-row products without packing (GEMV-shaped; driver in gemv.cpp) ----
// With m <= kGemvMaxRows rows of A, packing B costs as much as the product
// (every element of B is used m times), so these kernels read A and B in place.
// Each output element is reduced in an order fixed by k alone (not by the tile
// it lands in, nor by the thread that computes it), so results do not depend
// on the thread count.
//
// dot: C[i, j] = act(sum_p A[i, p] * B[j, p] + bias[j]) for rows i < m and
//   columns j in [j0, j1): B stored n x k (the linear layer's weight). Each
//   output is one vector accumulator over p (W lanes at a time, the k tail
//   masked) reduced horizontally at the end; bias may be null.
template <class T>
using GemvDotFn = void (*)(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda,
                           const T* b, int64_t ldb, const T* bias, bool relu, T* c, int64_t ldc);
// axpy: C[i, j] = sum_p A[i, p] * B[p, j] for rows i < m and columns j in
//   [j0, j1): B stored k x n (matmul, grad_x). Vectorized over j; each output
//   lane accumulates over p in order.
template <class T>
using GemvAxpyFn = void (*)(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda,
                            const T* b, int64_t ldb, T* c, int64_t ldc);

template <class T>
struct GemvKernel {
  GemvDotFn<T> dot = nullptr;
  GemvAxpyFn<T> axpy = nullptr;
  int64_t col_step = 1;  // thread split unit for axpy columns (a whole register tile)
};

namespace avx512 {
// Float kernel variants (register tile shapes); the driver picks one per call.
int sgemm_kernels(GemmKernel<float>* out, int max);
GemmKernel<double> dgemm_kernel();
GemvKernel<float> sgemv_kernel();
GemvKernel<double> dgemv_kernel();
}  // namespace avx512
namespace avx2 {
GemmKernel<float> sgemm_kernel();
GemmKernel<double> dgemm_kernel();
GemvKernel<float> sgemv_kernel();
GemvKernel<double> dgemv_kernel();
}  // namespace avx2

namespace {

// Reference packing: correct for any layout; the ISA files override the hot
// cases (non-transposed A, transposed B) with register transposes.
template <class T, int MR>
void pack_a_ref(const T* a, int64_t lda, bool trans, int64_t mb, int64_t kc, T* dst) {
  for (int64_t i0 = 0; i0 < mb; i0 += MR) {
    const int64_t rows = mb - i0 < MR ? mb - i0 : MR;
    if (trans) {
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = a + p * lda + i0;
        T* d = dst + p * MR;
        for (int64_t i = 0; i < rows; ++i) d[i] = src[i];
        for (int64_t i = rows; i < MR; ++i) d[i] = T(0);
      }
    } else {
      for (int64_t i = 0; i < rows; ++i) {
        const T* src = a + (i0 + i) * lda;
        for (int64_t p = 0; p < kc; ++p) dst[p * MR + i] = src[p];
      }
      for (int64_t i = rows; i < MR; ++i)
        for (int64_t p = 0; p < kc; ++p) dst[p * MR + i] = T(0);
    }
    dst += kc * MR;
  }
}

template <class T, int NR>
void pack_b_ref(const T* b, int64_t ldb, bool trans, int64_t kc, int64_t nb, T* dst) {
  for (int64_t j0 = 0; j0 < nb; j0 += NR) {
    const int64_t cols = nb - j0 < NR ? nb - j0 : NR;
    if (!trans) {
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = b + p * ldb + j0;
        T* d = dst + p * NR;
        if (cols == NR) {
          std::memcpy(d, src, sizeof(T) * NR);
        } else {
          for (int64_t j = 0; j < cols; ++j) d[j] = src[j];
          for (int64_t j = cols; j < NR; ++j) d[j] = T(0);
        }
      }
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        const T* src = b + (j0 + j) * ldb;
        for (int64_t p = 0; p < kc; ++p) dst[p * NR + j] = src[p];
      }
      for (int64_t j = cols; j < NR; ++j)
        for (int64_t p = 0; p < kc; ++p) dst[p * NR + j] = T(0);
    }
    dst += kc * NR;
  }
}

// ---- GEMV-shaped kernel bodies, instantiated by each ISA file with its
// vector traits V: R (register), M (lane mask), W (lanes), zero, load, set1,
// fma, loadm (masked-off lanes read as 0 and never fault), storem, mask(n)
// (the first n lanes), hsum (horizontal sum in a fixed order) and hsum4 (four
// hsums, bit for bit the same, possibly sharing work). Regs is the
// ISA's vector register count; tiles are sized to stay within it.

// Columns of B per dot tile for mr rows of A: mr * nb accumulators, mr A
// vectors and one B vector in registers, at most 8 columns.
constexpr int gemv_dot_cols(int mr, int regs) {
  return (regs - 2 - mr) / mr > 8 ? 8 : (regs - 2 - mr) / mr < 1 ? 1 : (regs - 2 - mr) / mr;
}
// Vectors of columns per axpy tile for mr rows: mr * nv accumulators, nv B
// vectors and one broadcast, at most 4 vectors.
constexpr int gemv_axpy_vecs(int mr, int regs) {
  return (regs - 2) / (mr + 1) > 4 ? 4 : (regs - 2) / (mr + 1) < 1 ? 1 : (regs - 2) / (mr + 1);
}

// MR rows of A x NB columns starting at column j (rows of B) over all of k.
template <class V, class T, int MR, int NB>
inline void gemv_dot_tile(int64_t j, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
                          const T* bias, bool relu, T* c, int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  R acc[MR][NB];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) acc[i][q] = V::zero();
  const T* bj = b + j * ldb;
  int64_t p = 0;
  for (; p + W <= k; p += W) {
    R av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = V::load(a + i * lda + p);
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      const R bv = V::load(bj + q * ldb + p);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][q] = V::fma(av[i], bv, acc[i][q]);
    }
  }
  if (p < k) {  // both operands' masked-off lanes are 0: they add 0 * 0
    const typename V::M mk = V::mask(static_cast<int>(k - p));
    R av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) av[i] = V::loadm(mk, a + i * lda + p);
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      const R bv = V::loadm(mk, bj + q * ldb + p);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][q] = V::fma(av[i], bv, acc[i][q]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    T sum[NB];
    int q = 0;
#pragma GCC unroll 2
    for (; q + 4 <= NB; q += 4) V::hsum4(&acc[i][q], sum + q);
#pragma GCC unroll 4
    for (; q < NB; ++q) sum[q] = V::hsum(acc[i][q]);
#pragma GCC unroll 8
    for (q = 0; q < NB; ++q) {
      T v = sum[q];
      if (bias) v += bias[j + q];
      if (relu) v = v < T(0) ? T(0) : v;  // keeps NaN (and -0), as the GEMM
      c[i * ldc + j + q] = v;
    }
  }
}

template <class V, class T, int MR, int Regs>
void gemv_dot_rows(int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda, const T* b,
                   int64_t ldb, const T* bias, bool relu, T* c, int64_t ldc) {
  constexpr int NB = gemv_dot_cols(MR, Regs);
  int64_t j = j0;
  for (; j + NB <= j1; j += NB) gemv_dot_tile<V, T, MR, NB>(j, k, a, lda, b, ldb, bias, relu, c, ldc);
  for (; j < j1; ++j) gemv_dot_tile<V, T, MR, 1>(j, k, a, lda, b, ldb, bias, relu, c, ldc);
}

// Rows of A per register tile. Wider tiles (8 rows x 2 columns on AVX-512)
// measured slower: more loads per FMA and more horizontal sums per byte of B.
constexpr int kGemvTileRows = 4;

// All m rows in tiles of at most kGemvTileRows rows.
template <class V, class T, int Regs>
void gemv_dot(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda, const T* b,
              int64_t ldb, const T* bias, bool relu, T* c, int64_t ldc) {
  for (int64_t i0 = 0; i0 < m; i0 += kGemvTileRows) {
    const int64_t mr = m - i0 < kGemvTileRows ? m - i0 : kGemvTileRows;
    const T* ar = a + i0 * lda;
    T* cr = c + i0 * ldc;
    switch (mr) {
      case 1: gemv_dot_rows<V, T, 1, Regs>(j0, j1, k, ar, lda, b, ldb, bias, relu, cr, ldc); break;
      case 2: gemv_dot_rows<V, T, 2, Regs>(j0, j1, k, ar, lda, b, ldb, bias, relu, cr, ldc); break;
      case 3: gemv_dot_rows<V, T, 3, Regs>(j0, j1, k, ar, lda, b, ldb, bias, relu, cr, ldc); break;
      default: gemv_dot_rows<V, T, 4, Regs>(j0, j1, k, ar, lda, b, ldb, bias, relu, cr, ldc); break;
    }
  }
}

// MR rows x (NV vectors of columns from j, the first `cols` valid) over all of k.
template <class V, class T, int MR, int NV>
inline void gemv_axpy_tile(int64_t j, int64_t cols, int64_t k, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* c, int64_t ldc) {
  using R = typename V::R;
  constexpr int W = V::W;
  typename V::M mk[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mk[v] = V::mask(static_cast<int>(cols - v * W < W ? cols - v * W : W));
  const bool full = cols >= NV * W;
  R acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  const T* bp = b + j;
  for (int64_t p = 0; p < k; ++p, bp += ldb) {
    R bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = full ? V::load(bp + v * W) : V::loadm(mk[v], bp + v * W);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const R av = V::set1(a[i * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) V::storem(c + i * ldc + j + v * W, mk[v], acc[i][v]);
}

template <class V, class T, int MR, int Regs>
void gemv_axpy_rows(int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda, const T* b,
                    int64_t ldb, T* c, int64_t ldc) {
  constexpr int NV = gemv_axpy_vecs(MR, Regs), NR = NV * V::W;
  for (int64_t j = j0; j < j1; j += NR)
    gemv_axpy_tile<V, T, MR, NV>(j, j1 - j, k, a, lda, b, ldb, c, ldc);
}

template <class V, class T, int Regs>
void gemv_axpy(int64_t m, int64_t j0, int64_t j1, int64_t k, const T* a, int64_t lda, const T* b,
               int64_t ldb, T* c, int64_t ldc) {
  for (int64_t i0 = 0; i0 < m; i0 += kGemvTileRows) {
    const int64_t mr = m - i0 < kGemvTileRows ? m - i0 : kGemvTileRows;
    const T* ar = a + i0 * lda;
    T* cr = c + i0 * ldc;
    switch (mr) {
      case 1: gemv_axpy_rows<V, T, 1, Regs>(j0, j1, k, ar, lda, b, ldb, cr, ldc); break;
      case 2: gemv_axpy_rows<V, T, 2, Regs>(j0, j1, k, ar, lda, b, ldb, cr, ldc); break;
      case 3: gemv_axpy_rows<V, T, 3, Regs>(j0, j1, k, ar, lda, b, ldb, cr, ldc); break;
      default: gemv_axpy_rows<V, T, 4, Regs>(j0, j1, k, ar, lda, b, ldb, cr, ldc); break;
    }
  }
}

// The kernel table of one ISA with Regs vector registers.
template <class V, class T, int Regs>
GemvKernel<T> make_gemv() {
  GemvKernel<T> g;
  g.dot = gemv_dot<V, T, Regs>;
  g.axpy = gemv_axpy<V, T, Regs>;
  g.col_step = static_cast<int64_t>(gemv_axpy_vecs(kGemvTileRows, Regs)) * V::W;
  return g;
}

}  // namespace
}  // namespace detail
}  // namespace lepton
