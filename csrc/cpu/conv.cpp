// cpu/conv.cpp -- 2-D convolution, NCHW / OIHW, forward (fused bias + ReLU)
// and backward (grad_x, grad_w, grad_b; ReLU mask fused into the one copy of
// the gradient). Semantics in lepton/conv.h. Strategies:
//
//  * direct forward (float32 whenever its input buffer stays within a few MB,
//    any dtype with <= 8 input channels per group): the input of one image and
//    group is expanded so that every tap of a run of outputs is one contiguous
//    vector load (ExpandPlan); the per-ISA kernel keeps up to 8 output channels
//    x several vectors in registers and writes y in place with bias + ReLU.
//    An implicit GEMM with no packing: 60-90% of FMA peak from 1 to 256 channels.
//  * float32 backward on AVX2/AVX-512 (fast_backward):
//      - grad_w with >= 64 taps (cg*kh*kw): per image, one pass masks the
//        gradient, sums grad_b and transposes it to [q][o]; the kernel holds
//        channel vectors x taps in registers and broadcasts the expanded input
//        (wide_backward): no packing, no lane reduction, 65-85% of peak;
//      - grad_x with many channels: the transposed convolution split into
//        stride phases, each a stride-1 convolution of g' that the forward
//        kernel runs densely (flipped, transposed weights), scattered into
//        grad_x for stride > 1 (make_xphases); 60-85% of peak;
//      - few channels: the direct kernels below; 1x1: the GEMM.
//  * direct backward (<= 8 input channels per group, depthwise): grad_w is a
//    register-tiled reduction over the same expanded input, a run of images at
//    a time; grad_x is the transposed convolution computed by the forward
//    kernel as a gather over the zero-bordered gradient, one stride phase at
//    a time (DirectPlan), so there is no scatter.
//  * GEMM (float64 / generic with many channels, huge images, 1x1 grad_x,
//    geometries whose phases would need negative padding, and strides or
//    dilations far above the kernel, Shape::spread): im2col +
//    lepton::gemm with the bias/ReLU epilogue (1x1 stride-1 unpadded
//    convolutions read the input directly); backward grad_w = g' col^T and
//    grad_x = col2im(W^T g') over runs of images.
//
// Threads: the forward splits (image, group, channel block, output run)
// units; the backward splits the batch into chunks that depend only on the
// batch size, each reduced sequentially into its own partial grad_w / grad_b,
// and the partials are summed in chunk order: results are bit-identical
// whatever the thread count. Inputs holding inf/NaN take exact paths where a
// padding lane would otherwise multiply 0 by inf (weights holding inf/NaN
// send grad_x to the GEMM path, which never multiplies padding).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/conv_internal.h"
#include "cpu/internal.h"
#include "geometry/checks.h"
#include "lepton/conv.h"
#include "lepton/gemm.h"

namespace lepton {
namespace {

using detail::AlignedBuffer;

// im2col block target (elements): a few hundred KB, well inside L2.
constexpr int64_t kColTarget = int64_t(1) << 17;
// Batch chunks of the backward (each owns a partial grad_w).
constexpr int64_t kMaxChunks = geometry::kConvMaxBatchChunks;  // validate() bounds their buffers
constexpr int64_t kPartialBudget = int64_t(1) << 25;  // elements over all partials

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <class T>
inline T relu_of(T v) {
  return v <= T(0) ? T(0) : v;  // NaN stays NaN
}

// Conv2dDesc plus the derived sizes every path uses.
struct Shape {
  Conv2dDesc d;
  int64_t cg, cog, kk, ntaps, hw, ohw;
  bool pointwise;  // 1x1, stride 1, no padding: the input is already the im2col matrix
  // The direct and wide kernels lay each input channel out over every padded row and
  // column an output reads ((out_h-1)*sh + (kh-1)*dh + 1 rows, columns likewise). A
  // stride or dilation far above the kernel (with the padding that allows it) makes that
  // out of proportion to the data (2 GB for a 2x2 output); im2col + GEMM then costs only
  // kernel x output. Such geometry takes the GEMM path.
  bool spread;
};

// The padded span above may exceed this multiple of the im2col matrix plus the input
// plane, plus a constant for tiny planes, before the direct kernels are given up.
constexpr int64_t kSpreadFactor = 4, kSpreadSlack = 4096;

Shape make_shape(const Conv2dDesc& d) {
  Shape s;
  s.d = d;
  s.cg = d.c_in / d.groups;
  s.cog = d.c_out / d.groups;
  s.kk = d.kernel_h * d.kernel_w;
  s.ntaps = s.cg * s.kk;
  s.hw = d.h * d.w;
  s.ohw = d.out_h * d.out_w;
  s.pointwise = d.kernel_h == 1 && d.kernel_w == 1 && d.stride_h == 1 && d.stride_w == 1 &&
                d.pad_top == 0 && d.pad_bottom == 0 && d.pad_left == 0 && d.pad_right == 0;
  // validate() keeps every factor below 2^31; __int128 keeps the products exact.
  const __int128 hu = __int128(std::max<int64_t>(d.out_h - 1, 0)) * d.stride_h + (d.kernel_h - 1) * d.dilation_h + 1;
  const __int128 wu = __int128(std::max<int64_t>(d.out_w - 1, 0)) * d.stride_w + (d.kernel_w - 1) * d.dilation_w + 1;
  s.spread = hu * wu > kSpreadFactor * (__int128(s.kk) * s.ohw + s.hw) + kSpreadSlack;
  return s;
}

// Calls fn(u, thread) for u in [0, units) on nt threads (static schedule).
template <class F>
void parallel_units(int64_t units, int nt, F fn) {
  if (nt <= 1) {
    for (int64_t u = 0; u < units; ++u) fn(u, 0);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t u = 0; u < units; ++u) fn(u, omp_get_thread_num());
}

// Per-thread scratch buffers allocated up front (an allocation inside an
// OpenMP region must not throw); a zeroed buffer is cleared by its own thread
// on first use, so the clearing (and its page faults) runs in parallel.
template <class T>
struct Scratch {
  std::vector<AlignedBuffer<T>> bufs;
  std::vector<char> ready;
  int64_t len = 0;
  bool zero = false;
  bool init(int nt, int64_t n, bool zero_) {
    len = std::max<int64_t>(n, 1);
    zero = zero_;
    bufs = std::vector<AlignedBuffer<T>>(static_cast<size_t>(nt));
    ready.assign(static_cast<size_t>(nt), 0);
    for (auto& b : bufs)
      if (!b.allocate(static_cast<size_t>(len))) return false;
    return true;
  }
  // Only thread t calls at(t).
  T* at(int t) {
    T* p = bufs[static_cast<size_t>(t)].get();
    if (zero && !ready[static_cast<size_t>(t)]) {
      std::memset(p, 0, sizeof(T) * static_cast<size_t>(len));
      ready[static_cast<size_t>(t)] = 1;
    }
    return p;
  }
};

// A large per-call buffer kept by the calling thread between calls (a fresh
// multi-MB allocation costs page faults on every call); one cached buffer per
// Slot, and buffers above kCacheLimit bytes are not kept.
constexpr size_t kCacheLimit = size_t(64) << 20;
template <class T, int Slot>
struct Workspace {
  AlignedBuffer<T> own;
  T* get(size_t n) {
    thread_local AlignedBuffer<T> cached;
    thread_local size_t cap = 0;
    if (n * sizeof(T) > kCacheLimit) return own.allocate(n) ? own.get() : nullptr;
    if (n > cap) {
      cap = 0;
      if (!cached.allocate(n)) return nullptr;
      cap = n;
    }
    return cached.get();
  }
};

template <class T>
bool all_finite(const T* p, int64_t n) {
  using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  const U exp = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U bits;
    std::memcpy(&bits, p + i, sizeof(T));
    bad |= static_cast<U>((bits & exp) == exp);
  }
  return bad == 0;
}

// Fixed batch partition of the backward: depends on the sizes only.
int64_t batch_chunks(int64_t n, int64_t wsize) {
  int64_t nc = std::min(n, kMaxChunks);
  while (nc > 1 && nc * wsize > kPartialBudget) nc = (nc + 1) / 2;
  return std::max<int64_t>(nc, 1);
}
int64_t chunk_begin(int64_t c, int64_t n, int64_t nc) { return c * n / nc; }

// ============================================================ direct path

template <class T>
using DirectFwdFn = void (*)(const T*, const int64_t*, int64_t, const T*, const T*, int, T*,
                             int64_t, int64_t, int64_t, bool);
template <class T>
using DirectWgradFn = void (*)(const T*, int64_t, const int64_t*, int64_t, const T*, int64_t,
                               int64_t, int64_t, int64_t, int64_t, T*);

template <class T>
using CopyRowsFn = void (*)(const T*, int64_t, T*, int64_t, int64_t, int64_t);

template <class T>
struct DirectOps {
  int64_t lanes = 1;
  int64_t max_ob = 8;
  DirectFwdFn<T> fwd = nullptr;
  DirectWgradFn<T> wgrad = nullptr;
  CopyRowsFn<T> copy_rows = nullptr;
  // float32 with AVX2/AVX-512 only (the many-channel backward).
  detail::ConvWgradTFn wgrad_t = nullptr;
  detail::ConvTransposeFn transpose = nullptr;
  detail::ConvMaskFn mask = nullptr;
  detail::ConvStepRowsFn gather_rows = nullptr;   // null: element by element
  detail::ConvStepRowsFn scatter_rows = nullptr;
};

template <class T>
void copy_rows_generic(const T* src, int64_t sstride, T* dst, int64_t dstride, int64_t rows,
                       int64_t n) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) dst[r * dstride + i] = src[r * sstride + i];
}

