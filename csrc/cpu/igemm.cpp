// cpu/igemm.cpp -- integer GEMM and convolution drivers (ONNX MatMulInteger /
// ConvInteger): C (m x n, row-major int32) = (A - a_zp)(B - b_zp), operands
// uint8 or int8. Argument checks, the kernel choice (VNNI, AVX2 or generic),
// packing of both operands (formats in igemm_internal.h), cache blocking and
// the thread split. conv2d_integer with the weights as A (packed once per
// call): on the VNNI path with stride 1, from a "tall" copy of the input
// (details above conv_direct_vnni), else im2col (padding
// with x_zp) + this GEMM. qlinear_* requantize each finished int32 block while
// it is in cache (RequantSink).
//
// Loop nest over one thread's rectangle of C (B packed whole beforehand):
//   for i0 in rows step MB:            A rows packed (whole k) into a thread buffer
//     for p0 in K step KC:             KC x NB block of packed B stays in L2
//       for j0 in cols step NB:
//         for each MR panel of A:      A micro-panel (MR x KC) stays in L1
//           for each NR panel of B:    micro-kernel, zero-point sums fused into its store
// Integer sums are exact in any order: results never depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <emmintrin.h>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/igemm_internal.h"
#include "cpu/internal.h"
#include "cpu/requant_internal.h"
#include "lepton/quant.h"

namespace lepton {
namespace detail {

struct PackedIntBImpl {
  IgemmKernel K;
  int64_t k = 0, n = 0, kpad = 0;
  bool b_signed = true;
  AlignedBuffer<char> data;  // ceil(n / NR) panels of NR x kpad elements
  std::vector<int32_t> zb;   // vnni: effective zero point per column (b_zp, -128 for uint8 B)
  std::vector<int32_t> colterm;  // vnni: colsum(B') - k * zb
  bool zb_zero = true;
};

}  // namespace detail

namespace {

using detail::AlignedBuffer;
using detail::IgemmEpilogue;
using detail::IgemmFormat;
using detail::vnni::IgemmDirectKernel;
using detail::IgemmKernel;
using detail::PackedIntBImpl;

constexpr int kMaxVariants = 8;
// Below this many multiply-adds one thread is faster than waking a team.
constexpr double kMinParallelMacs = 2.0e6;

std::atomic<int> g_forced_path{0};
std::atomic<int> g_forced_variant{-1};

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

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// ---- generic micro-kernel on the i16 format (plain int32 loops) ----
template <int MR, int NR>
void micro_generic(int64_t kc, const void* pav, const void* pbv, int32_t* c, int64_t ldc, int mv,
                   int nv, const IgemmEpilogue& ep) {
  const int16_t* pa = static_cast<const int16_t*>(pav);
  const int16_t* pb = static_cast<const int16_t*>(pbv);
  uint32_t acc[MR][NR] = {};
  for (int64_t g = 0; g < kc / 2; ++g) {
    for (int i = 0; i < MR; ++i) {
      const int32_t a0 = pa[2 * i], a1 = pa[2 * i + 1];
      for (int j = 0; j < NR; ++j)
        acc[i][j] += static_cast<uint32_t>(a0 * pb[2 * j] + a1 * pb[2 * j + 1]);
    }
    pa += 2 * MR;
    pb += 2 * NR;
  }
  for (int i = 0; i < mv; ++i) {
    int32_t* cr = c + i * ldc;
    for (int j = 0; j < nv; ++j) {
      uint32_t v = acc[i][j];
      if (ep.load_c) v += static_cast<uint32_t>(cr[j]);
      cr[j] = static_cast<int32_t>(v);
    }
  }
}

int generic_kernels(IgemmKernel* out) {
  IgemmKernel k;
  k.fmt = IgemmFormat::i16;
  k.mr = 4;
  k.nr = 8;
  k.group = 2;
  k.esize = 2;
  k.micro = micro_generic<4, 8>;
  out[0] = k;
  return 1;
}

bool cpu_has_avx2() { return detected_isa() != Isa::generic; }

IgemmPath resolve_path() {
  const IgemmPath forced = static_cast<IgemmPath>(g_forced_path.load(std::memory_order_relaxed));
  if (forced != IgemmPath::automatic) return forced;
  switch (active_isa()) {
    case Isa::avx512: return has_vnni() ? IgemmPath::vnni : IgemmPath::avx2;
    case Isa::avx2: return IgemmPath::avx2;
    default: return IgemmPath::generic;
  }
}

int kernels_for(IgemmPath p, IgemmKernel* ks) {
  switch (p) {
    case IgemmPath::vnni: return detail::vnni::igemm_kernels(ks, kMaxVariants);
    case IgemmPath::avx2: return detail::avx2::igemm_kernels(ks, kMaxVariants);
    default: return generic_kernels(ks);
  }
}

// The tile shape with the least padded work (edge panels), per load it costs.
IgemmKernel choose_kernel(int64_t m, int64_t n) {
  IgemmKernel ks[kMaxVariants];
  const int count = kernels_for(resolve_path(), ks);
  const int forced = g_forced_variant.load(std::memory_order_relaxed);
  if (forced >= 0) return ks[forced % count];
  int best = 0;
  double best_area = -1;
  for (int i = 0; i < count; ++i) {
    // Padded tile area, weighted by the loads per multiply of the tile shape.
    const double mr = ks[i].mr, nv = ks[i].nr / 16.0;
    const double area = static_cast<double>(round_up(m, ks[i].mr)) *
                        static_cast<double>(round_up(n, ks[i].nr)) * (1.0 + (mr + nv) / (mr * nv));
    if (best_area < 0 || area < best_area) {
      best_area = area;
      best = i;
    }
  }
  return ks[best];
}

// ---------------------------------------------------------------- packing
// A rows [0, rows) (stride lda, k values each) into ceil(rows / MR) panels.
// vnni: flips int8 to uint8 and writes rowsum(A') (when rowsum is non-null);
// i16: subtracts za[i].
void pack_a(const IgemmKernel& K, const uint8_t* a, int64_t lda, bool a_signed, int64_t rows,
            int64_t k, int64_t kpad, const int32_t* za, char* dst, int32_t* rowsum) {
  const int MR = K.mr;
  if (K.fmt == IgemmFormat::vnni) {
    const uint32_t flip = a_signed ? 0x80808080u : 0u;
    const int64_t full = k / 4;
    for (int64_t i0 = 0; i0 < rows; i0 += MR) {
      uint32_t* d = reinterpret_cast<uint32_t*>(dst + i0 * kpad);
      for (int i = 0; i < MR; ++i) {
        const int64_t r = i0 + i;
        if (r >= rows) {
          for (int64_t g = 0; g < kpad / 4; ++g) d[g * MR + i] = 0;
          continue;
        }
        const uint8_t* src = a + r * lda;
        for (int64_t g = 0; g < full; ++g) {
          uint32_t w;
          std::memcpy(&w, src + 4 * g, 4);
          d[g * MR + i] = w ^ flip;
        }
        if (full * 4 < kpad) {
          uint8_t tail[4] = {0, 0, 0, 0};
          for (int64_t p = full * 4; p < k; ++p) tail[p - full * 4] = static_cast<uint8_t>(src[p] ^ flip);
          uint32_t w;
          std::memcpy(&w, tail, 4);
          d[full * MR + i] = w;
        }
        if (rowsum) {
          uint32_t s = 0;
          const uint8_t f = static_cast<uint8_t>(flip);
          for (int64_t p = 0; p < k; ++p) s += static_cast<uint8_t>(src[p] ^ f);
          rowsum[r] = static_cast<int32_t>(s);
        }
      }
    }
    return;
  }
  for (int64_t i0 = 0; i0 < rows; i0 += MR) {
    int16_t* d = reinterpret_cast<int16_t*>(dst) + i0 * kpad;
    for (int i = 0; i < MR; ++i) {
      const int64_t r = i0 + i;
      const uint8_t* src = a + r * lda;
      for (int64_t p = 0; p < kpad; ++p) {
        int32_t v = 0;
        if (r < rows && p < k)
          v = (a_signed ? static_cast<int32_t>(static_cast<int8_t>(src[p])) : src[p]) - za[r];
        d[(p / 2) * 2 * MR + 2 * i + (p & 1)] = static_cast<int16_t>(v);
      }
    }
  }
}

// Adds the 16 signed bytes of x (one per column) to cs[0..16) as int32.
inline void add_cols(__m128i x, int32_t* cs) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i sx = _mm_cmpgt_epi8(zero, x);
  const __m128i lo = _mm_unpacklo_epi8(x, sx), hi = _mm_unpackhi_epi8(x, sx);  // int16
  const __m128i slo = _mm_srai_epi16(lo, 15), shi = _mm_srai_epi16(hi, 15);
  __m128i* c = reinterpret_cast<__m128i*>(cs);
  _mm_storeu_si128(c + 0, _mm_add_epi32(_mm_loadu_si128(c + 0), _mm_unpacklo_epi16(lo, slo)));
  _mm_storeu_si128(c + 1, _mm_add_epi32(_mm_loadu_si128(c + 1), _mm_unpackhi_epi16(lo, slo)));
  _mm_storeu_si128(c + 2, _mm_add_epi32(_mm_loadu_si128(c + 2), _mm_unpacklo_epi16(hi, shi)));
  _mm_storeu_si128(c + 3, _mm_add_epi32(_mm_loadu_si128(c + 3), _mm_unpackhi_epi16(hi, shi)));
}

// 4 rows x 16 columns of B (each row flipped by `flip`) -> 16 dwords of 4 bytes;
// the column sums of the flipped bytes are added to cs (when non-null).
inline void interleave4x16(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2,
                           const uint8_t* r3, __m128i flip, int8_t* out, int32_t* cs) {
  const __m128i x0 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)), flip);
  const __m128i x1 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r1)), flip);
  const __m128i x2 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r2)), flip);
  const __m128i x3 = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r3)), flip);
  const __m128i t0 = _mm_unpacklo_epi8(x0, x1), t1 = _mm_unpackhi_epi8(x0, x1);
  const __m128i t2 = _mm_unpacklo_epi8(x2, x3), t3 = _mm_unpackhi_epi8(x2, x3);
  __m128i* o = reinterpret_cast<__m128i*>(out);
  _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(t0, t2));
  _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(t0, t2));
  _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(t1, t3));
  _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(t1, t3));
  if (cs) {
    // |sum of 4 int8| <= 512: add in int8 pairs widened once.
    add_cols(x0, cs);
    add_cols(x1, cs);
    add_cols(x2, cs);
    add_cols(x3, cs);
  }
}

