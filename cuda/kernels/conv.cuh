// cuda/kernels/conv.cuh -- 2-D convolution (cross-correlation, as torch) forward and
// backward as implicit GEMMs on the tiled core of gemm.cuh. NCHW x / y, OIHW weight.
//
// Device code only (the one #include is gemm.cuh, beside this file): nvcc (through
// cuda/conv.cu) and CuPy's NVRTC (with -I<this directory>) compile this same text.
// Semantics: csrc/lepton/conv.h. Per group g (Cg = c_in/groups, Og = c_out/groups,
// KHW = kh*kw, grid.z walks the groups):
//   forward  y  (Og x n*oh*ow)      = w_g (Og x Cg*KHW) @ im2col(x_g) (Cg*KHW x n*oh*ow)
//            + bias, ReLU in the epilogue; im2col taps are computed while loading the
//            B tile (zero padding, asymmetric pads, stride, dilation).
//   grad_w   (Og x Cg*KHW)          = g'_g (Og x n*oh*ow) @ im2col(x_g)^T: the whole
//            reduction over the batch runs in one thread's K loop (fixed order).
//   grad_x   (Cg x n*h*w)           = w_g^T (Cg x Og*KHW) @ gather(g'_g): element
//            (o, a, b ; n, ih, iw) is g'[n, o, oh, ow] when ih + pad_top - a*dh =
//            oh*stride_h with 0 <= oh < out_h (columns likewise), else 0 (a gather:
//            no atomics).
//   grad_b   lk_bias_grad_SFX of gemm.cuh over (n, c_out, oh*ow).
// g' = (y <= 0 ? 0 : g) when the forward's ReLU output y is given (else g).
//
// Kernels (extern "C"; SFX = f32 | f64 large tile, s_f32 | s_f64 small tile):
//   lk_conv2d_SFX(x, w, bias_or_null, y, GEOM, relu)
//   lk_conv2d_grad_w_SFX(g, y_or_null, x, gw, GEOM)
//   lk_conv2d_grad_x_SFX(g, y_or_null, w, gx, GEOM)
// GEOM = n, c_in, h, w, c_out, kh, kw, out_h, out_w, stride_h, stride_w, pad_top,
// pad_left, dilation_h, dilation_w, groups (long long; out_h/out_w given by the caller,
// pad_bottom/pad_right are implied by them). The launchers guarantee the GEMM
// dimensions (n*out_h*out_w, n*h*w, Cg*KHW, Og*KHW, channels) are below 2^31 - 2^12
// and h + pads, w + pads below 2^30, so 32-bit index math cannot overflow; memory
// offsets are 64-bit.
#ifndef LEPTON_CUDA_KERNELS_CONV_CUH
#define LEPTON_CUDA_KERNELS_CONV_CUH

#include "gemm.cuh"

