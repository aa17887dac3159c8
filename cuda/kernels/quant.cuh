// cuda/kernels/quant.cuh -- int8 quantization with ONNX numerics: quantize, dequantize,
// dynamic (range) quantization, and the integer GEMM / implicit-GEMM convolution
// (MatMulInteger, ConvInteger) with an optional fused requantize epilogue
// (QLinearMatMul, QLinearConv + bias + ReLU).
//
// Device code only, with no #include at all: nvcc (through cuda/quant.cu) and CuPy's
// NVRTC (lepton_kernels.cupy_backend) compile this same text. Semantics: the int8
// section of lepton_kernels.reference and csrc/lepton/quant.h; every result is exact:
//   quantize    q = saturate(rint(x / s[c]) + zp[c]), the division in float32 (ONNX);
//               NaN -> zp[c]; +-inf saturate; a zero scale (dynamic_quantize of an
//               all-zero range) gives zp[c].
//   dequantize  y = float32((double(q) - zp[c]) * double(s[c])), one float64 product
//               rounded once to float32 (exact for int8 / uint8 q).
//   dynamic     lo = min(0, min x), hi = max(0, max x), s = (hi - lo) / 255 and
//               zp = saturate(rint(0 - lo / s)) in float32; q = quantize(x, s, zp);
//               s == 0 gives s = 0, zp = 0 (and q = 0).
//   integer GEMM acc = sum_k (a - a_zp) * (b - b_zp), wrapping modulo 2^32 as an int32
//               accumulator; requantized as ONNX Runtime, in float32: y = clip(rint(
//               float(int32(acc + bias[ch])) * m[ch]) + y_zp, relu ? max(lo, y_zp) : lo, hi),
//               the int -> float conversion and the one multiply rounded to nearest even,
//               rint rounding half to even (m: float32 per channel).
// Layouts: quantize / dequantize see C-contiguous (outer, channels, inner) with one
// scale (float32) and zero point (int32) per channel; GEMM operands are row-major
// a (m, k), b (k, n); convolution is NCHW x, OIHW w (per group g: a GEMM of w_g
// (Og x Cg*KH*KW) by im2col(x_g), padding taking the value x_zp).
//
// How the GEMM stays exact with dp4a: a uint8 operand is read as int8 with its bits
// XOR 0x80 (u - 128) and its zero point shifted by -128 likewise, so one signed x
// signed __dp4a covers every type pair. With a', b' these signed bytes and za, zb the
// shifted zero points, sum (a' - za)(b' - zb) = sum a'b' - zb*sum a' - za*sum b' + K*za*zb
// (mod 2^32): the row sums of A and column sums of B come from the same loads (a
// dp4a against 0x01010101), and bytes past K read 0 so they add nothing to any term;
// a padding tap reads x_zp, whose shifted byte is zb, so it adds (a' - za)*0.
//
// Kernels (extern "C"; Q = s8 | u8 is the output type; *_unsigned flags say an input is
// uint8, else int8):
//   lk_quantize_Q(x, scale, zp, q, outer, channels, inner)
//   lk_dequantize_T(q, scale, zp, y, outer, channels, inner)        T = s8 | u8 | s32
//   lk_minmax_f32(x, n, partial)        partial[2b], partial[2b+1] = min(0, ..), max(0, ..)
//                                       of block b's elements (LK_QUANT_THREADS threads)
//   lk_dynamic_qparams(partial, blocks, scale, zp)   one block of LK_QUANT_THREADS
//   lk_matmul_integer(a, b, c, a_zp, b_zp_or_null, m, k, n, a_unsigned, b_unsigned)
//   lk_qlinear_matmul_Q(a, b, bias_or_null, mult, y, a_zp, b_zp_or_null, y_zp, relu, m, k, n,
//                       a_unsigned, b_unsigned)                  b_zp, bias, mult: per column
//   lk_conv2d_integer(x, w, y, x_zp, w_zp_or_null, GEOM, x_unsigned, w_unsigned)
//   lk_qlinear_conv2d_Q(x, w, bias_or_null, mult, y, x_zp, w_zp_or_null, y_zp, relu, GEOM,
//                       x_unsigned, w_unsigned)      w_zp, bias, mult: per output channel
// GEOM = n, c_in, h, w, c_out, kh, kw, out_h, out_w, stride_h, stride_w, pad_top, pad_left,
// dilation_h, dilation_w, groups (long long), as conv.cuh. The element-wise kernels are
// grid-stride loops (any launch shape, 64-bit indices). The GEMM kernels need exactly
// LK_QUANT_THREADS threads; grid.x = column tiles of LK_QGEMM_BN, grid.y = row tiles of
// LK_QGEMM_BM and grid.z = groups, the last two walked grid-stride (may be clamped). The
// launchers guarantee m, n, k and the conv GEMM sizes below 2^31 - 2^12 and conv extents
// below 2^30 (32-bit index math, 64-bit memory offsets), as for conv.cuh.
#ifndef LEPTON_CUDA_KERNELS_QUANT_CUH
#define LEPTON_CUDA_KERNELS_QUANT_CUH