// B columns [0, cols) (k rows, stride ldb) into ceil(cols / NR) panels.
// vnni: flips uint8 to int8, writes colsum(B') (all cols); i16: subtracts zb[j].
void pack_b(const IgemmKernel& K, const uint8_t* b, int64_t ldb, bool b_signed, int64_t k,
            int64_t cols, int64_t kpad, const int32_t* zb, char* dst, int32_t* colsum) {
  const int NR = K.nr;
  if (K.fmt == IgemmFormat::vnni) {
    const uint8_t f = b_signed ? 0 : 0x80;
    const __m128i flip = _mm_set1_epi8(static_cast<char>(f));
    uint8_t pad_row[256];  // rows past k: flipped to 0
    std::memset(pad_row, f, sizeof(pad_row));
    if (colsum) std::memset(colsum, 0, sizeof(int32_t) * static_cast<size_t>(cols));
    for (int64_t j0 = 0; j0 < cols; j0 += NR) {
      int8_t* d = reinterpret_cast<int8_t*>(dst) + j0 * kpad;
      const int64_t nc = std::min<int64_t>(NR, cols - j0);
      int32_t* cs = colsum ? colsum + j0 : nullptr;
      for (int64_t g = 0; g < kpad / 4; ++g) {
        int8_t* o = d + g * 4 * NR;
        const uint8_t* r[4];
        for (int t = 0; t < 4; ++t) r[t] = 4 * g + t < k ? b + (4 * g + t) * ldb + j0 : pad_row;
        int64_t j = 0;
        for (; j + 16 <= nc; j += 16)
          interleave4x16(r[0] + j, r[1] + j, r[2] + j, r[3] + j, flip, o + 4 * j, cs ? cs + j : nullptr);
        for (; j < NR; ++j)
          for (int t = 0; t < 4; ++t) {
            const int8_t v = j < nc ? static_cast<int8_t>(r[t][j] ^ f) : int8_t(0);
            o[4 * j + t] = v;
            if (cs && j < nc) cs[j] += v;
          }
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < cols; j0 += NR) {
    int16_t* d = reinterpret_cast<int16_t*>(dst) + j0 * kpad;
    const int64_t nc = std::min<int64_t>(NR, cols - j0);
    for (int64_t p = 0; p < kpad; ++p) {
      const uint8_t* s = b + p * ldb + j0;
      int16_t* o = d + (p / 2) * 2 * NR + (p & 1);
      for (int64_t j = 0; j < NR; ++j) {
        int32_t v = 0;
        if (j < nc && p < k)
          v = (b_signed ? static_cast<int32_t>(static_cast<int8_t>(s[j])) : s[j]) - zb[j0 + j];
        o[2 * j] = static_cast<int16_t>(v);
      }
    }
  }
}

// ---------------------------------------------------------------- compute
struct Problem {
  IgemmKernel K;
  int64_t k = 0, kpad = 0;
  const char* pb = nullptr;  // packed B, all panels
  const int32_t* colterm = nullptr;  // vnni: per column; null when every za is 0
  const int32_t* zb = nullptr;       // vnni: per column; null when every zb is 0
  int32_t* c = nullptr;
  int64_t ldc = 0;
  int64_t c_row0 = 0, c_col0 = 0;  // the C element c points at (a block scratch for qlinear)
};

// Where finished int32 blocks go when the op requantizes (qlinear_*): element
// (row, col) of C lands at y[row * ldy + col], channel ch0 + row (per_row,
// convolution) or the column (matmul).
struct RequantSink {
  const Requant* r = nullptr;
  void* y = nullptr;
  int64_t ldy = 0;
  bool y_signed = false;
  bool per_row = false;
  int64_t ch0 = 0;
};

void emit_block(const RequantSink& s, const int32_t* acc, int64_t lda, int64_t rows, int64_t cols,
                int64_t row0, int64_t col0) {
  const detail::RequantBlock b{acc, lda, rows, cols, s.per_row ? s.ch0 + row0 : col0, s.per_row};
  const int64_t at = row0 * s.ldy + col0;
  if (s.y_signed)
    detail::requantize(b, *s.r, static_cast<int8_t*>(s.y) + at, s.ldy);
  else
    detail::requantize(b, *s.r, static_cast<uint8_t*>(s.y) + at, s.ldy);
}

struct Blocking {
  int64_t kc, nb, mb;
};

Blocking blocking_for(const IgemmKernel& K, int64_t kpad) {
  // int8: KC 1024 x NB 384 B block = 384 KB of a 1 MB L2; A micro-panel
  // 12 x 1024 = 12 KB of L1. int16 halves the k reach per byte.
  const int64_t kc_max = K.esize == 1 ? 1024 : 512;
  const int64_t blocks = (kpad + kc_max - 1) / kc_max;
  Blocking b;
  b.kc = round_up((kpad + blocks - 1) / blocks, K.group);
  b.nb = std::max<int64_t>(1, 384 / K.nr) * K.nr;
  // A rows packed whole-k per step: about 512 KB of packed A.
  const int64_t rows = (512 * 1024) / std::max<int64_t>(1, kpad * K.esize);
  b.mb = std::max<int64_t>(1, std::min<int64_t>(rows, 1536) / K.mr) * K.mr;
  return b;
}

// C rows [i0, i0 + mb) x columns [j0, j1) (j0 on a panel boundary); pa holds
// those rows packed (panel 0 = row i0); za / rowsum indexed from row i0.
void compute_rows(const Problem& P, const Blocking& bl, const char* pa, const int32_t* za,
                  const int32_t* rowsum, int64_t i0, int64_t mb, int64_t j0, int64_t j1) {
  const IgemmKernel& K = P.K;
  const int64_t es = K.esize;
  for (int64_t p0 = 0; p0 < P.kpad; p0 += bl.kc) {
    const int64_t kc = std::min(bl.kc, P.kpad - p0);
    IgemmEpilogue ep;
    ep.load_c = p0 > 0;
    ep.last = p0 + kc >= P.kpad;
    for (int64_t jb = j0; jb < j1; jb += bl.nb) {
      const int64_t je = std::min(j1, jb + bl.nb);
      for (int64_t ir = 0; ir < mb; ir += K.mr) {
        const int mv = static_cast<int>(std::min<int64_t>(K.mr, mb - ir));
        const char* apanel = pa + (ir * P.kpad + p0 * K.mr) * es;
        ep.za = P.colterm ? za + ir : nullptr;
        ep.rowsum = rowsum ? rowsum + ir : nullptr;
        for (int64_t jr = jb; jr < je; jr += K.nr) {
          const int nv = static_cast<int>(std::min<int64_t>(K.nr, je - jr));
          ep.colterm = P.colterm ? P.colterm + jr : nullptr;
          ep.zb = P.zb ? P.zb + jr : nullptr;
          K.micro(kc, apanel, P.pb + (jr * P.kpad + p0 * K.nr) * es,
                  P.c + (i0 + ir - P.c_row0) * P.ldc + (jr - P.c_col0), P.ldc, mv, nv, ep);
        }
      }
    }
  }
}

struct Range {
  int64_t i0, i1, j0, j1;
};

// Splits C into tm x tn rectangles on panel boundaries (least padded work + packing).
void choose_grid(int64_t m, int64_t n, int64_t k, int mr, int nr, int parts, int* tm, int* tn) {
  const int64_t pm = (m + mr - 1) / mr, pn = (n + nr - 1) / nr;
  double best = -1;
  for (int a = 1; a <= parts; ++a) {
    if (parts % a) continue;
    const int bcol = parts / a;
    if (a > pm || bcol > pn) continue;
    const double rows = static_cast<double>((pm + a - 1) / a) * mr;
    const double cols = static_cast<double>((pn + bcol - 1) / bcol) * nr;
    const double cost = rows * cols * k + 4.0 * k * rows * bcol;
    if (best < 0 || cost < best) {
      best = cost;
      *tm = a;
      *tn = bcol;
    }
  }
  if (best < 0) {
    *tm = static_cast<int>(std::min<int64_t>(pm, parts));
    *tn = 1;
  }
}

Range part_range(int64_t m, int64_t n, int mr, int nr, int tm, int tn, int id) {
  const int64_t pm = (m + mr - 1) / mr, pn = (n + nr - 1) / nr;
  const int bi = id / tn, bj = id % tn;
  auto cut = [](int64_t panels, int parts, int idx, int64_t unit, int64_t total) {
    const int64_t base = panels / parts, extra = panels % parts;
    const int64_t p = idx * base + std::min<int64_t>(idx, extra);
    return std::min(total, p * unit);
  };
  return {cut(pm, tm, bi, mr, m), cut(pm, tm, bi + 1, mr, m), cut(pn, tn, bj, nr, n),
          cut(pn, tn, bj + 1, nr, n)};
}

// A as the driver sees it: raw rows plus the effective zero point.
struct OperandA {
  const uint8_t* a;
  int64_t lda;
  bool a_signed;
  int32_t zp;  // the caller's a_zp
};

// Per-thread packing of A rows, kept between calls.
struct ThreadA {
  AlignedBuffer<char> buf;
  size_t len = 0;
  std::vector<int32_t> za, rowsum;
  std::vector<int32_t> acc;  // qlinear: one row block of int32 results before requantization
  bool reserve(size_t bytes, size_t rows) {
    if (bytes > len) {
      if (!buf.allocate(bytes)) { len = 0; return false; }
      len = bytes;
    }
    if (za.size() < rows) za.resize(rows);
    if (rowsum.size() < rows) rowsum.resize(rows);
    return true;
  }
};
ThreadA& thread_a() {
  thread_local ThreadA t;
  return t;
}

// One thread's rectangle: pack A row blocks and run compute_rows (with a sink,
// into a row-block scratch that is requantized while still in cache).
bool run_part(const Problem& P, const OperandA& A, const Range& r, const RequantSink* sink) {
  const IgemmKernel& K = P.K;
  const Blocking bl = blocking_for(K, P.kpad);
  const int64_t mb_max = std::min(bl.mb, round_up(r.i1 - r.i0, K.mr));
  ThreadA& t = thread_a();
  if (!t.reserve(static_cast<size_t>(mb_max * P.kpad * K.esize), static_cast<size_t>(mb_max)))
    return false;
  const bool vnni = K.fmt == IgemmFormat::vnni;
  const int32_t za = A.zp + (vnni && A.a_signed ? 128 : 0);
  std::fill(t.za.begin(), t.za.begin() + mb_max, za);
  const int64_t cols = r.j1 - r.j0;
  if (sink && t.acc.size() < static_cast<size_t>(mb_max * cols)) {
    try {  // runs inside an OpenMP team: no exception may escape
      t.acc.resize(static_cast<size_t>(mb_max * cols));
    } catch (...) {
      return false;
    }
  }
  for (int64_t i0 = r.i0; i0 < r.i1; i0 += bl.mb) {
    const int64_t mb = std::min(bl.mb, r.i1 - i0);
    int32_t* rowsum = vnni && P.zb ? t.rowsum.data() : nullptr;
    pack_a(K, A.a + i0 * A.lda, A.lda, A.a_signed, mb, P.k, P.kpad, t.za.data(), t.buf.get(), rowsum);
    if (!sink) {
      compute_rows(P, bl, t.buf.get(), t.za.data(), rowsum, i0, mb, r.j0, r.j1);
      continue;
    }
    Problem Q = P;
    Q.c = t.acc.data();
    Q.ldc = cols;
    Q.c_row0 = i0;
    Q.c_col0 = r.j0;
    compute_rows(Q, bl, t.buf.get(), t.za.data(), rowsum, i0, mb, r.j0, r.j1);
    emit_block(*sink, Q.c, cols, mb, cols, i0, r.j0);
  }
  return true;
}

// Packs B (k x n) into impl (parallel over panels when nt > 1).
Status pack_b_impl(const IgemmKernel& K, int64_t k, int64_t n, const uint8_t* b, int64_t ldb,
                   bool b_signed, const int32_t* bzp, bool per_col, int nt, PackedIntBImpl* out) {
  out->K = K;
  out->k = k;
  out->n = n;
  out->kpad = round_up(std::max<int64_t>(k, 1), K.group);
  out->b_signed = b_signed;
  const int64_t panels = (n + K.nr - 1) / K.nr;
  if (!out->data.allocate(static_cast<size_t>(panels * K.nr * out->kpad * K.esize)))
    return Status::Internal("out of memory for the packed B");
  const bool vnni = K.fmt == IgemmFormat::vnni;
  std::vector<int32_t> zb(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    const int32_t z = bzp ? bzp[per_col ? j : 0] : 0;
    zb[j] = z - (vnni && !b_signed ? 128 : 0);
  }
  std::vector<int32_t> colsum(vnni ? static_cast<size_t>(n) : 0);
  const int64_t kpad = out->kpad;
  char* dst = out->data.get();
  const int32_t* zbp = zb.data();
  int32_t* cs = vnni ? colsum.data() : nullptr;
  // i16 packs subtract the caller's zero point (zb holds it unchanged there).
  auto pack_range = [&](int64_t p0, int64_t p1) {
    if (p0 >= p1) return;
    const int64_t j0 = p0 * K.nr, j1 = std::min(n, p1 * K.nr);
    pack_b(K, b + j0, ldb, b_signed, k, j1 - j0, kpad, zbp + j0, dst + j0 * kpad * K.esize,
           cs ? cs + j0 : nullptr);
  };
  if (nt > 1 && panels > 1) {
#pragma omp parallel num_threads(nt)
    {
      const int id = omp_get_thread_num(), team = omp_get_num_threads();
      pack_range(panels * id / team, panels * (id + 1) / team);
    }
  } else {
    pack_range(0, panels);
  }
  out->zb_zero = true;
  if (vnni) {
    out->colterm.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      if (zb[j] != 0) out->zb_zero = false;
      out->colterm[j] = static_cast<int32_t>(static_cast<uint32_t>(colsum[j]) -
                                             static_cast<uint32_t>(k) * static_cast<uint32_t>(zb[j]));
    }
  }
  out->zb = std::move(zb);
  return Status::Ok();
}

int threads_for_macs(double macs, bool parallel) {
  if (!parallel || omp_in_parallel() || macs < kMinParallelMacs) return 1;
  return num_threads();
}

// C = (A - a_zp) . B(packed), the whole C split over nt threads (requantized
// into the sink's output instead when sink is non-null).
Status run(const MatmulIntegerDesc& d, const OperandA& A, const PackedIntBImpl& B, int32_t* c,
           int nt, const RequantSink* sink = nullptr) {
  Problem P;
  P.K = B.K;
  P.k = B.k;
  P.kpad = B.kpad;
  P.pb = B.data.get();
  const bool vnni = B.K.fmt == IgemmFormat::vnni;
  const int32_t za = A.zp + (vnni && A.a_signed ? 128 : 0);
  P.colterm = vnni && za != 0 ? B.colterm.data() : nullptr;
  P.zb = vnni && !B.zb_zero ? B.zb.data() : nullptr;
  P.c = c;
  P.ldc = d.ldc;
  if (nt <= 1) {
    if (!run_part(P, A, Range{0, d.m, 0, d.n}, sink)) return Status::Internal("out of memory for packing");
    return Status::Ok();
  }
  int tm = 1, tn = 1;
  choose_grid(d.m, d.n, B.kpad, P.K.mr, P.K.nr, nt, &tm, &tn);
  const int parts = tm * tn;
  std::atomic<bool> ok{true};
#pragma omp parallel num_threads(parts)
  {
    const int team = omp_get_num_threads();
    for (int id = omp_get_thread_num(); id < parts; id += team) {
      const Range r = part_range(d.m, d.n, P.K.mr, P.K.nr, tm, tn, id);
      if (r.i0 < r.i1 && r.j0 < r.j1 && !run_part(P, A, r, sink)) ok.store(false);
    }
  }
  if (!ok.load()) return Status::Internal("out of memory for packing");
  return Status::Ok();
}

template <class T>
constexpr bool is_signed_t() {
  return std::is_same<T, int8_t>::value;
}
template <class T>
bool zp_in_range(int32_t z) {
  return is_signed_t<T>() ? (z >= -128 && z <= 127) : (z >= 0 && z <= 255);
}

template <class TB>
Status check_bzp(int64_t n, const int32_t* bzp, bool per_col) {
  if (!bzp) return Status::Ok();
  const int64_t cnt = per_col ? n : 1;
  for (int64_t j = 0; j < cnt; ++j)
    if (!zp_in_range<TB>(bzp[j]))
      return Status::Invalid("b_zero_point " + std::to_string(bzp[j]) +
                             " is outside the range of B's type");
  return Status::Ok();
}

Status check_desc(const MatmulIntegerDesc& d, bool need_b) {
  if (d.m < 0 || d.n < 0 || d.k < 0) return Status::Invalid("m, n and k must be non-negative");
  if (d.m == 0 || d.n == 0) return Status::Ok();
  if (d.ldc < d.n) return Status::Invalid("ldc must be >= n");
  if (d.k > 0 && d.lda < d.k) return Status::Invalid("lda must be >= k");
  if (need_b && d.k > 0 && d.ldb < d.n) return Status::Invalid("ldb must be >= n");
  if (d.k >= (int64_t(1) << 31) || d.m >= (int64_t(1) << 40) || d.n >= (int64_t(1) << 40))
    return Status::Invalid("sizes too large");
  return Status::Ok();
}

// An empty reduction (k = 0): every accumulator is 0.
Status zero_result(const MatmulIntegerDesc& d, int32_t* c, const RequantSink* sink) {
  if (!sink) {
    for (int64_t i = 0; i < d.m; ++i) std::memset(c + i * d.ldc, 0, sizeof(int32_t) * d.n);
    return Status::Ok();
  }
  const std::vector<int32_t> zeros(static_cast<size_t>(d.n), 0);
  for (int64_t i = 0; i < d.m; ++i) emit_block(*sink, zeros.data(), 0, 1, d.n, i, 0);
  return Status::Ok();
}

template <class TY>
Status check_requant(const Requant& r, int64_t channels) {
  if (!zp_in_range<TY>(r.y_zero_point))
    return Status::Invalid("y_zero_point " + std::to_string(r.y_zero_point) +
                           " is outside the range of the output type");
  if (!r.multiplier) return Status::Invalid("null multiplier pointer");
  for (int64_t c = 0; c < channels; ++c)
    if (!(r.multiplier[c] >= 0) || !(r.multiplier[c] <= 3.4e38f))
      return Status::Invalid("multiplier[" + std::to_string(c) + "] must be finite and >= 0");
  return Status::Ok();
}

template <class TY>
RequantSink matmul_sink(const Requant& r, TY* y, int64_t ldy) {
  RequantSink s;
  s.r = &r;
  s.y = y;
  s.ldy = ldy;
  s.y_signed = is_signed_t<TY>();
  return s;
}

template <class TA, class TB>
Status matmul_impl(const MatmulIntegerDesc& d, const TA* a, const TB* b, const int32_t* bzp,
                   int32_t* c, const RequantSink* sink = nullptr) {
  Status st = check_desc(d, true);
  if (!st.ok()) return st;
  if (d.m == 0 || d.n == 0) return Status::Ok();
  if (sink ? !sink->y : !c) return Status::Invalid("null output pointer");
  if (!zp_in_range<TA>(d.a_zero_point))
    return Status::Invalid("a_zero_point " + std::to_string(d.a_zero_point) +
                           " is outside the range of A's type");
  st = check_bzp<TB>(d.n, bzp, d.b_zero_point_per_column);
  if (!st.ok()) return st;
  if (d.k == 0) return zero_result(d, c, sink);
  if (!a || !b) return Status::Invalid("null A or B pointer");
  const double macs = static_cast<double>(d.m) * static_cast<double>(d.n) * static_cast<double>(d.k);
  const int nt = threads_for_macs(macs, d.parallel);
  const IgemmKernel K = choose_kernel(d.m, d.n);
  PackedIntBImpl B;
  st = pack_b_impl(K, d.k, d.n, reinterpret_cast<const uint8_t*>(b), d.ldb, is_signed_t<TB>(), bzp,
                   d.b_zero_point_per_column, nt, &B);
  if (!st.ok()) return st;
  const OperandA A{reinterpret_cast<const uint8_t*>(a), d.lda, is_signed_t<TA>(), d.a_zero_point};
  return run(d, A, B, c, nt, sink);
}

template <class TB>
Status pack_impl(int64_t k, int64_t n, const TB* b, int64_t ldb, const int32_t* bzp, bool per_col,
                 PackedIntB* out) {
  if (!out) return Status::Invalid("null output pack");
  if (k < 0 || n < 0) return Status::Invalid("k and n must be non-negative");
  if (k >= (int64_t(1) << 31)) return Status::Invalid("k too large");
  if (k > 0 && n > 0 && (!b || ldb < n)) return Status::Invalid("null B or ldb < n");
  Status st = check_bzp<TB>(n, bzp, per_col);
  if (!st.ok()) return st;
  PackedIntB fresh;
  auto* impl = fresh.impl();
  const IgemmKernel K = choose_kernel(64, n);
  const double work = static_cast<double>(k) * static_cast<double>(n);
  const int nt = threads_for_macs(work * 64, true);
  if (k > 0 && n > 0) {
    st = pack_b_impl(K, k, n, reinterpret_cast<const uint8_t*>(b), ldb, is_signed_t<TB>(), bzp,
                     per_col, nt, impl);
    if (!st.ok()) return st;
  } else {
    impl->K = K;
    impl->k = k;
    impl->n = n;
    impl->b_signed = is_signed_t<TB>();
  }
  *out = std::move(fresh);
  return Status::Ok();
}

template <class TA>
Status packed_impl(const MatmulIntegerDesc& d, const TA* a, const PackedIntB& b, int32_t* c,
                   const RequantSink* sink = nullptr) {
  if (b.empty()) return Status::Invalid("the packed B is empty (not packed)");
  if (d.n != b.n() || d.k != b.k())
    return Status::Invalid("m x k x n = " + std::to_string(d.m) + " x " + std::to_string(d.k) +
                           " x " + std::to_string(d.n) + " does not match the packed B (k = " +
                           std::to_string(b.k()) + ", n = " + std::to_string(b.n()) + ")");
  Status st = check_desc(d, false);
  if (!st.ok()) return st;
  if (d.m == 0 || d.n == 0) return Status::Ok();
  if (sink ? !sink->y : !c) return Status::Invalid("null output pointer");
  if (!zp_in_range<TA>(d.a_zero_point))
    return Status::Invalid("a_zero_point " + std::to_string(d.a_zero_point) +
                           " is outside the range of A's type");
  if (d.k == 0) return zero_result(d, c, sink);
  if (!a) return Status::Invalid("null A pointer");
  const double macs = static_cast<double>(d.m) * static_cast<double>(d.n) * static_cast<double>(d.k);
  const OperandA A{reinterpret_cast<const uint8_t*>(a), d.lda, is_signed_t<TA>(), d.a_zero_point};
  return run(d, A, *b.impl(), c, threads_for_macs(macs, d.parallel), sink);
}

// ---------------------------------------------------------------- convolution
struct ConvShape {
  int64_t cg, cog, ntaps, ohw, hw;
};

// Short row copies (an output row is often 8-32 bytes): no memcpy call.
inline void copy_bytes(uint8_t* d, const uint8_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
  if (i + 8 <= n) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(d + i), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)));
    i += 8;
  }
  for (; i < n; ++i) d[i] = s[i];
}

