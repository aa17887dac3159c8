// lepton/quant.h -- int8 quantization with ONNX numerics (QuantizeLinear,
// DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger).
//
//   quantize:   q = saturate(round_half_to_even(x / scale[c]) + zp[c])   int8 or uint8
//               NaN -> zp[c]; +inf / -inf saturate to the type's max / min. The result
//               equals rounding the exact quotient x / scale (as the float64 reference),
//               although the kernel divides in float32 (a residual test fixes the ties).
//   dequantize: y = (q - zp[c]) * scale[c]   float32 (int32 q: computed in float64, then
//               rounded once more to float32, as the reference cast to float32)
//   Layout: x, q and y are C-contiguous (outer, channels, inner); scale and zp hold
//   `channels` entries (channels = 1 for per-tensor). Scales must be finite and > 0;
//   int8/uint8 zero points must lie in the type's range.
//
//   dynamic_quantize: x (n floats, finite) -> uint8 q, scale, zero point:
//               lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (float32),
//               zp = saturate(round_half_to_even(0 - lo / scale)) (float32 arithmetic),
//               q = quantize(x, scale, zp). All-zero input: q = 0, scale = 0, zp = 0.
//
//   matmul_integer: C (m, n) int32 = sum_k (A[m, k] - a_zp) * (B[k, n] - b_zp[n])
//               A uint8 or int8, B int8 or uint8, row-major with leading dimensions;
//               b_zp is null (0), one value, or one per column. Accumulation wraps in
//               int32 (the int64 result cast to int32), so every path is exact.
//   conv2d_integer: y (n, c_out, oh, ow) int32 = convolution (lepton/conv.h geometry,
//               NCHW / OIHW, groups) of (x - x_zp) and (w - w_zp[o]); padding takes the
//               value x_zp (contributes zero). w_zp is null, one value or one per output
//               channel.
//
// Kernels: AVX-512 VNNI (vpdpbusd, u8 x s8) where the CPU has it, AVX2 (int16
// vpmaddwd, no saturation), generic int32 loops; picked from lepton::active_isa()
// (the avx512 variant uses VNNI only when has_vnni()). Stride-1 convolutions on
// VNNI read a padded, channel-interleaved copy of the input in place (no im2col).
#pragma once
#include <cstdint>
#include <memory>

#include "lepton/conv.h"
#include "lepton/status.h"

namespace lepton {

// Per-channel layout of a quantize/dequantize call (see above).
struct QuantDesc {
  int64_t outer = 1, channels = 1, inner = 0;
};

Status quantize(const QuantDesc& d, const float* x, const float* scale, const int32_t* zero_point,
                int8_t* q);
Status quantize(const QuantDesc& d, const float* x, const float* scale, const int32_t* zero_point,
                uint8_t* q);

Status dequantize(const QuantDesc& d, const int8_t* q, const float* scale,
                  const int32_t* zero_point, float* y);
Status dequantize(const QuantDesc& d, const uint8_t* q, const float* scale,
                  const int32_t* zero_point, float* y);
Status dequantize(const QuantDesc& d, const int32_t* q, const float* scale,
                  const int32_t* zero_point, float* y);

Status dynamic_quantize(int64_t n, const float* x, uint8_t* q, float* scale, uint8_t* zero_point);

// ------------------------------------------------------------------ integer GEMM
struct MatmulIntegerDesc {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // row-major: lda >= k, ldb >= n, ldc >= n
  int32_t a_zero_point = 0;           // within A's type range
  bool b_zero_point_per_column = false;  // b_zero_point points at n values (else 1, or null)
  bool parallel = true;  // false: run on the calling thread (caller already parallel)
};

Status matmul_integer(const MatmulIntegerDesc& d, const uint8_t* a, const int8_t* b,
                      const int32_t* b_zero_point, int32_t* c);
Status matmul_integer(const MatmulIntegerDesc& d, const uint8_t* a, const uint8_t* b,
                      const int32_t* b_zero_point, int32_t* c);
Status matmul_integer(const MatmulIntegerDesc& d, const int8_t* a, const int8_t* b,
                      const int32_t* b_zero_point, int32_t* c);
Status matmul_integer(const MatmulIntegerDesc& d, const int8_t* a, const uint8_t* b,
                      const int32_t* b_zero_point, int32_t* c);

// B (k, n) with its zero point, packed once for the kernel the active ISA picks
// (the pack remembers it and later calls use the same kernel), reused by
// matmul_integer_packed: a quantized layer packs its weights at conversion.
namespace detail {
struct PackedIntBImpl;
}
class PackedIntB {
 public:
  PackedIntB();
  ~PackedIntB();
  PackedIntB(PackedIntB&&) noexcept;
  PackedIntB& operator=(PackedIntB&&) noexcept;
  bool empty() const;
  int64_t k() const;
  int64_t n() const;
  bool b_signed() const;
  int64_t bytes() const;  // memory held by the pack
  const detail::PackedIntBImpl* impl() const { return impl_.get(); }
  detail::PackedIntBImpl* impl() { return impl_.get(); }

