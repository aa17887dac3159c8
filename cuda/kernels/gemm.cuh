// cuda/kernels/gemm.cuh -- tiled GEMM core (shared-memory tiles, register micro-tiles)
// and the dense products built on it: matmul, linear forward, linear backward, plus
// the fixed-order (masked) bias-gradient reduction shared with the convolutions.
//
// Device code only, with no host #include: nvcc (through cuda/gemm.cu) and CuPy's
// NVRTC (lepton_kernels.cupy_backend) compile this same text; cuda/kernels/conv.cuh
// includes it for the implicit-GEMM convolutions. Semantics: csrc/lepton/linear.h.
// Layouts: dense row-major. g' = (y <= 0 ? 0 : g) when the ReLU output y is given
// (a NaN output passes its gradient), applied while loading the g tiles.
//
// Kernels (extern "C"; SFX = f32 | f64 with the large tile of the dtype, s_f32 | s_f64
// with the small one, see TileL/TileS; all run with exactly LK_GEMM_THREADS threads
// in a 1-D block; grid.x covers column tiles, grid.y (row tiles) and grid.z (groups)
// are walked grid-stride, so they may be clamped to 65535):
//   lk_matmul_SFX(a, b, c, m, k, n)                  c (m,n) = a (m,k) @ b (k,n)
//   lk_linear_SFX(x, w, bias_or_null, y, m, k, n, relu)   y = act(x @ w^T + bias)
//   lk_linear_grad_x_SFX(g, y_or_null, w, gx, m, k, n)    gx (m,k) = g' @ w
//   lk_linear_grad_w_SFX(g, y_or_null, x, gw, m, k, n)    gw (n,k) = g'^T @ x
//   lk_bias_grad_SFX(g, y_or_null, gb, n, c, s)     SFX = f32 | f64 only; any 1-D grid
//                             gb[ch] = sum over (b, j) of g'[b, ch, j] (fixed order)
// Sizes are long long in the signatures; the launchers guarantee every GEMM
// dimension is below 2^31 - 2^12 (index math is 32-bit, memory offsets 64-bit).
// Every reduction runs inside one thread in a fixed order (no atomics, no split-K),
// so results are bit-identical from run to run.
#ifndef LEPTON_CUDA_KERNELS_GEMM_CUH
#define LEPTON_CUDA_KERNELS_GEMM_CUH

#define LK_GEMM_THREADS 256

namespace lk_gemm {

typedef long long ll;

// Block tile BM x BN, K step BK, TM x TN accumulators per thread. The thread grid is
// (BM/TM) x (BN/TN) = 256; a thread owns rows ty + i*(BM/TM) and columns
// tx + j*(BN/TN): strided, so a warp's shared-memory reads hit distinct banks and its
// global stores of one j are consecutive columns (coalesced).
template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int TY = BM / TM, TX = BN / TN;
  static constexpr int THREADS = TY * TX;
  static constexpr int PAD = 4;  // breaks the bank conflicts of k-fast tile stores
  static_assert(THREADS == LK_GEMM_THREADS, "a tile uses exactly LK_GEMM_THREADS threads");
  static_assert(THREADS % BK == 0 && BM % (THREADS / BK) == 0 && BN % (THREADS / BK) == 0,
                "k-fast loads must cover the tile");
  static_assert(THREADS % BM == 0 && THREADS % BN == 0, "outer-fast loads must cover the tile");
};

// Large and small tile per dtype (launchers pick small when large tiles would leave
// the GPU mostly idle; see tile choice in cuda/launch.h).
template <typename T>
struct TileL;
template <typename T>
struct TileS;
template <>
struct TileL<float> : Tile<128, 128, 8, 8, 8> {};
template <>
struct TileS<float> : Tile<64, 64, 8, 4, 4> {};
template <>
struct TileL<double> : Tile<64, 64, 8, 4, 4> {};
template <>
struct TileS<double> : Tile<32, 32, 8, 2, 2> {};

