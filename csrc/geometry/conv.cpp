// geometry/conv.cpp -- the rules of lepton/conv.h's Conv2dDesc, written once:
// validate() (what the float and int8 convolutions, CPU and CUDA, check before they
// run) and conv2d_output_size() (the floor formula the Python ops size outputs with).
// Plain C++: no OpenMP, no ISA flags, so lepton_core and the CUDA module link the
// same object.
#include <algorithm>
#include <string>

#include "geometry/checks.h"
#include "lepton/conv.h"

namespace lepton {

using geometry::Named;

namespace {

Status check_axis(const char* axis, int64_t in, int64_t out, int64_t k, int64_t s, int64_t dil, int64_t pa,
                  int64_t pb) {
  const int64_t extent = dil * (k - 1) + 1;  // each factor < 2^31 (validate)
  const int64_t span = in + pa + pb - extent;
  if (span < 0)
    return Status::Invalid(std::string("the dilated kernel along ") + axis + " (" + std::to_string(extent) +
                           " with kernel_" + axis + " = " + std::to_string(k) + ", dilation_" + axis + " = " +
                           std::to_string(dil) + ") is larger than the padded input (" +
                           std::to_string(in + pa + pb) + ")");
  const int64_t want = span / s + 1;
  if (out != want)
    return Status::Invalid(std::string("out_") + axis + " = " + std::to_string(out) +
                           " does not match the geometry (expected " + std::to_string(want) + ")");
  return Status::Ok();
}

Status check_window(const Conv2dDesc& d) {
  Status st = geometry::need_at_least({{"n", d.n}, {"c_in", d.c_in}, {"h", d.h}, {"w", d.w}, {"c_out", d.c_out}}, 0);
  if (!st.ok()) return st;
  st = geometry::need_at_least({{"kernel_h", d.kernel_h}, {"kernel_w", d.kernel_w}, {"stride_h", d.stride_h},
                                {"stride_w", d.stride_w}, {"dilation_h", d.dilation_h},
                                {"dilation_w", d.dilation_w}, {"groups", d.groups}}, 1);
  if (!st.ok()) return st;
  st = geometry::need_at_least({{"pad_top", d.pad_top}, {"pad_bottom", d.pad_bottom}, {"pad_left", d.pad_left},
                                {"pad_right", d.pad_right}}, 0, " (padding cannot be negative)");
  if (!st.ok()) return st;
  if (d.c_in % d.groups != 0 || d.c_out % d.groups != 0)
    return Status::Invalid("groups = " + std::to_string(d.groups) + " must divide c_in = " +
                           std::to_string(d.c_in) + " and c_out = " + std::to_string(d.c_out));
  return Status::Ok();
}

}  // namespace

Conv2dDesc canonical(const Conv2dDesc& d) {
  Conv2dDesc c = d;
  if (c.out_h <= 1) c.stride_h = 1;
  if (c.out_w <= 1) c.stride_w = 1;
  return c;
}

Status validate(const Conv2dDesc& d) {
  Status st = check_window(d);
  if (!st.ok()) return st;
  st = geometry::need_at_least({{"out_h", d.out_h}, {"out_w", d.out_w}}, 0);
  if (!st.ok()) return st;
  st = geometry::need_below_limit(
      {{"n", d.n}, {"c_in", d.c_in}, {"h", d.h}, {"w", d.w}, {"c_out", d.c_out}, {"kernel_h", d.kernel_h},
       {"kernel_w", d.kernel_w}, {"out_h", d.out_h}, {"out_w", d.out_w}, {"stride_h", d.stride_h},
       {"stride_w", d.stride_w}, {"pad_top", d.pad_top}, {"pad_bottom", d.pad_bottom}, {"pad_left", d.pad_left},
       {"pad_right", d.pad_right}, {"dilation_h", d.dilation_h}, {"dilation_w", d.dilation_w},
       {"groups", d.groups}},
      "a size, kernel, stride, padding, dilation or groups");
  if (!st.ok()) return st;
  st = check_axis("h", d.h, d.out_h, d.kernel_h, d.stride_h, d.dilation_h, d.pad_top, d.pad_bottom);
  if (!st.ok()) return st;
  st = check_axis("w", d.w, d.out_w, d.kernel_w, d.stride_w, d.dilation_w, d.pad_left, d.pad_right);
  if (!st.ok()) return st;
  const int64_t cg = d.c_in / d.groups;
  using geometry::mul_overflows;
  // Every size the CPU kernels index with, internal buffers included (phase buffers
  // over the padded input, im2col blocks, the backward's per-chunk partial grad_w),
  // must fit in int64.
  if (mul_overflows({d.n, d.c_in, d.h, d.w}) || mul_overflows({d.n, d.c_out, d.out_h, d.out_w}) ||
      mul_overflows({d.c_out, cg, d.kernel_h, d.kernel_w}) ||
      mul_overflows({cg, d.kernel_h, d.kernel_w, d.out_h, d.out_w}) ||
      mul_overflows({std::max<int64_t>(cg, 1), d.h + d.pad_top + d.pad_bottom + canonical(d).stride_h + 16,
                     d.w + d.pad_left + d.pad_right + canonical(d).stride_w + 16, 64}) ||
      mul_overflows({d.c_out, cg, d.kernel_h, d.kernel_w, 16 * geometry::kConvMaxBatchChunks}))
    return Status::Invalid("the tensor sizes overflow int64");
  return Status::Ok();
}

Status conv2d_output_size(const Conv2dDesc& d, int64_t* out_h, int64_t* out_w) {
  Status st = check_window(d);
  if (!st.ok()) return st;
  return geometry::output_plane(d, "kernel", d.c_out, false, out_h, out_w);
}

}  // namespace lepton
