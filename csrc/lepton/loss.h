// lepton/loss.h -- cross-entropy of logits against class indices: fused log-softmax
// + NLL, per-row losses and (optionally) d loss_i / d logits, one pass per row.
// Layout: logits (n, c) row-major dense; target int64 (n,); weight (c,) or null;
// losses (n,); dlogits (n, c) or null. Outputs must not overlap the inputs.
//
// For row i with target t != ignore_index, smoothing eps and class weights w (1 when null):
//   q_j = (1 - eps) w_t [j == t] + eps w_j / c,  lse = log sum_j exp(z_j)   (max-shifted)
//   loss_i = -sum_j q_j (z_j - lse),   dlogits_ij = softmax(z_i)_j * sum_k q_k - q_j
// The eps terms are skipped entirely when eps == 0 (so a -inf logit off the target
// gives a finite loss, as torch). Rows with t == ignore_index get loss 0 and a zero
// gradient row. Sums accumulate in double for both dtypes.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct CrossEntropyDesc {
  int64_t n = 0;  // rows
  int64_t c = 0;  // classes
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;  // in [0, 1]
};

// A target outside [0, c) that is not ignore_index -> Status::Invalid (checked
// before anything is written; never read out of bounds).
Status cross_entropy(const CrossEntropyDesc& d, const float* logits, const int64_t* target,
                     const float* weight, float* losses, float* dlogits);
Status cross_entropy(const CrossEntropyDesc& d, const double* logits, const int64_t* target,
                     const double* weight, double* losses, double* dlogits);

}  // namespace lepton