// Generic kernels (float64, and float32 on ISA "generic"): same contracts as
// the per-ISA ones with one lane; the q loops vectorize with SSE2.
template <class T>
void fwd_generic(const T* xp, const int64_t* off, int64_t ntaps, const T* wp, const T* bias,
                 int ob, T* out, int64_t ldo, int64_t q0, int64_t q1, bool relu) {
  constexpr int64_t QB = 128;
  for (int64_t qb = q0; qb < q1; qb += QB) {
    const int64_t qe = std::min(q1, qb + QB);
    for (int o = 0; o < ob; ++o) {
      T* dst = out + o * ldo;
      const T b0 = bias ? bias[o] : T(0);
      for (int64_t q = qb; q < qe; ++q) dst[q] = b0;
    }
    for (int64_t t = 0; t < ntaps; ++t) {
      const T* xs = xp + off[t];
      const T* wt = wp + t * ob;
      for (int o = 0; o < ob; ++o) {
        const T wv = wt[o];
        T* dst = out + o * ldo;
        for (int64_t q = qb; q < qe; ++q) dst[q] += wv * xs[q];
      }
    }
    if (relu)
      for (int o = 0; o < ob; ++o) {
        T* dst = out + o * ldo;
        for (int64_t q = qb; q < qe; ++q) dst[q] = relu_of(dst[q]);
      }
  }
}

template <class T>
void wgrad_generic(const T* xp, int64_t xstride, const int64_t* off, int64_t ntaps, const T* g,
                   int64_t gstride, int64_t ldg, int64_t cog, int64_t qn, int64_t nimg, T* gw) {
  for (int64_t o = 0; o < cog; ++o)
    for (int64_t t = 0; t < ntaps; ++t) {
      T acc = 0;
      for (int64_t i = 0; i < nimg; ++i) {
        const T* go = g + i * gstride + o * ldg;
        const T* xs = xp + i * xstride + off[t];
        for (int64_t q = 0; q < qn; ++q) acc += go[q] * xs[q];
      }
      gw[o * ntaps + t] += acc;
    }
}

template <class T>
DirectOps<T> direct_ops() {
  DirectOps<T> k;
  k.fwd = fwd_generic<T>;
  k.wgrad = wgrad_generic<T>;
  k.copy_rows = copy_rows_generic<T>;
  if constexpr (std::is_same<T, float>::value) {
    detail::ConvDirectKernels v;
    if (active_isa() == Isa::avx512) v = detail::avx512::conv_direct_kernels();
    if (active_isa() == Isa::avx2) v = detail::avx2::conv_direct_kernels();
    if (v.fwd) {
      k.lanes = v.lanes;
      k.max_ob = v.max_ob;
      k.fwd = v.fwd;
      k.wgrad = v.wgrad;
      k.copy_rows = v.copy_rows;
      k.wgrad_t = v.wgrad_t;
      k.transpose = v.transpose;
      k.mask = v.mask;
      k.gather_rows = v.gather_rows;
      k.scatter_rows = v.scatter_rows;
    }
  }
  return k;
}

// Geometry of the phase buffers (see conv_internal.h).
struct DirectPlan {
  int64_t lanes;
  int64_t hu, wu;        // padded rows / columns any output reads
  int64_t hq, wq;        // one phase plane
  int64_t nph, plane;    // phases (sh*sw); floats per plane, rounded to lanes
  int64_t chan;          // floats per channel
  int64_t q, qalloc;     // flat outputs (out_h*wq), rounded to lanes
  int64_t xlen;          // floats of the input buffer, slack included
  int64_t front, ldg;    // gradient rows: leading zeros, row stride
  std::vector<int64_t> off;    // [ntaps] forward tap offsets
  std::vector<int64_t> toff;   // [kk] offset of a tap inside one channel
  std::vector<int64_t> shift;  // [kk] offset of a tap inside its phase plane
  std::vector<int64_t> phase;  // [kk]
};

DirectPlan make_direct_plan(const Shape& s, int64_t lanes) {
  const Conv2dDesc& d = s.d;
  DirectPlan p;
  p.lanes = lanes;
  p.hu = (d.out_h - 1) * d.stride_h + (d.kernel_h - 1) * d.dilation_h + 1;
  p.wu = (d.out_w - 1) * d.stride_w + (d.kernel_w - 1) * d.dilation_w + 1;
  p.hq = ceil_div(p.hu, d.stride_h);
  p.wq = ceil_div(p.wu, d.stride_w);
  p.nph = d.stride_h * d.stride_w;
  p.plane = round_up(p.hq * p.wq, lanes);
  p.chan = p.nph * p.plane;
  p.q = d.out_h * p.wq;
  p.qalloc = round_up(p.q, lanes);
  p.toff.resize(static_cast<size_t>(s.kk));
  p.shift.resize(static_cast<size_t>(s.kk));
  p.phase.resize(static_cast<size_t>(s.kk));
  int64_t max_toff = 0, max_shift = 0;
  for (int64_t a = 0; a < d.kernel_h; ++a)
    for (int64_t b = 0; b < d.kernel_w; ++b) {
      const int64_t k = a * d.kernel_w + b, ra = a * d.dilation_h, rb = b * d.dilation_w;
      p.phase[k] = (ra % d.stride_h) * d.stride_w + rb % d.stride_w;
      p.shift[k] = (ra / d.stride_h) * p.wq + rb / d.stride_w;
      p.toff[k] = p.phase[k] * p.plane + p.shift[k];
      max_toff = std::max(max_toff, p.toff[k]);
      max_shift = std::max(max_shift, p.shift[k]);
    }
  p.off.resize(static_cast<size_t>(s.ntaps));
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t k = 0; k < s.kk; ++k) p.off[c * s.kk + k] = c * p.chan + p.toff[k];
  p.xlen = std::max(s.cg * p.chan, (s.cg - 1) * p.chan + max_toff + p.qalloc) + lanes;
  p.front = round_up(max_shift, lanes);
  p.ldg = p.front + std::max(p.qalloc, p.plane) + lanes;
  return p;
}

// Copies channels [0, cg) of one image/group (x: first channel) into the phase
// buffer. Only positions some output reads are written; the rest stay zero
// from the buffer's first fill.
template <class T>
void build_xphase(const Shape& s, const DirectPlan& p, const T* x, T* buf) {
  const Conv2dDesc& d = s.d;
  const int64_t ih_end = std::min(d.h, p.hu - d.pad_top);
  const int64_t jw_end = std::min(d.w, p.wu - d.pad_left);
  if (ih_end <= 0 || jw_end <= 0) return;
  for (int64_t c = 0; c < s.cg; ++c) {
    const T* xc = x + c * s.hw;
    T* bc = buf + c * p.chan;
    for (int64_t i = 0; i < ih_end; ++i) {
      const int64_t ip = i + d.pad_top;
      T* row = bc + (ip % d.stride_h) * d.stride_w * p.plane + (ip / d.stride_h) * p.wq;
      const T* src = xc + i * d.w;
      if (d.stride_w == 1) {
        std::memcpy(row + d.pad_left, src, sizeof(T) * static_cast<size_t>(jw_end));
      } else {
        for (int64_t j = 0; j < jw_end; ++j) {
          const int64_t jp = j + d.pad_left;
          row[(jp % d.stride_w) * p.plane + jp / d.stride_w] = src[j];
        }
      }
    }
  }
}

