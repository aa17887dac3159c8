// lepton/optim.h -- fused optimizer updates, in place, multi-tensor: torch.optim.SGD
// (momentum, dampening, Nesterov, weight decay, maximize) and torch.optim.Adam /
// AdamW (amsgrad, maximize). One call updates every tensor of the list; each
// element is read and written once (param, grad, state in; param, state out).
// Layout: each tensor is a dense array of `count` elements; all tensors of a call
// share one dtype. Updated arrays must not overlap one another or a gradient.
//
// SGD (per element):  d = (maximize ? -g : g) + weight_decay * p   (term skipped when wd == 0)
//   with momentum:    buf = first_step ? d : momentum * buf + (1 - dampening) * d
//                     d = nesterov ? d + momentum * buf : buf
//   p -= lr * d
// Adam (per element): g = maximize ? -g : g; wd != 0: p *= 1 - lr*wd (decoupled) or g += wd*p
//   m += (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g;  amsgrad: vmax = max(vmax, v)
//   p -= step_size * m / (sqrt(amsgrad ? vmax : v) / bias2_sqrt + eps)
//   with step_size = lr / (1 - beta1^step), bias2_sqrt = sqrt(1 - beta2^step), computed once in
//   double; the element math runs in the tensor's dtype.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct SgdParams {
  double lr = 0.0;
  double momentum = 0.0;  // 0: no momentum buffer (momentum_buffer may be null)
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
  bool maximize = false;
  bool first_step = false;  // the buffer becomes d (torch's first step)
};

struct AdamParams {
  int64_t step = 1;  // the step number after this update, >= 1
  double lr = 0.0;
  double beta1 = 0.9, beta2 = 0.999;  // in [0, 1)
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = false;  // AdamW
  bool amsgrad = false;    // needs max_exp_avg_sq
  bool maximize = false;
};

template <class T>
struct SgdTensor {
  T* param;
  const T* grad;
  T* momentum_buffer;  // null when momentum == 0
  int64_t count;
};

template <class T>
struct AdamTensor {
  T* param;
  const T* grad;
  T* exp_avg;
  T* exp_avg_sq;
  T* max_exp_avg_sq;  // null unless amsgrad
  int64_t count;
};

// Updates tensors[0 .. num_tensors) in one parallel pass (work split in chunks
// across tensors). Invalid hyper-parameters (NaN, negative lr, step < 1, beta
// outside [0, 1), nesterov without momentum) or a null pointer -> Status::Invalid,
// with nothing written.
Status sgd_step(const SgdParams& p, const SgdTensor<float>* tensors, int64_t num_tensors);
Status sgd_step(const SgdParams& p, const SgdTensor<double>* tensors, int64_t num_tensors);
Status adam_step(const AdamParams& p, const AdamTensor<float>* tensors, int64_t num_tensors);
Status adam_step(const AdamParams& p, const AdamTensor<double>* tensors, int64_t num_tensors);

}  // namespace lepton