// g' for the ReLU backward: the forward output y masks g where y <= 0 (NaN passes).
template <typename T>
__device__ __forceinline__ T masked(const T* __restrict__ g, const T* __restrict__ y, ll i) {
  const T v = g[i];
  return (y != nullptr && y[i] <= T(0)) ? T(0) : v;
}

// ---------------------------------------------------------------- operand loaders
//
// A loader describes one operand as a function of (outer, k): outer is the row m for
// A and the column n for B. It splits the address math into a per-outer part (fixed
// for a thread during a whole tile) and a per-k part, and reads 0 outside the
// operand (and for padding taps). kKFast says which index is contiguous in memory:
// the tile loads make consecutive threads walk that index (coalescing).

// Strided dense matrix p[outer*so + k*sk], optionally masked by y (same indexing).
template <typename T, bool KFast>
struct Mat {
  static constexpr bool kKFast = KFast;
  const T* p;
  const T* y;  // null: no mask
  ll so, sk;
  int rows, K;
  struct Outer {
    ll off;
    bool ok;
  };
  struct Kst {
    ll off;
    bool ok;
  };
  __device__ Outer outer(int o) const { return {static_cast<ll>(o) * so, o < rows}; }
  __device__ Kst kst(int k) const { return {static_cast<ll>(k) * sk, k < K}; }
  __device__ T load(const Outer& o, const Kst& k) const {
    return (o.ok && k.ok) ? masked(p, y, o.off + k.off) : T(0);
  }
};

// ---------------------------------------------------------------- epilogues

// Dense row-major C[row*ldc + col] + optional per-column bias, optional ReLU.
template <typename T>
struct DenseOut {
  T* c;
  const T* bias;  // per column, or null
  ll ldc;
  int relu;
  struct Col {
    int col;
  };
  __device__ Col col(int n) const { return {n}; }
  __device__ void store(int row, const Col& cs, T v) const {
    if (bias != nullptr) v += bias[cs.col];
    if (relu) v = v <= T(0) ? T(0) : v;  // NaN stays NaN
    c[static_cast<ll>(row) * ldc + cs.col] = v;
  }
};

// ---------------------------------------------------------------- the mainloop