// dst = g masked where y <= 0 (y null: plain copy); returns the sum of dst
// (eight interleaved partial sums, then in order: fixed, vectorizable).
template <class T>
double masked_copy(const T* __restrict g, const T* __restrict y, T* __restrict dst, int64_t n) {
  if (y) {
    // Bit masks rather than a select: branch-free (the mask is random) and
    // vectorized; a NaN y keeps its gradient, an inf gradient under y <= 0 gives 0.
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    for (int64_t i = 0; i < n; ++i) {
      U bits;
      std::memcpy(&bits, g + i, sizeof(T));
      bits &= U(0) - static_cast<U>(!(y[i] <= T(0)));
      std::memcpy(dst + i, &bits, sizeof(T));
    }
  } else {
    std::memcpy(dst, g, sizeof(T) * static_cast<size_t>(n));
  }
  T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += dst[i + l];
  for (; i < n; ++i) part[0] += dst[i];
  double sum = 0;
  for (int l = 0; l < 8; ++l) sum += static_cast<double>(part[l]);
  return sum;
}

// masked_copy of `rows` channel rows (dst row stride ldd; grad_b partial sums
// added to sums[o]), through the ISA kernel when there is one.
template <class T>
void mask_rows(const DirectOps<T>& K, const T* g, const T* y, int64_t ohw, int64_t rows, T* dst,
               int64_t ldd, double* sums) {
  if constexpr (std::is_same<T, float>::value)
    if (K.mask) return K.mask(g, y, ohw, rows, ohw, dst, ldd, nullptr, 0, sums);
  for (int64_t o = 0; o < rows; ++o)
    sums[o] += masked_copy(g + o * ohw, y ? y + o * ohw : nullptr, dst + o * ldd, ohw);
}

template <class T>
double row_sum(const T* __restrict x, int64_t n) {
  T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += x[i + l];
  for (; i < n; ++i) part[0] += x[i];
  double sum = 0;
  for (int l = 0; l < 8; ++l) sum += static_cast<double>(part[l]);
  return sum;
}

// Balanced blocks of at most max_ob channels: block b covers [b*n/nb, (b+1)*n/nb).
int64_t num_blocks(int64_t n, int64_t max_ob) { return std::max<int64_t>(1, ceil_div(n, max_ob)); }
int64_t block_begin(int64_t b, int64_t n, int64_t nb) { return b * n / nb; }

// Forward input buffer: for each channel c and kernel column b, the input
// columns that tap b reads (ow*sw + b*dw - pad_left, ow < out_w), zero outside
// the input, one row per padded input row, rows split by stride phase:
//   buf[((c*kw + b)*sh + ip % sh)*plane + (ip / sh)*out_w + ow],  plane = hq*out_w.
// Tap (c, a, b) of output q = oh*out_w + ow then reads buf[off + q] with
// off = ((c*kw + b)*sh + (a*dh) % sh)*plane + ((a*dh) / sh)*out_w: every
// output is useful (no padding columns) and y is written in place.
struct ExpandPlan {
  int64_t hu, hq, plane, xlen;
  std::vector<int64_t> off;  // [ntaps]
};

ExpandPlan make_expand_plan(const Shape& s, int64_t lanes) {
  const Conv2dDesc& d = s.d;
  ExpandPlan p;
  p.hu = (d.out_h - 1) * d.stride_h + (d.kernel_h - 1) * d.dilation_h + 1;
  p.hq = ceil_div(p.hu, d.stride_h);
  p.plane = p.hq * d.out_w;
  p.xlen = s.cg * d.kernel_w * d.stride_h * p.plane + 2 * lanes;
  p.off.resize(static_cast<size_t>(s.ntaps));
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t a = 0; a < d.kernel_h; ++a)
      for (int64_t b = 0; b < d.kernel_w; ++b) {
        const int64_t ra = a * d.dilation_h;
        p.off[(c * d.kernel_h + a) * d.kernel_w + b] =
            ((c * d.kernel_w + b) * d.stride_h + ra % d.stride_h) * p.plane +
            (ra / d.stride_h) * d.out_w;
      }
  return p;
}

// Fills the data positions of the expanded buffer for one image/group; the
// padding positions stay zero from the buffer's first fill.
template <class T>
void build_expanded(const Shape& s, const ExpandPlan& p, const DirectOps<T>& K, const int64_t* lo,
                    const int64_t* hi, const T* x, T* buf) {
  const Conv2dDesc& d = s.d;
  const int64_t ih_end = std::min(d.h, p.hu - d.pad_top);
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t b = 0; b < d.kernel_w; ++b) {
      const int64_t shift = b * d.dilation_w - d.pad_left;
      const int64_t l = lo[b], h = hi[b];
      if (h <= l) continue;
      T* bb = buf + (c * d.kernel_w + b) * d.stride_h * p.plane;
      // Input rows of one stride phase land in consecutive buffer rows.
      for (int64_t rh = 0; rh < d.stride_h; ++rh) {
        const int64_t i0 = ((rh - d.pad_top) % d.stride_h + d.stride_h) % d.stride_h;
        if (i0 >= ih_end) continue;
        const int64_t rows = (ih_end - 1 - i0) / d.stride_h + 1;
        const T* src = x + c * s.hw + i0 * d.w + shift;
        T* dst = bb + rh * p.plane + ((i0 + d.pad_top) / d.stride_h) * d.out_w;
        if (d.stride_w == 1) {
          K.copy_rows(src + l, d.stride_h * d.w, dst + l, d.out_w, rows, h - l);
        } else if (K.gather_rows) {
          if constexpr (std::is_same<T, float>::value)
            K.gather_rows(src + l * d.stride_w, d.stride_h * d.w, dst + l, d.out_w, rows, h - l,
                          d.stride_w);
        } else {
          for (int64_t r = 0; r < rows; ++r) {
            const T* sr = src + r * d.stride_h * d.w;
            T* dr = dst + r * d.out_w;
            for (int64_t o = l; o < h; ++o) dr[o] = sr[o * d.stride_w];
          }
        }
      }
    }
}

void valid_cols(const Conv2dDesc& d, int64_t b, int64_t* lo, int64_t* hi);

template <class T>
Status direct_forward(const Shape& s, const DirectOps<T>& K, const T* x, const T* w,
                      const T* bias, T* y) {
  const Conv2dDesc& d = s.d;
  const ExpandPlan p = make_expand_plan(s, K.lanes);
  std::vector<int64_t> lo(static_cast<size_t>(d.kernel_w)), hi(static_cast<size_t>(d.kernel_w));
  for (int64_t b = 0; b < d.kernel_w; ++b) valid_cols(d, b, &lo[b], &hi[b]);
  const int64_t nob = num_blocks(s.cog, K.max_ob);
  // Weights of each channel block tap-major: wp[o0*ntaps + t*ob + j] = w[o0 + j, t].
  std::vector<T> wp(static_cast<size_t>(d.c_out * s.ntaps));
  for (int64_t gi = 0; gi < d.groups; ++gi)
    for (int64_t b = 0; b < nob; ++b) {
      const int64_t o0 = gi * s.cog + block_begin(b, s.cog, nob);
      const int64_t ob = block_begin(b + 1, s.cog, nob) - block_begin(b, s.cog, nob);
      for (int64_t t = 0; t < s.ntaps; ++t)
        for (int64_t j = 0; j < ob; ++j) wp[o0 * s.ntaps + t * ob + j] = w[(o0 + j) * s.ntaps + t];
    }
  const int64_t work = d.n * d.c_out * s.ohw * std::max<int64_t>(s.ntaps, 1);
  const int nt = detail::threads_for(work / 8);
  // Units: (image, group, channel block, run of outputs); runs only when
  // there are too few units to share (a run boundary is a vector boundary).
  int64_t units = d.n * d.groups * nob, nqs = 1;
  if (nt > 1 && units < 4 * nt) nqs = std::min(ceil_div(s.ohw, K.lanes), ceil_div(4 * nt, units));
  const int64_t qper = round_up(ceil_div(s.ohw, nqs), K.lanes);
  nqs = ceil_div(s.ohw, qper);
  units *= nqs;
  Scratch<T> xbuf;
  if (!xbuf.init(nt, p.xlen, true)) return Status::Internal("out of memory");
  std::vector<int64_t> cur(static_cast<size_t>(nt), -1);
  parallel_units(units, nt, [&](int64_t u, int th) {
    const int64_t qs = u % nqs, rest = u / nqs, b = rest % nob, ng = rest / nob;
    const int64_t gi = ng % d.groups, n = ng / d.groups;
    T* xb = xbuf.at(th);
    if (cur[th] != ng) {
      build_expanded(s, p, K, lo.data(), hi.data(), x + (n * d.c_in + gi * s.cg) * s.hw, xb);
      cur[th] = ng;
    }
    const int64_t o0 = gi * s.cog + block_begin(b, s.cog, nob);
    const int ob = static_cast<int>(block_begin(b + 1, s.cog, nob) - block_begin(b, s.cog, nob));
    const int64_t q0 = qs * qper, q1 = std::min(s.ohw, q0 + qper);
    K.fwd(xb, p.off.data(), s.ntaps, wp.data() + o0 * s.ntaps, bias ? bias + o0 : nullptr, ob,
          y + (n * d.c_out + o0) * s.ohw, s.ohw, q0, q1, d.relu);
  });
  return Status::Ok();
}

