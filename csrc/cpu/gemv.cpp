// cpu/gemv.cpp -- few-row products (m <= kGemvMaxRows) without packing:
// argument checks, the kernel table of the active ISA (AVX-512, AVX2, or the
// generic lane arrays below, compiled for any x86-64), and the thread split.
// The kernel bodies are shared (gemm_internal.h); see gemm.h for the contract.
// Threads split the columns of C only; each output is computed whole by one
// thread in an order fixed by k, so results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <atomic>

#include "cpu/gemm_internal.h"
#include "lepton/gemm.h"
#include "lepton/runtime.h"

namespace lepton {
namespace {

// Generic vector traits: W lanes held in a plain array (the compiler maps
// them to SSE2 registers). fma is a multiply then an add: no FMA instruction
// is assumed on a generic x86-64.
template <class T>
struct LaneVec {
  static constexpr int W = 4;
  struct R {
    T v[W];
  };
  using M = int;  // number of valid leading lanes
  static R zero() { return R{}; }
  static R load(const T* p) {
    R r;
    for (int l = 0; l < W; ++l) r.v[l] = p[l];
    return r;
  }
  static R set1(T x) {
    R r;
    for (int l = 0; l < W; ++l) r.v[l] = x;
    return r;
  }
  static R fma(R a, R b, R c) {
    for (int l = 0; l < W; ++l) c.v[l] += a.v[l] * b.v[l];
    return c;
  }
  static M mask(int n) { return n < 0 ? 0 : n > W ? W : n; }
  static R loadm(M m, const T* p) {
    R r{};
    for (int l = 0; l < m; ++l) r.v[l] = p[l];
    return r;
  }
  static void storem(T* p, M m, R r) {
    for (int l = 0; l < m; ++l) p[l] = r.v[l];
  }
  static T hsum(R r) { return (r.v[0] + r.v[2]) + (r.v[1] + r.v[3]); }
  static void hsum4(const R* v, T* out) {
    for (int q = 0; q < 4; ++q) out[q] = hsum(v[q]);
  }
};

template <class T>
detail::GemvKernel<T> generic_gemv() {
  return detail::make_gemv<LaneVec<T>, T, 16>();
}

detail::GemvKernel<float> kernel_for_active_isa(const float*) {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::sgemv_kernel();
    case Isa::avx2: return detail::avx2::sgemv_kernel();
    default: return generic_gemv<float>();
  }
}
detail::GemvKernel<double> kernel_for_active_isa(const double*) {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::dgemv_kernel();
    case Isa::avx2: return detail::avx2::dgemv_kernel();
    default: return generic_gemv<double>();
  }
}

// Bytes of B from which the column split is worth a thread team (B then no
// longer fits a core's L2 share; measured on 1 x 784 x 256 float32).
constexpr double kMinParallelBytes = 256.0 * 1024;

std::atomic<bool> g_gemv_enabled{true};

// The shapes the unpacked kernels take; everything else goes to gemm().
bool takes_gemv_path(const GemmDesc& d) {
  return g_gemv_enabled.load(std::memory_order_relaxed) && d.m > 0 && d.m <= kGemvMaxRows &&
         d.n > 0 && d.k > 0 && !d.trans_a && !d.accumulate && d.bias != BiasMode::per_row;
}

// Columns [j0, j1) of C.
template <class T>
void gemv_cols(const detail::GemvKernel<T>& K, const GemmDesc& d, const T* a, const T* b,
               const T* bias, T* c, int64_t j0, int64_t j1) {
  if (d.trans_b)
    K.dot(d.m, j0, j1, d.k, a, d.lda, b, d.ldb, d.bias == BiasMode::per_col ? bias : nullptr,
          d.relu, c, d.ldc);
  else
    K.axpy(d.m, j0, j1, d.k, a, d.lda, b, d.ldb, c, d.ldc);
}

// Bias and ReLU over C after the axpy kernel (the dot kernel fuses them).
template <class T>
void axpy_epilogue(const GemmDesc& d, const T* bias, T* c, int64_t j0, int64_t j1) {
  if (d.trans_b || (d.bias == BiasMode::none && !d.relu)) return;
  for (int64_t i = 0; i < d.m; ++i) {
    T* cr = c + i * d.ldc;
    for (int64_t j = j0; j < j1; ++j) {
      T v = cr[j];
      if (d.bias == BiasMode::per_col) v += bias[j];
      if (d.relu) v = v < T(0) ? T(0) : v;  // keeps NaN (and -0), as gemm()
      cr[j] = v;
    }
  }
}

template <class T>
Status gemv_impl(const GemmDesc& d, const T* a, const T* b, const T* bias, T* c) {
  Status st = detail::gemm_check(d, a, b, bias, c);
  if (!st.ok()) return st;
  if (!takes_gemv_path(d)) return gemm(d, a, b, bias, c);
  const detail::GemvKernel<T> K = kernel_for_active_isa(a);
  const double flops = 2.0 * static_cast<double>(d.m) * static_cast<double>(d.n) * d.k;
  // Split unit: a whole register tile of columns (dot tiles are at most 8).
  const int64_t unit = d.trans_b ? 8 : K.col_step;
  const int64_t units = (d.n + unit - 1) / unit;
  // B is streamed once, so a large B is worth a second core's bandwidth even
  // when the flops alone would not pay for waking the team.
  const double b_bytes = static_cast<double>(d.n) * static_cast<double>(d.k) * sizeof(T);
  const bool big = flops >= detail::kMinParallelFlops || b_bytes >= kMinParallelBytes;
  int nt = (d.parallel && big) ? num_threads() : 1;
  if (omp_in_parallel()) nt = 1;  // nested: the caller already owns the cores
  nt = static_cast<int>(std::min<int64_t>(nt, units));
  if (nt <= 1) {
    gemv_cols(K, d, a, b, bias, c, 0, d.n);
    axpy_epilogue(d, bias, c, 0, d.n);
    return Status::Ok();
  }
#pragma omp parallel num_threads(nt)
  {
    const int team = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t base = units / team, extra = units % team;
    const int64_t u0 = id * base + std::min<int64_t>(id, extra);
    const int64_t u1 = u0 + base + (id < extra ? 1 : 0);
    const int64_t j0 = std::min(d.n, u0 * unit), j1 = std::min(d.n, u1 * unit);
    if (j0 < j1) {
      gemv_cols(K, d, a, b, bias, c, j0, j1);
      axpy_epilogue(d, bias, c, j0, j1);
    }
  }
  return Status::Ok();
}

}  // namespace

void set_gemv_enabled(bool on) { g_gemv_enabled.store(on, std::memory_order_relaxed); }
bool gemv_enabled() { return g_gemv_enabled.load(std::memory_order_relaxed); }

Status gemv(const GemmDesc& d, const float* a, const float* b, const float* bias, float* c) {
  return gemv_impl(d, a, b, bias, c);
}
Status gemv(const GemmDesc& d, const double* a, const double* b, const double* bias, double* c) {
  return gemv_impl(d, a, b, bias, c);
}

}  // namespace lepton
