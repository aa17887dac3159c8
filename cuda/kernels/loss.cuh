// cuda/kernels/loss.cuh -- fused cross-entropy (log-softmax + NLL) with class weights,
// ignore_index and label smoothing: per-row losses and d loss_i / d logits.
//
// Device code only, with no #include at all: nvcc (through cuda/loss.cu) and CuPy's
// NVRTC compile this same text. Semantics: csrc/lepton/loss.h (the eps terms are
// skipped when eps == 0). Layout: logits / dlogits (n, c) row-major, target int64 (n,),
// weight (c,) or null (all ones), dlogits null = no gradient.
//
// Kernels (extern "C"; SFX = f32 | f64):
//   lk_cross_entropy_SFX(logits, target, weight, losses, dlogits, n, c, ignore_index, eps)
// One block per row (grid-stride over rows), blockDim.x <= LK_CE_THREADS (any value).
// Max, sum of exp and the smoothing sums are reduced in double by a fixed tree in shared
// memory (no atomics): the result depends only on blockDim.x, the same bit for bit from
// run to run. A target outside [0, c) that is not ignore_index is never used as an
// address: its row gets NaN loss and NaN gradient (lepton_kernels.ops rejects such
// targets before any backend runs).
#ifndef LEPTON_CUDA_KERNELS_LOSS_CUH
#define LEPTON_CUDA_KERNELS_LOSS_CUH

#define LK_CE_THREADS 256

namespace lk_loss {

struct MaxOp {  // a NaN anywhere wins, so a NaN logit makes the row NaN
  __device__ static double apply(double a, double b) { return (b > a || b != b) ? b : a; }
};
struct SumOp {
  __device__ static double apply(double a, double b) { return a + b; }
};

// All threads of the block get the reduction of their `v`; folds the upper half onto
// the lower half, so any block size works and the order is fixed by blockDim.x.
template <typename Op>
__device__ double block_reduce(double v, double* buf) {
  const unsigned tid = threadIdx.x;
  buf[tid] = v;
  __syncthreads();
  for (unsigned active = blockDim.x; active > 1;) {
    const unsigned half = (active + 1) / 2;
    if (tid < active - half) buf[tid] = Op::apply(buf[tid], buf[tid + half]);
    __syncthreads();
    active = half;
  }
  const double r = buf[0];
  __syncthreads();  // buf is reused by the next reduction
  return r;
}

template <typename T>
__device__ void cross_entropy(const T* __restrict__ logits, const long long* __restrict__ target,
                              const T* __restrict__ weight, T* __restrict__ losses, T* __restrict__ dlogits,
                              long long n, long long c, long long ignore_index, double eps) {
  __shared__ double buf[LK_CE_THREADS];
  if (blockDim.x > LK_CE_THREADS) return;  // launch error of the caller; never write out of bounds
  const long long tid = threadIdx.x, nt = blockDim.x;
  const double nan = __longlong_as_double(0x7ff8000000000000ll);
  for (long long row = blockIdx.x; row < n; row += gridDim.x) {  // uniform per block
    const T* z = logits + row * c;
    T* dl = dlogits ? dlogits + row * c : nullptr;
    const long long t = target[row];
    if (t == ignore_index || t < 0 || t >= c) {
      const T fill = static_cast<T>(t == ignore_index ? 0.0 : nan);
      if (dl)
        for (long long j = tid; j < c; j += nt) dl[j] = fill;
      if (tid == 0) losses[row] = fill;
      continue;
    }
    double m = -__longlong_as_double(0x7ff0000000000000ll);  // -inf
    for (long long j = tid; j < c; j += nt) m = MaxOp::apply(m, static_cast<double>(z[j]));
    const double zmax = block_reduce<MaxOp>(m, buf);
    double s = 0.0;
    for (long long j = tid; j < c; j += nt) s += exp(static_cast<double>(z[j]) - zmax);
    const double total = block_reduce<SumOp>(s, buf);
    const double lse = log(total) + zmax;
    const double w_t = weight ? static_cast<double>(weight[t]) : 1.0;
    double q_sum = (1.0 - eps) * w_t;
    double loss = -(1.0 - eps) * w_t * (static_cast<double>(z[t]) - lse);
    const double smooth = eps / static_cast<double>(c);
    if (eps != 0.0) {  // uniform: eps is a kernel argument
      double sw = 0.0, swz = 0.0;
      for (long long j = tid; j < c; j += nt) {
        const double w = weight ? static_cast<double>(weight[j]) : 1.0;
        sw += w;
        swz += w * (static_cast<double>(z[j]) - lse);
      }
      sw = block_reduce<SumOp>(sw, buf);
      swz = block_reduce<SumOp>(swz, buf);
      q_sum += smooth * sw;
      loss -= smooth * swz;
    }
    if (tid == 0) losses[row] = static_cast<T>(loss);
    if (dl) {
      for (long long j = tid; j < c; j += nt) {
        const double w = weight ? static_cast<double>(weight[j]) : 1.0;
        const double q = smooth * w + (j == t ? (1.0 - eps) * w_t : 0.0);
        dl[j] = static_cast<T>(exp(static_cast<double>(z[j]) - lse) * q_sum - q);
      }
    }
  }
}

}  // namespace lk_loss

#define LK_LOSS_DEFINE(SFX, T)                                                                      \
  extern "C" __global__ void lk_cross_entropy_##SFX(const T* logits, const long long* target,        \
                                                    const T* weight, T* losses, T* dlogits,          \
                                                    long long n, long long c, long long ignore_index, \
                                                    double eps) {                                    \
    lk_loss::cross_entropy<T>(logits, target, weight, losses, dlogits, n, c, ignore_index, eps);     \
  }

LK_LOSS_DEFINE(f32, float)
LK_LOSS_DEFINE(f64, double)

#undef LK_LOSS_DEFINE

#endif  // LEPTON_CUDA_KERNELS_LOSS_CUH