// Exact (valid outputs only) weight gradient for inputs holding inf/NaN,
// where the fast kernel's 0 * inf on the tail lanes would create NaN.
template <class T>
void wgrad_exact(const Shape& s, const ExpandPlan& p, int64_t lanes, const T* xb, const T* gq,
                 int64_t ldq, T* gwv) {
  for (int64_t o = 0; o < s.cog; ++o)
    for (int64_t t = 0; t < s.ntaps; ++t) {
      T acc = 0;
      const T* gr = gq + o * ldq;
      const T* xr = xb + p.off[t];
      for (int64_t q = 0; q < s.ohw; ++q) acc += gr[q] * xr[q];
      gwv[(o * s.ntaps + t) * lanes] += acc;
    }
}

// Exact scatter form of the input gradient (weights holding inf/NaN).
template <class T>
void xgrad_exact(const Shape& s, const DirectPlan& p, const T* wg, const T* gp, T* gxb) {
  std::memset(gxb, 0, sizeof(T) * static_cast<size_t>(s.cg * p.chan));
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t o = 0; o < s.cog; ++o)
      for (int64_t k = 0; k < s.kk; ++k) {
        const T wv = wg[o * s.ntaps + c * s.kk + k];
        T* base = gxb + c * p.chan + p.toff[k];
        for (int64_t r = 0; r < s.d.out_h; ++r) {
          const T* gr = gp + o * p.ldg + r * p.wq;
          T* dr = base + r * p.wq;
          for (int64_t col = 0; col < s.d.out_w; ++col) dr[col] += wv * gr[col];
        }
      }
}

// grad_x of one image/group from its phase-layout gradient.
template <class T>
void unphase(const Shape& s, const DirectPlan& p, const T* gxb, T* gx) {
  const Conv2dDesc& d = s.d;
  for (int64_t c = 0; c < s.cg; ++c) {
    const T* bc = gxb + c * p.chan;
    T* xc = gx + c * s.hw;
    for (int64_t i = 0; i < d.h; ++i) {
      const int64_t ip = i + d.pad_top;
      T* dr = xc + i * d.w;
      if (ip >= p.hu) {
        std::fill(dr, dr + d.w, T(0));
        continue;
      }
      const T* row = bc + (ip % d.stride_h) * d.stride_w * p.plane + (ip / d.stride_h) * p.wq;
      const int64_t jend = std::max<int64_t>(0, std::min(d.w, p.wu - d.pad_left));
      if (d.stride_w == 1) {
        std::memcpy(dr, row + d.pad_left, sizeof(T) * static_cast<size_t>(jend));
      } else {
        for (int64_t j = 0; j < jend; ++j) {
          const int64_t jp = j + d.pad_left;
          dr[j] = row[(jp % d.stride_w) * p.plane + jp / d.stride_w];
        }
      }
      std::fill(dr + jend, dr + d.w, T(0));
    }
  }
}

// Transposed-convolution operands per (group, phase, input-channel block):
// taps t = o*nk + i over the kernel taps i of that phase, gradient offsets
// o*ldg - shift, weights [t][j] for the block's channels j.
struct XgradPlan {
  int64_t ncb;                                // input-channel blocks
  std::vector<std::vector<int64_t>> taps;     // [phase] kernel taps of that phase
  std::vector<std::vector<int64_t>> offs;     // [phase] offsets (relative to gpad + front)
  std::vector<int64_t> wbase;                 // [(gi*nph + ph)*ncb + cb] into the packed weights
};

template <class T>
XgradPlan make_xgrad_plan(const Shape& s, const DirectPlan& p, const DirectOps<T>& K, const T* w,
                          std::vector<T>* wx) {
  XgradPlan x;
  x.ncb = num_blocks(s.cg, K.max_ob);
  x.taps.resize(static_cast<size_t>(p.nph));
  x.offs.resize(static_cast<size_t>(p.nph));
  for (int64_t k = 0; k < s.kk; ++k) x.taps[p.phase[k]].push_back(k);
  for (int64_t ph = 0; ph < p.nph; ++ph)
    for (int64_t o = 0; o < s.cog; ++o)
      for (int64_t k : x.taps[ph]) x.offs[ph].push_back(o * p.ldg - p.shift[k]);
  wx->assign(static_cast<size_t>(s.d.c_out * s.ntaps), T(0));
  x.wbase.resize(static_cast<size_t>(s.d.groups * p.nph * x.ncb));
  int64_t at = 0;
  for (int64_t gi = 0; gi < s.d.groups; ++gi)
    for (int64_t ph = 0; ph < p.nph; ++ph) {
      const auto& tk = x.taps[ph];
      const int64_t nk = static_cast<int64_t>(tk.size());
      for (int64_t cb = 0; cb < x.ncb; ++cb) {
        const int64_t c0 = block_begin(cb, s.cg, x.ncb), cn = block_begin(cb + 1, s.cg, x.ncb) - c0;
        x.wbase[(gi * p.nph + ph) * x.ncb + cb] = at;
        for (int64_t o = 0; o < s.cog; ++o)
          for (int64_t i = 0; i < nk; ++i)
            for (int64_t j = 0; j < cn; ++j)
              (*wx)[at + (o * nk + i) * cn + j] =
                  w[(gi * s.cog + o) * s.ntaps + (c0 + j) * s.kk + tk[i]];
        at += s.cog * nk * cn;
      }
    }
  return x;
}