// im2col of one image/group: rows t = (c, a, b) of the tap matrix, columns
// [j0, j1) of the output plane; outside taps take x_zp. Written as bytes.
void im2col_u8(const Conv2dDesc& d, const ConvShape& s, const uint8_t* x, uint8_t pad, int64_t j0,
               int64_t j1, uint8_t* col, int64_t ld) {
  const int64_t kk = d.kernel_h * d.kernel_w;
  for (int64_t t = 0; t < s.ntaps; ++t) {
    const int64_t ch = t / kk, a = (t % kk) / d.kernel_w, bb = t % d.kernel_w;
    const uint8_t* xc = x + ch * s.hw;
    uint8_t* out = col + t * ld;
    int64_t oh = j0 / d.out_w, ow = j0 % d.out_w;
    for (int64_t j = j0; j < j1;) {
      const int64_t ih = oh * d.stride_h - d.pad_top + a * d.dilation_h;
      const int64_t run = std::min<int64_t>(d.out_w - ow, j1 - j);
      if (ih < 0 || ih >= d.h) {
        std::memset(out + (j - j0), pad, static_cast<size_t>(run));
      } else {
        const uint8_t* xr = xc + ih * d.w;
        const int64_t iw0 = ow * d.stride_w - d.pad_left + bb * d.dilation_w;
        uint8_t* o = out + (j - j0);
        if (d.stride_w == 1) {  // pad | copy | pad
          const int64_t lo = std::min(run, std::max<int64_t>(0, -iw0));
          const int64_t hi = std::max(lo, std::min(run, d.w - iw0));
          for (int64_t q = 0; q < lo; ++q) o[q] = pad;
          copy_bytes(o + lo, xr + iw0 + lo, hi - lo);
          for (int64_t q = hi; q < run; ++q) o[q] = pad;
        } else {
          for (int64_t q = 0; q < run; ++q) {
            const int64_t iw = iw0 + q * d.stride_w;
            o[q] = (iw >= 0 && iw < d.w) ? xr[iw] : pad;
          }
        }
      }
      j += run;
      ow = 0;
      ++oh;
    }
  }
}

