// cpu/requant.cpp -- generic (scalar) requantizing epilogue and the per-ISA
// dispatch; formula in cpu/requant_internal.h.
#include <algorithm>
#include <cmath>

#include "cpu/internal.h"
#include "cpu/requant_internal.h"

namespace lepton {
namespace detail {
namespace {

template <class TY>
void requantize_scalar(const RequantBlock& b, const Requant& r, TY* y, int64_t ldy) {
  constexpr int32_t kMin = std::is_same<TY, int8_t>::value ? -128 : 0;
  constexpr int32_t kMax = std::is_same<TY, int8_t>::value ? 127 : 255;
  const int32_t lower = r.relu ? std::max(kMin, r.y_zero_point) : kMin;
  // Bounds of nearbyint(...) itself, so the clamp happens before any conversion.
  const float lo = static_cast<float>(lower - r.y_zero_point);
  const float hi = static_cast<float>(kMax - r.y_zero_point);
  for (int64_t i = 0; i < b.rows; ++i) {
    const int32_t* a = b.acc + i * b.lda;
    TY* out = y + i * ldy;
    for (int64_t j = 0; j < b.cols; ++j) {
      const int64_t ch = b.ch0 + (b.per_row ? i : j);
      const uint32_t biased = static_cast<uint32_t>(a[j]) + static_cast<uint32_t>(r.bias ? r.bias[ch] : 0);
      // one float product (rounded), then rounded half to even
      const float product = static_cast<float>(static_cast<int32_t>(biased)) * r.multiplier[ch];
      const float v = std::nearbyint(product);
      out[j] = static_cast<TY>(static_cast<int32_t>(std::min(std::max(v, lo), hi)) + r.y_zero_point);
    }
  }
}

}  // namespace

namespace qgeneric {
void requantize_u8(const RequantBlock& b, const Requant& r, uint8_t* y, int64_t ldy) {
  requantize_scalar(b, r, y, ldy);
}
void requantize_s8(const RequantBlock& b, const Requant& r, int8_t* y, int64_t ldy) {
  requantize_scalar(b, r, y, ldy);
}
}  // namespace qgeneric

void requantize(const RequantBlock& b, const Requant& r, uint8_t* y, int64_t ldy) {
  if (active_isa() == Isa::avx512) return avx512::requantize_u8(b, r, y, ldy);
  qgeneric::requantize_u8(b, r, y, ldy);
}
void requantize(const RequantBlock& b, const Requant& r, int8_t* y, int64_t ldy) {
  if (active_isa() == Isa::avx512) return avx512::requantize_s8(b, r, y, ldy);
  qgeneric::requantize_s8(b, r, y, ldy);
}

}  // namespace detail
}  // namespace lepton
