// geometry/checks.cpp -- the output-size arithmetic that pooling and convolution
// share (geometry/checks.h). Plain C++: no OpenMP, no ISA flags, so the CUDA module
// links it as it is.
#include "geometry/checks.h"

namespace lepton {
namespace geometry {
namespace {

std::string to_string128(__int128 v) {
  if (v >= 0 && v <= kInt64Max) return std::to_string(static_cast<int64_t>(v));
  std::string digits;
  const bool negative = v < 0;
  unsigned __int128 u = negative ? -static_cast<unsigned __int128>(v) : static_cast<unsigned __int128>(v);
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(u % 10)));
    u /= 10;
  } while (u);
  return negative ? "-" + digits : digits;
}

}  // namespace

std::string pair_str(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

Status output_axis(const std::string& kernel_desc, const char* axis, int64_t size, int64_t kernel,
                   int64_t stride, int64_t dilation, int64_t pad_before, int64_t pad_after, bool ceil_mode,
                   int64_t* out) {
  const __int128 padded = __int128(size) + pad_before + pad_after;
  if (padded > kInt64Max)
    return Status::Invalid("padding " + std::to_string(pad_before) + "+" + std::to_string(pad_after) + " along " +
                           axis + " makes the padded input (" + to_string128(padded) + ") overflow int64");
  const __int128 extent = __int128(dilation) * (kernel - 1) + 1;
  if (extent > padded)
    return Status::Invalid(kernel_desc + " spans " + to_string128(extent) + " along " + axis +
                           ", larger than the padded input (" + std::to_string(size) + " + padding " +
                           std::to_string(pad_before) + "+" + std::to_string(pad_after) + ")");
  const int64_t span = static_cast<int64_t>(padded - extent);
  const int64_t floor_out = span / stride + 1;
  // PyTorch's ceil rule: the extra window must start inside the input or the leading
  // padding. Applied to that window only, so ceil never gives fewer outputs than floor
  // (which it otherwise could with a large trailing padding).
  const bool extra = ceil_mode && span % stride != 0 && __int128(floor_out) * stride < __int128(size) + pad_before;
  *out = floor_out + (extra ? 1 : 0);  // floor_out <= span + 1 <= int64 max, and extra needs stride >= 2
  return Status::Ok();
}

Status check_output_count(int64_t n, int64_t c, int64_t out_h, int64_t out_w) {
  if (n == 0 || c == 0 || out_h == 0 || out_w == 0) return Status::Ok();
  __int128 count = 1;
  for (int64_t v : {n, c, out_h, out_w}) {
    count *= v;  // each factor <= 2^63 and count <= 2^63 before it: fits __int128
    if (count > kInt64Max)
      return Status::Invalid("stride and padding give an output of shape (" + std::to_string(n) + ", " +
                             std::to_string(c) + ", " + std::to_string(out_h) + ", " + std::to_string(out_w) +
                             "): its element count is more than int64 can count");
  }
  return Status::Ok();
}

}  // namespace geometry
}  // namespace lepton