// One BM x BN tile of C = op(A) @ op(B) with K-loop double buffering: the next K step
// is loaded into registers while the current one is multiplied out of shared memory.
// Rows >= M / columns >= N are computed from zeros and not stored. Must be reached by
// all LK_GEMM_THREADS threads of the block (it synchronizes).
template <class C, typename T, class LA, class LB, class Ep>
__device__ void gemm_tile(const LA& la, const LB& lb, const Ep& ep, int M, int N, int K, int m0,
                          int n0) {
  constexpr int BM = C::BM, BN = C::BN, BK = C::BK, TM = C::TM, TN = C::TN;
  constexpr int NT = C::THREADS;
  constexpr int RA = BM * BK / NT, RB = BN * BK / NT;  // tile elements each thread loads
  __shared__ T As[2][BK][BM + C::PAD];
  __shared__ T Bs[2][BK][BN + C::PAD];
  const int t = static_cast<int>(threadIdx.x);

  // Slot r of this thread covers (outer, k) = (o_base + r*o_step, k_base + r*k_step)
  // inside the tile: k-fast loaders step the outer index, outer-fast ones step k.
  const int a_o = LA::kKFast ? t / BK : t % BM;
  const int a_k = LA::kKFast ? t % BK : t / BM;
  const int a_os = LA::kKFast ? NT / BK : 0;
  const int a_ks = LA::kKFast ? 0 : NT / BM;
  const int b_o = LB::kKFast ? t / BK : t % BN;
  const int b_k = LB::kKFast ? t % BK : t / BN;
  const int b_os = LB::kKFast ? NT / BK : 0;
  const int b_ks = LB::kKFast ? 0 : NT / BN;

  typename LA::Outer ao[RA];
  typename LB::Outer bo[RB];
#pragma unroll
  for (int r = 0; r < RA; ++r) ao[r] = la.outer(m0 + a_o + r * a_os);
#pragma unroll
  for (int r = 0; r < RB; ++r) bo[r] = lb.outer(n0 + b_o + r * b_os);

  T ra[RA], rb[RB];
  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  const int ktiles = (K + BK - 1) / BK;
  // Prologue: tile 0 into buffer 0 (all zeros when K == 0; nothing is then read).
#pragma unroll
  for (int r = 0; r < RA; ++r) ra[r] = la.load(ao[r], la.kst(a_k + r * a_ks));
#pragma unroll
  for (int r = 0; r < RB; ++r) rb[r] = lb.load(bo[r], lb.kst(b_k + r * b_ks));
#pragma unroll
  for (int r = 0; r < RA; ++r) As[0][a_k + r * a_ks][a_o + r * a_os] = ra[r];
#pragma unroll
  for (int r = 0; r < RB; ++r) Bs[0][b_k + r * b_ks][b_o + r * b_os] = rb[r];
  __syncthreads();

  const int ty = t / C::TX, tx = t % C::TX;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < ktiles;
    if (more) {
      const int k0 = (kt + 1) * BK;
#pragma unroll
      for (int r = 0; r < RA; ++r) ra[r] = la.load(ao[r], la.kst(k0 + a_k + r * a_ks));
#pragma unroll
      for (int r = 0; r < RB; ++r) rb[r] = lb.load(bo[r], lb.kst(k0 + b_k + r * b_ks));
    }
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = As[cur][kk][ty + i * C::TY];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[cur][kk][tx + j * C::TX];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
    }
    // The other buffer was last read in step kt-1, which every thread finished
    // before the barrier that ended it; the barrier below publishes the new tile.
    if (more) {
#pragma unroll
      for (int r = 0; r < RA; ++r) As[cur ^ 1][a_k + r * a_ks][a_o + r * a_os] = ra[r];
#pragma unroll
      for (int r = 0; r < RB; ++r) Bs[cur ^ 1][b_k + r * b_ks][b_o + r * b_os] = rb[r];
    }
    __syncthreads();
  }

#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int n = n0 + tx + j * C::TX;
    if (n >= N) continue;
    const typename Ep::Col cs = ep.col(n);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int m = m0 + ty + i * C::TY;
      if (m < M) ep.store(m, cs, acc[i][j]);
    }
  }
}

// Walks the row tiles (grid.y) and groups (grid.z) grid-stride; grid.x is the column
// tile. make(g) returns the (A loader, B loader, epilogue) of group g.
template <class C, typename T, class Make>
__device__ void gemm_grid(const Make& make, int M, int N, int K, int groups) {
  if (blockDim.x != C::THREADS) return;  // a launch error of the caller: compute nothing
  const int mtiles = (M + C::BM - 1) / C::BM;
  const int n0 = static_cast<int>(blockIdx.x) * C::BN;
  if (n0 >= N) return;  // uniform per block
  for (int g = static_cast<int>(blockIdx.z); g < groups; g += static_cast<int>(gridDim.z)) {
    for (int tm = static_cast<int>(blockIdx.y); tm < mtiles; tm += static_cast<int>(gridDim.y)) {
      typename Make::A la;
      typename Make::B lb;
      typename Make::E ep;
      make(g, la, lb, ep);
      gemm_tile<C, T>(la, lb, ep, M, N, K, tm * C::BM, n0);
    }
  }
}

// ---------------------------------------------------------------- dense products

template <typename T>
struct MatmulMake {
  typedef Mat<T, true> A;
  typedef Mat<T, false> B;
  typedef DenseOut<T> E;
  const T* a;
  const T* b;
  T* c;
  int m, k, n;
  __device__ void operator()(int, A& la, B& lb, E& ep) const {
    la = {a, nullptr, k, 1, m, k};   // a[m*k + kk]
    lb = {b, nullptr, 1, n, n, k};   // b[kk*n + col]
    ep = {c, nullptr, n, 0};
  }
};