template <class T>
Status direct_backward(const Shape& s, const DirectOps<T>& K, const T* g, const T* x, const T* w,
                       const T* y, T* gx, T* gw, T* gb) {
  const Conv2dDesc& d = s.d;
  const DirectPlan p = make_direct_plan(s, K.lanes);
  // grad_w reads the input in the forward's expanded layout and the gradient
  // rows as they are (row stride ldq, zero tail): no padding columns.
  const ExpandPlan e = make_expand_plan(s, K.lanes);
  const int64_t ldq = round_up(s.ohw, K.lanes);
  std::vector<int64_t> lo(static_cast<size_t>(d.kernel_w)), hi(static_cast<size_t>(d.kernel_w));
  for (int64_t b = 0; b < d.kernel_w; ++b) valid_cols(d, b, &lo[b], &hi[b]);
  const int64_t wsize = d.c_out * s.ntaps;
  const int64_t nc = batch_chunks(d.n, wsize);
  std::vector<T> wx;
  XgradPlan xp;
  const bool w_finite = all_finite(w, wsize);
  if (gx && w_finite) xp = make_xgrad_plan(s, p, K, w, &wx);
  std::vector<T> gw_part(gw ? static_cast<size_t>(nc * wsize) : 0);
  std::vector<double> gb_part(static_cast<size_t>(nc * d.c_out), 0.0);
  const int64_t work = d.n * d.c_out * s.ohw * std::max<int64_t>(s.ntaps, 1);
  const int nt = static_cast<int>(std::min<int64_t>(detail::threads_for(work / 8), nc));
  // Runs of `per` images are reduced together: the weight-gradient tiles then
  // run over all their outputs before touching their accumulators in memory
  // (runs sized to stay in L2; they depend on the sizes only).
  const int64_t img_bytes = static_cast<int64_t>(sizeof(T)) * (e.xlen + s.cog * ldq);
  const int64_t per = std::max<int64_t>(1, std::min(ceil_div(d.n, nc), (192 << 10) / img_bytes));
  Scratch<T> xbuf, gpad, gq, gwv, gxb;
  if ((gx && !gpad.init(nt, s.cog * p.ldg, true)) || !gq.init(nt, per * s.cog * ldq, true) ||
      (gw && !xbuf.init(nt, per * e.xlen, true)) ||
      (gw && !gwv.init(nt, wsize * p.lanes, false)) || (gx && !gxb.init(nt, s.cg * p.chan, false)))
    return Status::Internal("out of memory");
  parallel_units(nc, nt, [&](int64_t c, int th) {
    T* gwvt = gw ? gwv.at(th) : nullptr;
    if (gwvt) std::memset(gwvt, 0, sizeof(T) * static_cast<size_t>(wsize * p.lanes));
    double* bsum = gb_part.data() + c * d.c_out;
    const int64_t n0 = chunk_begin(c, d.n, nc), nimg = chunk_begin(c + 1, d.n, nc) - n0;
    for (int64_t gi = 0; gi < d.groups; ++gi) {
      for (int64_t k0 = 0; k0 < nimg; k0 += per) {
        const int64_t kn = std::min(per, nimg - k0);
        bool finite = true;
        for (int64_t k = 0; k < kn; ++k) {
          const int64_t n = n0 + k0 + k;
          const int64_t og = n * d.c_out + gi * s.cog, xg = n * d.c_in + gi * s.cg;
          const T* gsrc = g + og * s.ohw;
          const T* ysrc = y ? y + og * s.ohw : nullptr;
          T* gqt = gq.at(th) + k * s.cog * ldq;
          mask_rows(K, gsrc, ysrc, s.ohw, s.cog, gqt, ldq, bsum + gi * s.cog);
          if (gw) {
            build_expanded(s, e, K, lo.data(), hi.data(), x + xg * s.hw,
                           xbuf.at(th) + k * e.xlen);
            finite = finite && all_finite(x + xg * s.hw, s.cg * s.hw);
          }
          if (gx) {
            T* gp = gpad.at(th);
            for (int64_t o = 0; o < s.cog; ++o)
              K.copy_rows(gqt + o * ldq, d.out_w, gp + o * p.ldg + p.front, p.wq, d.out_h,
                          d.out_w);
            const T* gpf = gp + p.front;
            T* gxt = gxb.at(th);
            if (w_finite) {
              for (int64_t ph = 0; ph < p.nph; ++ph) {
                const int64_t nk = static_cast<int64_t>(xp.taps[ph].size());
                for (int64_t cb = 0; cb < xp.ncb; ++cb) {
                  const int64_t c0 = block_begin(cb, s.cg, xp.ncb);
                  const int cn = static_cast<int>(block_begin(cb + 1, s.cg, xp.ncb) - c0);
                  K.fwd(gpf, xp.offs[ph].data(), s.cog * nk,
                        wx.data() + xp.wbase[(gi * p.nph + ph) * xp.ncb + cb], nullptr, cn,
                        gxt + c0 * p.chan + ph * p.plane, p.chan, 0, p.plane, false);
                }
              }
            } else {
              xgrad_exact(s, p, w + gi * s.cog * s.ntaps, gpf, gxt);
            }
            unphase(s, p, gxt, gx + xg * s.hw);
          }
        }
        if (gw) {
          T* dst = gwvt + gi * s.cog * s.ntaps * p.lanes;
          if (finite) {
            K.wgrad(xbuf.at(th), e.xlen, e.off.data(), s.ntaps, gq.at(th), s.cog * ldq, ldq,
                    s.cog, ldq, kn, dst);
          } else {
            for (int64_t k = 0; k < kn; ++k)
              wgrad_exact(s, e, p.lanes, xbuf.at(th) + k * e.xlen, gq.at(th) + k * s.cog * ldq,
                          ldq, dst);
          }
        }
      }
    }
    if (gw) {
      T* part = gw_part.data() + c * wsize;
      for (int64_t i = 0; i < wsize; ++i) {
        T acc = 0;
        for (int64_t l = 0; l < p.lanes; ++l) acc += gwvt[i * p.lanes + l];
        part[i] = acc;
      }
    }
  });
  if (gw)
    for (int64_t i = 0; i < wsize; ++i) {
      T acc = gw_part[i];
      for (int64_t c = 1; c < nc; ++c) acc += gw_part[c * wsize + i];
      gw[i] = acc;
    }
  if (gb)
    for (int64_t o = 0; o < d.c_out; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < nc; ++c) acc += gb_part[c * d.c_out + o];
      gb[o] = static_cast<T>(acc);
    }
  return Status::Ok();
}

// Many channels per group (float32, AVX2/AVX-512). Three steps:
//  1. the ReLU-masked gradient g' of the whole batch (and grad_b's partial
//     sums) in one pass, per batch chunk;
//  2. grad_w per chunk: for each image, g' transposed to [q][o] and the input
//     expanded as in the forward; the kernel holds channel vectors x taps in
//     registers and reduces over q with no lane reduction or padding lanes
//     (a GEMM with reduction ohw whose operands need no packing);
//  3. grad_x, for stride 1 (padding <= the dilated kernel extent - 1), is the
//     forward direct kernel on g' with the flipped, transposed weights and
//     padding (k-1)*dil - pad; other geometries use im2col + GEMM + col2im.
// Chunks and their order depend on the sizes only: deterministic results.
bool use_direct(const Shape& s);
template <class T>
bool use_direct_forward(const Shape& s);

// grad_x as transposed convolution, one stride phase (rh, rw) at a time: the
// input rows ih = sh*u + rh - pad_top take the kernel rows a with
// a*dh = sh*m + rh and read g' row u - m, so over the phase's rows u each
// phase is a stride-1 convolution of g' (kernel: those taps, flipped;
// dilation dh/gcd(sh, dh)) that the forward direct kernel computes densely.
struct XPhase {
  Conv2dDesc d;                  // the stride-1 convolution over g'
  int64_t rh = 0, rw = 0, u0 = 0, v0 = 0;
  std::vector<int64_t> ta, tb;   // kernel rows / columns of the phase, flipped order
};

// Taps, first output and geometry of one phase along one axis; false when
// the phase would need negative padding (left to the GEMM path).
bool phase_axis(int64_t in, int64_t out, int64_t k, int64_t st, int64_t dil, int64_t pad,
                int64_t r, std::vector<int64_t>* taps, int64_t* u0, int64_t* len, int64_t* kd,
                int64_t* pa, int64_t* pb) {
  taps->clear();
  for (int64_t a = k - 1; a >= 0; --a)
    if ((a * dil) % st == r) taps->push_back(a);
  *u0 = pad - r > 0 ? ceil_div(pad - r, st) : 0;
  const int64_t u1 = in + pad - r > 0 ? ceil_div(in + pad - r, st) : 0;
  *len = std::max<int64_t>(0, u1 - *u0);
  if (taps->empty() || *len == 0) return true;
  const int64_t nk = static_cast<int64_t>(taps->size());
  const int64_t mmax = ((*taps)[0] * dil - r) / st;
  *kd = nk > 1 ? mmax - ((*taps)[1] * dil - r) / st : 1;
  *pa = mmax - *u0;
  *pb = *len - out - *pa + (nk - 1) * *kd;
  return *pa >= 0 && *pb >= 0;
}

// All phases of grad_x (phases with no taps or no rows are left out; *holes
// is set when such a phase has positions, whose grad_x is zero); false when
// some phase needs the GEMM path.
bool make_xphases(const Shape& s, std::vector<XPhase>* out, bool* holes) {
  const Conv2dDesc& d = s.d;
  out->clear();
  *holes = false;
  for (int64_t rh = 0; rh < d.stride_h; ++rh)
    for (int64_t rw = 0; rw < d.stride_w; ++rw) {
      XPhase ph;
      int64_t hr = 0, wr = 0, dh = 1, dw = 1, pt = 0, pb = 0, pl = 0, pr = 0;
      if (!phase_axis(d.h, d.out_h, d.kernel_h, d.stride_h, d.dilation_h, d.pad_top, rh, &ph.ta,
                      &ph.u0, &hr, &dh, &pt, &pb) ||
          !phase_axis(d.w, d.out_w, d.kernel_w, d.stride_w, d.dilation_w, d.pad_left, rw, &ph.tb,
                      &ph.v0, &wr, &dw, &pl, &pr))
        return false;
      if (hr == 0 || wr == 0) continue;
      if (ph.ta.empty() || ph.tb.empty()) {
        *holes = true;
        continue;
      }
      Conv2dDesc& r = ph.d;
      r.n = d.n, r.c_in = d.c_out, r.h = d.out_h, r.w = d.out_w;
      r.c_out = d.c_in;
      r.kernel_h = static_cast<int64_t>(ph.ta.size()), r.kernel_w = static_cast<int64_t>(ph.tb.size());
      r.out_h = hr, r.out_w = wr;
      r.pad_top = pt, r.pad_bottom = pb, r.pad_left = pl, r.pad_right = pr;
      r.dilation_h = dh, r.dilation_w = dw;
      r.groups = d.groups;
      ph.rh = rh, ph.rw = rw;
      if (!validate(r).ok() || !use_direct_forward<float>(make_shape(r))) return false;
      out->push_back(std::move(ph));
    }
  return true;
}

template <class T>
Status gemm_backward(const Shape& s, const T* g, const T* x, const T* w, const T* y, T* gx, T* gw,
                     T* gb);