#define LK_QUANT_THREADS 256
#define LK_QGEMM_BM 64
#define LK_QGEMM_BN 64

namespace lk_quant {

typedef long long ll;
typedef unsigned int u32;

__device__ __forceinline__ ll thread0() {
  return static_cast<ll>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ ll nthreads() { return static_cast<ll>(gridDim.x) * blockDim.x; }

template <typename Q>
struct Range;
template <>
struct Range<signed char> {
  static constexpr int lo = -128, hi = 127;
};
template <>
struct Range<unsigned char> {
  static constexpr int lo = 0, hi = 255;
};

__device__ __forceinline__ int clamp_to(double v, int lo, int hi) {
  return v <= lo ? lo : (v >= hi ? hi : static_cast<int>(v));
}

// ---------------------------------------------------------------- quantize / dequantize

// The quotient is rounded to float32 first (as ONNX and the reference divide float32 by
// float32), then to an integer half to even; the sum with zp is exact in double.
template <typename Q>
__device__ __forceinline__ Q quantize1(float x, float s, int zp) {
  const float t = rintf(__fdiv_rn(x, s));
  if (t != t || s == 0.0f) return static_cast<Q>(zp);  // NaN x, or the all-zero dynamic range
  return static_cast<Q>(clamp_to(__dadd_rn(static_cast<double>(t), static_cast<double>(zp)),
                                 Range<Q>::lo, Range<Q>::hi));
}

template <typename Q>
__device__ void quantize(const float* __restrict__ x, const float* __restrict__ scale,
                         const int* __restrict__ zp, Q* __restrict__ q, ll outer, ll channels,
                         ll inner) {
  const ll count = outer * channels * inner, t0 = thread0(), step = nthreads();
  if (channels == 1) {  // per tensor: no index division
    const float s = scale[0];
    const int z = zp[0];
    for (ll i = t0; i < count; i += step) q[i] = quantize1<Q>(x[i], s, z);
    return;
  }
  for (ll i = t0; i < count; i += step) {
    const ll c = (i / inner) % channels;
    q[i] = quantize1<Q>(x[i], scale[c], zp[c]);
  }
}

// (q - zp) is exact in double, the product is rounded once in double and once more to
// float32, exactly as the float64 reference followed by its cast to float32.
template <typename T>
__device__ __forceinline__ float dequantize1(T q, float s, int zp) {
  const double d = __dsub_rn(static_cast<double>(q), static_cast<double>(zp));
  return __double2float_rn(__dmul_rn(d, static_cast<double>(s)));
}

template <typename T>
__device__ void dequantize(const T* __restrict__ q, const float* __restrict__ scale,
                           const int* __restrict__ zp, float* __restrict__ y, ll outer,
                           ll channels, ll inner) {
  const ll count = outer * channels * inner, t0 = thread0(), step = nthreads();
  if (channels == 1) {
    const float s = scale[0];
    const int z = zp[0];
    for (ll i = t0; i < count; i += step) y[i] = dequantize1(q[i], s, z);
    return;
  }
  for (ll i = t0; i < count; i += step) {
    const ll c = (i / inner) % channels;
    y[i] = dequantize1(q[i], scale[c], zp[c]);
  }
}

// ---------------------------------------------------------------- dynamic quantization

// Block tree of min / max (exact in any order); the caller starts lo = hi = 0.
__device__ __forceinline__ void block_minmax(float& lo, float& hi) {
  __shared__ float slo[LK_QUANT_THREADS], shi[LK_QUANT_THREADS];
  const int t = static_cast<int>(threadIdx.x);
  slo[t] = lo;
  shi[t] = hi;
  __syncthreads();
  for (int half = LK_QUANT_THREADS / 2; half > 0; half /= 2) {
    if (t < half) {
      slo[t] = fminf(slo[t], slo[t + half]);
      shi[t] = fmaxf(shi[t], shi[t + half]);
    }
    __syncthreads();
  }
  lo = slo[0];
  hi = shi[0];
}

__device__ void minmax(const float* __restrict__ x, ll n, float* __restrict__ partial) {
  if (blockDim.x != LK_QUANT_THREADS) return;
  float lo = 0.0f, hi = 0.0f;  // the range always includes 0
  for (ll i = thread0(); i < n; i += nthreads()) {
    lo = fminf(lo, x[i]);
    hi = fmaxf(hi, x[i]);
  }
  block_minmax(lo, hi);
  if (threadIdx.x == 0) {
    partial[2 * static_cast<ll>(blockIdx.x)] = lo;
    partial[2 * static_cast<ll>(blockIdx.x) + 1] = hi;
  }
}

__device__ void dynamic_qparams(const float* __restrict__ partial, ll blocks, float* __restrict__ scale,
                                int* __restrict__ zp) {
  if (blockDim.x != LK_QUANT_THREADS || blockIdx.x != 0) return;
  float lo = 0.0f, hi = 0.0f;
  for (ll b = threadIdx.x; b < blocks; b += LK_QUANT_THREADS) {
    lo = fminf(lo, partial[2 * b]);
    hi = fmaxf(hi, partial[2 * b + 1]);
  }
  block_minmax(lo, hi);
  if (threadIdx.x != 0) return;
  const float s = __fdiv_rn(__fsub_rn(hi, lo), 255.0f);
  if (s == 0.0f) {
    scale[0] = 0.0f;
    zp[0] = 0;
    return;
  }
  const float z = rintf(__fsub_rn(0.0f, __fdiv_rn(lo, s)));
  scale[0] = s;
  zp[0] = z <= 0.0f ? 0 : (z >= 255.0f ? 255 : static_cast<int>(z));
}

// ---------------------------------------------------------------- integer GEMM core

// sum of the four signed byte products of a and b, plus c (wraps modulo 2^32).
__device__ __forceinline__ int dot4(u32 a, u32 b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 610
  u32 acc = static_cast<u32>(c);
  for (int i = 0; i < 4; ++i)
    acc += static_cast<u32>(static_cast<int>(static_cast<signed char>(a >> (8 * i))) *
                            static_cast<int>(static_cast<signed char>(b >> (8 * i))));
  return static_cast<int>(acc);
#else
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
#endif
}

constexpr int BM = LK_QGEMM_BM, BN = LK_QGEMM_BN;
constexpr int KW4 = 8;  // packed 4-byte words per K step: 32 k
constexpr int BK = 4 * KW4;
constexpr int TM = 4, TN = 4, TY = BM / TM, TX = BN / TN;
constexpr int NT = LK_QUANT_THREADS;
constexpr int PAD = 4;
constexpr int RA = BM * KW4 / NT, RB = BN * KW4 / NT;  // words each thread loads per step
constexpr u32 kOnes = 0x01010101u;
static_assert(TY * TX == NT, "one thread per TM x TN micro-tile");
static_assert(NT % KW4 == 0 && NT % BN == 0 && RA >= 1 && RB >= 1, "tile loads cover the tile");
static_assert(NT >= BM && NT >= BN, "one thread clears each operand sum");

// XOR mask turning a uint8 operand into its int8 reading (u - 128); 0 for int8.
__device__ __forceinline__ u32 flip_of(int is_unsigned) { return is_unsigned ? 0x80808080u : 0u; }
__device__ __forceinline__ int shift_of(int is_unsigned) { return is_unsigned ? 128 : 0; }

// A zero point per GEMM row / column (p) or one for all (p null).
struct Zp {
  const int* p;
  int v, shift;
  __device__ int at(int i) const { return (p != nullptr ? p[i] : v) - shift; }
};

// Dense k-contiguous rows (a of matmul, the OIHW weights of a group): the word of bytes
// k..k+3 of `row`, signed, 0 past K (and for a row past the end: row == null).
__device__ __forceinline__ u32 pack_row(const unsigned char* row, int k, int K, u32 flip) {
  if (row == nullptr || k >= K) return 0u;
  const unsigned char* p = row + k;
  if (k + 4 <= K && (reinterpret_cast<unsigned long long>(p) & 3ull) == 0ull)
    return *reinterpret_cast<const u32*>(p) ^ flip;
  u32 w = 0u;
  for (int i = 0; i < 4 && k + i < K; ++i) w |= ((static_cast<u32>(p[i]) ^ flip) & 0xffu) << (8 * i);
  return w;
}

// B of matmul: b (k, n) row-major, column `col` read down k.
struct DenseB {
  const unsigned char* b;
  ll ldb;
  u32 flip;
  int N;
  struct Col {
    const unsigned char* p;
  };
  __device__ Col col(int n) const { return {n < N ? b + n : nullptr}; }
  __device__ u32 load(const Col& c, int k, int K) const {
    if (c.p == nullptr) return 0u;
    u32 w = 0u;
    for (int i = 0; i < 4 && k + i < K; ++i)
      w |= ((static_cast<u32>(c.p[static_cast<ll>(k + i) * ldb]) ^ flip) & 0xffu) << (8 * i);
    return w;
  }
};

struct Geom {
  int n, C, H, W, O, KH, KW, OH, OW, sh, sw, pt, pl, dh, dw, G;
  int Cg, Og, KHW, OHW, HW;
};

__device__ __forceinline__ Geom make_geom(ll n, ll c_in, ll h, ll w, ll c_out, ll kh, ll kw, ll out_h,
                                          ll out_w, ll sh, ll sw, ll pt, ll pl, ll dh, ll dw, ll groups) {
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

// B of a convolution group: im2col(x_g) (Cg*KH*KW x n*oh*ow), column = output pixel,
// k = tap (c, a, e); a tap in the padding reads the raw zero point byte `pad`.
struct Im2colB {
  const unsigned char* x;
  Geom q;
  int grp, N;
  u32 flip;
  u32 pad;
  struct Col {
    ll base;  // image b, first channel of the group
    int ih0, iw0;
    bool ok;
  };
  __device__ Col col(int p) const {
    if (p >= N) return {0, 0, 0, false};
    const int b = p / q.OHW, r = p - b * q.OHW;
    const int oh = r / q.OW, ow = r - oh * q.OW;
    return {(static_cast<ll>(b) * q.C + static_cast<ll>(grp) * q.Cg) * q.HW, oh * q.sh - q.pt,
            ow * q.sw - q.pl, true};
  }
  __device__ u32 load(const Col& c, int k, int K) const {
    if (!c.ok) return 0u;
    u32 w = 0u;
    for (int i = 0; i < 4 && k + i < K; ++i) {
      const int t = k + i;
      const int ch = t / q.KHW, r = t - ch * q.KHW;
      const int a = r / q.KW, e = r - a * q.KW;
      const int ih = c.ih0 + a * q.dh, iw = c.iw0 + e * q.dw;
      const bool in = static_cast<unsigned>(ih) < static_cast<unsigned>(q.H) &&
                      static_cast<unsigned>(iw) < static_cast<unsigned>(q.W);
      const u32 raw = in ? static_cast<u32>(x[c.base + static_cast<ll>(ch) * q.HW + ih * q.W + iw]) : pad;
      w |= ((raw ^ flip) & 0xffu) << (8 * i);
    }
    return w;
  }
};

// int32(acc + bias[ch]) converted to float32 and scaled by m[ch] in one float32 multiply (no
// fused add), rounded half to even, shifted by y_zp (exact in double), clipped.
template <typename Q>
__device__ __forceinline__ Q requantize1(u32 acc, const int* bias, const float* mult, int ch,
                                         int y_zp, int relu) {
  const u32 s = acc + (bias != nullptr ? static_cast<u32>(bias[ch]) : 0u);
  const float p = __fmul_rn(__int2float_rn(static_cast<int>(s)), mult[ch]);
  const double v = __dadd_rn(static_cast<double>(rintf(p)), static_cast<double>(y_zp));
  const int lo = relu && y_zp > Range<Q>::lo ? y_zp : Range<Q>::lo;
  return static_cast<Q>(clamp_to(v, lo, Range<Q>::hi));
}

// Row-major (m, n) output; per-column bias / multiplier (matmul).
template <typename Q>
struct DenseOut {
  Q* c;
  const int* bias;
  const float* mult;
  int ldc, y_zp, relu;
  struct Col {
    int col;
  };
  __device__ Col col(int n) const { return {n}; }
  __device__ void store(int row, const Col& cs, u32 v) const;
};
template <>
__device__ __forceinline__ void DenseOut<int>::store(int row, const Col& cs, u32 v) const {
  c[static_cast<ll>(row) * ldc + cs.col] = static_cast<int>(v);
}
template <>
__device__ __forceinline__ void DenseOut<signed char>::store(int row, const Col& cs, u32 v) const {
  c[static_cast<ll>(row) * ldc + cs.col] = requantize1<signed char>(v, bias, mult, cs.col, y_zp, relu);
}
template <>
__device__ __forceinline__ void DenseOut<unsigned char>::store(int row, const Col& cs, u32 v) const {
  c[static_cast<ll>(row) * ldc + cs.col] = requantize1<unsigned char>(v, bias, mult, cs.col, y_zp, relu);
}

// NCHW output of a convolution group: GEMM row = channel ch0 + row, column = pixel of a
// plane of `plane` elements; per-channel bias / multiplier.
template <typename Q>
struct NchwOut {
  Q* out;
  const int* bias;
  const float* mult;
  int ctot, ch0, plane, y_zp, relu;
  struct Col {
    ll off;
  };
  __device__ Col col(int n) const {
    const int b = n / plane, p = n - b * plane;
    return {static_cast<ll>(b) * ctot * plane + p};
  }
  __device__ void store(int row, const Col& cs, u32 v) const;
};
template <>
__device__ __forceinline__ void NchwOut<int>::store(int row, const Col& cs, u32 v) const {
  out[static_cast<ll>(ch0 + row) * plane + cs.off] = static_cast<int>(v);
}
template <>
__device__ __forceinline__ void NchwOut<signed char>::store(int row, const Col& cs, u32 v) const {
  out[static_cast<ll>(ch0 + row) * plane + cs.off] =
      requantize1<signed char>(v, bias, mult, ch0 + row, y_zp, relu);
}
template <>
__device__ __forceinline__ void NchwOut<unsigned char>::store(int row, const Col& cs, u32 v) const {
  out[static_cast<ll>(ch0 + row) * plane + cs.off] =
      requantize1<unsigned char>(v, bias, mult, ch0 + row, y_zp, relu);
}

// One BM x BN tile of the zero-point-corrected product of A (M x K, rows a + row*lda) and B
// (loader bl), K in steps of BK bytes with register prefetch of the next step. Must be
// reached by all NT threads of the block (it synchronizes).
template <class BL, class EP>
__device__ void qgemm_tile(const unsigned char* __restrict__ a, ll lda, u32 a_flip, const Zp& za,
                           const BL& bl, const Zp& zb, const EP& ep, int M, int N, int K, int m0,
                           int n0) {
  __shared__ u32 As[2][KW4][BM + PAD];
  __shared__ u32 Bs[2][KW4][BN + PAD];
  __shared__ u32 sum_a[BM], sum_b[BN];
  const int t = static_cast<int>(threadIdx.x);

  __syncthreads();  // the previous tile of this block is done with the shared arrays
  if (t < BM) sum_a[t] = 0u;
  if (t < BN) sum_b[t] = 0u;

  // A words (row, kq): 8 consecutive threads read the 32 bytes of one row (coalesced).
  // B words (kq, col): consecutive threads take consecutive columns / output pixels.
  const int a_kq = t % KW4, a_row = t / KW4;
  const int b_col = t % BN, b_kq = t / BN;
  const unsigned char* arow[RA];
#pragma unroll
  for (int r = 0; r < RA; ++r) {
    const int row = m0 + a_row + r * (NT / KW4);
    arow[r] = row < M ? a + static_cast<ll>(row) * lda : nullptr;
  }
  const typename BL::Col bc = bl.col(n0 + b_col);

  u32 ra[RA], rb[RB];
  int part_a[RA], part_b = 0;  // this thread's share of the row / column sums
  int acc[TM][TN];
#pragma unroll
  for (int r = 0; r < RA; ++r) part_a[r] = 0;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0;

  const int ktiles = (K + BK - 1) / BK;
#pragma unroll
  for (int r = 0; r < RA; ++r) ra[r] = pack_row(arow[r], 4 * a_kq, K, a_flip);
#pragma unroll
  for (int r = 0; r < RB; ++r) rb[r] = bl.load(bc, 4 * (b_kq + r * (NT / BN)), K);
#pragma unroll
  for (int r = 0; r < RA; ++r) {
    As[0][a_kq][a_row + r * (NT / KW4)] = ra[r];
    part_a[r] = dot4(ra[r], kOnes, part_a[r]);
  }
#pragma unroll
  for (int r = 0; r < RB; ++r) {
    Bs[0][b_kq + r * (NT / BN)][b_col] = rb[r];
    part_b = dot4(rb[r], kOnes, part_b);
  }
  __syncthreads();

  const int ty = t / TX, tx = t % TX;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < ktiles;
    if (more) {
      const int k0 = (kt + 1) * BK;
#pragma unroll
      for (int r = 0; r < RA; ++r) ra[r] = pack_row(arow[r], k0 + 4 * a_kq, K, a_flip);
#pragma unroll
      for (int r = 0; r < RB; ++r) rb[r] = bl.load(bc, k0 + 4 * (b_kq + r * (NT / BN)), K);
    }
#pragma unroll
    for (int kq = 0; kq < KW4; ++kq) {
      u32 av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = As[cur][kq][ty + i * TY];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[cur][kq][tx + j * TX];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = dot4(av[i], bv[j], acc[i][j]);
    }
    // The other buffer was last read in step kt-1, finished by every thread before the
    // barrier that ended it; the barrier below publishes the new step.
    if (more) {
#pragma unroll
      for (int r = 0; r < RA; ++r) {
        As[cur ^ 1][a_kq][a_row + r * (NT / KW4)] = ra[r];
        part_a[r] = dot4(ra[r], kOnes, part_a[r]);
      }
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        Bs[cur ^ 1][b_kq + r * (NT / BN)][b_col] = rb[r];
        part_b = dot4(rb[r], kOnes, part_b);
      }
    }
    __syncthreads();
  }

  // Integer sums wrap identically in any order, so shared atomics are exact.
#pragma unroll
  for (int r = 0; r < RA; ++r) atomicAdd(&sum_a[a_row + r * (NT / KW4)], static_cast<u32>(part_a[r]));
  atomicAdd(&sum_b[b_col], static_cast<u32>(part_b));
  __syncthreads();

  const u32 kk = static_cast<u32>(K);
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int n = n0 + tx + j * TX;
    if (n >= N) continue;
    const u32 sb = sum_b[tx + j * TX];
    const u32 zbv = static_cast<u32>(zb.at(n));
    const typename EP::Col cs = ep.col(n);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + ty + i * TY;
      if (m >= M) continue;
      const u32 zav = static_cast<u32>(za.at(m));
      const u32 v = static_cast<u32>(acc[i][j]) - zbv * sum_a[ty + i * TY] - zav * sb + kk * zav * zbv;
      ep.store(m, cs, v);
    }
  }
}