struct ConvScratch {
  std::vector<uint8_t> col;
  AlignedBuffer<char> pb;
  size_t pb_len = 0;
  std::vector<int32_t> colsum, colterm, zb, zbi16;
  std::vector<int32_t> acc;  // qlinear: the unit's int32 block before requantization
};

// The sink of one (image, group) block of a requantizing convolution: rows are
// the group's output channels, columns output pixels from j0.
RequantSink conv_unit_sink(const RequantSink& s, const Conv2dDesc& d, const ConvShape& sh, int64_t img,
                           int64_t g, int64_t j0) {
  RequantSink u = s;
  u.y = static_cast<char*>(s.y) + (img * d.c_out + g * sh.cog) * sh.ohw + j0;  // 1-byte elements
  u.ldy = sh.ohw;
  u.per_row = true;
  u.ch0 = g * sh.cog;
  return u;
}

// ---- stride-1 convolution on the VNNI path, without im2col ----
// The input of every group is copied once into "tall" buffers: per channel,
// kw copies, copy b holding the input shifted by tap column b (element
// (r, ow) = x[r][ow - pad_left + b*dw], x_zp outside), rows of OW bytes, the
// images stacked with lh = max(pad_top, pad_bottom) rows of x_zp before each
// (hp = H + lh rows per image). Output pixel (img, oh, ow) then has the wide
// index q = (img*hp + lh - pad_top + oh) * OW + ow, and tap (c, a, b) reads
// channel c, copy b at q + a*dh*OW: every row of the GEMM's B (taps x wide
// pixels) is a shifted slice of a buffer, and the output pixels of an image
// are one contiguous run of wide indices (only the gap rows between images
// are computed and dropped). Needs pad_bottom <= dh*(kh-1) so that the
// output rows of an image stay among its buffer rows.
struct TallGeometry {
  int64_t lh = 0, hp = 0, ow = 0;
  int64_t first = 0, end = 0;  // wide indices of the first output pixel and one past the last
  int64_t copy_len = 0;        // positions of one column-shifted copy (before the slack)
};

bool tall_layout_fits(const Conv2dDesc& d) { return d.pad_bottom <= d.dilation_h * (d.kernel_h - 1); }

TallGeometry tall_geometry(const Conv2dDesc& d) {
  TallGeometry t;
  t.lh = std::max(d.pad_top, d.pad_bottom);
  t.hp = d.h + t.lh;
  t.ow = d.out_w;
  t.first = (t.lh - d.pad_top) * t.ow;
  t.end = t.first + ((d.n - 1) * t.hp + d.out_h) * t.ow;
  t.copy_len = (t.lh + d.n * t.hp) * t.ow;
  return t;
}

// Position of input row r of image img in a copy.
inline int64_t tall_row(const TallGeometry& t, int64_t img, int64_t r) { return (t.lh + img * t.hp + r) * t.ow; }