template <class T>
Status wide_backward(const Shape& s, const DirectOps<T>& K, const T* g, const T* x, const T* w,
                     const T* y, T* gx, T* gw, T* gb) {
  const Conv2dDesc& d = s.d;
  const int64_t wsize = d.c_out * s.ntaps;
  std::vector<XPhase> phases;
  bool holes = false;
  const bool gx_direct = gx && all_finite(w, wsize) && make_xphases(s, &phases, &holes);
  if (!gw && !gx_direct) return gemm_backward(s, g, x, w, y, gx, gw, gb);
  const int64_t cogp = round_up(s.cog, K.lanes);
  const int64_t gwl = d.groups * s.ntaps * cogp;  // one partial, channels padded
  const int64_t nc = batch_chunks(d.n, gwl);
  const int64_t work = d.n * d.c_out * s.ohw * std::max<int64_t>(s.ntaps, 1);
  const int nt = static_cast<int>(std::min<int64_t>(detail::threads_for(work / 8), nc));
  const ExpandPlan e = make_expand_plan(s, K.lanes);
  std::vector<int64_t> lo(static_cast<size_t>(d.kernel_w)), hi(static_cast<size_t>(d.kernel_w));
  for (int64_t b = 0; b < d.kernel_w; ++b) valid_cols(d, b, &lo[b], &hi[b]);
  Workspace<T, 0> gpw;
  Workspace<T, 1> partw;
  T* gp = gx_direct ? gpw.get(static_cast<size_t>(d.n * d.c_out * s.ohw)) : nullptr;
  Scratch<T> xbuf, gtb;
  if ((gx_direct && !gp) || (gw && !xbuf.init(nt, e.xlen, true)) ||
      (gw && !gtb.init(nt, s.ohw * cogp, true)))
    return Status::Internal("out of memory");
  // Partial grad_w of each chunk in the kernel's [group][tap][channel] layout.
  T* const part = gw ? partw.get(static_cast<size_t>(nc * gwl)) : nullptr;
  if (gw && !part) return Status::Internal("out of memory");
  std::vector<double> gb_part(static_cast<size_t>(nc * d.c_out), 0.0);
  parallel_units(nc, nt, [&](int64_t c, int th) {
    T* acc = gw ? part + c * gwl : nullptr;
    if (acc) std::memset(acc, 0, sizeof(T) * static_cast<size_t>(gwl));
    double* bsum = gb_part.data() + c * d.c_out;
    for (int64_t n = chunk_begin(c, d.n, nc); n < chunk_begin(c + 1, d.n, nc); ++n)
      for (int64_t gi = 0; gi < d.groups; ++gi) {
        const int64_t og = n * d.c_out + gi * s.cog;
        T* gt = gw ? gtb.at(th) : nullptr;
        K.mask(g + og * s.ohw, y ? y + og * s.ohw : nullptr, s.ohw, s.cog, s.ohw,
               gx_direct ? gp + og * s.ohw : nullptr, s.ohw, gt, cogp, bsum + gi * s.cog);
        if (!gw) continue;
        T* xb = xbuf.at(th);
        build_expanded(s, e, K, lo.data(), hi.data(), x + (n * d.c_in + gi * s.cg) * s.hw, xb);
        K.wgrad_t(xb, e.off.data(), s.ntaps, gt, cogp, cogp, s.ohw, acc + gi * s.ntaps * cogp,
                  cogp);
      }
  });
  if (gw) {
    // Chunk partials summed in chunk order (vectorizable, split over threads),
    // then transposed to [o][tap].
    T* sum = part;
    const int64_t blk = 4096, nblk = ceil_div(gwl, blk);
    parallel_units(nblk, nc > 1 ? nt : 1, [&](int64_t b, int) {
      const int64_t i0 = b * blk, i1 = std::min(gwl, i0 + blk);
      for (int64_t c = 1; c < nc; ++c) {
        const T* src = part + c * gwl;
        for (int64_t i = i0; i < i1; ++i) sum[i] += src[i];
      }
    });
    for (int64_t gi = 0; gi < d.groups; ++gi)
      K.transpose(sum + gi * s.ntaps * cogp, cogp, gw + gi * s.cog * s.ntaps, s.ntaps, s.ntaps,
                  s.cog);
  }
  if (gb)
    for (int64_t o = 0; o < d.c_out; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < nc; ++c) acc += gb_part[c * d.c_out + o];
      gb[o] = static_cast<T>(acc);
    }
  if (!gx) return Status::Ok();
  if (!gx_direct) return gemm_backward(s, g, x, w, y, gx, static_cast<T*>(nullptr),
                                       static_cast<T*>(nullptr));
  const bool single = d.stride_h == 1 && d.stride_w == 1 && phases.size() == 1;
  Workspace<T, 2> tmpw;
  T* tmp = nullptr;
  if (!single) {
    int64_t most = 0;
    for (const XPhase& ph : phases) most = std::max(most, ph.d.out_h * ph.d.out_w);
    tmp = tmpw.get(static_cast<size_t>(std::max<int64_t>(1, d.n * d.c_in * most)));
    if (!tmp) return Status::Internal("out of memory");
    if (holes)
      parallel_units(d.n, detail::threads_for(d.n * d.c_in * s.hw), [&](int64_t n, int) {
        std::fill(gx + n * d.c_in * s.hw, gx + (n + 1) * d.c_in * s.hw, T(0));
      });
  }
  for (const XPhase& ph : phases) {
    const Shape ps = make_shape(ph.d);
    // Phase weights: wr[gi*cg + c][o][i][j] = w[gi*cog + o][c][ta[i]][tb[j]].
    std::vector<T> wr(static_cast<size_t>(d.c_in * s.cog * ps.kk));
    const int64_t ki = ph.d.kernel_h, kj = ph.d.kernel_w;
    for (int64_t gi = 0; gi < d.groups; ++gi)
      for (int64_t c = 0; c < s.cg; ++c)
        for (int64_t o = 0; o < s.cog; ++o)
          for (int64_t i = 0; i < ki; ++i)
            for (int64_t j = 0; j < kj; ++j)
              wr[(((gi * s.cg + c) * s.cog + o) * ki + i) * kj + j] =
                  w[(((gi * s.cog + o) * s.cg + c) * d.kernel_h + ph.ta[i]) * d.kernel_w +
                    ph.tb[j]];
    const T* gpc = gp;
    Status st = direct_forward(ps, K, gpc, wr.data(), static_cast<const T*>(nullptr),
                               single ? gx : tmp);
    if (!st.ok()) return st;
    if (single) break;
    // Scatter the phase's rows into grad_x.
    const int64_t hr = ph.d.out_h, wrn = ph.d.out_w;
    const int64_t row0 = d.stride_h * ph.u0 + ph.rh - d.pad_top;
    const int64_t col0 = d.stride_w * ph.v0 + ph.rw - d.pad_left;
    parallel_units(d.n * d.c_in, detail::threads_for(d.n * d.c_in * hr * wrn), [&](int64_t pl, int) {
      const T* src = tmp + pl * hr * wrn;
      T* dst = gx + pl * s.hw + row0 * d.w + col0;
      if (d.stride_w == 1) {
        K.copy_rows(src, wrn, dst, d.stride_h * d.w, hr, wrn);
      } else if (K.scatter_rows) {
        K.scatter_rows(src, wrn, dst, d.stride_h * d.w, hr, wrn, d.stride_w);
      } else {
        for (int64_t u = 0; u < hr; ++u) {
          T* dr = dst + u * d.stride_h * d.w;
          const T* sr = src + u * wrn;
          for (int64_t v = 0; v < wrn; ++v) dr[v * d.stride_w] = sr[v];
        }
      }
    });
  }
  return Status::Ok();
}

// ============================================================ GEMM path

// Column range [lo, hi) of outputs whose tap b reads inside the input row.
void valid_cols(const Conv2dDesc& d, int64_t b, int64_t* lo, int64_t* hi) {
  const int64_t shift = b * d.dilation_w - d.pad_left;  // iw = ow*sw + shift
  int64_t l = shift >= 0 ? 0 : ceil_div(-shift, d.stride_w);
  int64_t h = d.w - shift <= 0 ? 0 : ceil_div(d.w - shift, d.stride_w);
  h = std::min(h, d.out_w);
  l = std::min(l, h);
  *lo = l;
  *hi = h;
}

