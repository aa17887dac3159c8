// lepton/gemm.h -- single/double precision GEMM with a fused epilogue.
//
//   C[m, n] = (accumulate ? C[m, n] : 0) + sum_k op(A)[m, k] * op(B)[k, n]
//   then, in the same pass over C: + bias (per row m or per column n), then ReLU.
//
// Row-major storage with leading dimensions. op(A) is A (m x k, lda >= k) or,
// when trans_a, the transpose of a stored k x m matrix (lda >= m); likewise B
// (k x n, ldb >= n) or trans_b (stored n x k, ldb >= k). ldc >= n.
// The bias and ReLU apply to the final C (after accumulation).
// Results are deterministic: the reduction order over k does not depend on the
// thread count.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

enum class BiasMode { none = 0, per_row = 1, per_col = 2 };

struct GemmDesc {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  bool accumulate = false;
  BiasMode bias = BiasMode::none;  // bias pointer: length m (per_row) or n (per_col)
  bool relu = false;
  bool parallel = true;  // false: run on the calling thread (caller already parallel)
};

Status gemm(const GemmDesc& d, const float* a, const float* b, const float* bias, float* c);
Status gemm(const GemmDesc& d, const double* a, const double* b, const double* bias, double* c);

// Rows of op(A) up to which gemv() takes its unpacked path.
constexpr int64_t kGemvMaxRows = 8;

// Same contract and results as gemm() up to rounding (the reduction order
// differs; it is still fixed whatever the thread count). When op(A) has at
// most kGemvMaxRows rows, A is not transposed, C is not accumulated and the
// bias is not per row, it reads A and B in place with GEMV-shaped kernels
// instead of packing them (packing B costs as much as a product with so few
// rows); otherwise it calls gemm().
Status gemv(const GemmDesc& d, const float* a, const float* b, const float* bias, float* c);
Status gemv(const GemmDesc& d, const double* a, const double* b, const double* bias, double* c);

// Test and benchmark hook: false sends every gemv() call to gemm() (the
// packed path), true (the default) restores the unpacked one. Process-wide.
void set_gemv_enabled(bool on);
bool gemv_enabled();

}  // namespace lepton
