// cpu/conv_internal.h -- private interface between the convolution driver
// (conv.cpp) and the per-ISA direct kernels (conv_avx512.cpp, conv_avx2.cpp).
//
// The kernels only see a buffer, a list of tap offsets and flat output
// positions q: tap t of output q reads xp[off[t] + q], so a vector of
// consecutive q is one contiguous load per tap. conv.cpp builds two such
// layouts (see there): the "expanded" input of the forward and grad_w (one
// copy of the input columns per kernel column, q = oh*out_w + ow, no wasted
// lanes), and the stride-phase planes of grad_x (q = oh*wq + ow with a few
// padding columns per row, which carry a zero gradient). Buffers have slack
// so that the last partial vector stays inside them. The many-channel
// backward adds a grad_w kernel vectorized over output channels (gradient
// transposed to [q][o], input taps broadcast), the fused mask/transpose pass
// that feeds it, and strided row copies for stride-2 layouts.
#ifndef LEPTON_CPU_CONV_INTERNAL_H
#define LEPTON_CPU_CONV_INTERNAL_H
#include <cstdint>

namespace lepton {
namespace detail {

// out[o*ldo + q] = act((bias ? bias[o] : 0) + sum_t wp[t*ob + o] * xp[off[t] + q])
// for o < ob (1..8) and q in [q0, q1); q0 is a multiple of the vector width,
// q1 need not be (the last vector is stored masked; xp is read up to the
// next multiple). act is ReLU (v <= 0 ? 0 : v, NaN kept) when relu.
using ConvDirectFwdFn = void (*)(const float* xp, const int64_t* off, int64_t ntaps,
                                 const float* wp, const float* bias, int ob, float* out,
                                 int64_t ldo, int64_t q0, int64_t q1, bool relu);
// gwv[(o*ntaps + t)*L + l] += lane l of
//   sum_{i < nimg} sum_{q < qn} g[i*gstride + o*ldg + q] * xp[i*xstride + off[t] + q]
// for o < cog, t < ntaps (L = lanes; the caller sums the lanes once per batch
// chunk, in lane order). qn is a multiple of L; g is zero past the valid outputs.
using ConvDirectWgradFn = void (*)(const float* xp, int64_t xstride, const int64_t* off,
                                   int64_t ntaps, const float* g, int64_t gstride, int64_t ldg,
                                   int64_t cog, int64_t qn, int64_t nimg, float* gwv);

// Weight gradient vectorized over output channels (the many-channel
// backward): for t < ntaps, o < cogp (a multiple of L),
//   gwt[t*ldw + o] += sum_{q < qn} gT[q*ldt + o] * xp[off[t] + q]
// in q order (gT: the masked gradient of one image transposed to [q][o],
// zero past the real channels; xp: the expanded input, dense in q). No lane
// reduction and no padding lanes in q.
using ConvWgradTFn = void (*)(const float* xp, const int64_t* off, int64_t ntaps, const float* gT,
                              int64_t ldt, int64_t cogp, int64_t qn, float* gwt, int64_t ldw);
// dst[q*ldd + o] = src[o*lds + q] for o < rows, q < cols (a transpose).
using ConvTransposeFn = void (*)(const float* src, int64_t lds, float* dst, int64_t ldd,
                                 int64_t rows, int64_t cols);

// The ReLU-masked gradient of `rows` channels x `cols` outputs in one pass:
// v[o][q] = g[o*ld + q] where y is null or !(y[o*ld + q] <= 0) (NaN y keeps
// its gradient; bitwise, so an inf gradient under y <= 0 gives 0), else 0.
// Writes gm[o*ldm + q] = v (gm may be null), gT[q*ldt + o] = v (gT may be
// null) and adds sum_q v[o][q] to sums[o] (eight float partial sums per row
// in a fixed order, then double).
using ConvMaskFn = void (*)(const float* g, const float* y, int64_t ld, int64_t rows,
                            int64_t cols, float* gm, int64_t ldm, float* gT, int64_t ldt,
                            double* sums);

// Strided row copies: gather dst[r*dstride + i] = src[r*sstride + i*step],
// scatter dst[r*dstride + i*step] = src[r*sstride + i], for r < rows, i < n.
// Neither touches an element outside those (no over-reads past the input).
using ConvStepRowsFn = void (*)(const float* src, int64_t sstride, float* dst, int64_t dstride,
                                int64_t rows, int64_t n, int64_t step);

// dst[r*dstride + i] = src[r*sstride + i] for r < rows, i < n (short rows:
// one masked vector per 16 floats instead of a memcpy call per row).
using ConvCopyRowsFn = void (*)(const float* src, int64_t sstride, float* dst, int64_t dstride,
                                int64_t rows, int64_t n);

struct ConvDirectKernels {
  int lanes = 1;   // vector width in floats (q granularity)
  int max_ob = 8;  // output channels per forward tile that keep the tile in registers
  ConvDirectFwdFn fwd = nullptr;
  ConvDirectWgradFn wgrad = nullptr;
  ConvCopyRowsFn copy_rows = nullptr;
  ConvWgradTFn wgrad_t = nullptr;
  ConvTransposeFn transpose = nullptr;
  ConvMaskFn mask = nullptr;
  ConvStepRowsFn gather_rows = nullptr;
  ConvStepRowsFn scatter_rows = nullptr;
};

namespace avx512 {
ConvDirectKernels conv_direct_kernels();
}
namespace avx2 {
ConvDirectKernels conv_direct_kernels();
}

}  // namespace detail
}  // namespace lepton
#endif  // LEPTON_CPU_CONV_INTERNAL_H

