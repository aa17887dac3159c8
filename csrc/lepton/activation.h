// lepton/activation.h -- the element-wise activations of torch.nn.functional, forward and
// backward, over dense arrays of `count` elements (float32 or float64):
//
//   relu6        min(max(x, 0), 6)                 backward from x: g where 0 < x < 6 (NaN x passes)
//   leaky_relu   x > 0 ? x : slope * x             backward from x: x > 0 ? g : slope * g
//   sigmoid      1 / (1 + exp(-x))                 backward from y: g * y * (1 - y)
//   tanh         tanh(x)                           backward from y: g * (1 - y^2)
//   silu         x * sigmoid(x)                    backward from x: g * s * (1 + x * (1 - s)), s = sigmoid(x)
//   gelu         x * Phi(x) (erf)                  backward from x: g * (Phi(x) + x * phi(x))
//   gelu_tanh    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   backward: torch's formula
//   hardswish    x * relu6(x + 3) / 6              backward from x: x <= -3 ? 0 : x < 3 ? g (x/3 + 1/2) : g
//
// NaN propagates through every forward. `param` is leaky_relu's negative slope (unused
// otherwise). Outputs may be exactly the input (in place) but must not partially overlap it.
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

enum class Activation { relu6, leaky_relu, sigmoid, tanh, silu, gelu, gelu_tanh, hardswish };

// y = f(x)
Status activation(Activation a, const float* x, float* y, int64_t count, double param);
Status activation(Activation a, const double* x, double* y, int64_t count, double param);

// grad_in = f'(saved) * grad_out, with `saved` the forward's input x, or its output y for
// sigmoid and tanh (as torch's sigmoid_backward / tanh_backward).
Status activation_backward(Activation a, const float* grad_out, const float* saved, float* grad_in, int64_t count,
                           double param);
Status activation_backward(Activation a, const double* grad_out, const double* saved, double* grad_in,
                           int64_t count, double param);

}  // namespace lepton