// Walks the row tiles (grid.y) and groups (grid.z) grid-stride; grid.x is the column tile.
template <class Make>
__device__ void qgemm_grid(const Make& mk, int M, int N, int groups) {
  if (blockDim.x != NT) return;  // a launch error of the caller: compute nothing
  const int mtiles = (M + BM - 1) / BM;
  const int n0 = static_cast<int>(blockIdx.x) * BN;
  if (n0 >= N) return;  // uniform per block
  for (int g = static_cast<int>(blockIdx.z); g < groups; g += static_cast<int>(gridDim.z))
    for (int tm = static_cast<int>(blockIdx.y); tm < mtiles; tm += static_cast<int>(gridDim.y))
      mk(g, tm * BM, n0);
}

template <typename Q>
struct MatmulMake {
  const unsigned char* a;
  const unsigned char* b;
  Q* c;
  const int* bias;
  const float* mult;
  int a_zp;
  const int* b_zp;
  int y_zp, relu, m, k, n, a_unsigned, b_unsigned;
  __device__ void operator()(int, int m0, int n0) const {
    const Zp za{nullptr, a_zp, shift_of(a_unsigned)};
    const Zp zb{b_zp, 0, shift_of(b_unsigned)};
    const DenseB bl{b, n, flip_of(b_unsigned), n};
    const DenseOut<Q> ep{c, bias, mult, n, y_zp, relu};
    qgemm_tile(a, k, flip_of(a_unsigned), za, bl, zb, ep, m, n, k, m0, n0);
  }
};

