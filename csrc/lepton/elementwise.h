// lepton/elementwise.h -- ReLU and fused bias+ReLU, forward and backward.
// Layout: bias_relu views x as (n, c, s): NCHW has s = H*W, a 2-D (N, C) input
// has s = 1. All buffers are dense, C-contiguous, and must not partially
// overlap (y may be exactly x for an in-place forward).
// Semantics (match torch): relu(NaN) = NaN; the backward passes the gradient
// where the activation is NOT <= 0, so a NaN activation passes its gradient.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct BiasReluDesc {
  int64_t n = 0;  // batch
  int64_t c = 0;  // channels (length of bias)
  int64_t s = 1;  // elements per (batch, channel): H*W, or 1 for 2-D inputs
};

// y[i] = max(x[i], 0)   (NaN -> NaN)
Status relu(const float* x, float* y, int64_t count);
Status relu(const double* x, double* y, int64_t count);

// grad_in[i] = (x[i] <= 0) ? 0 : grad_out[i]   (x may be the input or the output of relu)
Status relu_backward(const float* grad_out, const float* x, float* grad_in, int64_t count);
Status relu_backward(const double* grad_out, const double* x, double* grad_in, int64_t count);

// y[n,c,s] = max(x[n,c,s] + bias[c], 0), one pass over memory.
Status bias_relu(const BiasReluDesc& d, const float* x, const float* bias, float* y);
Status bias_relu(const BiasReluDesc& d, const double* x, const double* bias, double* y);

// From the forward output y:  grad_x = (y <= 0) ? 0 : grad_out,
// grad_bias[c] = sum over n, s of grad_x[n,c,s] (skipped when grad_bias is null).
// The channel sums are reduced in a fixed order (deterministic run to run).
Status bias_relu_backward(const BiasReluDesc& d, const float* grad_out, const float* y,
                          float* grad_x, float* grad_bias);
Status bias_relu_backward(const BiasReluDesc& d, const double* grad_out, const double* y,
                          double* grad_x, double* grad_bias);

}  // namespace lepton