template <typename T>
struct LinearMake {
  typedef Mat<T, true> A;
  typedef Mat<T, true> B;
  typedef DenseOut<T> E;
  const T* x;
  const T* w;
  const T* bias;
  T* y;
  int m, k, n, relu;
  __device__ void operator()(int, A& la, B& lb, E& ep) const {
    la = {x, nullptr, k, 1, m, k};   // x[row*k + kk]
    lb = {w, nullptr, k, 1, n, k};   // w[col*k + kk]
    ep = {y, bias, n, relu};
  }
};

// gx (m, k) = g' (m, n) @ w (n, k): GEMM (M, N, K) = (m, k, n).
template <typename T>
struct LinearGradXMake {
  typedef Mat<T, true> A;
  typedef Mat<T, false> B;
  typedef DenseOut<T> E;
  const T* g;
  const T* y;
  const T* w;
  T* gx;
  int m, k, n;
  __device__ void operator()(int, A& la, B& lb, E& ep) const {
    la = {g, y, n, 1, m, n};         // g[row*n + j]
    lb = {w, nullptr, 1, k, k, n};   // w[j*k + col]
    ep = {gx, nullptr, k, 0};
  }
};

// gw (n, k) = g'^T (n, m) @ x (m, k): GEMM (M, N, K) = (n, k, m).
template <typename T>
struct LinearGradWMake {
  typedef Mat<T, false> A;
  typedef Mat<T, false> B;
  typedef DenseOut<T> E;
  const T* g;
  const T* y;
  const T* x;
  T* gw;
  int m, k, n;
  __device__ void operator()(int, A& la, B& lb, E& ep) const {
    la = {g, y, 1, n, n, m};         // g[i*n + row]
    lb = {x, nullptr, 1, k, k, m};   // x[i*k + col]
    ep = {gw, nullptr, k, 0};
  }
};

// ---------------------------------------------------------------- bias gradient

// gb[ch] = sum over (b, j) of g'[b, ch, j] for g viewed as (n, c, s). Accumulates in
// double; every sum runs in an order fixed by the sizes alone (no atomics).
// s == 1 (linear layers, 1x1 outputs): a block takes 32 channels; its 8 warps sum
// rows b = w, w + 8, ... of consecutive channels (coalesced), then warp 0 adds the
// 8 partial sums in order. s > 1: a block per channel, threads stride over the
// (b, j) elements, then a fixed-shape tree in shared memory.
template <typename T>
__device__ void bias_grad(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ gb,
                          ll n, ll c, ll s) {
  constexpr int NT = LK_GEMM_THREADS;
  __shared__ double buf[NT];
  if (blockDim.x != NT) return;
  const int tid = static_cast<int>(threadIdx.x);
  if (s == 1) {
    const int lane = tid & 31, part = tid >> 5;
    for (ll c0 = static_cast<ll>(blockIdx.x) * 32; c0 < c; c0 += static_cast<ll>(gridDim.x) * 32) {
      const ll ch = c0 + lane;
      double acc = 0.0;
      if (ch < c) {
        for (ll b = part; b < n; b += NT / 32) acc += static_cast<double>(masked(g, y, b * c + ch));
      }
      buf[tid] = acc;
      __syncthreads();
      if (part == 0 && ch < c) {
        double sum = 0.0;
        for (int p = 0; p < NT / 32; ++p) sum += buf[p * 32 + lane];
        gb[ch] = static_cast<T>(sum);
      }
      __syncthreads();
    }
    return;
  }
  for (ll ch = blockIdx.x; ch < c; ch += gridDim.x) {
    double acc = 0.0;
    if (s >= NT) {
      for (ll b = 0; b < n; ++b) {
        const ll row = (b * c + ch) * s;
        for (ll j = tid; j < s; j += NT) acc += static_cast<double>(masked(g, y, row + j));
      }
    } else {
      const ll total = n * s;
      for (ll e = tid; e < total; e += NT) {
        const ll b = e / s, j = e - b * s;
        acc += static_cast<double>(masked(g, y, (b * c + ch) * s + j));
      }
    }
    buf[tid] = acc;
    __syncthreads();
    for (int half = NT / 2; half > 0; half /= 2) {
      if (tid < half) buf[tid] += buf[tid + half];
      __syncthreads();
    }
    if (tid == 0) gb[ch] = static_cast<T>(buf[0]);
    __syncthreads();  // buf is reused by the next channel
  }
}

}  // namespace lk_gemm