template <typename Q>
struct ConvMake {
  const unsigned char* x;
  const unsigned char* w;
  Q* y;
  const int* bias;
  const float* mult;
  int x_zp;
  const int* w_zp;
  int y_zp, relu;
  Geom q;
  int x_unsigned, w_unsigned;
  __device__ int M() const { return q.Og; }
  __device__ int N() const { return q.n * q.OHW; }
  __device__ void operator()(int grp, int m0, int n0) const {
    const int K = q.Cg * q.KHW;
    const Zp za{w_zp != nullptr ? w_zp + grp * q.Og : nullptr, 0, shift_of(w_unsigned)};
    const Zp zb{nullptr, x_zp, shift_of(x_unsigned)};
    const Im2colB bl{x, q, grp, N(), flip_of(x_unsigned), static_cast<u32>(x_zp) & 0xffu};
    const NchwOut<Q> ep{y, bias, mult, q.O, grp * q.Og, q.OHW, y_zp, relu};
    qgemm_tile(w + static_cast<ll>(grp) * q.Og * K, K, flip_of(w_unsigned), za, bl, zb, ep, M(), N(),
               K, m0, n0);
  }
};

}  // namespace lk_quant

#define LK_QCONV_GEOM_PARAMS                                                                    \
  long long n, long long c_in, long long h, long long w, long long c_out, long long kh,          \
      long long kw, long long out_h, long long out_w, long long stride_h, long long stride_w,    \
      long long pad_top, long long pad_left, long long dilation_h, long long dilation_w,         \
      long long groups