// Copies the output pixels among the wide columns [j0, j1) of one group's tile
// (cog rows of `esize`-byte results, row stride ld elements) to y, the int32
// output or the sink's bytes. The output pixels of an image are one run.
void emit_wide(const Conv2dDesc& d, const ConvShape& s, const TallGeometry& t, int64_t g, const uint8_t* tile,
               int64_t ld, int64_t esize, int64_t j0, int64_t j1, uint8_t* y) {
  const int64_t image_span = t.hp * t.ow;
  for (int64_t img = std::max<int64_t>(0, (j0 - t.first) / image_span); img < d.n; ++img) {
    const int64_t start = t.first + img * image_span;  // wide index of the image's pixel 0
    if (start >= j1) break;
    const int64_t q0 = std::max(j0, start), q1 = std::min(j1, start + s.ohw);
    if (q0 >= q1) continue;
    const int64_t first = (img * d.c_out + g * s.cog) * s.ohw + (q0 - start);
    detail::vnni::copy_rows(tile + esize * (q0 - j0), esize * ld, y + esize * first, esize * s.ohw, s.cog,
                            esize * (q1 - q0));
  }
}

// ---- direct stride-1 convolution on the VNNI path ----
// The input of a group is viewed as "slots" (c, b) = (channel, tap column),
// each a column-shifted copy of channel c (tall layout above). Slots are
// interleaved four to a position ("blocks": byte (position * 4 + i) holds slot
// i of the block), already vpdpbusd's uint8 operand (int8 x flipped), so the 16 dwords of 16
// consecutive wide pixels at one kernel row a of one block are 64 contiguous
// bytes: exactly the vector vpdpbusd takes. The micro-kernel reads the input in
// place and nothing is packed per call but the weights. k runs over k groups
// (block, kernel row a), 4 slots each. Blocks are filled three ways:
//   channel-major, for the channels in whole groups of four: block (cb, b) =
//     channels 4cb..4cb+3 at tap column b; a row is interleaved once and
//     shifted per b;
//   tap-major, for the 0-3 channels left over: their slots s = c * kw + b
//     taken four at a time, so one channel does not waste three quarters of
//     every block;
//   folded, for the last 1-3 tap-major slots when that is cheaper: each of
//     them once per kernel row, slot (c, b, a) being channel c shifted by a
//     rows as well. A folded block is read at kernel row 0 only, so its k
//     group holds up to 4 taps where the partial tap-major block would give
//     kh groups of 1-3 (CIFAR's 3-channel 3x3 layer: 7 k groups, not 9).
// Empty slots hold x_zp (their weights w_zp[o]): (x - x_zp)(w - w_zp) = 0.
struct SlotMap {
  int64_t channel_blocks = 0;  // per group: the first ones are channel-major (kw per channel block)
  int64_t folded_from = 0;     // blocks from here on are folded
  int64_t blocks = 0;          // per group
  std::vector<int64_t> c, b, a;       // 4 * blocks entries; c = -1: empty slot; a: kernel row (folded only)
  std::vector<int64_t> kblock, krow;  // per k group: its block and the kernel row it is read at
  int64_t kgroups() const { return static_cast<int64_t>(kblock.size()); }
};

// Folding the r leftover slots turns 1 block read kh times into ceil(r kh / 4)
// blocks read once each. Estimated cycles per 16 wide pixels: a k group costs
// rows / 2 (vpdpbusd, two a cycle), filling a block about 10 (measured: LeNet's
// layers, 6 and 16 rows, got slower folded; CIFAR's first, 32 rows, 9% faster).
bool fold_pays(int64_t r, int64_t kh, int64_t rows) {
  const double group = static_cast<double>(rows) / 2, fill = 10, folded = static_cast<double>((r * kh + 3) / 4);
  return folded * (group + fill) < static_cast<double>(kh) * group + fill;
}

// rows: output channels per group as the tiles compute them (padded to the tile's rows).
SlotMap slot_map(const Conv2dDesc& d, const ConvShape& s, int64_t rows) {
  SlotMap m;
  const int64_t kw = d.kernel_w, kh = d.kernel_h, whole = s.cg / 4 * 4, rest_slots = (s.cg - whole) * kw;
  const int64_t r = rest_slots % 4;
  const bool fold = r > 0 && kh > 1 && fold_pays(r, kh, rows);
  m.channel_blocks = whole / 4 * kw;
  m.folded_from = m.channel_blocks + (fold ? rest_slots / 4 : (rest_slots + 3) / 4);
  m.blocks = m.folded_from + (fold ? (r * kh + 3) / 4 : 0);
  m.c.assign(static_cast<size_t>(4 * m.blocks), -1);
  m.b.assign(static_cast<size_t>(4 * m.blocks), 0);
  m.a.assign(static_cast<size_t>(4 * m.blocks), 0);
  for (int64_t blk = 0; blk < m.channel_blocks; ++blk)
    for (int64_t i = 0; i < 4; ++i) {
      m.c[4 * blk + i] = (blk / kw) * 4 + i;
      m.b[4 * blk + i] = blk % kw;
    }
  const auto tap_slot = [&](int64_t at, int64_t slot) {  // tap-major slot number -> (c, b)
    m.c[at] = whole + slot / kw;
    m.b[at] = slot % kw;
  };
  const int64_t tap_major_slots = fold ? rest_slots - r : rest_slots;
  for (int64_t slot = 0; slot < tap_major_slots; ++slot) tap_slot(4 * m.channel_blocks + slot, slot);
  for (int64_t f = 0; fold && f < r * kh; ++f) {  // folded: leftover slot j at kernel row a, f = j * kh + a
    tap_slot(4 * m.folded_from + f, rest_slots - r + f / kh);
    m.a[4 * m.folded_from + f] = f % kh;
  }
  for (int64_t blk = 0; blk < m.blocks; ++blk)
    for (int64_t a = 0; a < (blk < m.folded_from ? kh : 1); ++a) {
      m.kblock.push_back(blk);
      m.krow.push_back(a);
    }
  return m;
}

// Grow-only scratch kept per thread (slots for different buffers). A convolution's
// large buffers would otherwise be fresh pages on every call (glibc serves big
// allocations with mmap), and the page faults cost as much as the arithmetic on
// small layers. Memory stays at the largest size a thread has needed.
enum ScratchSlot { kTallInput = 0, kWeightPanels = 1, kBlockAcc = 2, kScratchSlots = 3 };

void* thread_scratch(ScratchSlot slot, size_t bytes) {
  struct Slot {
    AlignedBuffer<char> buf;
    size_t bytes = 0;
  };
  thread_local Slot slots[kScratchSlots];
  Slot& sl = slots[slot];
  if (bytes > sl.bytes) {
    if (!sl.buf.allocate(bytes)) {
      sl.bytes = 0;
      return nullptr;
    }
    sl.bytes = bytes;
  }
  return sl.buf.get();
}

// The tall input of every group: blocks of block_positions positions (4 bytes each),
// in the calling thread's scratch. Filled by units of (group, item, image range): an
// item is one channel block (its kw tap-column blocks) or one tap-major block.
struct TallInput4 {
  uint8_t* data = nullptr;
  int64_t block_positions = 0;
  detail::vnni::TallBlockGeometry geometry;
  int64_t channel_items = 0, items_per_group = 0, image_chunks = 1;
  int64_t units() const { return items_per_group * image_chunks; }  // per group
};

bool alloc_tall_input4(const Conv2dDesc& d, const TallGeometry& tg, const SlotMap& m, uint8_t pad, uint8_t flip,
                       int64_t slack_positions, int threads, TallInput4* t) {
  t->block_positions = tg.copy_len + slack_positions;
  t->data = static_cast<uint8_t*>(
      thread_scratch(kTallInput, static_cast<size_t>(d.groups * m.blocks * 4 * t->block_positions)));
  if (!t->data) return false;
  detail::vnni::TallBlockGeometry& g = t->geometry;
  g.n = d.n;
  g.h = d.h;
  g.w = d.w;
  g.out_w = tg.ow;
  g.image_rows = tg.hp;
  g.positions = t->block_positions;
  g.image_stride = d.c_in * d.h * d.w;
  g.flip = flip;
  g.pad = pad;
  t->channel_items = m.channel_blocks / d.kernel_w;
  t->items_per_group = t->channel_items + (m.blocks - m.channel_blocks);
  // Enough units that every thread gets about the same share (few items: split the images).
  const int64_t items = d.groups * t->items_per_group;
  t->image_chunks = std::min<int64_t>(d.n, std::max<int64_t>(1, (4 * threads + items - 1) / items));
  return true;
}

// Fills unit u (< groups * t.units()) of the tall input from x.
void fill_tall_unit(const Conv2dDesc& d, const ConvShape& s, const SlotMap& m, const uint8_t* x,
                    const TallInput4& t, int64_t u) {
  const int64_t g = u / t.units(), item = u % t.units() / t.image_chunks, chunk = u % t.image_chunks;
  const int64_t i0 = chunk * d.n / t.image_chunks, i1 = (chunk + 1) * d.n / t.image_chunks;
  const int64_t block_bytes = 4 * t.block_positions;
  uint8_t* const base = t.data + g * m.blocks * block_bytes;
  const auto plane = [&](int64_t c) { return c >= 0 ? x + (g * s.cg + c) * d.h * d.w : nullptr; };
  const uint8_t* planes[4];
  if (item < t.channel_items) {  // channel-major: kw blocks, one per tap column, of the same 4 channels
    const int64_t blk0 = item * d.kernel_w;
    uint8_t* out[detail::vnni::kMaxTallCopies];
    for (int i = 0; i < 4; ++i) planes[i] = plane(m.c[4 * blk0 + i]);
    for (int64_t b = 0; b < d.kernel_w; ++b) out[b] = base + (blk0 + b) * block_bytes;
    detail::vnni::fill_tall_copies(t.geometry, planes, d.pad_left, d.dilation_w, d.kernel_w, i0, i1, out);
    return;
  }
  const int64_t blk = m.channel_blocks + (item - t.channel_items);
  int64_t shift[4], row_shift[4];
  for (int i = 0; i < 4; ++i) {
    planes[i] = plane(m.c[4 * blk + i]);
    shift[i] = m.b[4 * blk + i] * d.dilation_w - d.pad_left;  // input column of output column 0
    row_shift[i] = m.a[4 * blk + i] * d.dilation_h;           // folded: the slot's kernel row
  }
  detail::vnni::fill_tall_block(t.geometry, planes, shift, blk >= m.folded_from ? row_shift : nullptr, i0, i1,
                                base + blk * block_bytes);
}

