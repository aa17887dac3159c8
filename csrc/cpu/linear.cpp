// cpu/linear.cpp -- fully connected layers and matmul on top of lepton::gemm.
// The products whose left operand has few rows (batch <= kGemvMaxRows) go
// through lepton::gemv, which skips the packing that dominates them.
//   linear:   y (m, n) = act(x (m, k) @ w (n, k)^T + bias)   one GEMM, trans_b,
//             bias per column and ReLU fused into its store.
//   backward: g' = relu ? (y <= 0 ? 0 : g) : g, written once into a scratch
//             buffer (one pass that also sums grad_b in double, row order, so
//             the sum is fixed-order); grad_x = g' @ w; grad_w = g'^T @ x (trans_a).
//   matmul:   c (m, n) = a (m, k) @ b (k, n).
// All buffers dense row-major.
#include <algorithm>
#include <vector>

#include "cpu/internal.h"
#include "lepton/gemm.h"
#include "lepton/linear.h"

namespace lepton {
namespace {

Status check_linear(const LinearDesc& d) {
  if (d.m < 0 || d.k < 0 || d.n < 0) return Status::Invalid("linear: m, k and n must be non-negative");
  return Status::Ok();
}

template <class T>
Status linear_impl(const LinearDesc& d, const T* x, const T* w, const T* bias, T* y) {
  Status st = check_linear(d);
  if (!st.ok()) return st;
  if (d.m == 0 || d.n == 0) return Status::Ok();
  if (!y || (d.k > 0 && (!x || !w))) return Status::Invalid("linear: null data pointer");
  GemmDesc g;
  g.m = d.m;
  g.n = d.n;
  g.k = d.k;
  g.trans_b = true;
  g.lda = std::max<int64_t>(d.k, 1);
  g.ldb = std::max<int64_t>(d.k, 1);
  g.ldc = d.n;
  g.bias = bias ? BiasMode::per_col : BiasMode::none;
  g.relu = d.relu;
  return gemv(g, x, w, bias, y);
}

// Column sums of the (masked) gradient, accumulated in double in row order.
// With relu, also writes g' into gm. Columns are split across threads, so
// each sum has the same order whatever the thread count.
template <class T>
void mask_and_sum(const LinearDesc& d, const T* g, const T* y, T* gm, T* grad_b) {
  const int64_t m = d.m, n = d.n;
  const int nt = detail::threads_for(m * n);
  const int64_t chunk = std::max<int64_t>(16, ((n + nt - 1) / nt + 15) / 16 * 16);
  const int64_t nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t t = 0; t < nchunks; ++t) {
    const int64_t j0 = t * chunk, j1 = std::min(n, j0 + chunk);
    std::vector<double> acc(grad_b ? static_cast<size_t>(j1 - j0) : 0, 0.0);
    for (int64_t i = 0; i < m; ++i) {
      const T* gr = g + i * n;
      if (gm) {
        const T* yr = y + i * n;
        T* o = gm + i * n;
        for (int64_t j = j0; j < j1; ++j) o[j] = yr[j] <= T(0) ? T(0) : gr[j];  // NaN y passes
        gr = o;
      }
      if (grad_b)
        for (int64_t j = j0; j < j1; ++j) acc[j - j0] += static_cast<double>(gr[j]);
    }
    if (grad_b)
      for (int64_t j = j0; j < j1; ++j) grad_b[j] = static_cast<T>(acc[j - j0]);
  }
}

template <class T>
Status linear_backward_impl(const LinearDesc& d, const T* g, const T* x, const T* w, const T* y,
                            T* grad_x, T* grad_w, T* grad_b) {
  Status st = check_linear(d);
  if (!st.ok()) return st;
  const bool any = d.m > 0 && d.n > 0;
  if (any && !g) return Status::Invalid("linear_backward: null grad_out pointer");
  if (any && d.relu && !y) return Status::Invalid("linear_backward: relu needs the forward output y");
  if (d.k > 0 && ((grad_x && d.m > 0 && d.n > 0 && !w) || (grad_w && d.n > 0 && d.m > 0 && !x)))
    return Status::Invalid("linear_backward: null x or w pointer");

  const T* gp = g;
  detail::AlignedBuffer<T> masked;
  if (any && (d.relu || grad_b)) {
    if (d.relu) {
      if (!masked.allocate(static_cast<size_t>(d.m * d.n)))
        return Status::Internal("linear_backward: out of memory");
      gp = masked.get();
    }
    mask_and_sum(d, g, d.relu ? y : nullptr, d.relu ? masked.get() : nullptr, grad_b);
  } else if (grad_b) {
    std::fill(grad_b, grad_b + d.n, T(0));  // m == 0
  }
  if (grad_x) {  // (m, k) = g' (m, n) @ w (n, k)
    GemmDesc gd;
    gd.m = d.m;
    gd.n = d.k;
    gd.k = d.n;
    gd.lda = std::max<int64_t>(d.n, 1);
    gd.ldb = std::max<int64_t>(d.k, 1);
    gd.ldc = d.k;
    st = gemv(gd, gp, w, static_cast<const T*>(nullptr), grad_x);
    if (!st.ok()) return st;
  }
  if (grad_w) {  // (n, k) = g'^T (n, m) @ x (m, k)
    GemmDesc gd;
    gd.m = d.n;
    gd.n = d.k;
    gd.k = d.m;
    gd.trans_a = true;
    gd.lda = std::max<int64_t>(d.n, 1);
    gd.ldb = std::max<int64_t>(d.k, 1);
    gd.ldc = d.k;
    st = gemm(gd, gp, x, static_cast<const T*>(nullptr), grad_w);
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

template <class T>
Status matmul_impl(int64_t m, int64_t k, int64_t n, const T* a, const T* b, T* c) {
  if (m < 0 || k < 0 || n < 0) return Status::Invalid("matmul: m, k and n must be non-negative");
  GemmDesc g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = std::max<int64_t>(k, 1);
  g.ldb = std::max<int64_t>(n, 1);
  g.ldc = n;
  return gemv(g, a, b, static_cast<const T*>(nullptr), c);
}

}  // namespace

Status linear(const LinearDesc& d, const float* x, const float* w, const float* bias, float* y) {
  return linear_impl(d, x, w, bias, y);
}
Status linear(const LinearDesc& d, const double* x, const double* w, const double* bias,
              double* y) {
  return linear_impl(d, x, w, bias, y);
}
Status linear_backward(const LinearDesc& d, const float* grad_out, const float* x, const float* w,
                       const float* y, float* grad_x, float* grad_w, float* grad_b) {
  return linear_backward_impl(d, grad_out, x, w, y, grad_x, grad_w, grad_b);
}
Status linear_backward(const LinearDesc& d, const double* grad_out, const double* x,
                       const double* w, const double* y, double* grad_x, double* grad_w,
                       double* grad_b) {
  return linear_backward_impl(d, grad_out, x, w, y, grad_x, grad_w, grad_b);
}
Status matmul(int64_t m, int64_t k, int64_t n, const float* a, const float* b, float* c) {
  return matmul_impl(m, k, n, a, b, c);
}
Status matmul(int64_t m, int64_t k, int64_t n, const double* a, const double* b, double* c) {
  return matmul_impl(m, k, n, a, b, c);
}

}  // namespace lepton
