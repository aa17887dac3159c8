// lepton/pool.h -- 2-D max and average pooling, NCHW, forward and backward.
//
// Geometry (one descriptor for all four entry points). For output row oh the
// window starts at ih0 = oh*stride_h - pad_top; tap i reads row
// ih0 + i*dilation_h (max) or ih0 + i (average: no dilation, dilation_h must be 1).
// Columns likewise with pad_left / stride_w / dilation_w. Taps outside
// [0, h) x [0, w) are padding: ignored by max (as -inf), zero for average.
// out_h/out_w are given (the caller applies floor/ceil mode); padding may be
// asymmetric and larger than half the kernel.
//
// max: the first strictly greater value wins (row-major tap order); the first
//      NaN in a window wins and makes the output NaN. A window with no tap
//      inside the input gives -inf and index -1. indices hold ih*w + iw
//      (flat position in the input plane, as PyTorch).
// avg: per axis, hend = min(ih0 + kernel, h + pad_bottom) (clip to the padded
//      input), then pool = (hend - ih0) rows with padding, count = rows inside
//      [0, h). divisor = divisor_override if > 0, else pool_h*pool_w when
//      count_include_pad, else count_h*count_w. A window with count 0 gives 0.
//
// Cost: scratch memory per thread is bounded by a multiple of the input and
// output rows, never by the stride or the padding; every size and geometry
// number must be below 2^31 (validate()).
#pragma once
#include <cstdint>
#include "lepton/status.h"

namespace lepton {

struct Pool2dDesc {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input NCHW
  int64_t out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  bool count_include_pad = true;  // average pooling only
  int64_t divisor_override = 0;   // average pooling only; 0 = none
};

// The rules below are defined once (csrc/geometry/pool.cpp, no OpenMP or ISA flags)
// and shared by the CPU kernels, the CUDA module and, through the binding, Python.
// Messages name the argument and the value given (the bindings prefix the op).
//
// Checks sizes/strides/paddings are in range and out_h/out_w are consistent
// with some floor/ceil rounding; every entry point calls it first.
Status validate(const Pool2dDesc& d);
// Only the sizes (non-negative, < 2^31, products fit int64).
Status validate_sizes(const Pool2dDesc& d);
// validate() plus average pooling's own rules: no dilation, divisor_override >= 0.
Status validate_avg_pool(const Pool2dDesc& d);

// out_h/out_w for n, c, h, w and the window of d (its out_h/out_w are ignored):
//   span = size + pad_before + pad_after - (dilation*(kernel-1) + 1)
//   out  = span / stride + 1, plus 1 in ceil_mode when span % stride != 0 and that
//          extra window starts inside the input or the leading padding (PyTorch's rule).
// Exact for any int64 input (the kernels' 2^31 limit is validate()'s business). Refuses
// negative sizes or padding, kernel/stride/dilation < 1, a padded size past int64
// (naming the padding), a dilated kernel larger than the padded input (naming
// kernel_size and dilation) and an n*c*out_h*out_w past int64 (naming stride and padding).
Status pool2d_output_size(const Pool2dDesc& d, bool ceil_mode, int64_t* out_h, int64_t* out_w);

// y: (n, c, out_h, out_w); indices (nullable): same shape, int64.
Status max_pool2d(const Pool2dDesc& d, const float* x, float* y, int64_t* indices);
Status max_pool2d(const Pool2dDesc& d, const double* x, double* y, int64_t* indices);
// Quantized activations (max commutes with a monotone affine quantization); an
// empty window gives the type's minimum.
Status max_pool2d(const Pool2dDesc& d, const uint8_t* x, uint8_t* y, int64_t* indices);
Status max_pool2d(const Pool2dDesc& d, const int8_t* x, int8_t* y, int64_t* indices);

// grad_in (n, c, h, w) is overwritten: zero, then grad_out scattered to indices.
// Uses only n, c, h, w, out_h, out_w of the descriptor (the indices carry the
// window geometry), so a caller that kept only the indices can call it.
// An index of -1 is skipped; any other index outside [0, h*w) -> invalid_argument
// (grad_in contents are then unspecified, nothing outside it is written).
Status max_pool2d_backward(const Pool2dDesc& d, const float* grad_out, const int64_t* indices,
                           float* grad_in);
Status max_pool2d_backward(const Pool2dDesc& d, const double* grad_out, const int64_t* indices,
                           double* grad_in);

Status avg_pool2d(const Pool2dDesc& d, const float* x, float* y);
Status avg_pool2d(const Pool2dDesc& d, const double* x, double* y);

// grad_in (n, c, h, w) is overwritten with the sum over windows of grad_out / divisor.
Status avg_pool2d_backward(const Pool2dDesc& d, const float* grad_out, float* grad_in);
Status avg_pool2d_backward(const Pool2dDesc& d, const double* grad_out, double* grad_in);

}  // namespace lepton