// ---------------------------------------------------------------------------
// The kernel bodies, shared by the ISA translation units. Each includes this
// header a second time, inside its ISA namespace, after defining
// LEPTON_CONV_KERNEL_BODY and a vector type `V` with
//   static constexpr int L; using R; R zero(); R set1(float); R load(const float*);
//   void store(float*, R); void store_n(float*, R, int64_t n) /* first n lanes */;
//   R fma(R a, R b, R c) /* a*b+c */; R add(R, R); R relu(R) /* v <= 0 ? 0 : v */;
// Everything below has internal linkage, so each ISA keeps its own copy.
#ifdef LEPTON_CONV_KERNEL_BODY
namespace {

// Register tile for the forward kernel: OB output channels x NV vectors of q.
template <int OB>
constexpr int fwd_nv() {
  return V::L == 16 ? (OB <= 2 ? 8 : OB <= 3 ? 6 : OB <= 4 ? 5 : OB <= 6 ? 4 : 3)
                    : (OB <= 1 ? 6 : OB <= 2 ? 4 : OB <= 3 ? 3 : OB <= 6 ? 2 : 1);
}

template <int OB, int NV>
inline void fwd_tile(const float* xp, const int64_t* off, int64_t ntaps, const float* wp,
                     const float* bias, float* out, int64_t ldo, int64_t q, int64_t last_n,
                     bool relu) {
  typename V::R acc[OB][NV];
  for (int o = 0; o < OB; ++o) {
    const typename V::R b0 = bias ? V::set1(bias[o]) : V::zero();
    for (int j = 0; j < NV; ++j) acc[o][j] = b0;
  }
  const float* x0 = xp + q;
  for (int64_t t = 0; t < ntaps; ++t) {
    const float* xt = x0 + off[t];
    const float* wt = wp + t * OB;
    typename V::R xv[NV];
    for (int j = 0; j < NV; ++j) xv[j] = V::load(xt + j * V::L);
    for (int o = 0; o < OB; ++o) {
      const typename V::R wv = V::set1(wt[o]);
      for (int j = 0; j < NV; ++j) acc[o][j] = V::fma(wv, xv[j], acc[o][j]);
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int j = 0; j < NV; ++j) {
      typename V::R v = relu ? V::relu(acc[o][j]) : acc[o][j];
      float* dst = out + o * ldo + q + j * V::L;
      if (j == NV - 1 && last_n < V::L)
        V::store_n(dst, v, last_n);
      else
        V::store(dst, v);
    }
}

template <int OB, int N>
inline void fwd_tile_n(int n, const float* xp, const int64_t* off, int64_t ntaps,
                       const float* wp, const float* bias, float* out, int64_t ldo, int64_t q,
                       int64_t last_n, bool relu) {
  if constexpr (N >= 1) {
    if (n == N) return fwd_tile<OB, N>(xp, off, ntaps, wp, bias, out, ldo, q, last_n, relu);
    return fwd_tile_n<OB, N - 1>(n, xp, off, ntaps, wp, bias, out, ldo, q, last_n, relu);
  }
}

// The run's vectors go in balanced tiles of at most NV (7 vectors with NV = 3
// as 3 + 2 + 2, not 3 + 3 + 1): a one-vector tile does one FMA per broadcast
// and runs at about half the speed of the others.
template <int OB>
void fwd_block(const float* xp, const int64_t* off, int64_t ntaps, const float* wp,
               const float* bias, float* out, int64_t ldo, int64_t q0, int64_t q1, bool relu) {
  constexpr int NV = fwd_nv<OB>();
  const int64_t nvec = (q1 - q0 + V::L - 1) / V::L;
  const int64_t ntile = (nvec + NV - 1) / NV;
  int64_t q = q0;
  for (int64_t i = 0; i < ntile; ++i) {
    const int n = static_cast<int>((i + 1) * nvec / ntile - i * nvec / ntile);
    const int64_t end = q + n * V::L;
    const int64_t last_n = end <= q1 ? V::L : q1 - (end - V::L);
    fwd_tile_n<OB, NV>(n, xp, off, ntaps, wp, bias, out, ldo, q, last_n, relu);
    q = end;
  }
}

void fwd_any(const float* xp, const int64_t* off, int64_t ntaps, const float* wp,
             const float* bias, int ob, float* out, int64_t ldo, int64_t q0, int64_t q1,
             bool relu) {
  switch (ob) {
    case 1: return fwd_block<1>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 2: return fwd_block<2>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 3: return fwd_block<3>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 4: return fwd_block<4>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 5: return fwd_block<5>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 6: return fwd_block<6>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    case 7: return fwd_block<7>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
    default: return fwd_block<8>(xp, off, ntaps, wp, bias, out, ldo, q0, q1, relu);
  }
}

// Weight gradient tile: OB output channels x TB taps, reduced over q and images.
struct WgradArgs {
  const float* xp;
  int64_t xstride;
  const int64_t* off;
  int64_t ntaps;
  const float* g;
  int64_t gstride, ldg, qn, nimg;
  float* gwv;
};

template <int OB, int TB>
inline void wgrad_tile(const WgradArgs& a, int64_t o0, int64_t t0) {
  typename V::R acc[OB][TB];
  for (int o = 0; o < OB; ++o)
    for (int t = 0; t < TB; ++t) acc[o][t] = V::zero();
  for (int64_t i = 0; i < a.nimg; ++i) {
    const float* xt[TB];
    for (int t = 0; t < TB; ++t) xt[t] = a.xp + i * a.xstride + a.off[t0 + t];
    const float* go = a.g + i * a.gstride + o0 * a.ldg;
    for (int64_t q = 0; q < a.qn; q += V::L) {
      typename V::R xv[TB];
      for (int t = 0; t < TB; ++t) xv[t] = V::load(xt[t] + q);
      for (int o = 0; o < OB; ++o) {
        const typename V::R gv = V::load(go + o * a.ldg + q);
        for (int t = 0; t < TB; ++t) acc[o][t] = V::fma(gv, xv[t], acc[o][t]);
      }
    }
  }
  for (int o = 0; o < OB; ++o)
    for (int t = 0; t < TB; ++t) {
      float* dst = a.gwv + ((o0 + o) * a.ntaps + t0 + t) * V::L;
      V::store(dst, V::add(V::load(dst), acc[o][t]));
    }
}

template <int OB>
void wgrad_rows(const WgradArgs& a, int64_t o0) {
  constexpr int TB = V::L == 16 ? 4 : 3;
  int64_t t = 0;
  for (; t + TB <= a.ntaps; t += TB) wgrad_tile<OB, TB>(a, o0, t);
  switch (a.ntaps - t) {
    case 1: wgrad_tile<OB, 1>(a, o0, t); break;
    case 2: wgrad_tile<OB, 2>(a, o0, t); break;
    case 3: wgrad_tile<OB, 3>(a, o0, t); break;
    default: break;
  }
}

// Output channels in balanced blocks of at most MAXOB (6 x 4 taps of zmm
// accumulators; 3 x 3 of ymm).
void wgrad_any(const float* xp, int64_t xstride, const int64_t* off, int64_t ntaps,
               const float* g, int64_t gstride, int64_t ldg, int64_t cog, int64_t qn,
               int64_t nimg, float* gwv) {
  constexpr int64_t MAXOB = V::L == 16 ? 6 : 3;
  const WgradArgs a{xp, xstride, off, ntaps, g, gstride, ldg, qn, nimg, gwv};
  const int64_t nb = (cog + MAXOB - 1) / MAXOB;
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t o0 = b * cog / nb, ob = (b + 1) * cog / nb - o0;
    switch (ob) {
      case 1: wgrad_rows<1>(a, o0); break;
      case 2: wgrad_rows<2>(a, o0); break;
      case 3: wgrad_rows<3>(a, o0); break;
      case 4: wgrad_rows<(MAXOB >= 4 ? 4 : 1)>(a, o0); break;
      case 5: wgrad_rows<(MAXOB >= 5 ? 5 : 1)>(a, o0); break;
      default: wgrad_rows<(MAXOB >= 6 ? 6 : 1)>(a, o0); break;
    }
  }
}

// ---- weight gradient over output-channel vectors (see ConvWgradTFn).
// Tile: MV vectors of channels x TB taps in registers; per q one load per
// channel vector and one broadcast per tap.
template <int MV, int TB>
inline void wgt_tile(const float* xp, const int64_t* off, const float* gT, int64_t ldt,
                     int64_t q0, int64_t q1, float* gwt, int64_t ldw) {
  typename V::R acc[TB][MV];
  for (int t = 0; t < TB; ++t)
    for (int m = 0; m < MV; ++m) acc[t][m] = V::load(gwt + t * ldw + m * V::L);
  const float* xr[TB];
  for (int t = 0; t < TB; ++t) xr[t] = xp + off[t];
  const float* gq = gT + q0 * ldt;
  for (int64_t q = q0; q < q1; ++q, gq += ldt) {
    typename V::R gv[MV];
    for (int m = 0; m < MV; ++m) gv[m] = V::load(gq + m * V::L);
    for (int t = 0; t < TB; ++t) {
      const typename V::R xb = V::set1(xr[t][q]);
      for (int m = 0; m < MV; ++m) acc[t][m] = V::fma(gv[m], xb, acc[t][m]);
    }
  }
  for (int t = 0; t < TB; ++t)
    for (int m = 0; m < MV; ++m) V::store(gwt + t * ldw + m * V::L, acc[t][m]);
}

template <int MV, int TB>
void wgt_rest(const float* xp, const int64_t* off, int64_t nt, const float* gT, int64_t ldt,
              int64_t q0, int64_t q1, float* gwt, int64_t ldw) {
  if constexpr (TB > 0) {
    if (nt == TB) return wgt_tile<MV, TB>(xp, off, gT, ldt, q0, q1, gwt, ldw);
    return wgt_rest<MV, TB - 1>(xp, off, nt, gT, ldt, q0, q1, gwt, ldw);
  }
}

// Taps per tile for MV channel vectors (about 24 zmm / 12 ymm accumulators).
template <int MV>
constexpr int wgt_tb() {
  return V::L == 16 ? (MV == 1 ? 12 : MV == 2 ? 12 : MV == 3 ? 8 : 6)
                    : (MV == 1 ? 12 : MV == 2 ? 6 : 4);
}

template <int MV>
void wgt_block(const float* xp, const int64_t* off, int64_t ntaps, const float* gT, int64_t ldt,
               int64_t qn, float* gwt, int64_t ldw) {
  constexpr int TB = wgt_tb<MV>();
  // q blocks keep the tile's slice of gT (qb x MV vectors) in L1 across the taps.
  constexpr int64_t QB = (24 << 10) / (MV * V::L * 4);
  for (int64_t q0 = 0; q0 < qn; q0 += QB) {
    const int64_t q1 = q0 + QB < qn ? q0 + QB : qn;
    // Balanced tap blocks (27 taps as 9 + 9 + 9, not 12 + 12 + 3).
    const int64_t nblk = (ntaps + TB - 1) / TB;
    for (int64_t i = 0; i < nblk; ++i) {
      const int64_t t = i * ntaps / nblk, nt = (i + 1) * ntaps / nblk - t;
      wgt_rest<MV, TB>(xp, off + t, nt, gT, ldt, q0, q1, gwt + t * ldw, ldw);
    }
  }
}

void wgrad_t_any(const float* xp, const int64_t* off, int64_t ntaps, const float* gT,
                 int64_t ldt, int64_t cogp, int64_t qn, float* gwt, int64_t ldw) {
  constexpr int64_t MAXMV = V::L == 16 ? 4 : 3;
  int64_t nv = cogp / V::L, v0 = 0;
  while (nv > 0) {
    // Balanced: 5 vectors go as 3 + 2 rather than 4 + 1.
    const int64_t mv = nv <= MAXMV ? nv : (nv == MAXMV + 1 ? (nv + 1) / 2 : MAXMV);
    const float* g = gT + v0 * V::L;
    float* w = gwt + v0 * V::L;
    switch (mv) {
      case 1: wgt_block<1>(xp, off, ntaps, g, ldt, qn, w, ldw); break;
      case 2: wgt_block<2>(xp, off, ntaps, g, ldt, qn, w, ldw); break;
      case 3: wgt_block<3>(xp, off, ntaps, g, ldt, qn, w, ldw); break;
      default: wgt_block<(MAXMV >= 4 ? 4 : 3)>(xp, off, ntaps, g, ldt, qn, w, ldw); break;
    }
    v0 += mv;
    nv -= mv;
  }
}

// dst[q*ldd + o] = src[o*lds + q]: 8 x 8 register transposes (AVX2, present
// in both ISA units), scalar edges.
inline void transpose8_regs(__m256* r, float* dst, int64_t ldd) {
  __m256 t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      const __m256 a = t[4 * i + j], b = t[4 * i + j + 2];
      r[4 * i + 2 * j] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * i + 2 * j + 1] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    }
  // r[j] (j < 4): rows 0-3 of columns j (low half) and j + 4 (high half); r[4 + j]: rows 4-7.
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
  }
}