// col[t*ld + (r - r0)*out_w + ow] for output rows [r0, r1) of one image/group.
template <class T>
void im2col(const Shape& s, const T* x, int64_t r0, int64_t r1, T* col, int64_t ld) {
  const Conv2dDesc& d = s.d;
  const int64_t np = ld;
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t a = 0; a < d.kernel_h; ++a)
      for (int64_t b = 0; b < d.kernel_w; ++b) {
        T* dst = col + ((c * d.kernel_h + a) * d.kernel_w + b) * np;
        int64_t lo, hi;
        valid_cols(d, b, &lo, &hi);
        const int64_t shift = b * d.dilation_w - d.pad_left;
        for (int64_t r = r0; r < r1; ++r) {
          T* dr = dst + (r - r0) * d.out_w;
          const int64_t ih = r * d.stride_h - d.pad_top + a * d.dilation_h;
          if (ih < 0 || ih >= d.h) {
            std::fill(dr, dr + d.out_w, T(0));
            continue;
          }
          const T* src = x + c * s.hw + ih * d.w + shift;
          std::fill(dr, dr + lo, T(0));
          if (d.stride_w == 1) {
            if (hi > lo) std::memcpy(dr + lo, src + lo, sizeof(T) * static_cast<size_t>(hi - lo));
          } else {
            for (int64_t o = lo; o < hi; ++o) dr[o] = src[o * d.stride_w];
          }
          std::fill(dr + hi, dr + d.out_w, T(0));
        }
      }
}

// gx[c, ih, iw] += col[t*ld + p] (the adjoint of im2col), sequential.
template <class T>
void col2im_add(const Shape& s, const T* col, int64_t ld, int64_t r0, int64_t r1, T* gx) {
  const Conv2dDesc& d = s.d;
  const int64_t np = ld;
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t a = 0; a < d.kernel_h; ++a)
      for (int64_t b = 0; b < d.kernel_w; ++b) {
        const T* src = col + ((c * d.kernel_h + a) * d.kernel_w + b) * np;
        int64_t lo, hi;
        valid_cols(d, b, &lo, &hi);
        const int64_t shift = b * d.dilation_w - d.pad_left;
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t ih = r * d.stride_h - d.pad_top + a * d.dilation_h;
          if (ih < 0 || ih >= d.h) continue;
          const T* sr = src + (r - r0) * d.out_w;
          T* dr = gx + c * s.hw + ih * d.w + shift;
          if (d.stride_w == 1) {
            for (int64_t o = lo; o < hi; ++o) dr[o] += sr[o];
          } else {
            for (int64_t o = lo; o < hi; ++o) dr[o * d.stride_w] += sr[o];
          }
        }
      }
}

// Output rows per im2col block (whole image for 1x1 convolutions).
int64_t rows_per_block(const Shape& s) {
  if (s.pointwise) return s.d.out_h;
  const int64_t per_row = std::max<int64_t>(1, s.ntaps * s.d.out_w);
  int64_t rows = std::max<int64_t>(1, kColTarget / per_row);
  rows = std::max(rows, ceil_div(256, std::max<int64_t>(1, s.d.out_w)));
  return std::min(rows, s.d.out_h);
}

struct ErrorFlag {
  std::atomic<int> set{0};
  Status first;
  void record(const Status& st) {
    if (st.ok()) return;
    if (set.exchange(1) == 0) first = st;
  }
  Status status() const { return set.load() ? first : Status::Ok(); }
};

template <class T>
Status gemm_forward(const Shape& s, const T* x, const T* w, const T* bias, T* y) {
  const Conv2dDesc& d = s.d;
  const int64_t rpb = rows_per_block(s), nrb = ceil_div(d.out_h, rpb);
  const int64_t units = d.n * d.groups * nrb;
  const int nt = detail::threads_for(d.n * d.c_out * s.ohw * std::max<int64_t>(s.ntaps, 1) / 8);
  const bool outer = nt > 1 && units >= 2 * nt;
  const int nto = outer ? nt : 1;
  Scratch<T> col;
  if (!s.pointwise && !col.init(nto, s.ntaps * rpb * d.out_w, false))
    return Status::Internal("out of memory");
  ErrorFlag err;
  parallel_units(units, nto, [&](int64_t u, int th) {
    const int64_t rb = u % nrb, ng = u / nrb, gi = ng % d.groups, n = ng / d.groups;
    const int64_t r0 = rb * rpb, r1 = std::min(d.out_h, r0 + rpb), np = (r1 - r0) * d.out_w;
    const T* xg = x + (n * d.c_in + gi * s.cg) * s.hw;
    GemmDesc gd;
    gd.m = s.cog, gd.n = np, gd.k = s.ntaps;
    gd.lda = std::max<int64_t>(s.ntaps, 1);
    gd.ldc = s.ohw;
    gd.bias = bias ? BiasMode::per_row : BiasMode::none;
    gd.relu = d.relu;
    gd.parallel = !outer;
    const T* bmat;
    if (s.pointwise) {
      bmat = xg + r0 * d.out_w;
      gd.ldb = s.hw;
    } else {
      T* cb = col.at(th);
      im2col(s, xg, r0, r1, cb, np);
      bmat = cb;
      gd.ldb = np;
    }
    err.record(gemm(gd, w + gi * s.cog * s.ntaps, bmat, bias ? bias + gi * s.cog : nullptr,
                    y + (n * d.c_out + gi * s.cog) * s.ohw + r0 * d.out_w));
  });
  return err.status();
}

// Backward over runs of images: a run's gradients and im2col matrices sit side
// by side (row length kn*ohw), so grad_w is one GEMM with a reduction of
// kn*ohw and grad_x one GEMM of width kn*ohw; large images go one at a time
// in blocks of output rows instead.
template <class T>
Status gemm_backward(const Shape& s, const T* g, const T* x, const T* w, const T* y, T* gx, T* gw,
                     T* gb) {
  const Conv2dDesc& d = s.d;
  const DirectOps<T> K = direct_ops<T>();
  const int64_t wsize = d.c_out * s.ntaps;
  const int64_t nc = batch_chunks(d.n, wsize);
  const int64_t rpb = rows_per_block(s), nrb = ceil_div(d.out_h, rpb);
  int64_t per = 1;
  if (!s.pointwise && nrb == 1)
    per = std::max<int64_t>(1, std::min(ceil_div(d.n, nc),
                                        2 * kColTarget / std::max<int64_t>(1, s.ntaps * s.ohw)));
  const int nt0 = detail::threads_for(d.n * d.c_out * s.ohw * std::max<int64_t>(s.ntaps, 1) / 8);
  const bool outer = nt0 > 1 && nc >= nt0;
  const int nto = outer ? static_cast<int>(std::min<int64_t>(nt0, nc)) : 1;
  std::vector<T> gw_part(gw ? static_cast<size_t>(nc * wsize) : 0, T(0));
  std::vector<double> gb_part(static_cast<size_t>(nc * d.c_out), 0.0);
  Scratch<T> gm, col, colg;
  const int64_t colsize = s.ntaps * per * rpb * d.out_w;
  if (((y || per > 1) && !gm.init(nto, per * s.cog * s.ohw, false)) ||
      (gw && !s.pointwise && !col.init(nto, colsize, false)) ||
      (gx && !s.pointwise && !colg.init(nto, colsize, false)))
    return Status::Internal("out of memory");
  ErrorFlag err;
  parallel_units(nc, nto, [&](int64_t c, int th) {
    double* bsum = gb_part.data() + c * d.c_out;
    const int64_t n0 = chunk_begin(c, d.n, nc), nimg = chunk_begin(c + 1, d.n, nc) - n0;
    for (int64_t gi = 0; gi < d.groups; ++gi)
      for (int64_t k0 = 0; k0 < nimg; k0 += per) {
        const int64_t kn = std::min(per, nimg - k0), len = kn * s.ohw;
        const T* gn = g + ((n0 + k0) * d.c_out + gi * s.cog) * s.ohw;  // rows of length len
        if (y || kn > 1) {
          T* m = gm.at(th);
          for (int64_t k = 0; k < kn; ++k) {
            const int64_t og = (n0 + k0 + k) * d.c_out + gi * s.cog;
            mask_rows(K, g + og * s.ohw, y ? y + og * s.ohw : nullptr, s.ohw, s.cog,
                      m + k * s.ohw, len, bsum + gi * s.cog);
          }
          gn = m;
        } else if (gb) {
          for (int64_t o = 0; o < s.cog; ++o) bsum[gi * s.cog + o] += row_sum(gn + o * s.ohw, s.ohw);
        }
        auto xg = [&](int64_t k) { return x + ((n0 + k0 + k) * d.c_in + gi * s.cg) * s.hw; };
        auto gxg = [&](int64_t k) { return gx + ((n0 + k0 + k) * d.c_in + gi * s.cg) * s.hw; };
        if (gx && !s.pointwise)
          for (int64_t k = 0; k < kn; ++k) std::fill(gxg(k), gxg(k) + s.cg * s.hw, T(0));
        for (int64_t rb = 0; rb < nrb; ++rb) {
          const int64_t r0 = rb * rpb, r1 = std::min(d.out_h, r0 + rpb), np = (r1 - r0) * d.out_w;
          const int64_t ld = kn * np;  // kn > 1 only with whole images (np == ohw)
          if (gw) {
            GemmDesc gd;
            gd.m = s.cog, gd.n = s.ntaps, gd.k = ld;
            gd.trans_b = true;
            gd.lda = len, gd.ldc = std::max<int64_t>(s.ntaps, 1);
            gd.accumulate = true;
            gd.parallel = !outer;
            const T* bmat;
            if (s.pointwise) {
              bmat = xg(0) + r0 * d.out_w;
              gd.ldb = s.hw;
            } else {
              T* cb = col.at(th);
              for (int64_t k = 0; k < kn; ++k) im2col(s, xg(k), r0, r1, cb + k * np, ld);
              bmat = cb;
              gd.ldb = ld;
            }
            err.record(gemm(gd, gn + r0 * d.out_w, bmat, static_cast<const T*>(nullptr),
                            gw_part.data() + c * wsize + gi * s.cog * s.ntaps));
          }
          if (gx) {
            GemmDesc gd;
            gd.m = s.ntaps, gd.n = ld, gd.k = s.cog;
            gd.trans_a = true;
            gd.lda = std::max<int64_t>(s.ntaps, 1), gd.ldb = len;
            gd.parallel = !outer;
            const T* amat = w + gi * s.cog * s.ntaps;
            if (s.pointwise) {
              gd.ldc = s.hw;
              err.record(gemm(gd, amat, gn + r0 * d.out_w, static_cast<const T*>(nullptr),
                              gxg(0) + r0 * d.out_w));
            } else {
              T* cg = colg.at(th);
              gd.ldc = ld;
              err.record(gemm(gd, amat, gn + r0 * d.out_w, static_cast<const T*>(nullptr), cg));
              for (int64_t k = 0; k < kn; ++k) col2im_add(s, cg + k * np, ld, r0, r1, gxg(k));
            }
          }
        }
      }
  });
  if (gw)
    for (int64_t i = 0; i < wsize; ++i) {
      T acc = gw_part[i];
      for (int64_t c = 1; c < nc; ++c) acc += gw_part[c * wsize + i];
      gw[i] = acc;
    }
  if (gb)
    for (int64_t o = 0; o < d.c_out; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < nc; ++c) acc += gb_part[c * d.c_out + o];
      gb[o] = static_cast<T>(acc);
    }
  return err.status();
}

