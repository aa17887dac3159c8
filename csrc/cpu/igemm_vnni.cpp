// cpu/igemm_vnni.cpp -- AVX-512 VNNI integer GEMM micro-kernels (u8 x s8 -> s32)
// and the VNNI peak probe. Packed "vnni" format (igemm_internal.h): per group
// of 4 k values an A panel holds MR dwords (one row's 4 bytes each), a B panel
// NR dwords (one column's 4 bytes each). Each group: NV zmm loads of B, MR
// dword broadcasts of A, MR*NV vpdpbusd into zmm accumulators (16 columns x
// int32 each). The epilogue applies the zero-point / flip sums on the last
// k-block and stores with column masks (edge tiles never touch memory outside C).
// Built with -mavx512vnni (CMakeLists.txt, *_vnni.cpp); only called after the
// avx512_vnni cpuid bit was seen.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>

#include "cpu/igemm_internal.h"
#include "cpu/requant_avx512.h"

namespace lepton {
namespace detail {
namespace vnni {
namespace {

inline __mmask16 mask16(int n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}

template <int MR, int NV>
void micro(int64_t kc, const void* pav, const void* pbv, int32_t* c, int64_t ldc, int mv, int nv,
           const IgemmEpilogue& ep) {
  const int32_t* pa = static_cast<const int32_t*>(pav);
  const int8_t* pb = static_cast<const int8_t*>(pbv);
  constexpr int NR = NV * 16;
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
#pragma GCC unroll 8
    for (int l = 0; l < NV; ++l) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * l), _MM_HINT_T0);
  }
  const int64_t groups = kc / 4;
#pragma GCC unroll 2
  for (int64_t g = 0; g < groups; ++g) {
    __m512i bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_si512(pb + 64 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_set1_epi32(pa[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], av, bv[v]);
    }
    pa += MR;
    pb += 4 * NR;
  }
  __mmask16 mk[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) mk[v] = mask16(nv - 16 * v);
  __m512i ct[NV], zb[NV];
  const bool use_za = ep.last && ep.za, use_zb = ep.last && ep.zb;
  if (use_za) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) ct[v] = _mm512_maskz_loadu_epi32(mk[v], ep.colterm + 16 * v);
  }
  if (use_zb) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) zb[v] = _mm512_maskz_loadu_epi32(mk[v], ep.zb + 16 * v);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
    int32_t* cr = c + i * ldc;
    const __m512i za = use_za ? _mm512_set1_epi32(ep.za[i]) : _mm512_setzero_si512();
    const __m512i rs = use_zb ? _mm512_set1_epi32(ep.rowsum[i]) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      __m512i x = acc[i][v];
      if (ep.load_c) x = _mm512_add_epi32(x, _mm512_maskz_loadu_epi32(mk[v], cr + 16 * v));
      if (use_za) x = _mm512_sub_epi32(x, _mm512_mullo_epi32(za, ct[v]));
      if (use_zb) x = _mm512_sub_epi32(x, _mm512_mullo_epi32(rs, zb[v]));
      _mm512_mask_storeu_epi32(cr + 16 * v, mk[v], x);
    }
  }
}

template <int MR, int NV>
IgemmKernel make() {
  IgemmKernel k;
  k.fmt = IgemmFormat::vnni;
  k.mr = MR;
  k.nr = NV * 16;
  k.group = 4;
  k.esize = 1;
  k.micro = micro<MR, NV>;
  return k;
}

// Output of the direct tile: int32 C, or requantized uint8 / int8 bytes.
enum class DirectOut { s32, u8, s8 };