inline void transpose8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  transpose8_regs(r, dst, ldd);
}

inline float mask1(float gv, const float* y, int64_t at) {
  return (!y || !(y[at] <= 0.0f)) ? gv : 0.0f;  // only the scalar tails
}

void mask_any(const float* g, const float* y, int64_t ld, int64_t rows, int64_t cols, float* gm,
              int64_t ldm, float* gT, int64_t ldt, double* sums) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 ones = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const int64_t cv = cols / 8 * 8;
  if (!gT) {  // row by row: two input streams at a time
    for (int64_t o = 0; o < rows; ++o) {
      const float* gr = g + o * ld;
      const float* yr = y ? y + o * ld : nullptr;
      float* mr = gm ? gm + o * ldm : nullptr;
      __m256 acc = zero;
      for (int64_t q = 0; q < cv; q += 8) {
        const __m256 keep = yr ? _mm256_cmp_ps(_mm256_loadu_ps(yr + q), zero, _CMP_NLE_UQ) : ones;
        const __m256 v = _mm256_and_ps(_mm256_loadu_ps(gr + q), keep);
        acc = _mm256_add_ps(acc, v);
        if (mr) _mm256_storeu_ps(mr + q, v);
      }
      alignas(32) float part[8];
      _mm256_store_ps(part, acc);
      for (int64_t q = cv; q < cols; ++q) {
        const float v = mask1(gr[q], yr, q);
        part[0] += v;
        if (mr) mr[q] = v;
      }
      double sum = 0;
      for (int j = 0; j < 8; ++j) sum += static_cast<double>(part[j]);
      sums[o] += sum;
    }
    return;
  }
  int64_t o = 0;
  for (; o < rows; o += 8) {
    const int nr = rows - o < 8 ? static_cast<int>(rows - o) : 8;
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = zero;
    for (int64_t q = 0; q < cv; q += 8) {
      __m256 r[8];
      for (int i = 0; i < nr; ++i) {
        const int64_t at = (o + i) * ld + q;
        const __m256 gv = _mm256_loadu_ps(g + at);
        const __m256 keep = y ? _mm256_cmp_ps(_mm256_loadu_ps(y + at), zero, _CMP_NLE_UQ) : ones;
        r[i] = _mm256_and_ps(gv, keep);
        acc[i] = _mm256_add_ps(acc[i], r[i]);
        if (gm) _mm256_storeu_ps(gm + (o + i) * ldm + q, r[i]);
      }
      if (gT) {
        if (nr == 8) {
          transpose8_regs(r, gT + q * ldt + o, ldt);
        } else {
          for (int i = 0; i < nr; ++i) {
            alignas(32) float tmp[8];
            _mm256_store_ps(tmp, r[i]);
            for (int j = 0; j < 8; ++j) gT[(q + j) * ldt + o + i] = tmp[j];
          }
        }
      }
    }
    for (int i = 0; i < nr; ++i) {
      alignas(32) float part[8];
      _mm256_store_ps(part, acc[i]);
      for (int64_t q = cv; q < cols; ++q) {
        const int64_t at = (o + i) * ld + q;
        const float v = mask1(g[at], y, at);
        part[0] += v;
        if (gm) gm[(o + i) * ldm + q] = v;
        if (gT) gT[q * ldt + o + i] = v;
      }
      double sum = 0;
      for (int j = 0; j < 8; ++j) sum += static_cast<double>(part[j]);
      sums[o + i] += sum;
    }
  }
}

void transpose_any(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows,
                   int64_t cols) {
  int64_t o = 0;
  for (; o + 8 <= rows; o += 8) {
    int64_t q = 0;
    for (; q + 8 <= cols; q += 8) transpose8(src + o * lds + q, lds, dst + q * ldd + o, ldd);
    for (; q < cols; ++q)
      for (int i = 0; i < 8; ++i) dst[q * ldd + o + i] = src[(o + i) * lds + q];
  }
  for (; o < rows; ++o)
    for (int64_t q = 0; q < cols; ++q) dst[q * ldd + o] = src[o * lds + q];
}

}  // namespace
#endif  // LEPTON_CONV_KERNEL_BODY
