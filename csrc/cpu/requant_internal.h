// cpu/requant_internal.h -- the requantizing epilogue of qlinear_matmul /
// qlinear_conv2d (lepton/quant.h, Requant): an int32 accumulator block in cache
// becomes int8/uint8 output. Element (i, j) of a rows x cols block uses channel
// ch0 + i (per_row: conv, rows are output channels) or ch0 + j (matmul columns):
//   y = clamp(nearbyint(float(int32(acc + bias[ch])) * multiplier[ch]) + y_zp, lo, hi)
// in float32 (no fused multiply-add); lo = type min, or max(type min, y_zp) with
// relu; rounding half to even. The clamp happens in float before the
// conversion, so no lane ever overflows.
#pragma once
#include <cstdint>

#include "lepton/quant.h"

namespace lepton {
namespace detail {

struct RequantBlock {
  const int32_t* acc;
  int64_t lda;
  int64_t rows, cols;
  int64_t ch0;
  bool per_row;
};

#define LEPTON_DECLARE_REQUANT_KERNELS                                                   \
  void requantize_u8(const RequantBlock& b, const Requant& r, uint8_t* y, int64_t ldy); \
  void requantize_s8(const RequantBlock& b, const Requant& r, int8_t* y, int64_t ldy);

namespace qgeneric {
LEPTON_DECLARE_REQUANT_KERNELS
}
namespace avx512 {
LEPTON_DECLARE_REQUANT_KERNELS
}
#undef LEPTON_DECLARE_REQUANT_KERNELS

// Picks the kernel for the active ISA.
void requantize(const RequantBlock& b, const Requant& r, uint8_t* y, int64_t ldy);
void requantize(const RequantBlock& b, const Requant& r, int8_t* y, int64_t ldy);

}  // namespace detail
}  // namespace lepton