// The input is vpdpbusd's unsigned operand and the weights its signed one, so
// with weight zero points of 0 the result needs no column sums at all (CS none).
// CS ready: the column sums of this run of wide pixels were stored in colsum by
// an earlier row tile; accumulate: they are summed here (and stored if colsum is set).
template <int MR, int NV, DirectOut OUT, DirectColsum CS>
void micro_direct_tile(int64_t kg, const int32_t* pa, const uint8_t* b, const int64_t* goff, const int32_t* za,
                       const int32_t* rterm, void* cv, int64_t ldc, int mv, int nv, const DirectRequant* rq,
                       int32_t* colsum) {
  __m512i acc[MR][NV], cs[NV];
  const __m512i ones = _mm512_set1_epi8(1);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) cs[v] = _mm512_setzero_si512();
  constexpr bool accumulate = CS == DirectColsum::accumulate;
  for (int64_t g = 0; g < kg; ++g) {
    const uint8_t* bg = b + goff[g];
    __m512i bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      bv[v] = _mm512_loadu_si512(bg + 64 * v);
      if constexpr (accumulate) cs[v] = _mm512_dpbusd_epi32(cs[v], bv[v], ones);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_set1_epi32(pa[i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], bv[v], av);
    }
    pa += MR;
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    if constexpr (CS == DirectColsum::ready)
      cs[v] = _mm512_loadu_si512(colsum + 16 * v);
    else if (accumulate && colsum)
      _mm512_storeu_si512(colsum + 16 * v, cs[v]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= mv) break;
    const __m512i zi = _mm512_set1_epi32(za[i]), ri = _mm512_set1_epi32(rterm[i]);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m512i x = CS == DirectColsum::none
                            ? _mm512_add_epi32(acc[i][v], ri)
                            : _mm512_add_epi32(_mm512_sub_epi32(acc[i][v], _mm512_mullo_epi32(zi, cs[v])), ri);
      const __mmask16 mk = mask16(nv - 16 * v);
      if constexpr (OUT == DirectOut::s32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(cv) + i * ldc + 16 * v, mk, x);
      } else {  // requantize in registers (requant_internal.h): the int32 block never leaves them
        const __m512i biased = rq->bias ? _mm512_add_epi32(x, _mm512_set1_epi32(rq->bias[i])) : x;
        const __m512i q = avx512::requant16(biased, _mm512_set1_ps(rq->multiplier[i]), _mm512_set1_ps(rq->lo),
                                            _mm512_set1_ps(rq->hi), _mm512_set1_epi32(rq->y_zero_point));
        uint8_t* out = static_cast<uint8_t*>(cv) + i * ldc + 16 * v;
        _mm_mask_storeu_epi8(out, mk, OUT == DirectOut::s8 ? _mm512_cvtsepi32_epi8(q) : _mm512_cvtusepi32_epi8(q));
      }
    }
  }
}

template <int MR, int NV, DirectOut OUT>
void micro_direct(int64_t kg, const int32_t* pa, const uint8_t* b, const int64_t* goff, const int32_t* za,
                  const int32_t* rterm, void* cv, int64_t ldc, int mv, int nv, const DirectRequant* rq,
                  int32_t* colsum, DirectColsum cs) {
  if (cs == DirectColsum::none)
    micro_direct_tile<MR, NV, OUT, DirectColsum::none>(kg, pa, b, goff, za, rterm, cv, ldc, mv, nv, rq, colsum);
  else if (cs == DirectColsum::ready)
    micro_direct_tile<MR, NV, OUT, DirectColsum::ready>(kg, pa, b, goff, za, rterm, cv, ldc, mv, nv, rq, colsum);
  else
    micro_direct_tile<MR, NV, OUT, DirectColsum::accumulate>(kg, pa, b, goff, za, rterm, cv, ldc, mv, nv, rq,
                                                             colsum);
}

}  // namespace