// Weights as vpdpbusd's int8 operand: panels of MR output channels, k group q
// holding each row's 4 slots of block q / kh at kernel row q % kh. woff[4q + i]:
// the offset of slot i of k group q among one output channel's weights (-1: empty).
struct DirectWeights {
  int32_t* panels = nullptr;  // calling thread's scratch
  int64_t rows_pad = 0, kg = 0, mr = 0;
  std::vector<int64_t> woff;
  // Per output channel: the weight zero point as the (flipped) int8 operand sees it, and the
  // constant term (kfull * za - rowsum) * x_zp of the expansion of sum (x - x_zp)(w - w_zp).
  std::vector<int32_t> za, rterm;
};

DirectWeights direct_weights_plan(const Conv2dDesc& d, const ConvShape& s, const SlotMap& m, int64_t mr) {
  DirectWeights dw;
  dw.kg = m.kgroups();
  dw.mr = mr;
  dw.rows_pad = round_up(s.cog, mr);
  dw.woff.resize(static_cast<size_t>(4 * dw.kg));
  for (int64_t q = 0; q < dw.kg; ++q)
    for (int i = 0; i < 4; ++i) {
      const int64_t slot = m.kblock[q] * 4 + i, c = m.c[slot];
      const int64_t a = m.kblock[q] < m.folded_from ? m.krow[q] : m.a[slot];
      dw.woff[4 * q + i] = c >= 0 ? (c * d.kernel_h + a) * d.kernel_w + m.b[slot] : -1;
    }
  dw.za.resize(static_cast<size_t>(d.c_out));
  dw.rterm.resize(static_cast<size_t>(d.c_out));
  dw.panels = static_cast<int32_t*>(
      thread_scratch(kWeightPanels, sizeof(int32_t) * static_cast<size_t>(d.groups * dw.rows_pad * dw.kg)));
  return dw;
}

// Panel row r (< groups * rows_pad) of dw: output channel o's weights, or zeros past cog.
void pack_direct_weight_row(const Conv2dDesc& d, const ConvShape& s, const uint8_t* w, bool w_signed,
                            const int32_t* wzp, bool per_channel, int32_t xz_eff, int64_t r, DirectWeights* dw) {
  const int64_t g = r / dw->rows_pad, i = r % dw->rows_pad, kg = dw->kg, mr = dw->mr;
  int32_t* const panel = dw->panels + (g * dw->rows_pad + i / mr * mr) * kg + i % mr;
  if (i >= s.cog) {
    for (int64_t q = 0; q < kg; ++q) panel[q * mr] = 0;
    return;
  }
  const int64_t o = g * s.cog + i;
  const int32_t wz = wzp ? wzp[per_channel ? o : 0] : 0;
  const uint8_t wflip = w_signed ? 0 : 0x80, empty = static_cast<uint8_t>(wz);  // uint8 w: w ^ 0x80 = w - 128
  const uint8_t* const wo = w + o * s.cg * d.kernel_h * d.kernel_w;
  uint32_t rowsum = 0;
  for (int64_t q = 0; q < kg; ++q) {
    uint8_t bytes[4];
    for (int t = 0; t < 4; ++t) {
      const int64_t off = dw->woff[4 * q + t];
      bytes[t] = (off >= 0 ? wo[off] : empty) ^ wflip;
      rowsum += static_cast<uint32_t>(static_cast<int32_t>(static_cast<int8_t>(bytes[t])));
    }
    std::memcpy(panel + q * mr, bytes, 4);
  }
  dw->za[o] = wz - (w_signed ? 0 : 128);
  dw->rterm[o] = static_cast<int32_t>((static_cast<uint32_t>(4 * kg) * static_cast<uint32_t>(dw->za[o]) - rowsum) *
                                      static_cast<uint32_t>(xz_eff));
}

constexpr int kMaxDirectNr = 64;  // widest direct tile (4x64)

// The first row tile of a pixel run accumulates the column sums, the others reuse them.
inline detail::vnni::DirectColsum colsum_mode(bool needed, int64_t first_row) {
  using detail::vnni::DirectColsum;
  return !needed ? DirectColsum::none : first_row == 0 ? DirectColsum::accumulate : DirectColsum::ready;
}

// The tile and the way tiles cover the wide pixels: continuous runs (an image's
// gap rows, and its rows past out_h, are computed and dropped) or per image (tiles
// restart at each image's first output pixel; the last one is narrower).
struct DirectPlan {
  IgemmDirectKernel K;
  bool per_image = false;
};

// Cost: padded rows x computed wide pixels x (1 + loads per vpdpbusd).
DirectPlan choose_direct_plan(int64_t rows, int64_t ohw, int64_t image_span) {
  IgemmDirectKernel ks[8];
  const int count = detail::vnni::direct_kernels(ks, 8);
  DirectPlan best;
  double best_cost = -1;
  for (int i = 0; i < count; ++i) {
    if (ks[i].nr > kMaxDirectNr) continue;  // the caller's column-sum buffer holds kMaxDirectNr
    const double mr = ks[i].mr, nv = ks[i].nr / 16.0, per_pixel = 1.0 + (mr + nv + 1) / (mr * nv);
    for (const bool per_image : {false, true}) {
      const int64_t pixels = per_image ? round_up(ohw, ks[i].nr) : image_span;
      const double cost = static_cast<double>(round_up(rows, ks[i].mr)) * static_cast<double>(pixels) * per_pixel;
      if (best_cost < 0 || cost < best_cost) {
        best_cost = cost;
        best = DirectPlan{ks[i], per_image};
      }
    }
  }
  return best;
}

// Work units of the tiles, per group: chunks of `chunk` wide pixels (about 256 KiB
// of int32 results each, at least two per thread), or per image runs of `images`
// whole images (as many units).
struct TileUnits {
  int64_t chunk = 0, images = 0, per_group = 0;
};

TileUnits tile_units(const Conv2dDesc& d, const ConvShape& s, const TallGeometry& tg, const DirectPlan& plan) {
  const int64_t nr = plan.K.nr, wide_total = tg.end - tg.first;
  const int64_t min_chunks = (2 * num_threads() + d.groups - 1) / d.groups;
  TileUnits u;
  u.chunk = std::max<int64_t>(nr, (256 * 1024) / (4 * s.cog) / nr * nr);
  u.chunk = std::min(u.chunk, std::max<int64_t>(nr, round_up((wide_total + min_chunks - 1) / min_chunks, nr)));
  u.images = (d.n + min_chunks - 1) / min_chunks;
  u.per_group = plan.per_image ? (d.n + u.images - 1) / u.images : (wide_total + u.chunk - 1) / u.chunk;
  return u;
}

// The requantization clamp of the direct tiles (requant_internal.h): [lo, hi] with y_zero_point subtracted.
void requant_clamp(const RequantSink& sink, float* lo, float* hi) {
  const int32_t type_min = sink.y_signed ? -128 : 0, type_max = sink.y_signed ? 127 : 255;
  const int32_t lower = sink.r->relu ? std::max(type_min, sink.r->y_zero_point) : type_min;
  *lo = static_cast<float>(lower - sink.r->y_zero_point);
  *hi = static_cast<float>(type_max - sink.r->y_zero_point);
}

