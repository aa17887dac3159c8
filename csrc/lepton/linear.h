// lepton/linear.h -- fully connected layers and plain matrix products.
//
// linear:  y[m, n] = act(sum_k x[m, k] * w[n, k] + bias[n])   x (m, k), w (n, k) as torch.nn.Linear
// linear_backward, given grad_out g (m, n) and, when the forward fused ReLU,
// its output y (the mask is y > 0; a NaN output passes its gradient):
//   g' = relu ? (y <= 0 ? 0 : g) : g          (fused into the products' operand reads)
//   grad_x = g' @ w        (m, k)     skipped when grad_x is null
//   grad_w = g'^T @ x      (n, k)     skipped when grad_w is null
//   grad_b = sum_m g'      (n)        skipped when grad_b is null; fixed-order sum
// matmul:  c (m, n) = a (m, k) @ b (k, n)
// All buffers dense row-major (C-contiguous), outputs not overlapping inputs.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct LinearDesc {
  int64_t m = 0;  // rows of x (batch, all leading dims flattened)
  int64_t k = 0;  // in_features
  int64_t n = 0;  // out_features
  bool relu = false;
};

Status linear(const LinearDesc& d, const float* x, const float* w, const float* bias, float* y);
Status linear(const LinearDesc& d, const double* x, const double* w, const double* bias, double* y);

Status linear_backward(const LinearDesc& d, const float* grad_out, const float* x, const float* w,
                       const float* y, float* grad_x, float* grad_w, float* grad_b);
Status linear_backward(const LinearDesc& d, const double* grad_out, const double* x,
                       const double* w, const double* y, double* grad_x, double* grad_w,
                       double* grad_b);

Status matmul(int64_t m, int64_t k, int64_t n, const float* a, const float* b, float* c);
Status matmul(int64_t m, int64_t k, int64_t n, const double* a, const double* b, double* c);

}  // namespace lepton
