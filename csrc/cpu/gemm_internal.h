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

namespace avx512 {
// Float kernel variants (register tile shapes); the driver picks one per call.
int sgemm_kernels(GemmKernel<float>* out, int max);
GemmKernel<double> dgemm_kernel();
}  // namespace avx512
namespace avx2 {
GemmKernel<float> sgemm_kernel();
GemmKernel<double> dgemm_kernel();
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

}  // namespace
}  // namespace detail
}  // namespace lepton