Status conv_direct_vnni(const Conv2dDesc& d, const ConvShape& s, const uint8_t* x, bool x_signed, int32_t xzp,
                        const uint8_t* w, bool w_signed, const int32_t* wzp, bool per_channel, int32_t* y,
                        const RequantSink* sink) {
  const TallGeometry tg = tall_geometry(d);
  const int64_t wide_total = tg.end - tg.first, image_span = tg.hp * tg.ow;
  const DirectPlan plan = choose_direct_plan(s.cog, s.ohw, image_span);
  const IgemmDirectKernel& K = plan.K;
  const SlotMap sm = slot_map(d, s, round_up(s.cog, K.mr));
  const int64_t kg = sm.kgroups(), kfull = 4 * kg;
  const TileUnits tu = tile_units(d, s, tg, plan);
  const int64_t nchunks = tu.per_group, units = d.groups * nchunks;
  const double macs = static_cast<double>(d.groups) * s.cog * wide_total * kfull;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for_macs(macs, true), units));

  const int64_t max_row_off = (d.kernel_h - 1) * d.dilation_h * tg.ow;
  TallInput4 t;
  // The input is vpdpbusd's uint8 operand: int8 x flipped, x ^ 0x80 = x + 128.
  if (!alloc_tall_input4(d, tg, sm, static_cast<uint8_t>(xzp), x_signed ? 0x80 : 0, max_row_off + K.nr + 16, nt,
                         &t))
    return Status::Internal("out of memory");
  std::vector<int64_t> goff(static_cast<size_t>(kg));  // k group (block, kernel row a) -> byte offset
  for (int64_t q = 0; q < kg; ++q)
    goff[q] = 4 * (sm.kblock[q] * t.block_positions + sm.krow[q] * d.dilation_h * tg.ow);
  DirectWeights dw = direct_weights_plan(d, s, sm, K.mr);
  if (!dw.panels) return Status::Internal("out of memory");
  const int32_t xz_eff = xzp + (x_signed ? 128 : 0);
  // Column sums are only multiplied by the effective weight zero points (uint8 w: w_zp - 128).
  bool need_colsum = !w_signed;
  for (int64_t o = 0; wzp && o < (per_channel ? d.c_out : 1); ++o) need_colsum = need_colsum || wzp[o] != 0;
  float rq_lo = 0, rq_hi = 0;
  if (sink) requant_clamp(*sink, &rq_lo, &rq_hi);
  std::atomic<bool> ok{true};
  // A tile lying inside one image's output pixels is stored straight into y
  // (row stride OH*OW); a tile that crosses an image boundary or the gap rows
  // goes through a small scratch tile, whose output pixels are then copied.
  const int64_t esize = sink ? 1 : 4;
  uint8_t* const y_bytes = sink ? static_cast<uint8_t*>(sink->y) : reinterpret_cast<uint8_t*>(y);
  // One parallel region: filling the tall input and packing the weights, then
  // (after the barrier of the second loop) the tiles.
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static) nowait
    for (int64_t u = 0; u < d.groups * t.units(); ++u) fill_tall_unit(d, s, sm, x, t, u);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < d.groups * dw.rows_pad; ++r)
      pack_direct_weight_row(d, s, w, w_signed, wzp, per_channel, xz_eff, r, &dw);
    uint8_t* const tile = static_cast<uint8_t*>(thread_scratch(kBlockAcc, static_cast<size_t>(4 * s.cog * K.nr)));
    if (!tile) ok.store(false);
    // Tile [jt, jt + nv) of group g's wide pixels, all rows; img / start: the image of jt and
    // the wide index of its first output pixel.
    const auto compute_tile = [&](int64_t g, int64_t jt, int nv, int64_t img, int64_t start) {
      const uint8_t* const b = t.data + g * sm.blocks * 4 * t.block_positions + jt * 4;
      const bool direct = jt + nv <= start + s.ohw;
      // The column sums depend on the pixels only: the first row tile keeps them for the others.
      alignas(64) int32_t colsum[kMaxDirectNr];
      for (int64_t i0 = 0; i0 < s.cog; i0 += K.mr) {
        const int mv = static_cast<int>(std::min<int64_t>(K.mr, s.cog - i0));
        const int64_t row = g * s.cog + i0;
        uint8_t* const out = direct ? y_bytes + esize * ((img * d.c_out + row) * s.ohw + (jt - start))
                                    : tile + esize * i0 * K.nr;
        const int64_t ldc = direct ? s.ohw : K.nr;
        const int32_t* const a = dw.panels + (g * dw.rows_pad + i0) * kg;
        if (!sink) {
          K.micro_s32(kg, a, b, goff.data(), dw.za.data() + row, dw.rterm.data() + row, out, ldc, mv, nv, nullptr,
                      colsum, colsum_mode(need_colsum, i0));
          continue;
        }
        const detail::vnni::DirectRequant rq{sink->r->multiplier + row, sink->r->bias ? sink->r->bias + row : nullptr,
                                             sink->r->y_zero_point, rq_lo, rq_hi};
        (sink->y_signed ? K.micro_s8 : K.micro_u8)(kg, a, b, goff.data(), dw.za.data() + row, dw.rterm.data() + row,
                                                     out, ldc, mv, nv, &rq, colsum, colsum_mode(need_colsum, i0));
      }
      if (!direct) emit_wide(d, s, tg, g, tile, K.nr, esize, jt, jt + nv, y_bytes);
    };
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      if (!tile) continue;
      const int64_t g = u / nchunks;
      if (plan.per_image) {
        const int64_t first_image = (u % nchunks) * tu.images;
        for (int64_t img = first_image; img < std::min(d.n, first_image + tu.images); ++img) {
          const int64_t start = tg.first + img * image_span;
          for (int64_t jt = start; jt < start + s.ohw; jt += K.nr)
            compute_tile(g, jt, static_cast<int>(std::min<int64_t>(K.nr, start + s.ohw - jt)), img, start);
        }
        continue;
      }
      const int64_t j0 = tg.first + (u % nchunks) * tu.chunk, j1 = std::min(tg.end, j0 + tu.chunk);
      for (int64_t jt = j0; jt < j1; jt += K.nr) {
        const int64_t img = (jt - tg.first) / image_span;
        compute_tile(g, jt, static_cast<int>(std::min<int64_t>(K.nr, j1 - jt)), img, tg.first + img * image_span);
      }
    }
  }
  if (!ok.load()) return Status::Internal("out of memory");
  return Status::Ok();
}

template <class TX, class TW>
Status conv_impl(const Conv2dDesc& desc, const TX* x, int32_t xzp, const TW* w, const int32_t* wzp,
                 bool per_channel, int32_t* y, const RequantSink* sink = nullptr) {
  Status st = validate(desc);
  if (!st.ok()) return st;
  const Conv2dDesc d = canonical(desc);
  if (d.relu) return Status::Invalid("relu is not supported by conv2d_integer");
  if (!zp_in_range<TX>(xzp))
    return Status::Invalid("x_zero_point " + std::to_string(xzp) + " is outside the range of x's type");
  if (wzp)
    for (int64_t o = 0; o < (per_channel ? d.c_out : 1); ++o)
      if (!zp_in_range<TW>(wzp[o]))
        return Status::Invalid("w_zero_point " + std::to_string(wzp[o]) +
                               " is outside the range of w's type");
  const ConvShape s{d.c_in / d.groups, d.c_out / d.groups, d.c_in / d.groups * d.kernel_h * d.kernel_w,
                    d.out_h * d.out_w, d.h * d.w};
  if (d.n == 0 || d.c_out == 0 || s.ohw == 0) return Status::Ok();
  if (sink ? !sink->y : !y) return Status::Invalid("null output pointer");
  if (s.ntaps == 0) {  // no input channels: every accumulator is 0
    if (!sink) {
      std::memset(y, 0, sizeof(int32_t) * static_cast<size_t>(d.n * d.c_out * s.ohw));
      return Status::Ok();
    }
    const std::vector<int32_t> zeros(static_cast<size_t>(s.ohw), 0);
    for (int64_t img = 0; img < d.n; ++img)
      for (int64_t g = 0; g < d.groups; ++g)
        for (int64_t o = 0; o < s.cog; ++o)
          emit_block(conv_unit_sink(*sink, d, s, img, g, 0), zeros.data(), 0, 1, s.ohw, o, 0);
    return Status::Ok();
  }
  if (!x || !w) return Status::Invalid("null x or w pointer");
  const bool tall = d.stride_h == 1 && d.stride_w == 1 && d.kernel_w <= detail::vnni::kMaxTallCopies && resolve_path() == IgemmPath::vnni &&
                    tall_layout_fits(d);
  if (tall)
    return conv_direct_vnni(d, s, reinterpret_cast<const uint8_t*>(x), is_signed_t<TX>(), xzp,
                            reinterpret_cast<const uint8_t*>(w), is_signed_t<TW>(), wzp, per_channel, y, sink);
  const IgemmKernel K = choose_kernel(s.cog, s.ohw);
  const bool vnni = K.fmt == IgemmFormat::vnni;
  const bool w_signed = is_signed_t<TW>(), x_signed = is_signed_t<TX>();
  const int64_t kpad = round_up(s.ntaps, K.group);
  // Weights (A) packed once: per group ceil(cog / MR) panels.
  const int64_t apanel_rows = round_up(s.cog, K.mr);
  const int64_t abytes = apanel_rows * kpad * K.esize;
  AlignedBuffer<char> pa(static_cast<size_t>(abytes * d.groups));
  if (pa.empty()) return Status::Internal("out of memory");
  std::vector<int32_t> za(static_cast<size_t>(d.c_out)), rowsum(static_cast<size_t>(d.c_out));
  for (int64_t o = 0; o < d.c_out; ++o)
    za[o] = (wzp ? wzp[per_channel ? o : 0] : 0) + (vnni && w_signed ? 128 : 0);
  bool za_zero = true;
  for (int32_t v : za) za_zero = za_zero && v == 0;
  for (int64_t g = 0; g < d.groups; ++g)
    pack_a(K, reinterpret_cast<const uint8_t*>(w) + g * s.cog * s.ntaps, s.ntaps, w_signed, s.cog,
           s.ntaps, kpad, za.data() + g * s.cog, pa.get() + g * abytes,
           vnni ? rowsum.data() + g * s.cog : nullptr);
  const int32_t zb_eff = xzp - (vnni && !x_signed ? 128 : 0);
  // Work units: (image, group, column chunk); chunks keep the tap matrix in L2.
  const int64_t chunk_target = std::max<int64_t>(K.nr, round_up(std::max<int64_t>(1, (256 * 1024) / std::max<int64_t>(1, s.ntaps)), K.nr));
  const int64_t chunk = std::min(round_up(s.ohw, K.nr), chunk_target);
  const int64_t nchunks = (s.ohw + chunk - 1) / chunk;
  const int64_t units = d.n * d.groups * nchunks;
  const double macs = static_cast<double>(d.n) * d.c_out * s.ohw * s.ntaps;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for_macs(macs, true), units));
  const Blocking bl = blocking_for(K, kpad);
  std::atomic<bool> ok{true};
  const uint8_t pad = static_cast<uint8_t>(xzp);
