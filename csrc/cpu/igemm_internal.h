// cpu/igemm_internal.h -- private interface between the integer GEMM driver
// (igemm.cpp), its per-ISA micro-kernels (igemm_vnni.cpp, igemm_avx2.cpp) and
// the quantize kernels (quant.cpp, quant_avx512.cpp, quant_avx2.cpp).
//
// Packed formats (both operands packed whole, k padded with zeros to a
// multiple of the group G, edge panels zero-padded to full MR / NR):
//   vnni: G = 4 bytes. A' = A as uint8 (int8 A flipped: a ^ 0x80 = a + 128),
//         panels of MR rows, element (i, p) at (p/4)*MR*4 + i*4 + p%4, so one
//         row's 4 consecutive k values form the dword vpdpbusd broadcasts.
//         B' = B as int8 (uint8 B flipped: b ^ 0x80 = b - 128), panels of NR
//         columns, element (p, j) at (p/4)*NR*4 + j*4 + p%4.
//         The flips and zero points go into the epilogue through sums:
//           sum_p (a - za)(b - zb) = acc - za_i*colterm_j - rowsum_i*zb_j,
//           acc = A'.B', za_i = a_zp (+128 for int8 A), zb_j = b_zp (-128 for
//           uint8 B), colterm_j = colsum(B')_j - k*zb_j, rowsum_i = rowsum(A')_i.
//   i16:  G = 2 int16. A'' = a - za_i and B'' = b - zb_j (exact in int16,
//         |products| <= 255*255, a pair sum fits vpmaddwd's int32),
//         element (i, p) of an A panel at (p/2)*MR*2 + i*2 + p%2, (p, j) of a
//         B panel at (p/2)*NR*2 + j*2 + p%2. No epilogue terms.
// All arithmetic wraps modulo 2^32 (unsigned in scalar code), which is the
// reference's int64 result cast to int32.
#pragma once
#include <cstdint>