 private:
  std::unique_ptr<detail::PackedIntBImpl> impl_;
};

// b_zero_point: null (0), one value, or n values when per_column.
Status pack_matmul_integer_b(int64_t k, int64_t n, const int8_t* b, int64_t ldb,
                             const int32_t* b_zero_point, bool per_column, PackedIntB* out);
Status pack_matmul_integer_b(int64_t k, int64_t n, const uint8_t* b, int64_t ldb,
                             const int32_t* b_zero_point, bool per_column, PackedIntB* out);
// d.n and d.k must equal the pack's; d.ldb and d.b_zero_point_per_column are ignored.
Status matmul_integer_packed(const MatmulIntegerDesc& d, const uint8_t* a, const PackedIntB& b,
                             int32_t* c);
Status matmul_integer_packed(const MatmulIntegerDesc& d, const int8_t* a, const PackedIntB& b,
                             int32_t* c);

// ------------------------------------------------------------------ integer convolution
// d.relu must be false. w_zero_point: null (0), one value, or c_out values when per_channel.
Status conv2d_integer(const Conv2dDesc& d, const uint8_t* x, int32_t x_zero_point, const int8_t* w,
                      const int32_t* w_zero_point, bool per_channel, int32_t* y);
Status conv2d_integer(const Conv2dDesc& d, const uint8_t* x, int32_t x_zero_point, const uint8_t* w,
                      const int32_t* w_zero_point, bool per_channel, int32_t* y);
Status conv2d_integer(const Conv2dDesc& d, const int8_t* x, int32_t x_zero_point, const int8_t* w,
                      const int32_t* w_zero_point, bool per_channel, int32_t* y);
Status conv2d_integer(const Conv2dDesc& d, const int8_t* x, int32_t x_zero_point, const uint8_t* w,
                      const int32_t* w_zero_point, bool per_channel, int32_t* y);

// ------------------------------------------------------------------ requantizing ops
// ONNX QLinearMatMul / QLinearConv with a fused bias and ReLU. The int32
// accumulators of matmul_integer / conv2d_integer never leave the cache: each
// finished block is requantized per output channel (column of the matmul,
// output channel of the convolution) straight into the int8/uint8 output:
//   y = clamp(nearbyint(float(int32(acc + bias[ch])) * multiplier[ch]) + y_zero_point, lo, hi)
// in float32 as ONNX Runtime (int -> float rounded to nearest even, one float
// multiply, rounding half to even), lo = the type's minimum (or max(minimum,
// y_zero_point) with relu), hi = the type's maximum. multiplier[ch] is
// in_scale * w_scale[ch] / y_scale (lepton_kernels.reference.requantize_multiplier).
struct Requant {
  const float* multiplier = nullptr;   // one per output channel, finite and >= 0
  const int32_t* bias = nullptr;       // one per output channel (scale in_scale * w_scale), or null
  int32_t y_zero_point = 0;            // within the output type's range
  bool relu = false;
};

// TA, TB, TX, TW: uint8_t or int8_t; TY (output): uint8_t or int8_t.
// qlinear_matmul: d.ldc is y's leading dimension; b_zero_point as matmul_integer.
template <class TA, class TB, class TY>
Status qlinear_matmul(const MatmulIntegerDesc& d, const TA* a, const TB* b, const int32_t* b_zero_point,
                      const Requant& r, TY* y);
template <class TA, class TY>
Status qlinear_matmul_packed(const MatmulIntegerDesc& d, const TA* a, const PackedIntB& b, const Requant& r,
                             TY* y);
// d.relu must be false (ReLU is r.relu); w_zero_point as conv2d_integer.
template <class TX, class TW, class TY>
Status qlinear_conv2d(const Conv2dDesc& d, const TX* x, int32_t x_zero_point, const TW* w,
                      const int32_t* w_zero_point, bool per_channel, const Requant& r, TY* y);

// Test hook: which integer GEMM kernel the next calls use.
enum class IgemmPath { automatic = 0, vnni = 1, avx2 = 2, generic = 3 };
// Refuses a path this CPU cannot run. automatic follows active_isa() and has_vnni().
Status set_igemm_path(IgemmPath p);
IgemmPath active_igemm_path();  // what automatic resolves to now (or the forced one)

}  // namespace lepton
