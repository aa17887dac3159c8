// lepton/norm.h -- batch normalization over the channel axis of an (n, c, s) view
// (NCHW with s = H*W, or (N, C) with s = 1), in four per-channel passes that the
// Python op (lepton_kernels.ops.norm) composes into torch's batch_norm:
//
//   stats:            mean[c] = 1/M sum x,  var[c] = 1/M sum (x - mean)^2   (M = n*s; biased)
//   apply:            y = x * scale[c] + shift[c], then max(y, 0) when relu (NaN kept)
//   backward_reduce:  g' = g, or 0 where y <= 0 when y is given (the fused ReLU's mask);
//                     sum_g[c] = sum g',  sum_gx[c] = sum g' * (x - mean[c])
//   backward_apply:   grad_x = k1[c] * g' + k2[c] * (x - mean[c]) + k3[c]
//
// Sums accumulate in double, in a fixed order per channel (deterministic run to run).
// Buffers are dense and C-contiguous; outputs must not overlap inputs.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct BatchNormDesc {
  int64_t n = 0;  // batch
  int64_t c = 0;  // channels
  int64_t s = 1;  // elements per (batch, channel)
};

Status batch_norm_stats(const BatchNormDesc& d, const float* x, float* mean, float* var);
Status batch_norm_stats(const BatchNormDesc& d, const double* x, double* mean, double* var);

Status batch_norm_apply(const BatchNormDesc& d, const float* x, const float* scale, const float* shift, bool relu,
                        float* y);
Status batch_norm_apply(const BatchNormDesc& d, const double* x, const double* scale, const double* shift,
                        bool relu, double* y);

Status batch_norm_backward_reduce(const BatchNormDesc& d, const float* g, const float* x, const float* mean,
                                  const float* y, float* sum_g, float* sum_gx);
Status batch_norm_backward_reduce(const BatchNormDesc& d, const double* g, const double* x, const double* mean,
                                  const double* y, double* sum_g, double* sum_gx);

Status batch_norm_backward_apply(const BatchNormDesc& d, const float* g, const float* x, const float* mean,
                                 const float* y, const float* k1, const float* k2, const float* k3, float* grad_x);
Status batch_norm_backward_apply(const BatchNormDesc& d, const double* g, const double* x, const double* mean,
                                 const double* y, const double* k1, const double* k2, const double* k3,
                                 double* grad_x);

}  // namespace lepton