namespace lepton {
namespace detail {

enum class IgemmFormat { vnni = 0, i16 = 1 };

struct IgemmEpilogue {
  bool load_c;  // add the current C (a k-block after the first)
  bool last;    // final k-block: apply the sums (vnni format only)
  // vnni: C -= za[i]*colterm[j] + rowsum[i]*zb[j]; pointers at the tile's
  // first row / column; zb null when every zb_j is 0.
  const int32_t* za;
  const int32_t* rowsum;
  const int32_t* colterm;
  const int32_t* zb;
};

// C tile (mv x nv valid of MR x NR) over kc (a multiple of G) k values; pa/pb at
// the k-block's start inside their panels.
using IgemmMicroFn = void (*)(int64_t kc, const void* pa, const void* pb, int32_t* c, int64_t ldc,
                              int mv, int nv, const IgemmEpilogue& ep);

struct IgemmKernel {
  IgemmFormat fmt = IgemmFormat::i16;
  int mr = 0, nr = 0;
  int group = 2;  // k values per packed group
  int esize = 2;  // bytes per packed element
  IgemmMicroFn micro = nullptr;
  // Optional fast packers (null: the portable ones in igemm.cpp). Rows/cols
  // beyond the source are zero; see the format notes for flips and sums.
  void (*pack_b_vnni)(const uint8_t* b, int64_t ldb, bool flip, int64_t k, int64_t ncols,
                      int8_t* dst, int32_t* colsum) = nullptr;
};

// Test hook: force tile variant v (modulo the path's count); -1 restores the choice.
void igemm_force_variant(int v);

namespace vnni {
int igemm_kernels(IgemmKernel* out, int max);
double vnni_probe(int64_t iters);  // int8 ops (2 per multiply-add) done
// Direct convolution tile (no B packing): C (mv x nv valid of MR x NR) = B
// vectors read at b + goff[g] (64 bytes per 16 columns: 16 dwords of 4 k values,
// the slot-interleaved input as vpdpbusd's uint8 operand, igemm.cpp) times the
// A panel (vnni format, kg groups, int8 weights as its int8 operand), then
// C = acc - za[i] * colsum_j + rterm[i] where colsum_j is the sum of B's bytes
// of column j (not needed, and skipped, when every za is 0). c has stride ldc
// (elements). The int32 variant stores C; the uint8 / int8 variants requantize
// row i in registers (requant_internal.h's formula, multiplier[i], bias[i]).
struct DirectRequant {
  const float* multiplier;  // from the tile's first row
  const int32_t* bias;      // from the tile's first row, or null
  int32_t y_zero_point;
  float lo, hi;             // clamp of nearbyint(v) (y_zero_point already subtracted)
};
// colsum (NR int32, may be null with none / accumulate): where the column sums are
// kept for the other row tiles of the same wide pixels.
enum class DirectColsum { none, accumulate, ready };
using IgemmDirectFn = void (*)(int64_t kg, const int32_t* pa, const uint8_t* b, const int64_t* goff,
                               const int32_t* za, const int32_t* rterm, void* c, int64_t ldc, int mv, int nv,
                               const DirectRequant* rq, int32_t* colsum, DirectColsum cs);
struct IgemmDirectKernel {
  int mr = 0, nr = 0;
  IgemmDirectFn micro_s32 = nullptr, micro_u8 = nullptr, micro_s8 = nullptr;
};
int direct_kernels(IgemmDirectKernel* out, int max);
// One block of a tall-layout convolution input (igemm.cpp): 4 slots per position,
// image i's input row r at positions (i * image_rows + gap() + r) * out_w + k,
// k < out_w; every other position up to `positions` (the gap rows in front of each
// image, which are also the padding rows of it and of the one before, the gap
// after the last image and the slack) holds pad ^ flip.
struct TallBlockGeometry {
  int64_t n = 0, h = 0, w = 0, out_w = 0;  // images, input rows, input and output row length
  int64_t image_rows = 0;                  // rows per image: its gap rows, then its h rows
  int64_t positions = 0;                   // positions per block, slack included
  int64_t image_stride = 0;                // bytes between two images of one channel plane
  uint8_t flip = 0, pad = 0;
  int64_t gap() const { return image_rows - h; }
};
constexpr int64_t kMaxTallCopies = 64;  // kernel columns of a channel-major block group
// Fills images [i0, i1) of one block and the gap rows in front of them (the last
// image also the rows after it): byte t of (i, r, k) = plane[t][i * image_stride +
// r * w + k + shift[t]] ^ flip where k + shift[t] lies in [0, w), else pad ^ flip
// (a null plane: all pad). Reads the planes in place.
// row_shift (may be null: none): slot t's row r reads input row r + row_shift[t], and
// the gap rows in front of each image (r < 0) are data where that row is in [0, h).
void fill_tall_block(const TallBlockGeometry& g, const uint8_t* const* plane, const int64_t* shift,
                     const int64_t* row_shift, int64_t i0, int64_t i1, uint8_t* out);
// fill_tall_block of out[b] with every shift = b * step - pad_left, for b < copies
// (<= kMaxTallCopies) and four non-null planes.
void fill_tall_copies(const TallBlockGeometry& g, const uint8_t* const* plane, int64_t pad_left, int64_t step,
                      int64_t copies, int64_t i0, int64_t i1, uint8_t* const* out);
// rows x n bytes from src (stride ld_src) to dst (stride ld_dst): the output runs
// of a tall-layout convolution block (masked 64-byte moves, no calls).
void copy_rows(const uint8_t* src, int64_t ld_src, uint8_t* dst, int64_t ld_dst, int64_t rows, int64_t n);
}  // namespace vnni
namespace avx2 {
int igemm_kernels(IgemmKernel* out, int max);
}

// Quantize kernels on one contiguous run of n elements: per_lane = scale/zp
// vary per element (arrays of n), else scale[0]/zp[0] for all; stream = write
// with non-temporal stores (large outputs).
#define LEPTON_DECLARE_QUANT_KERNELS                                                          \
  void quantize_s8(const float* x, int8_t* q, int64_t n, const float* scale, const int32_t* zp, \
                   bool per_lane, bool stream);                                               \
  void quantize_u8(const float* x, uint8_t* q, int64_t n, const float* scale,                 \
                   const int32_t* zp, bool per_lane, bool stream);                            \
  void dequantize_s8(const int8_t* q, float* y, int64_t n, const float* scale,                \
                     const int32_t* zp, bool per_lane, bool stream);                          \
  void dequantize_u8(const uint8_t* q, float* y, int64_t n, const float* scale,               \
                     const int32_t* zp, bool per_lane, bool stream);                          \
  void dequantize_s32(const int32_t* q, float* y, int64_t n, const float* scale,              \
                      const int32_t* zp, bool per_lane, bool stream);                         \
  /* min and max of x[0..n); false when some element is NaN or +-inf. */                      \
  bool minmax_finite(const float* x, int64_t n, float* lo, float* hi);

namespace qgeneric {
LEPTON_DECLARE_QUANT_KERNELS
}
namespace avx512 {
LEPTON_DECLARE_QUANT_KERNELS
}
namespace avx2 {
LEPTON_DECLARE_QUANT_KERNELS
}
#undef LEPTON_DECLARE_QUANT_KERNELS

}  // namespace detail
}  // namespace lepton
