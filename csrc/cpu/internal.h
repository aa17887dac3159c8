// cpu/internal.h -- private helpers shared by the CPU kernels: thread policy,
// aligned scratch memory, cache size, and the per-ISA entry points that the
// generic dispatchers (elementwise.cpp, pool.cpp, runtime.cpp) call.
// Per-ISA functions work on one contiguous range or one plane and never start
// OpenMP regions themselves: partitioning lives in the dispatchers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>

#include "lepton/runtime.h"

namespace lepton {
namespace detail {

// Below this many elements touched, a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 32768;

// Threads to use for `work` elements: 1 for tiny work, else num_threads().
inline int threads_for(int64_t work) { return work < kMinParallelWork ? 1 : num_threads(); }

// Last-level cache size in bytes (sysfs, then cpuid, then 32 MiB).
int64_t llc_bytes();

// True when an output of `bytes` should bypass the cache (non-temporal stores).
inline bool use_streaming(int64_t bytes) { return bytes > llc_bytes() / 2; }

// 64-byte aligned heap buffer; empty() after a failed allocation (no throw).
template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) { allocate(count); }
  ~AlignedBuffer() { std::free(ptr_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  bool allocate(size_t count) {
    std::free(ptr_);
    size_t bytes = ((count * sizeof(T) + 63) / 64) * 64;
    ptr_ = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
    return ptr_ != nullptr;
  }
  T* get() const { return ptr_; }
  bool empty() const { return ptr_ == nullptr; }

 private:
  T* ptr_ = nullptr;
};

// Pooling geometry resolved once per call (see pool.h for the semantics).
struct PoolPlan {
  int64_t h, w, out_h, out_w;
  int64_t kh, kw, sh, sw, pt, pl, dh, dw;
  int64_t tmp_len;  // elements in the per-thread scratch row
  // false: the scratch row is padded, column 0 = input column -pl, and the
  // horizontal pass reads whole windows (the SIMD rows need this layout).
  // true: the scratch row holds the w input columns only and each output
  // reads just its taps inside the input, so a huge stride or padding costs
  // no memory (make_plan picks this when the padded row would be out of
  // proportion to the input and output rows).
  bool clipped;
};

// Valid kernel taps [lo, hi) for a window starting at `start` (may be negative)
// with `k` taps of step `d` over an axis of length `n`.
inline void tap_range(int64_t start, int64_t k, int64_t d, int64_t n, int64_t* lo, int64_t* hi) {
  int64_t l = start < 0 ? (-start + d - 1) / d : 0;
  int64_t h = (n - 1 - start) < 0 ? 0 : (n - 1 - start) / d + 1;
  if (h > k) h = k;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

// One max-pool output with its index (scalar, any window position): taps
// rows [lo, hi) x columns [jlo, jhi) in row-major order; the first tap seeds,
// then a strictly greater value, or a NaN while the max is not NaN, replaces
// it (so the first NaN wins). No valid tap: -inf and -1.
// The value of an empty max-pool window: -inf for floats, the minimum for
// int8/uint8 (quantized activations).
template <class T>
constexpr T pool_lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                              : std::numeric_limits<T>::lowest();
}

template <class T>
inline void max_with_index(const PoolPlan& p, const T* x, int64_t ih0, int64_t lo, int64_t hi,
                           int64_t o, int64_t jlo, int64_t jhi, T* ym, int64_t* yi) {
  T m = pool_lowest<T>();
  int64_t best = -1;
  if (lo < hi && jlo < jhi) {
    const int64_t first = (ih0 + lo * p.dh) * p.w + o * p.sw - p.pl;
    best = first + jlo * p.dw;
    m = x[best];
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t row = first + (i - lo) * p.dh * p.w;
      for (int64_t j = (i == lo ? jlo + 1 : jlo); j < jhi; ++j) {
        const int64_t at = row + j * p.dw;
        const T v = x[at];
        if (v > m || (v != v && m == m)) {
          m = v;
          best = at;
        }
      }
    }
  }
  *ym = m;
  *yi = best;
}

#define LEPTON_DECLARE_ISA_KERNELS                                                            \
  void relu_f32(const float* x, float* y, int64_t n, bool stream);                            \
  void relu_backward_f32(const float* g, const float* x, float* out, int64_t n, bool stream); \
  void bias_relu_f32(const float* x, float b, float* y, int64_t n, bool stream);              \
  void bias_relu_vec_f32(const float* x, const float* b, float* y, int64_t n, bool stream);   \
  double bias_relu_backward_f32(const float* g, const float* y, float* gx, int64_t n);        \
  void max_pool_rows_f32(const PoolPlan& p, const float* x, float* y, int64_t oh0,            \
                         int64_t oh1, float* tmp);                                            \
  void max_pool_rows_idx_f32(const PoolPlan& p, const int64_t* col_lo, const int64_t* col_hi, \
                             const float* x, float* y, int64_t* ind, int64_t oh0, int64_t oh1); \
  double fma_probe(int64_t iters);                                                             \
  /* Copies with non-temporal stores; dst 64-byte aligned, bytes a multiple of 64. */         \
  void stream_copy(const char* src, char* dst, int64_t bytes);

namespace avx512 {
LEPTON_DECLARE_ISA_KERNELS
}
namespace avx2 {
LEPTON_DECLARE_ISA_KERNELS
}
#undef LEPTON_DECLARE_ISA_KERNELS

namespace avx512 {
// 2x2 / stride 2 max pooling of `pairs` row pairs of w bytes (w even): rows
// 2r, 2r+1 of the flat input -> output row r of w / 2 bytes.
void max_pool_2x2_u8(const uint8_t* x, uint8_t* y, int64_t pairs, int64_t w);
void max_pool_2x2_s8(const int8_t* x, int8_t* y, int64_t pairs, int64_t w);
void max_pool_2x2_f32(const float* x, float* y, int64_t pairs, int64_t w);  // no indices; NaN wins
}  // namespace avx512

// Generic (any x86-64) probe, in runtime.cpp.
double fma_probe_generic(int64_t iters);

}  // namespace detail
}  // namespace lepton