// One set of dense-product kernels per (suffix, dtype, tile): SFX is f32 / f64 for
// the large tile and s_f32 / s_f64 for the small one.
#define LK_GEMM_DEFINE(SFX, T, TILE)                                                             \
  extern "C" __global__ void lk_matmul_##SFX(const T* a, const T* b, T* c, long long m,          \
                                             long long k, long long n) {                         \
    const lk_gemm::MatmulMake<T> mk{a, b, c, static_cast<int>(m), static_cast<int>(k),           \
                                    static_cast<int>(n)};                                        \
    lk_gemm::gemm_grid<lk_gemm::TILE<T>, T>(mk, mk.m, mk.n, mk.k, 1);                             \
  }                                                                                              \
  extern "C" __global__ void lk_linear_##SFX(const T* x, const T* w, const T* bias, T* y,         \
                                             long long m, long long k, long long n, int relu) {  \
    const lk_gemm::LinearMake<T> mk{x, w, bias, y, static_cast<int>(m), static_cast<int>(k),     \
                                    static_cast<int>(n), relu};                                  \
    lk_gemm::gemm_grid<lk_gemm::TILE<T>, T>(mk, mk.m, mk.n, mk.k, 1);                             \
  }                                                                                              \
  extern "C" __global__ void lk_linear_grad_x_##SFX(const T* g, const T* y, const T* w, T* gx,    \
                                                    long long m, long long k, long long n) {     \
    const lk_gemm::LinearGradXMake<T> mk{g, y, w, gx, static_cast<int>(m), static_cast<int>(k),  \
                                         static_cast<int>(n)};                                   \
    lk_gemm::gemm_grid<lk_gemm::TILE<T>, T>(mk, mk.m, mk.k, mk.n, 1);                             \
  }                                                                                              \
  extern "C" __global__ void lk_linear_grad_w_##SFX(const T* g, const T* y, const T* x, T* gw,    \
                                                    long long m, long long k, long long n) {     \
    const lk_gemm::LinearGradWMake<T> mk{g, y, x, gw, static_cast<int>(m), static_cast<int>(k),  \
                                         static_cast<int>(n)};                                   \
    lk_gemm::gemm_grid<lk_gemm::TILE<T>, T>(mk, mk.n, mk.k, mk.m, 1);                             \
  }

#define LK_BIAS_GRAD_DEFINE(SFX, T)                                                              \
  extern "C" __global__ void lk_bias_grad_##SFX(const T* g, const T* y, T* gb, long long n,      \
                                                long long c, long long s) {                      \
    lk_gemm::bias_grad<T>(g, y, gb, n, c, s);                                                    \
  }

// cuda/conv.cu defines LK_GEMM_NO_ENTRIES: it needs the templates, while the entry
// points above are compiled once, in cuda/gemm.cu (no duplicate symbols at link).
#ifndef LK_GEMM_NO_ENTRIES
LK_GEMM_DEFINE(f32, float, TileL)
LK_GEMM_DEFINE(s_f32, float, TileS)
LK_GEMM_DEFINE(f64, double, TileL)
LK_GEMM_DEFINE(s_f64, double, TileS)
LK_BIAS_GRAD_DEFINE(f32, float)
LK_BIAS_GRAD_DEFINE(f64, double)
#endif

#undef LK_GEMM_DEFINE
#undef LK_BIAS_GRAD_DEFINE

#endif  // LEPTON_CUDA_KERNELS_GEMM_CUH