namespace lk_conv {

using lk_gemm::ll;

struct Geom {
  int n, C, H, W, O, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw, G;
  int Cg, Og, KHW, OHW, HW;
};

__device__ __forceinline__ Geom make_geom(ll n, ll c_in, ll h, ll w, ll c_out, ll kh, ll kw,
                                          ll out_h, ll out_w, ll sh, ll sw, ll pt, ll pl, ll dh,
                                          ll dw, ll groups) {
  Geom g;
  g.n = static_cast<int>(n), g.C = static_cast<int>(c_in), g.H = static_cast<int>(h);
  g.W = static_cast<int>(w), g.O = static_cast<int>(c_out), g.KH = static_cast<int>(kh);
  g.KW = static_cast<int>(kw), g.OH = static_cast<int>(out_h), g.OW = static_cast<int>(out_w);
  g.sh = static_cast<int>(sh), g.sw = static_cast<int>(sw), g.pt = static_cast<int>(pt);
  g.pl = static_cast<int>(pl), g.dh = static_cast<int>(dh), g.dw = static_cast<int>(dw);
  g.G = static_cast<int>(groups);
  g.Cg = g.C / g.G, g.Og = g.O / g.G, g.KHW = g.KH * g.KW, g.OHW = g.OH * g.OW, g.HW = g.H * g.W;
  return g;
}

__device__ __forceinline__ bool inside(int i, int n) {
  return static_cast<unsigned>(i) < static_cast<unsigned>(n);
}

// A tap (c, a, b) of the group's input channels: channel offset and kernel offsets.
struct Tap {
  ll coff;
  int dy, dx;
  bool ok;
};
// An output pixel (b, oh, ow): image offset and the top-left input coordinate.
struct Pix {
  ll boff;
  int ih0, iw0;
  bool ok;
};

__device__ __forceinline__ Tap make_tap(const Geom& q, int grp, int t, int count) {
  const int c = t / q.KHW, r = t - c * q.KHW;
  const int a = r / q.KW, b = r - a * q.KW;
  return {static_cast<ll>(grp * q.Cg + c) * q.HW, a * q.dh, b * q.dw, t < count};
}

__device__ __forceinline__ Pix make_pix(const Geom& q, int p, int count) {
  const int b = p / q.OHW, r = p - b * q.OHW;
  const int oh = r / q.OW, ow = r - oh * q.OW;
  return {static_cast<ll>(b) * q.C * q.HW, oh * q.sh - q.pt, ow * q.sw - q.pl, p < count};
}

template <typename T>
__device__ __forceinline__ T patch(const T* __restrict__ x, const Geom& q, const Pix& p,
                                   const Tap& t) {
  const int ih = p.ih0 + t.dy, iw = p.iw0 + t.dx;
  if (!(p.ok && t.ok && inside(ih, q.H) && inside(iw, q.W))) return T(0);
  return x[p.boff + t.coff + static_cast<ll>(ih) * q.W + iw];
}

// Forward B operand (Cg*KHW x n*oh*ow): outer = output pixel, k = tap. Consecutive
// pixels are consecutive input columns (stride 1): outer-fast loads.
template <typename T>
struct Im2col {
  static constexpr bool kKFast = false;
  const T* x;
  Geom q;
  int grp, N, K;
  typedef Pix Outer;
  typedef Tap Kst;
  __device__ Outer outer(int p) const { return make_pix(q, p, N); }
  __device__ Kst kst(int k) const { return make_tap(q, grp, k, K); }
  __device__ T load(const Outer& o, const Kst& k) const { return patch(x, q, o, k); }
};

// grad_w B operand (n*oh*ow x Cg*KHW): outer = tap, k = output pixel (k-fast).
template <typename T>
struct Im2colT {
  static constexpr bool kKFast = true;
  const T* x;
  Geom q;
  int grp, N, K;
  typedef Tap Outer;
  typedef Pix Kst;
  __device__ Outer outer(int t) const { return make_tap(q, grp, t, N); }
  __device__ Kst kst(int p) const { return make_pix(q, p, K); }
  __device__ T load(const Outer& o, const Kst& k) const { return patch(x, q, k, o); }
};

// grad_w A operand (Og x n*oh*ow): g'[b, grp*Og + o, oh, ow], k-fast.
template <typename T>
struct GradOutRows {
  static constexpr bool kKFast = true;
  const T* g;
  const T* y;
  Geom q;
  int grp, M, K;
  struct Outer {
    ll off;
    bool ok;
  };
  struct Kst {
    ll off;
    bool ok;
  };
  __device__ Outer outer(int o) const {
    return {static_cast<ll>(grp * q.Og + o) * q.OHW, o < M};
  }
  __device__ Kst kst(int p) const {
    const int b = p / q.OHW, r = p - b * q.OHW;
    return {static_cast<ll>(b) * q.O * q.OHW + r, p < K};
  }
  __device__ T load(const Outer& o, const Kst& k) const {
    return (o.ok && k.ok) ? lk_gemm::masked(g, y, o.off + k.off) : T(0);
  }
};

// grad_x A operand (Cg x Og*KHW): w[grp*Og + o, c, a, b] for k = (o, a, b), k-fast.
template <typename T>
struct WeightT {
  static constexpr bool kKFast = true;
  const T* w;
  Geom q;
  int grp, M, K;
  struct Outer {
    ll off;
    bool ok;
  };
  struct Kst {
    ll off;
    bool ok;
  };
  __device__ Outer outer(int c) const {
    return {(static_cast<ll>(grp) * q.Og * q.Cg + c) * q.KHW, c < M};
  }
  __device__ Kst kst(int k) const {
    const int o = k / q.KHW, r = k - o * q.KHW;
    return {static_cast<ll>(o) * q.Cg * q.KHW + r, k < K};
  }
  __device__ T load(const Outer& o, const Kst& k) const {
    return (o.ok && k.ok) ? w[o.off + k.off] : T(0);
  }
};

// grad_x B operand (Og*KHW x n*h*w): the transposed-convolution gather. outer = input
// pixel (b, ih, iw), k = (o, a, b); outer-fast.
template <typename T>
struct GradOutGather {
  static constexpr bool kKFast = false;
  const T* g;
  const T* y;
  Geom q;
  int grp, N, K;
  struct Outer {
    ll boff;
    int th, tw;  // ih + pad_top, iw + pad_left
    bool ok;
  };
  struct Kst {
    ll choff;
    int dy, dx;
    bool ok;
  };
  __device__ Outer outer(int p) const {
    const int b = p / q.HW, r = p - b * q.HW;
    const int ih = r / q.W, iw = r - ih * q.W;
    return {static_cast<ll>(b) * q.O * q.OHW, ih + q.pt, iw + q.pl, p < N};
  }
  __device__ Kst kst(int k) const {
    const int o = k / q.KHW, r = k - o * q.KHW;
    const int a = r / q.KW, bb = r - a * q.KW;
    return {static_cast<ll>(grp * q.Og + o) * q.OHW, a * q.dh, bb * q.dw, k < K};
  }
  __device__ T load(const Outer& o, const Kst& k) const {
    const int th = o.th - k.dy, tw = o.tw - k.dx;  // = oh*stride_h for a contributing oh
    if (!(o.ok && k.ok) || th < 0 || tw < 0) return T(0);
    const int oh = q.sh == 1 ? th : th / q.sh, ow = q.sw == 1 ? tw : tw / q.sw;
    if (oh * q.sh != th || ow * q.sw != tw || oh >= q.OH || ow >= q.OW) return T(0);
    return lk_gemm::masked(g, y, o.boff + k.choff + static_cast<ll>(oh) * q.OW + ow);
  }
};

// Epilogue into an NCHW tensor: GEMM row = channel ch0 + row, column = pixel
// (b, p) of a plane of `plane` elements; optional per-row bias and ReLU.
template <typename T>
struct NchwOut {
  T* out;
  const T* bias;  // per output channel (indexed ch0 + row), or null
  int ctot, ch0, plane, relu;
  struct Col {
    ll off;
  };
  __device__ Col col(int n) const {
    const int b = n / plane, p = n - b * plane;
    return {static_cast<ll>(b) * ctot * plane + p};
  }
  __device__ void store(int row, const Col& cs, T v) const {
    if (bias != nullptr) v += bias[ch0 + row];
    if (relu) v = v <= T(0) ? T(0) : v;  // NaN stays NaN
    out[static_cast<ll>(ch0 + row) * plane + cs.off] = v;
  }
};

template <typename T>
struct FwdMake {
  typedef lk_gemm::Mat<T, true> A;
  typedef Im2col<T> B;
  typedef NchwOut<T> E;
  const T* x;
  const T* w;
  const T* bias;
  T* y;
  Geom q;
  int relu;
  __device__ int M() const { return q.Og; }
  __device__ int N() const { return q.n * q.OHW; }
  __device__ int K() const { return q.Cg * q.KHW; }
  __device__ void operator()(int grp, A& la, B& lb, E& ep) const {
    const int k = K();
    la = {w + static_cast<ll>(grp) * q.Og * k, nullptr, k, 1, q.Og, k};  // w[o*K + t]
    lb = {x, q, grp, N(), k};
    ep = {y, bias, q.O, grp * q.Og, q.OHW, relu};
  }
};

template <typename T>
struct GradWMake {
  typedef GradOutRows<T> A;
  typedef Im2colT<T> B;
  typedef lk_gemm::DenseOut<T> E;
  const T* g;
  const T* y;
  const T* x;
  T* gw;
  Geom q;
  __device__ int M() const { return q.Og; }
  __device__ int N() const { return q.Cg * q.KHW; }
  __device__ int K() const { return q.n * q.OHW; }
  __device__ void operator()(int grp, A& la, B& lb, E& ep) const {
    la = {g, y, q, grp, M(), K()};
    lb = {x, q, grp, N(), K()};
    ep = {gw + static_cast<ll>(grp) * q.Og * N(), nullptr, N(), 0};  // gw[o, t] per group
  }
};

template <typename T>
struct GradXMake {
  typedef WeightT<T> A;
  typedef GradOutGather<T> B;
  typedef NchwOut<T> E;
  const T* g;
  const T* y;
  const T* w;
  T* gx;
  Geom q;
  __device__ int M() const { return q.Cg; }
  __device__ int N() const { return q.n * q.HW; }
  __device__ int K() const { return q.Og * q.KHW; }
  __device__ void operator()(int grp, A& la, B& lb, E& ep) const {
    la = {w, q, grp, M(), K()};
    lb = {g, y, q, grp, N(), K()};
    ep = {gx, nullptr, q.C, grp * q.Cg, q.HW, 0};
  }
};

template <class C, typename T, class Make>
__device__ void run(const Make& mk) {
  lk_gemm::gemm_grid<C, T>(mk, mk.M(), mk.N(), mk.K(), mk.q.G);
}

}  // namespace lk_conv