namespace {
// Bytes x[0..3][j] of four 16-byte rows as 16 dwords (dword j = x[0][j], x[1][j], x[2][j], x[3][j]).
inline __m512i interleave16(const __m128i* x) {
  const __m128i t0 = _mm_unpacklo_epi8(x[0], x[1]), t1 = _mm_unpackhi_epi8(x[0], x[1]);
  const __m128i t2 = _mm_unpacklo_epi8(x[2], x[3]), t3 = _mm_unpackhi_epi8(x[2], x[3]);
  __m512i all = _mm512_castsi128_si512(_mm_unpacklo_epi16(t0, t2));
  all = _mm512_inserti32x4(all, _mm_unpackhi_epi16(t0, t2), 1);
  all = _mm512_inserti32x4(all, _mm_unpacklo_epi16(t1, t3), 2);
  return _mm512_inserti32x4(all, _mm_unpackhi_epi16(t1, t3), 3);
}

// The first min(n, 64) bytes of a vector.
inline __mmask64 mask64(int64_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

inline void copy_run(const uint8_t* src, uint8_t* dst, int64_t n) {
  for (int64_t j = 0; j < n; j += 64) {
    const __mmask64 m = mask64(n - j);
    _mm512_mask_storeu_epi8(dst + j, m, _mm512_maskz_loadu_epi8(m, src + j));
  }
}
}  // namespace

namespace {
// pad ^ flip over tall-block positions [from, to).
inline void fill_pad(uint8_t* out, int64_t from, int64_t to, __m512i padv) {
  uint8_t* p = out + 4 * from;
  const int64_t n = 4 * (to - from);
  for (int64_t j = 0; j < n; j += 64) _mm512_mask_storeu_epi8(p + j, mask64(n - j), padv);
}

// The gap rows in front of images [i0, i1) (they are the padding rows of their
// neighbours), and when i1 is the last image the rows after it and the slack.
void fill_gaps(const TallBlockGeometry& g, int64_t i0, int64_t i1, uint8_t* out, __m512i padv) {
  for (int64_t i = i0; i < i1; ++i) fill_pad(out, i * g.image_rows * g.out_w, (i * g.image_rows + g.gap()) * g.out_w, padv);
  if (i1 == g.n && i1 > i0) fill_pad(out, g.n * g.image_rows * g.out_w, g.positions, padv);
}

// A run of len <= 16 positions: a plain store when it is whole (cheaper than a masked one).
inline void store_run(uint8_t* o, __mmask16 store, int64_t len, __m512i v) {
  if (len == 16)
    _mm512_storeu_si512(o, v);
  else
    _mm512_mask_storeu_epi32(o, store, v);
}

// Pixels [j, j + len) of a row read `shift` pixels further on: the mask of those
// that lie in [0, w), and (in *first) the row offset of pixel j.
inline __mmask16 shifted_mask(int64_t j, int64_t len, int64_t shift, int64_t w, int64_t* first) {
  *first = j + shift;
  const int64_t lo = *first < 0 ? -*first : 0, hi = w - *first < len ? w - *first : len;
  return hi > lo ? static_cast<__mmask16>(mask16(static_cast<int>(hi)) & ~mask16(static_cast<int>(lo)))
                 : __mmask16(0);
}
}  // namespace

namespace {
// One run of 16 positions (starting at out) of a block with row-shifted slots, for
// images [i0, i1): rows -gap .. h-1 of each image, slot t reading input row
// r + row_shift[t] where that lies in [0, h) (else pad). m / at as in fill_tall_block.
void fill_shifted_rows(const TallBlockGeometry& g, const __mmask16* m, const uintptr_t* at, const int64_t* row_shift,
                       __m128i rawpad, __m512i flipv, __mmask16 store, int64_t len, int64_t i0, int64_t i1,
                       uint8_t* out) {
  const int64_t h = g.h, row_bytes = 4 * g.out_w, image_stride = g.image_stride, w = g.w;
  for (int64_t i = i0; i < i1; ++i) {
    uint8_t* o = out + 4 * i * g.image_rows * g.out_w;
    for (int64_t r = -g.gap(); r < h; ++r, o += row_bytes) {
      __m128i x[4];
      for (int t = 0; t < 4; ++t) {
        const int64_t src = r + row_shift[t];
        const __mmask16 mt = static_cast<uint64_t>(src) < static_cast<uint64_t>(h) ? m[t] : __mmask16(0);
        x[t] = _mm_mask_loadu_epi8(rawpad, mt,
                                   reinterpret_cast<const void*>(at[t] + static_cast<uintptr_t>(i * image_stride + src * w)));
      }
      store_run(o, store, len, _mm512_xor_si512(interleave16(x), flipv));
    }
  }
}
}  // namespace

// Masks and offsets depend only on the run of 16 output pixels, so they are set
// once per run; then every row of every image is 4 masked loads, one unpack and
// one store (no calls, no scratch row).
void fill_tall_block(const TallBlockGeometry& g, const uint8_t* const* plane, const int64_t* shift,
                     const int64_t* row_shift, int64_t i0, int64_t i1, uint8_t* out) {
  const __m512i flipv = _mm512_set1_epi8(static_cast<char>(g.flip));
  const __m128i rawpad = _mm_set1_epi8(static_cast<char>(g.pad));
  const __m512i padv = _mm512_set1_epi8(static_cast<char>(g.pad ^ g.flip));
  if (!row_shift)
    fill_gaps(g, i0, i1, out, padv);
  else if (i1 == g.n && i1 > i0)  // the gap rows in front of an image are rows it reaches: written below
    fill_pad(out, g.n * g.image_rows * g.out_w, g.positions, padv);
  const uint8_t* some_plane = plane[0] ? plane[0] : plane[1] ? plane[1] : plane[2] ? plane[2] : plane[3];
  if (!some_plane) some_plane = out;  // not reached: every block has at least one slot
  for (int64_t j = 0; j < g.out_w; j += 16) {
    const int64_t len = g.out_w - j < 16 ? g.out_w - j : 16;
    // Masked-off bytes are never read, so a load's address may lie outside its row, and
    // a null plane is a load with an empty mask: no branches below. Its address is in
    // another plane, never in `out`: an empty load next to a pending store still waits
    // for it (lenet's second layer ran 2.7x slower with the block's own address).
    __mmask16 m[4];
    uintptr_t at[4];
    for (int t = 0; t < 4; ++t) {
      int64_t first = 0;
      m[t] = plane[t] ? shifted_mask(j, len, shift[t], g.w, &first) : __mmask16(0);
      at[t] = reinterpret_cast<uintptr_t>(plane[t] ? plane[t] : some_plane) + static_cast<uintptr_t>(first);
    }
    const __mmask16 store = mask16(static_cast<int>(len));
    if (row_shift) {
      fill_shifted_rows(g, m, at, row_shift, rawpad, flipv, store, len, i0, i1, out + 4 * j);
      continue;
    }
    // Locals: stores through o could alias g as far as the compiler knows.
    const int64_t h = g.h, row_bytes = 4 * g.out_w, image_stride = g.image_stride, w = g.w;
    for (int64_t i = i0; i < i1; ++i) {
      uint8_t* o = out + 4 * ((i * g.image_rows + g.gap()) * g.out_w + j);
      uintptr_t row = static_cast<uintptr_t>(i * image_stride);
      for (int64_t r = 0; r < h; ++r, o += row_bytes, row += static_cast<uintptr_t>(w)) {
        __m128i x[4];
        for (int t = 0; t < 4; ++t) x[t] = _mm_mask_loadu_epi8(rawpad, m[t], reinterpret_cast<const void*>(at[t] + row));
        store_run(o, store, len, _mm512_xor_si512(interleave16(x), flipv));
      }
    }
  }
}

// Rows of up to 16 pixels stay in one register: each copy is a lane permute of
// it, with the permute indices and padding masks set once.
void fill_tall_copies(const TallBlockGeometry& g, const uint8_t* const* plane, int64_t pad_left, int64_t step,
                      int64_t copies, int64_t i0, int64_t i1, uint8_t* const* out) {
  if (g.w > 16 || g.out_w > 16) {
    for (int64_t b = 0; b < copies; ++b) {
      const int64_t s = b * step - pad_left, shift[4] = {s, s, s, s};
      fill_tall_block(g, plane, shift, nullptr, i0, i1, out[b]);
    }
    return;
  }
  const __m512i flipv = _mm512_set1_epi8(static_cast<char>(g.flip));
  const __m512i padv = _mm512_set1_epi8(static_cast<char>(g.pad ^ g.flip));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i index[kMaxTallCopies];
  __mmask16 inside[kMaxTallCopies];
  for (int64_t b = 0; b < copies; ++b) {  // output pixel k of copy b is input pixel k + b*step - pad_left
    index[b] = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(b * step - pad_left)));
    inside[b] = _mm512_cmpge_epi32_mask(index[b], _mm512_setzero_si512()) &
                _mm512_cmplt_epi32_mask(index[b], _mm512_set1_epi32(static_cast<int>(g.w)));
    fill_gaps(g, i0, i1, out[b], padv);
  }
  const __mmask16 load = mask16(static_cast<int>(g.w)), store = mask16(static_cast<int>(g.out_w));
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t r = 0; r < g.h; ++r) {
      __m128i x[4];
      for (int t = 0; t < 4; ++t) x[t] = _mm_maskz_loadu_epi8(load, plane[t] + i * g.image_stride + r * g.w);
      const __m512i all = _mm512_xor_si512(interleave16(x), flipv);  // dword k = pixel k (k < w)
      const int64_t pos = 4 * ((i * g.image_rows + g.gap() + r) * g.out_w);
      for (int64_t b = 0; b < copies; ++b)
        _mm512_mask_storeu_epi32(out[b] + pos, store, _mm512_mask_permutexvar_epi32(padv, inside[b], index[b], all));
    }
}

