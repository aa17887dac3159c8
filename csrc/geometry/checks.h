// geometry/checks.h -- the small argument checks that the pool and conv geometry
// rules (geometry/pool.cpp, geometry/conv.cpp) share. Internal: not installed.
//
// Every message names the argument and the value it got, so the CPU and CUDA
// bindings, which prefix the op name, give the same ValueError for the same call.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

#include "lepton/status.h"

namespace lepton {
namespace geometry {

// The kernels' limit on each size and geometry number: it keeps every sum and
// product of two of them, and their __int128 plans, exact in int64.
constexpr int64_t kMaxDim = int64_t(1) << 31;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
// The CPU convolution backward splits the batch into at most this many chunks, each
// with its own partial grad_w (csrc/cpu/conv.cpp); validate(Conv2dDesc) bounds them.
constexpr int64_t kConvMaxBatchChunks = 16;

struct Named {
  const char* name;
  int64_t value;
};

// First argument below `minimum`, as "<name> must be >= <minimum>, got <value><why>".
inline Status need_at_least(std::initializer_list<Named> args, int64_t minimum, const char* why = "") {
  for (const Named& a : args)
    if (a.value < minimum)
      return Status::Invalid(std::string(a.name) + " must be >= " + std::to_string(minimum) + ", got " +
                             std::to_string(a.value) + why);
  return Status::Ok();
}

// First argument at or past kMaxDim, as "<what> is >= 2^31 (<name> = <value>)".
inline Status need_below_limit(std::initializer_list<Named> args, const char* what) {
  for (const Named& a : args)
    if (a.value >= kMaxDim)
      return Status::Invalid(std::string(what) + " is >= 2^31 (" + a.name + " = " + std::to_string(a.value) + ")");
  return Status::Ok();
}

// True when a running product of these non-negative numbers, left to right, leaves
// int64 (a later zero does not undo it: the kernels form the partial products too).
inline bool mul_overflows(std::initializer_list<int64_t> v) {
  int64_t r = 1;
  for (int64_t x : v)
    if (__builtin_mul_overflow(r, x, &r)) return true;
  return false;
}

std::string pair_str(int64_t a, int64_t b);

// One axis of an output-size computation: size + padding, then the (dilated)
// kernel's extent inside it, then floor (or, with ceil_mode, PyTorch's ceil) rounding.
// kernel_desc/axis name the arguments in the messages ("kernel_size (2, 2) with
// dilation (1, 1)", "height"). Exact for every int64 input (__int128 inside).
Status output_axis(const std::string& kernel_desc, const char* axis, int64_t size, int64_t kernel,
                   int64_t stride, int64_t dilation, int64_t pad_before, int64_t pad_after, bool ceil_mode,
                   int64_t* out);

// The output (n, c, out_h, out_w) must have an element count int64 can hold.
Status check_output_count(int64_t n, int64_t c, int64_t out_h, int64_t out_w);

// Both axes of a pool or conv descriptor (same window field names), then the element
// count of the (n, channels, out_h, out_w) output. kernel_word names the kernel argument
// in messages ("kernel_size" for pooling, "kernel" for convolution).
template <class Desc>
Status output_plane(const Desc& d, const char* kernel_word, int64_t channels, bool ceil_mode, int64_t* out_h,
                    int64_t* out_w) {
  const std::string kernel = std::string(kernel_word) + " " + pair_str(d.kernel_h, d.kernel_w) +
                             " with dilation " + pair_str(d.dilation_h, d.dilation_w);
  int64_t oh = 0, ow = 0;
  Status st = output_axis(kernel, "height", d.h, d.kernel_h, d.stride_h, d.dilation_h, d.pad_top, d.pad_bottom,
                          ceil_mode, &oh);
  if (!st.ok()) return st;
  st = output_axis(kernel, "width", d.w, d.kernel_w, d.stride_w, d.dilation_w, d.pad_left, d.pad_right, ceil_mode,
                   &ow);
  if (!st.ok()) return st;
  st = check_output_count(d.n, channels, oh, ow);
  if (!st.ok()) return st;
  *out_h = oh;
  *out_w = ow;
  return Status::Ok();
}

}  // namespace geometry
}  // namespace lepton
