// lepton/conv.h -- 2-D convolution (cross-correlation, as torch), NCHW / OIHW, forward and backward.
//
// y[n, o, i, j] = act(bias[o] + sum_{c in group(o), a, b}
//                 x[n, c, i*stride_h - pad_top + a*dilation_h, j*stride_w - pad_left + b*dilation_w]
//                 * w[o, c - group_start, a, b])
// Taps outside the input read zero. groups divides c_in and c_out; group g
// maps input channels [g*c_in/groups, ...) to output channels [g*c_out/groups, ...).
// w has shape (c_out, c_in/groups, kernel_h, kernel_w). out_h/out_w are given
// (floor((h + pad_top + pad_bottom - dilation_h*(kernel_h-1) - 1)/stride_h) + 1).
// act is ReLU when relu is set; bias may be null.
//
// conv2d_backward, given grad_out g (n, c_out, out_h, out_w) and, when the
// forward fused ReLU, its output y (mask y > 0; NaN passes):
//   grad_x (n, c_in, h, w)            = transposed convolution of g' with w     (null: skipped)
//   grad_w (c_out, c_in/groups, kh, kw) = sum over the batch of g' x patches    (null: skipped)
//   grad_b (c_out)                    = sum of g' over n, i, j                   (null: skipped)
// Reductions over the batch run in a fixed order (deterministic run to run, no atomics).
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct Conv2dDesc {
  int64_t n = 0, c_in = 0, h = 0, w = 0;
  int64_t c_out = 0, kernel_h = 1, kernel_w = 1;
  int64_t out_h = 0, out_w = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
  bool relu = false;
};

// The rules below are defined once (csrc/geometry/conv.cpp, no OpenMP or ISA flags)
// and shared by the float and int8 CPU convolutions, the CUDA module and, through the
// binding, Python. Messages name the argument and the value given.
//
// Sizes >= 0, kernel/stride/dilation/groups >= 1, padding >= 0, each number < 2^31,
// groups divides c_in and c_out, out_h/out_w equal the floor formula, and every buffer
// the kernels index fits int64.
Status validate(const Conv2dDesc& d);

// The same convolution with the stride of an axis that has at most one output set
// to 1: its only window starts at -pad whatever the stride, so the kernels size
// their stride-phase buffers by the data, never by a stride no second window uses.
// The CPU entry points run on canonical(d) after validate(d).
Conv2dDesc canonical(const Conv2dDesc& d);

// out_h/out_w by the floor formula above for n, c_in, h, w, c_out, groups and the
// window of d (its out_h/out_w are ignored). Exact for any int64 input (the kernels'
// 2^31 limit is validate()'s business). Refuses what validate() refuses about the
// arguments themselves, a padded size past int64 (naming the padding), a dilated kernel
// larger than the padded input (naming kernel and dilation) and an
// n*c_out*out_h*out_w past int64 (naming stride and padding).
Status conv2d_output_size(const Conv2dDesc& d, int64_t* out_h, int64_t* out_w);

Status conv2d(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y);
Status conv2d(const Conv2dDesc& d, const double* x, const double* w, const double* bias, double* y);

Status conv2d_backward(const Conv2dDesc& d, const float* grad_out, const float* x, const float* w,
                       const float* y, float* grad_x, float* grad_w, float* grad_b);
Status conv2d_backward(const Conv2dDesc& d, const double* grad_out, const double* x,
                       const double* w, const double* y, double* grad_x, double* grad_w,
                       double* grad_b);

}  // namespace lepton
