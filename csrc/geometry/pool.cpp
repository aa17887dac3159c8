// geometry/pool.cpp -- the rules of lepton/pool.h's Pool2dDesc, written once:
// validate() / validate_sizes() / validate_avg_pool() (what every CPU and CUDA
// entry point checks before it runs) and pool2d_output_size() (floor / ceil mode,
// what the Python ops use to size their outputs). Plain C++: no OpenMP, no ISA
// flags, so lepton_core and the CUDA module link the same object.
#include <string>

#include "geometry/checks.h"
#include "lepton/pool.h"

namespace lepton {

using geometry::Named;

namespace {

// out must be floor(span / stride) + 1 or ceil(span / stride) + 1, span = the padded
// input minus the dilated kernel extent (0 outputs when the kernel does not fit).
// validate() keeps every input below 2^31, so nothing here leaves int64.
Status check_axis(const char* axis, int64_t in, int64_t out, int64_t k, int64_t s, int64_t d, int64_t pa,
                  int64_t pb) {
  const int64_t span = in + pa + pb - ((k - 1) * d + 1);
  int64_t lo = 0, hi = 0;
  if (span >= 0) {
    lo = span / s + 1;
    hi = (span + s - 1) / s + 1;
  }
  if (out == lo || out == hi) return Status::Ok();
  return Status::Invalid(std::string("out_") + axis + " = " + std::to_string(out) +
                         " does not match the geometry (expected " + std::to_string(lo) +
                         (hi != lo ? " or " + std::to_string(hi) : std::string()) + ")");
}

Status check_window(const Pool2dDesc& d) {
  Status st = geometry::need_at_least({{"kernel_h", d.kernel_h}, {"kernel_w", d.kernel_w},
                                       {"stride_h", d.stride_h}, {"stride_w", d.stride_w},
                                       {"dilation_h", d.dilation_h}, {"dilation_w", d.dilation_w}}, 1);
  if (!st.ok()) return st;
  return geometry::need_at_least({{"pad_top", d.pad_top}, {"pad_bottom", d.pad_bottom},
                                  {"pad_left", d.pad_left}, {"pad_right", d.pad_right}}, 0,
                                 " (padding cannot be negative)");
}

Status check_input_sizes(const Pool2dDesc& d) {
  return geometry::need_at_least({{"n", d.n}, {"c", d.c}, {"h", d.h}, {"w", d.w}}, 0);
}

// Non-negative sizes whose element counts (and the partial products the kernels
// form on the way) fit int64.
Status check_counts(const Pool2dDesc& d) {
  Status st = check_input_sizes(d);
  if (!st.ok()) return st;
  st = geometry::need_at_least({{"out_h", d.out_h}, {"out_w", d.out_w}}, 0);
  if (!st.ok()) return st;
  if (geometry::mul_overflows({d.n, d.c, d.h, d.w}) || geometry::mul_overflows({d.n, d.c, d.out_h, d.out_w}))
    return Status::Invalid("sizes overflow int64 (n*c*h*w or n*c*out_h*out_w with n = " + std::to_string(d.n) +
                           ", c = " + std::to_string(d.c) + ", h*w = " + std::to_string(d.h) + "*" +
                           std::to_string(d.w) + ", out_h*out_w = " + std::to_string(d.out_h) + "*" +
                           std::to_string(d.out_w) + ")");
  return Status::Ok();
}

}  // namespace

Status validate_sizes(const Pool2dDesc& d) {
  Status st = check_counts(d);
  if (!st.ok()) return st;
  return geometry::need_below_limit({{"n", d.n}, {"c", d.c}, {"h", d.h}, {"w", d.w},
                                     {"out_h", d.out_h}, {"out_w", d.out_w}}, "a size");
}

Status validate(const Pool2dDesc& d) {
  Status st = check_window(d);
  if (!st.ok()) return st;
  st = check_counts(d);
  if (!st.ok()) return st;
  st = geometry::need_below_limit(
      {{"n", d.n}, {"c", d.c}, {"h", d.h}, {"w", d.w}, {"out_h", d.out_h}, {"out_w", d.out_w},
       {"kernel_h", d.kernel_h}, {"kernel_w", d.kernel_w}, {"stride_h", d.stride_h}, {"stride_w", d.stride_w},
       {"pad_top", d.pad_top}, {"pad_bottom", d.pad_bottom}, {"pad_left", d.pad_left},
       {"pad_right", d.pad_right}, {"dilation_h", d.dilation_h}, {"dilation_w", d.dilation_w},
       {"divisor_override", d.divisor_override}},
      "a size, kernel, stride, padding or dilation");
  if (!st.ok()) return st;
  st = check_axis("h", d.h, d.out_h, d.kernel_h, d.stride_h, d.dilation_h, d.pad_top, d.pad_bottom);
  if (!st.ok()) return st;
  return check_axis("w", d.w, d.out_w, d.kernel_w, d.stride_w, d.dilation_w, d.pad_left, d.pad_right);
}

Status validate_avg_pool(const Pool2dDesc& d) {
  Status st = geometry::need_at_least({{"divisor_override", d.divisor_override}}, 0, " (0 = none)");
  if (!st.ok()) return st;
  st = validate(d);
  if (!st.ok()) return st;
  if (d.dilation_h != 1 || d.dilation_w != 1)
    return Status::Invalid("average pooling does not support dilation (got dilation_h = " +
                           std::to_string(d.dilation_h) + ", dilation_w = " + std::to_string(d.dilation_w) + ")");
  return Status::Ok();
}

Status pool2d_output_size(const Pool2dDesc& d, bool ceil_mode, int64_t* out_h, int64_t* out_w) {
  Status st = check_input_sizes(d);
  if (!st.ok()) return st;
  st = check_window(d);
  if (!st.ok()) return st;
  return geometry::output_plane(d, "kernel_size", d.c, ceil_mode, out_h, out_w);
}

}  // namespace lepton