#define LK_QCONV_GEOM_ARGS                                                                      \
  lk_quant::make_geom(n, c_in, h, w, c_out, kh, kw, out_h, out_w, stride_h, stride_w, pad_top,  \
                      pad_left, dilation_h, dilation_w, groups)

// One quantize per output type, one dequantize per input type.
#define LK_QUANT_DEFINE(SFX, Q)                                                                  \
  extern "C" __global__ void lk_quantize_##SFX(const float* x, const float* scale, const int* zp, \
                                               Q* q, long long outer, long long channels,        \
                                               long long inner) {                                \
    lk_quant::quantize<Q>(x, scale, zp, q, outer, channels, inner);                              \
  }
#define LK_DEQUANT_DEFINE(SFX, T)                                                                \
  extern "C" __global__ void lk_dequantize_##SFX(const T* q, const float* scale, const int* zp,  \
                                                 float* y, long long outer, long long channels,  \
                                                 long long inner) {                              \
    lk_quant::dequantize<T>(q, scale, zp, y, outer, channels, inner);                            \
  }
// Requantizing GEMM / convolution per output type.
#define LK_QLINEAR_DEFINE(SFX, Q)                                                                \
  extern "C" __global__ void lk_qlinear_matmul_##SFX(                                            \
      const unsigned char* a, const unsigned char* b, const int* bias, const float* mult, Q* y,  \
      int a_zp, const int* b_zp, int y_zp, int relu, long long m, long long k, long long n,      \
      int a_unsigned, int b_unsigned) {                                                          \
    const lk_quant::MatmulMake<Q> mk{a, b, y, bias, mult, a_zp, b_zp, y_zp, relu,                \
                                     static_cast<int>(m), static_cast<int>(k),                   \
                                     static_cast<int>(n), a_unsigned, b_unsigned};               \
    lk_quant::qgemm_grid(mk, mk.m, mk.n, 1);                                                     \
  }                                                                                              \
  extern "C" __global__ void lk_qlinear_conv2d_##SFX(                                            \
      const unsigned char* x, const unsigned char* wt, const int* bias, const float* mult, Q* y, \
      int x_zp, const int* w_zp, int y_zp, int relu, LK_QCONV_GEOM_PARAMS, int x_unsigned,       \
      int w_unsigned) {                                                                          \
    const lk_quant::ConvMake<Q> mk{x, wt, y, bias, mult, x_zp, w_zp, y_zp, relu,                 \
                                   LK_QCONV_GEOM_ARGS, x_unsigned, w_unsigned};                  \
    lk_quant::qgemm_grid(mk, mk.M(), mk.N(), mk.q.G);                                            \
  }

