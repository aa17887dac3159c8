// cpu/gemm.cpp -- GEMM driver: C (m x n, row-major, ldc) = epilogue(op(A) op(B)).
// Argument checks, the choice of micro-kernel for the active ISA (AVX-512,
// AVX2, or the generic templates below, which also serve float64 without
// AVX), cache blocking, packing, and the thread split.
//
// Loop nest of one thread over its part of C (GotoBLAS/BLIS):
//   for i0 in M step MB:                 A block (MB x KC) packed once, read from L3/L2
//     for p0 in K step KC:               KC depends on k only -> same rounding on any thread count
//       pack A block
//       for j0 in N step NB:             B block (KC x NB) packed, stays in L2
//         pack B block
//         for each MR panel of A:        A micro-panel stays in L1
//           for each NR panel of B:      micro-kernel, epilogue fused into its store
// Threads split C into rectangles on panel boundaries, each computed whole
// by one thread (no k split), so results do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <atomic>

#include "cpu/gemm_internal.h"
#include "cpu/internal.h"
#include "lepton/gemm.h"

namespace lepton {
namespace {

using detail::AlignedBuffer;
using detail::GemmEpilogue;
using detail::GemmKernel;
using detail::kMinParallelFlops;

template <class T>
struct Blocking {
  int64_t kc_max, nb, mb;
};
template <class T>
Blocking<T> blocking_for(const GemmKernel<T>& K) {
  // float: KC 384 x NB 384 B block = 576 KB of the 1 MB L2; A micro-panel
  // 12 x 384 x 4 = 18 KB of L1. double halves the element count per cache.
  const int64_t kc = sizeof(T) == 4 ? 384 : 256;
  const int64_t nb_target = sizeof(T) == 4 ? 384 : 256;
  const int64_t mb_target = 1536;
  Blocking<T> b;
  b.kc_max = kc;
  b.nb = std::max<int64_t>(1, nb_target / K.nr) * K.nr;
  b.mb = std::max<int64_t>(1, mb_target / K.mr) * K.mr;
  return b;
}

// KC for a reduction of length k: equal blocks of at most kc_max (a function
// of k only, so the rounding is identical whatever the partition of C).
int64_t kc_for(int64_t k, int64_t kc_max) {
  const int64_t blocks = (k + kc_max - 1) / kc_max;
  return (k + blocks - 1) / blocks;
}

// ---- generic micro-kernel (any x86-64; the compiler vectorizes with SSE2) ----
template <class T>
inline T epilogue_value(T acc, const T* cptr, int64_t i, int64_t j, const GemmEpilogue<T>& ep) {
  T v = ep.load_c ? *cptr + acc : acc;
  if (ep.last) {
    if (ep.bias_mode == BiasMode::per_row) v += ep.bias[i];
    if (ep.bias_mode == BiasMode::per_col) v += ep.bias[j];
    if (ep.relu) v = v < T(0) ? T(0) : v;  // keeps NaN (and -0), as torch
  }
  return v;
}

template <class T, int MR, int NR>
void micro_generic(int64_t kc, const T* pa, const T* pb, T* c, int64_t ldc, int mv, int nv,
                   const GemmEpilogue<T>& ep) {
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int i = 0; i < MR; ++i) {
      const T av = pa[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * pb[j];
    }
    pa += MR;
    pb += NR;
  }
  for (int i = 0; i < mv; ++i) {
    T* cr = c + i * ldc;
    for (int j = 0; j < nv; ++j) cr[j] = epilogue_value(acc[i][j], cr + j, i, j, ep);
  }
}

template <class T>
GemmKernel<T> generic_kernel() {
  constexpr int MR = 4, NR = sizeof(T) == 4 ? 8 : 4;
  GemmKernel<T> k;
  k.mr = MR;
  k.nr = NR;
  k.micro = micro_generic<T, MR, NR>;
  k.pack_a = detail::pack_a_ref<T, MR>;
  k.pack_b = detail::pack_b_ref<T, NR>;
  return k;
}

// Tile shapes the active ISA offers, in order of preference on a tie.
int kernels_for_active_isa(GemmKernel<float>* ks) {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::sgemm_kernels(ks, detail::kMaxGemmVariants);
    case Isa::avx2: ks[0] = detail::avx2::sgemm_kernel(); return 1;
    default: ks[0] = generic_kernel<float>(); return 1;
  }
}
int kernels_for_active_isa(GemmKernel<double>* ks) {
  switch (active_isa()) {
    case Isa::avx512: ks[0] = detail::avx512::dgemm_kernel(); return 1;
    case Isa::avx2: ks[0] = detail::avx2::dgemm_kernel(); return 1;
    default: ks[0] = generic_kernel<double>(); return 1;
  }
}

std::atomic<int> g_forced_variant{-1};