void copy_rows(const uint8_t* src, int64_t ld_src, uint8_t* dst, int64_t ld_dst, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) copy_run(src + r * ld_src, dst + r * ld_dst, n);
}

int direct_kernels(IgemmDirectKernel* out, int max) {
#define LEPTON_DIRECT(MR, NV)                                                                     \
  IgemmDirectKernel{MR, 16 * NV, micro_direct<MR, NV, DirectOut::s32>, micro_direct<MR, NV, DirectOut::u8>, \
                    micro_direct<MR, NV, DirectOut::s8>}
  const IgemmDirectKernel all[] = {LEPTON_DIRECT(12, 2), LEPTON_DIRECT(8, 3), LEPTON_DIRECT(6, 3), LEPTON_DIRECT(4, 4)};
#undef LEPTON_DIRECT
  int n = 0;
  for (const auto& k : all)
    if (n < max) out[n++] = k;
  return n;
}

int igemm_kernels(IgemmKernel* out, int max) {
  const IgemmKernel all[] = {make<12, 2>(), make<8, 3>(), make<6, 4>(), make<4, 4>()};
  int n = 0;
  for (const auto& k : all)
    if (n < max) out[n++] = k;
  return n;
}

// Sixteen independent vpdpbusd chains (covers latency x throughput of two
// 512-bit VNNI pipes), like the FMA probe in runtime_avx512.cpp.
double vnni_probe(int64_t iters) {
  const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01FF0102);
  __m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2);
  __m512i c3 = _mm512_set1_epi32(3), c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5);
  __m512i c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7), c8 = _mm512_set1_epi32(8);
  __m512i c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10), c11 = _mm512_set1_epi32(11);
  __m512i c12 = _mm512_set1_epi32(12), c13 = _mm512_set1_epi32(13), c14 = _mm512_set1_epi32(14);
  __m512i c15 = _mm512_set1_epi32(15);
  // Inline asm: GCC 12 copies the accumulator around the vpdpbusd builtin in
  // a loop like this one, which would measure the copies instead.
#define LEPTON_DP4(x, y, z, w)                                                          \
  __asm__("vpdpbusd %[b], %[a], %[c0]\n\tvpdpbusd %[b], %[a], %[c1]\n\t"             \
          "vpdpbusd %[b], %[a], %[c2]\n\tvpdpbusd %[b], %[a], %[c3]"                    \
          : [c0] "+v"(x), [c1] "+v"(y), [c2] "+v"(z), [c3] "+v"(w)                     \
          : [a] "v"(a), [b] "v"(b))
  for (int64_t i = 0; i < iters; ++i) {
    LEPTON_DP4(c0, c1, c2, c3);
    LEPTON_DP4(c4, c5, c6, c7);
    LEPTON_DP4(c8, c9, c10, c11);
    LEPTON_DP4(c12, c13, c14, c15);
  }
#undef LEPTON_DP4
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                               _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
  s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
  s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15)));
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 16.0 * 64.0 * 2.0 * static_cast<double>(iters);
}

}  // namespace vnni
}  // namespace detail
}  // namespace lepton