LK_QUANT_DEFINE(s8, signed char)
LK_QUANT_DEFINE(u8, unsigned char)
LK_DEQUANT_DEFINE(s8, signed char)
LK_DEQUANT_DEFINE(u8, unsigned char)
LK_DEQUANT_DEFINE(s32, int)
LK_QLINEAR_DEFINE(s8, signed char)
LK_QLINEAR_DEFINE(u8, unsigned char)

extern "C" __global__ void lk_minmax_f32(const float* x, long long n, float* partial) {
  lk_quant::minmax(x, n, partial);
}

extern "C" __global__ void lk_dynamic_qparams(const float* partial, long long blocks, float* scale,
                                              int* zp) {
  lk_quant::dynamic_qparams(partial, blocks, scale, zp);
}

extern "C" __global__ void lk_matmul_integer(const unsigned char* a, const unsigned char* b, int* c,
                                             int a_zp, const int* b_zp, long long m, long long k,
                                             long long n, int a_unsigned, int b_unsigned) {
  const lk_quant::MatmulMake<int> mk{a, b, c, nullptr, nullptr, a_zp, b_zp, 0, 0, static_cast<int>(m),
                                     static_cast<int>(k), static_cast<int>(n), a_unsigned, b_unsigned};
  lk_quant::qgemm_grid(mk, mk.m, mk.n, 1);
}

extern "C" __global__ void lk_conv2d_integer(const unsigned char* x, const unsigned char* wt, int* y,
                                             int x_zp, const int* w_zp, LK_QCONV_GEOM_PARAMS,
                                             int x_unsigned, int w_unsigned) {
  const lk_quant::ConvMake<int> mk{x, wt, y, nullptr, nullptr, x_zp, w_zp, 0, 0, LK_QCONV_GEOM_ARGS,
                                   x_unsigned, w_unsigned};
  lk_quant::qgemm_grid(mk, mk.M(), mk.N(), mk.q.G);
}

#undef LK_QUANT_DEFINE
#undef LK_DEQUANT_DEFINE
#undef LK_QLINEAR_DEFINE
#undef LK_QCONV_GEOM_PARAMS
#undef LK_QCONV_GEOM_ARGS

#endif  // LEPTON_CUDA_KERNELS_QUANT_CUH