// The tile shape that wastes the least work on the padded edge panels (m = 64
// suits 8-row tiles, m = 1024 the 12-row one); all shapes run at about the
// same speed on full tiles, and all give bit-identical results.
template <class T>
GemmKernel<T> choose_kernel(int64_t m, int64_t n) {
  GemmKernel<T> ks[detail::kMaxGemmVariants];
  const int count = kernels_for_active_isa(ks);
  const int forced = g_forced_variant.load(std::memory_order_relaxed);
  if (forced >= 0) return ks[forced % count];
  int best = 0;
  double best_area = -1;
  for (int i = 0; i < count; ++i) {
    const double area = static_cast<double>((m + ks[i].mr - 1) / ks[i].mr * ks[i].mr) *
                        static_cast<double>((n + ks[i].nr - 1) / ks[i].nr * ks[i].nr);
    if (best_area < 0 || area < best_area) {
      best_area = area;
      best = i;
    }
  }
  return ks[best];
}

// Per-thread packing buffers, kept between calls (conv calls one GEMM per image).
template <class T>
struct PackBuffers {
  AlignedBuffer<T> a, b;
  size_t a_len = 0, b_len = 0;
  bool reserve(size_t na, size_t nb) {
    if (na > a_len) {
      if (!a.allocate(na)) { a_len = 0; return false; }
      a_len = na;
    }
    if (nb > b_len) {
      if (!b.allocate(nb)) { b_len = 0; return false; }
      b_len = nb;
    }
    return true;
  }
};
template <class T>
PackBuffers<T>& thread_buffers() {
  thread_local PackBuffers<T> bufs;
  return bufs;
}

struct Range {
  int64_t i0, i1, j0, j1;  // rows [i0, i1), columns [j0, j1) of C
};

// One thread's rectangle of C, whole reduction.
template <class T>
bool gemm_part(const GemmDesc& d, const T* a, const T* b, const T* bias, T* c,
               const GemmKernel<T>& K, const Blocking<T>& bl, const Range& r) {
  const int64_t kc_blk = kc_for(d.k, bl.kc_max);
  const int64_t mb_max = std::min(bl.mb, ((r.i1 - r.i0 + K.mr - 1) / K.mr) * K.mr);
  const int64_t nb_max = std::min(bl.nb, ((r.j1 - r.j0 + K.nr - 1) / K.nr) * K.nr);
  PackBuffers<T>& buf = thread_buffers<T>();
  if (!buf.reserve(static_cast<size_t>(mb_max * kc_blk), static_cast<size_t>(nb_max * kc_blk)))
    return false;
  T* pa = buf.a.get();
  T* pb = buf.b.get();
  for (int64_t i0 = r.i0; i0 < r.i1; i0 += bl.mb) {
    const int64_t mb = std::min(bl.mb, r.i1 - i0);
    for (int64_t p0 = 0; p0 < d.k; p0 += kc_blk) {
      const int64_t kc = std::min(kc_blk, d.k - p0);
      const T* asrc = d.trans_a ? a + p0 * d.lda + i0 : a + i0 * d.lda + p0;
      K.pack_a(asrc, d.lda, d.trans_a, mb, kc, pa);
      GemmEpilogue<T> ep;
      ep.load_c = d.accumulate || p0 > 0;
      ep.last = p0 + kc >= d.k;
      ep.bias_mode = d.bias;
      ep.relu = d.relu;
      for (int64_t j0 = r.j0; j0 < r.j1; j0 += bl.nb) {
        const int64_t nb = std::min(bl.nb, r.j1 - j0);
        const T* bsrc = d.trans_b ? b + j0 * d.ldb + p0 : b + p0 * d.ldb + j0;
        K.pack_b(bsrc, d.ldb, d.trans_b, kc, nb, pb);
        for (int64_t ir = 0; ir < mb; ir += K.mr) {
          const int mv = static_cast<int>(std::min<int64_t>(K.mr, mb - ir));
          const T* apanel = pa + ir * kc;
          for (int64_t jr = 0; jr < nb; jr += K.nr) {
            const int nv = static_cast<int>(std::min<int64_t>(K.nr, nb - jr));
            const int64_t row = i0 + ir, col = j0 + jr;
            ep.bias = d.bias == BiasMode::per_row   ? bias + row
                      : d.bias == BiasMode::per_col ? bias + col
                                                    : nullptr;
            K.micro(kc, apanel, pb + jr * kc, c + row * d.ldc + col, d.ldc, mv, nv, ep);
          }
        }
      }
    }
  }
  return true;
}

// k == 0: C = (accumulate ? C : 0) + bias, then ReLU.
template <class T>
void gemm_empty_k(const GemmDesc& d, const T* bias, T* c) {
  GemmEpilogue<T> ep{d.accumulate, true, d.bias, bias, d.relu};
  for (int64_t i = 0; i < d.m; ++i)
    for (int64_t j = 0; j < d.n; ++j) {
      T* p = c + i * d.ldc + j;
      *p = epilogue_value(T(0), p, i, j, ep);
    }
}

