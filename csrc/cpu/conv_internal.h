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
// so that the last partial vector stays inside them.
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

template <int OB>
void fwd_block(const float* xp, const int64_t* off, int64_t ntaps, const float* wp,
               const float* bias, float* out, int64_t ldo, int64_t q0, int64_t q1, bool relu) {
  constexpr int NV = fwd_nv<OB>();
  int64_t q = q0;
  for (; q + NV * V::L <= q1; q += NV * V::L)
    fwd_tile<OB, NV>(xp, off, ntaps, wp, bias, out, ldo, q, V::L, relu);
  for (; q < q1; q += V::L)
    fwd_tile<OB, 1>(xp, off, ntaps, wp, bias, out, ldo, q, q1 - q < V::L ? q1 - q : V::L, relu);
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

}  // namespace
#endif  // LEPTON_CONV_KERNEL_BODY