#define LK_CONV_GEOM_PARAMS                                                                     \
  long long n, long long c_in, long long h, long long w, long long c_out, long long kh,          \
      long long kw, long long out_h, long long out_w, long long stride_h, long long stride_w,    \
      long long pad_top, long long pad_left, long long dilation_h, long long dilation_w,         \
      long long groups
#define LK_CONV_GEOM_ARGS                                                                       \
  lk_conv::make_geom(n, c_in, h, w, c_out, kh, kw, out_h, out_w, stride_h, stride_w, pad_top,   \
                     pad_left, dilation_h, dilation_w, groups)

// SFX is f32 / f64 for the large tile of the dtype, s_f32 / s_f64 for the small one.
#define LK_CONV_DEFINE(SFX, T, TILE)                                                            \
  extern "C" __global__ void lk_conv2d_##SFX(const T* x, const T* wt, const T* bias, T* y,       \
                                             LK_CONV_GEOM_PARAMS, int relu) {                   \
    const lk_conv::FwdMake<T> mk{x, wt, bias, y, LK_CONV_GEOM_ARGS, relu};                      \
    lk_conv::run<lk_gemm::TILE<T>, T>(mk);                                                      \
  }                                                                                             \
  extern "C" __global__ void lk_conv2d_grad_w_##SFX(const T* g, const T* y, const T* x, T* gw,   \
                                                    LK_CONV_GEOM_PARAMS) {                      \
    const lk_conv::GradWMake<T> mk{g, y, x, gw, LK_CONV_GEOM_ARGS};                              \
    lk_conv::run<lk_gemm::TILE<T>, T>(mk);                                                      \
  }                                                                                             \
  extern "C" __global__ void lk_conv2d_grad_x_##SFX(const T* g, const T* y, const T* wt, T* gx,  \
                                                    LK_CONV_GEOM_PARAMS) {                      \
    const lk_conv::GradXMake<T> mk{g, y, wt, gx, LK_CONV_GEOM_ARGS};                             \
    lk_conv::run<lk_gemm::TILE<T>, T>(mk);                                                      \
  }

LK_CONV_DEFINE(f32, float, TileL)
LK_CONV_DEFINE(s_f32, float, TileS)
LK_CONV_DEFINE(f64, double, TileL)
LK_CONV_DEFINE(s_f64, double, TileS)

#undef LK_CONV_DEFINE
#undef LK_CONV_GEOM_PARAMS
#undef LK_CONV_GEOM_ARGS

#endif  // LEPTON_CUDA_KERNELS_CONV_CUH