// Splits C into tm x tn rectangles (tm * tn = parts) on panel boundaries,
// choosing the grid with the least per-thread work (padded flops + packing).
void choose_grid(int64_t m, int64_t n, int64_t k, int mr, int nr, int parts, int* tm, int* tn) {
  const int64_t pm = (m + mr - 1) / mr, pn = (n + nr - 1) / nr;
  double best = -1;
  for (int a = 1; a <= parts; ++a) {
    if (parts % a) continue;
    const int bcol = parts / a;
    if (a > pm || bcol > pn) continue;
    const double rows = static_cast<double>((pm + a - 1) / a) * mr;
    const double cols = static_cast<double>((pn + bcol - 1) / bcol) * nr;
    const double cost = rows * cols * k + 8.0 * k * (rows + cols);
    if (best < 0 || cost < best) {
      best = cost;
      *tm = a;
      *tn = bcol;
    }
  }
  if (best < 0) {  // fewer panels than threads in both directions
    *tm = static_cast<int>(std::min<int64_t>(pm, parts));
    *tn = 1;
  }
}

Range part_range(int64_t m, int64_t n, int mr, int nr, int tm, int tn, int id) {
  const int64_t pm = (m + mr - 1) / mr, pn = (n + nr - 1) / nr;
  const int bi = id / tn, bj = id % tn;
  auto cut = [](int64_t panels, int parts, int idx, int64_t unit, int64_t total) {
    const int64_t base = panels / parts, extra = panels % parts;
    const int64_t p = idx * base + std::min<int64_t>(idx, extra);
    return std::min(total, p * unit);
  };
  return {cut(pm, tm, bi, mr, m), cut(pm, tm, bi + 1, mr, m), cut(pn, tn, bj, nr, n),
          cut(pn, tn, bj + 1, nr, n)};
}

template <class T>
Status check(const GemmDesc& d, const T* a, const T* b, const T* bias, const T* c) {
  if (d.m < 0 || d.n < 0 || d.k < 0) return Status::Invalid("gemm: m, n and k must be non-negative");
  if (d.bias != BiasMode::none && d.bias != BiasMode::per_row && d.bias != BiasMode::per_col)
    return Status::Invalid("gemm: unknown bias mode");
  if (d.m == 0 || d.n == 0) return Status::Ok();
  if (d.ldc < d.n) return Status::Invalid("gemm: ldc must be >= n");
  if (!c) return Status::Invalid("gemm: null C pointer");
  if (d.bias != BiasMode::none && !bias) return Status::Invalid("gemm: null bias pointer");
  if (d.k == 0) return Status::Ok();
  if (!a || !b) return Status::Invalid("gemm: null A or B pointer");
  if (d.lda < (d.trans_a ? d.m : d.k)) return Status::Invalid("gemm: lda too small for op(A)");
  if (d.ldb < (d.trans_b ? d.k : d.n)) return Status::Invalid("gemm: ldb too small for op(B)");
  return Status::Ok();
}

template <class T>
Status gemm_impl(const GemmDesc& d, const T* a, const T* b, const T* bias, T* c) {
  Status st = check(d, a, b, bias, c);
  if (!st.ok() || d.m == 0 || d.n == 0) return st;
  if (d.k == 0) {
    gemm_empty_k(d, bias, c);
    return Status::Ok();
  }
  const GemmKernel<T> K = choose_kernel<T>(d.m, d.n);
  const Blocking<T> bl = blocking_for(K);
  const double flops = 2.0 * static_cast<double>(d.m) * static_cast<double>(d.n) * d.k;
  int nt = (d.parallel && flops >= kMinParallelFlops) ? num_threads() : 1;
  if (omp_in_parallel()) nt = 1;  // nested: the caller already owns the cores
  if (nt <= 1) {
    if (!gemm_part(d, a, b, bias, c, K, bl, Range{0, d.m, 0, d.n}))
      return Status::Internal("gemm: out of memory for packing buffers");
    return Status::Ok();
  }
  int tm = 1, tn = 1;
  choose_grid(d.m, d.n, d.k, K.mr, K.nr, nt, &tm, &tn);
  const int parts = tm * tn;
  std::atomic<bool> ok{true};
#pragma omp parallel num_threads(parts)
  {
    const int team = omp_get_num_threads();
    for (int id = omp_get_thread_num(); id < parts; id += team) {
      const Range r = part_range(d.m, d.n, K.mr, K.nr, tm, tn, id);
      if (r.i0 < r.i1 && r.j0 < r.j1 && !gemm_part(d, a, b, bias, c, K, bl, r))
        ok.store(false, std::memory_order_relaxed);
    }
  }
  if (!ok.load()) return Status::Internal("gemm: out of memory for packing buffers");
  return Status::Ok();
}

}  // namespace

namespace detail {
void gemm_force_variant(int v) { g_forced_variant.store(v, std::memory_order_relaxed); }
Status gemm_check(const GemmDesc& d, const float* a, const float* b, const float* bias, const float* c) {
  return check(d, a, b, bias, c);
}
Status gemm_check(const GemmDesc& d, const double* a, const double* b, const double* bias,
                  const double* c) {
  return check(d, a, b, bias, c);
}
}  // namespace detail

Status gemm(const GemmDesc& d, const float* a, const float* b, const float* bias, float* c) {
  return gemm_impl(d, a, b, bias, c);
}
Status gemm(const GemmDesc& d, const double* a, const double* b, const double* bias, double* c) {
  return gemm_impl(d, a, b, bias, c);
}

}  // namespace lepton