// ============================================================ dispatch

// Few input channels per group: the GEMM's reduction (cg*kh*kw) is too short
// to amortize im2col and packing, and the direct kernels keep every FMA useful.
bool use_direct(const Shape& s) { return s.cg <= 8 && !s.spread; }

// The float32 direct forward (an implicit GEMM over the expanded input) also
// beats im2col + GEMM with many channels while its input buffer stays within
// a few MB (measured: 1.1-1.8x on 3x3 and 1x1 layers with 32-256 channels).
template <class T>
bool use_direct_forward(const Shape& s) {
  if (use_direct(s)) return true;
  if (s.spread || !std::is_same<T, float>::value || active_isa() == Isa::generic) return false;
  const int64_t hu = (s.d.out_h - 1) * s.d.stride_h + (s.d.kernel_h - 1) * s.d.dilation_h + 1;
  return s.cg * s.d.kernel_w * hu * s.d.out_w <= (int64_t(1) << 20);
}

template <class T>
Status forward_impl(const Conv2dDesc& desc, const T* x, const T* w, const T* bias, T* y) {
  Status st = validate(desc);
  if (!st.ok()) return st;
  const Conv2dDesc d = canonical(desc);
  const Shape s = make_shape(d);
  if (d.n == 0 || d.c_out == 0 || s.ohw == 0) return Status::Ok();
  if (!y || !w || (s.hw * d.c_in > 0 && !x)) return Status::Invalid("null data pointer");
  if (use_direct_forward<T>(s)) return direct_forward(s, direct_ops<T>(), x, w, bias, y);
  return gemm_forward(s, x, w, bias, y);
}

// Taps (cg*kh*kw) from which the channel-vector grad_w kernel beats the
// q-vector one of the direct path (measured: 150 taps 1.6x faster, 25-27
// taps slower: the per-image mask/transpose pass is not amortized). It also
// needs 60% of its channel lanes busy (cog >= 10 of 16).
constexpr int64_t kWideMinTaps = 64;

// float32 with AVX2/AVX-512: grad_w (and grad_b) through the channel-vector
// kernel whenever its reduction over taps amortizes the per-image transpose;
// grad_x through the phase-wise forward kernel (many channels), the direct
// kernels (few channels) or the GEMM (1x1).
template <class T>
Status fast_backward(const Shape& s, const DirectOps<T>& K, const T* g, const T* x, const T* w,
                     const T* y, T* gx, T* gw, T* gb) {
  const int64_t cogp = round_up(s.cog, K.lanes);
  const bool wide_w = gw && s.ntaps >= kWideMinTaps && s.cog * 5 >= cogp * 3;
  T* const none = nullptr;
  if (s.spread) return gemm_backward(s, g, x, w, y, gx, gw, gb);  // the wide kernels' buffers too
  if (use_direct(s)) {
    if (!wide_w) return direct_backward(s, K, g, x, w, y, gx, gw, gb);
    Status st = wide_backward(s, K, g, x, w, y, none, gw, gb);
    if (!st.ok() || !gx) return st;
    return direct_backward(s, K, g, x, w, y, gx, none, none);
  }
  if (s.pointwise) {
    if (!wide_w) return gemm_backward(s, g, x, w, y, gx, gw, gb);
    Status st = wide_backward(s, K, g, x, w, y, none, gw, gb);
    if (!st.ok() || !gx) return st;
    return gemm_backward(s, g, x, w, y, gx, none, none);
  }
  if (wide_w || !gw) return wide_backward(s, K, g, x, w, y, gx, gw, gb);
  Status st = gemm_backward(s, g, x, w, y, none, gw, gb);
  if (!st.ok() || !gx) return st;
  return wide_backward(s, K, g, x, w, y, gx, none, none);
}

template <class T>
Status backward_impl(const Conv2dDesc& desc, const T* g, const T* x, const T* w, const T* y, T* gx,
                     T* gw, T* gb) {
  Status st = validate(desc);
  if (!st.ok()) return st;
  const Conv2dDesc d = canonical(desc);
  const Shape s = make_shape(d);
  const int64_t wsize = d.c_out * s.ntaps;
  if (d.n == 0 || d.c_out == 0) {
    if (gw) std::fill(gw, gw + wsize, T(0));
    if (gb) std::fill(gb, gb + d.c_out, T(0));
    if (gx) std::fill(gx, gx + d.n * d.c_in * s.hw, T(0));
    return Status::Ok();
  }
  if (!gx && !gw && !gb) return Status::Ok();
  if (!g || (s.hw * d.c_in > 0 && !x) || (wsize > 0 && !w)) return Status::Invalid("null data pointer");
  const DirectOps<T> K = direct_ops<T>();
  if constexpr (std::is_same<T, float>::value)
    if (K.wgrad_t) return fast_backward(s, K, g, x, w, y, gx, gw, gb);
  if (use_direct(s)) return direct_backward(s, K, g, x, w, y, gx, gw, gb);
  return gemm_backward(s, g, x, w, y, gx, gw, gb);
}

template <class F>
Status guarded(F f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::Internal("out of memory");
  } catch (...) {
    return Status::Internal("unexpected C++ exception");
  }
}

}  // namespace

Status conv2d(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y) {
  return guarded([&] { return forward_impl(d, x, w, bias, y); });
}
Status conv2d(const Conv2dDesc& d, const double* x, const double* w, const double* bias,
              double* y) {
  return guarded([&] { return forward_impl(d, x, w, bias, y); });
}

Status conv2d_backward(const Conv2dDesc& d, const float* grad_out, const float* x, const float* w,
                       const float* y, float* grad_x, float* grad_w, float* grad_b) {
  return guarded([&] { return backward_impl(d, grad_out, x, w, y, grad_x, grad_w, grad_b); });
}
Status conv2d_backward(const Conv2dDesc& d, const double* grad_out, const double* x,
                       const double* w, const double* y, double* grad_x, double* grad_w,
                       double* grad_b) {
  return guarded([&] { return backward_impl(d, grad_out, x, w, y, grad_x, grad_w, grad_b); });
}

}  // namespace lepton