#pragma omp parallel num_threads(nt)
  {
    ConvScratch sc;
    bool mine = true;
    try {
      sc.col.resize(static_cast<size_t>(s.ntaps * chunk));
      sc.colsum.resize(static_cast<size_t>(chunk));
      sc.colterm.resize(static_cast<size_t>(chunk));
      sc.zb.assign(static_cast<size_t>(chunk), zb_eff);
      sc.zbi16.assign(static_cast<size_t>(chunk), xzp);
      if (sink) sc.acc.resize(static_cast<size_t>(s.cog * chunk));
      mine = sc.pb.allocate(static_cast<size_t>(chunk * kpad * K.esize));
    } catch (...) {
      mine = false;
    }
    if (!mine) ok.store(false);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      if (!mine) continue;
      const int64_t img = u / (d.groups * nchunks), g = (u / nchunks) % d.groups, ch = u % nchunks;
      const int64_t j0 = ch * chunk, j1 = std::min(s.ohw, j0 + chunk);
      const uint8_t* xg = reinterpret_cast<const uint8_t*>(x) + (img * d.c_in + g * s.cg) * s.hw;
      im2col_u8(d, s, xg, pad, j0, j1, sc.col.data(), j1 - j0);
      pack_b(K, sc.col.data(), j1 - j0, x_signed, s.ntaps, j1 - j0, kpad, sc.zbi16.data(), sc.pb.get(),
             vnni ? sc.colsum.data() : nullptr);
      Problem P;
      P.K = K;
      P.k = s.ntaps;
      P.kpad = kpad;
      P.pb = sc.pb.get();
      if (vnni) {
        for (int64_t j = 0; j < j1 - j0; ++j)
          sc.colterm[j] = static_cast<int32_t>(static_cast<uint32_t>(sc.colsum[j]) -
                                               static_cast<uint32_t>(s.ntaps) * static_cast<uint32_t>(zb_eff));
        P.colterm = za_zero ? nullptr : sc.colterm.data();
        P.zb = zb_eff == 0 ? nullptr : sc.zb.data();
      }
      P.c = sink ? sc.acc.data() : y + (img * d.c_out + g * s.cog) * s.ohw + j0;
      P.ldc = sink ? j1 - j0 : s.ohw;
      for (int64_t i0 = 0; i0 < s.cog; i0 += bl.mb) {
        const int64_t mb = std::min(bl.mb, s.cog - i0);
        compute_rows(P, bl, pa.get() + g * abytes + i0 * kpad * K.esize, za.data() + g * s.cog + i0,
                     vnni ? rowsum.data() + g * s.cog + i0 : nullptr, i0, mb, 0, j1 - j0);
      }
      if (sink) emit_block(conv_unit_sink(*sink, d, s, img, g, j0), P.c, P.ldc, s.cog, j1 - j0, 0, 0);
    }
  }
  if (!ok.load()) return Status::Internal("out of memory");
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------- public API
PackedIntB::PackedIntB() : impl_(new detail::PackedIntBImpl) {}
PackedIntB::~PackedIntB() = default;
PackedIntB::PackedIntB(PackedIntB&&) noexcept = default;
PackedIntB& PackedIntB::operator=(PackedIntB&&) noexcept = default;
bool PackedIntB::empty() const { return !impl_ || (impl_->data.empty() && impl_->k * impl_->n != 0) || impl_->K.micro == nullptr; }
int64_t PackedIntB::k() const { return impl_ ? impl_->k : 0; }
int64_t PackedIntB::n() const { return impl_ ? impl_->n : 0; }
bool PackedIntB::b_signed() const { return impl_ ? impl_->b_signed : true; }
int64_t PackedIntB::bytes() const {
  if (!impl_ || impl_->K.micro == nullptr) return 0;
  const auto& K = impl_->K;
  return round_up(impl_->n, K.nr) * impl_->kpad * K.esize +
         static_cast<int64_t>(sizeof(int32_t) * (impl_->zb.size() + impl_->colterm.size()));
}

#define LEPTON_MATMUL(TA, TB)                                                                  \
  Status matmul_integer(const MatmulIntegerDesc& d, const TA* a, const TB* b,                  \
                        const int32_t* bzp, int32_t* c) {                                      \
    return guarded([&] { return matmul_impl(d, a, b, bzp, c); });                              \
  }
LEPTON_MATMUL(uint8_t, int8_t)
LEPTON_MATMUL(uint8_t, uint8_t)
LEPTON_MATMUL(int8_t, int8_t)
LEPTON_MATMUL(int8_t, uint8_t)
#undef LEPTON_MATMUL

Status pack_matmul_integer_b(int64_t k, int64_t n, const int8_t* b, int64_t ldb,
                             const int32_t* bzp, bool per_column, PackedIntB* out) {
  return guarded([&] { return pack_impl(k, n, b, ldb, bzp, per_column, out); });
}
Status pack_matmul_integer_b(int64_t k, int64_t n, const uint8_t* b, int64_t ldb,
                             const int32_t* bzp, bool per_column, PackedIntB* out) {
  return guarded([&] { return pack_impl(k, n, b, ldb, bzp, per_column, out); });
}
Status matmul_integer_packed(const MatmulIntegerDesc& d, const uint8_t* a, const PackedIntB& b,
                             int32_t* c) {
  return guarded([&] { return packed_impl(d, a, b, c); });
}
Status matmul_integer_packed(const MatmulIntegerDesc& d, const int8_t* a, const PackedIntB& b,
                             int32_t* c) {
  return guarded([&] { return packed_impl(d, a, b, c); });
}

#define LEPTON_CONV(TX, TW)                                                                    \
  Status conv2d_integer(const Conv2dDesc& d, const TX* x, int32_t xzp, const TW* w,            \
                        const int32_t* wzp, bool per_channel, int32_t* y) {                    \
    return guarded([&] { return conv_impl(d, x, xzp, w, wzp, per_channel, y); });              \
  }
LEPTON_CONV(uint8_t, int8_t)
LEPTON_CONV(uint8_t, uint8_t)
LEPTON_CONV(int8_t, int8_t)
LEPTON_CONV(int8_t, uint8_t)
#undef LEPTON_CONV

// ---------------------------------------------------------------- requantizing ops
template <class TA, class TB, class TY>
Status qlinear_matmul(const MatmulIntegerDesc& d, const TA* a, const TB* b, const int32_t* bzp,
                      const Requant& r, TY* y) {
  return guarded([&] {
    Status st = check_requant<TY>(r, d.n);
    if (!st.ok()) return st;
    const RequantSink sink = matmul_sink(r, y, d.ldc);
    return matmul_impl(d, a, b, bzp, nullptr, &sink);
  });
}

template <class TA, class TY>
Status qlinear_matmul_packed(const MatmulIntegerDesc& d, const TA* a, const PackedIntB& b, const Requant& r,
                             TY* y) {
  return guarded([&] {
    Status st = check_requant<TY>(r, d.n);
    if (!st.ok()) return st;
    const RequantSink sink = matmul_sink(r, y, d.ldc);
    return packed_impl(d, a, b, nullptr, &sink);
  });
}

template <class TX, class TW, class TY>
Status qlinear_conv2d(const Conv2dDesc& d, const TX* x, int32_t xzp, const TW* w, const int32_t* wzp,
                      bool per_channel, const Requant& r, TY* y) {
  return guarded([&] {
    Status st = check_requant<TY>(r, d.c_out);
    if (!st.ok()) return st;
    RequantSink sink = matmul_sink(r, y, 0);  // geometry filled per block
    return conv_impl(d, x, xzp, w, wzp, per_channel, nullptr, &sink);
  });
}

#define LEPTON_QLINEAR(TA, TB, TY)                                                                  \
  template Status qlinear_matmul<TA, TB, TY>(const MatmulIntegerDesc&, const TA*, const TB*,       \
                                             const int32_t*, const Requant&, TY*);                 \
  template Status qlinear_conv2d<TA, TB, TY>(const Conv2dDesc&, const TA*, int32_t, const TB*,     \
                                             const int32_t*, bool, const Requant&, TY*);
LEPTON_QLINEAR(uint8_t, int8_t, uint8_t)
LEPTON_QLINEAR(uint8_t, int8_t, int8_t)
LEPTON_QLINEAR(uint8_t, uint8_t, uint8_t)
LEPTON_QLINEAR(uint8_t, uint8_t, int8_t)
LEPTON_QLINEAR(int8_t, int8_t, uint8_t)
LEPTON_QLINEAR(int8_t, int8_t, int8_t)
LEPTON_QLINEAR(int8_t, uint8_t, uint8_t)
LEPTON_QLINEAR(int8_t, uint8_t, int8_t)
#undef LEPTON_QLINEAR
template Status qlinear_matmul_packed<uint8_t, uint8_t>(const MatmulIntegerDesc&, const uint8_t*,
                                                        const PackedIntB&, const Requant&, uint8_t*);
template Status qlinear_matmul_packed<uint8_t, int8_t>(const MatmulIntegerDesc&, const uint8_t*,
                                                       const PackedIntB&, const Requant&, int8_t*);
template Status qlinear_matmul_packed<int8_t, uint8_t>(const MatmulIntegerDesc&, const int8_t*,
                                                       const PackedIntB&, const Requant&, uint8_t*);
template Status qlinear_matmul_packed<int8_t, int8_t>(const MatmulIntegerDesc&, const int8_t*,
                                                      const PackedIntB&, const Requant&, int8_t*);

Status set_igemm_path(IgemmPath p) {
  switch (p) {
    case IgemmPath::automatic:
    case IgemmPath::generic: break;
    case IgemmPath::avx2:
      if (!cpu_has_avx2()) return Status::Invalid("the avx2 integer GEMM needs AVX2");
      break;
    case IgemmPath::vnni:
      if (!has_vnni()) return Status::Invalid("the vnni integer GEMM needs AVX-512 VNNI");
      break;
    default: return Status::Invalid("unknown integer GEMM path");
  }
  g_forced_path.store(static_cast<int>(p), std::memory_order_relaxed);
  return Status::Ok();
}

IgemmPath active_igemm_path() { return resolve_path(); }

namespace detail {
void igemm_force_variant(int v) { g_forced_variant.store(v, std::memory_order_relaxed); }
}  // namespace detail

}  // namespace lepton
