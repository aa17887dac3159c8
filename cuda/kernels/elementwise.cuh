// cuda/kernels/elementwise.cuh -- ReLU and fused bias+ReLU kernels, forward and backward.
//
// Device code only, with no #include at all: nvcc (through cuda/elementwise.cu) and
// CuPy's NVRTC (lepton_kernels.cupy_backend) compile this same text. Semantics are
// those of csrc/lepton/elementwise.h: relu(NaN) = NaN; the backward passes the
// gradient where the activation is NOT <= 0 (so a NaN activation passes it).
// Layout: dense C-contiguous buffers; bias_relu views x as (n, c, s).
//
// Kernels (extern "C", so NVRTC users look them up by plain name; SFX = f32 | f64):
//   lk_relu_SFX(x, y, count)                         y may be exactly x
//   lk_relu_backward_SFX(grad_out, x, grad_in, count)
//   lk_bias_relu_SFX(x, bias, y, n, c, s)            64-bit index math
//   lk_bias_relu_SFX_i32(...)                        same, for n*c*s + grid threads < 2^31
//   lk_bias_relu_backward_SFX(grad_out, y, grad_x, count)        grad_x only
//   lk_bias_relu_backward_bias_SFX(grad_x, grad_bias, n, c, s)   one block per channel
//   lk_bias_relu_backward_bias_SFX_i32(...)
// Every element-wise kernel is a grid-stride loop, correct for any launch shape.
// The channel reduction needs blockDim.x <= LK_REDUCE_THREADS (any value, not only a
// power of two) and sums in an order fixed by blockDim.x alone: no atomics, so the
// result is the same bit for bit from run to run.
#ifndef LEPTON_CUDA_KERNELS_ELEMENTWISE_CUH
#define LEPTON_CUDA_KERNELS_ELEMENTWISE_CUH

#define LK_REDUCE_THREADS 512

namespace lk_ew {

// 16-byte vector of T (float x4 / double x2); own type so NVRTC needs no vector headers.
template <typename T>
struct alignas(16) Vec16 {
  T v[16 / sizeof(T)];
};

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0ull;
}

// `x <= 0` is false for NaN, so NaN passes through (and passes the gradient).
template <typename T>
__device__ __forceinline__ T relu1(T x) {
  return x <= T(0) ? T(0) : x;
}

template <typename T>
__device__ __forceinline__ T relu_grad1(T g, T a) {
  return a <= T(0) ? T(0) : g;
}

__device__ __forceinline__ long long thread0() {
  return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long nthreads() {
  return static_cast<long long>(gridDim.x) * blockDim.x;
}

// No __restrict__ on x/y: the forward may run in place (y == x).
template <typename T>
__device__ void relu(const T* x, T* y, long long count) {
  constexpr int L = 16 / sizeof(T);
  const long long t0 = thread0(), step = nthreads();
  long long done = 0;
  if (aligned16(x) && aligned16(y)) {  // uniform branch: same pointers in every thread
    const long long nvec = count / L;
    const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
    Vec16<T>* yv = reinterpret_cast<Vec16<T>*>(y);
    for (long long i = t0; i < nvec; i += step) {
      Vec16<T> a = xv[i];
#pragma unroll
      for (int k = 0; k < L; ++k) a.v[k] = relu1(a.v[k]);
      yv[i] = a;
    }
    done = nvec * L;
  }
  for (long long i = done + t0; i < count; i += step) y[i] = relu1(x[i]);
}

template <typename T>
__device__ void relu_backward(const T* __restrict__ g, const T* __restrict__ a,
                              T* __restrict__ out, long long count) {
  constexpr int L = 16 / sizeof(T);
  const long long t0 = thread0(), step = nthreads();
  long long done = 0;
  if (aligned16(g) && aligned16(a) && aligned16(out)) {
    const long long nvec = count / L;
    const Vec16<T>* gv = reinterpret_cast<const Vec16<T>*>(g);
    const Vec16<T>* av = reinterpret_cast<const Vec16<T>*>(a);
    Vec16<T>* ov = reinterpret_cast<Vec16<T>*>(out);
    for (long long i = t0; i < nvec; i += step) {
      Vec16<T> gg = gv[i];
      const Vec16<T> aa = av[i];
#pragma unroll
      for (int k = 0; k < L; ++k) gg.v[k] = relu_grad1(gg.v[k], aa.v[k]);
      ov[i] = gg;
    }
    done = nvec * L;
  }
  for (long long i = done + t0; i < count; i += step) out[i] = relu_grad1(g[i], a[i]);
}

// I (int or long long) is the index type: the launcher picks int when every index
// and the grid-stride overshoot stay below 2^31, because 32-bit division is much
// cheaper than 64-bit division on the GPU.
template <typename T, typename I>
__device__ void bias_relu(const T* x, const T* __restrict__ bias, T* y, I n, I c, I s) {
  constexpr int L = 16 / sizeof(T);
  const I t0 = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
  const I step = static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
  const I count = n * c * s;
  if (s % L == 0 && aligned16(x) && aligned16(y)) {
    // Each vector lies inside one (n, c) row because s is a multiple of L.
    const I sv = s / L, nvec = count / L;
    const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
    Vec16<T>* yv = reinterpret_cast<Vec16<T>*>(y);
    for (I i = t0; i < nvec; i += step) {
      const T b = bias[(i / sv) % c];
      Vec16<T> a = xv[i];
#pragma unroll
      for (int k = 0; k < L; ++k) a.v[k] = relu1(a.v[k] + b);
      yv[i] = a;
    }
    return;
  }
  for (I i = t0; i < count; i += step) y[i] = relu1(x[i] + bias[(i / s) % c]);
}

// grad_bias[ch] = sum over (b, j) of grad_x[b, ch, j]. One block per channel
// (grid-stride over channels); each thread sums a fixed subset in double, then a
// tree reduction in shared memory. Summation order depends only on blockDim.x.
template <typename T, typename I>
__device__ void channel_sum(const T* __restrict__ gx, T* __restrict__ gb, I n, I c, I s) {
  __shared__ double buf[LK_REDUCE_THREADS];
  const unsigned tid = threadIdx.x, nt = blockDim.x;
  if (nt > LK_REDUCE_THREADS) return;  // launch error of the caller; never write out of bounds
  for (I ch = static_cast<I>(blockIdx.x); ch < c; ch += static_cast<I>(gridDim.x)) {
    double acc = 0.0;
    if (s >= static_cast<I>(nt)) {  // wide rows: the block walks each row, coalesced
      for (I b = 0; b < n; ++b) {
        const T* row = gx + (b * c + ch) * s;
        for (I j = static_cast<I>(tid); j < s; j += static_cast<I>(nt)) acc += static_cast<double>(row[j]);
      }
    } else {  // short rows (s = 1 for 2-D inputs): flatten (b, j)
      const I total = n * s;
      for (I k = static_cast<I>(tid); k < total; k += static_cast<I>(nt)) {
        const I b = k / s, j = k - b * s;
        acc += static_cast<double>(gx[(b * c + ch) * s + j]);
      }
    }
    buf[tid] = acc;
    __syncthreads();
    // Fold the upper half onto the lower half; works for any block size.
    for (unsigned active = nt; active > 1;) {
      const unsigned half = (active + 1) / 2;
      if (tid < active - half) buf[tid] += buf[tid + half];
      __syncthreads();
      active = half;
    }
    if (tid == 0) gb[ch] = static_cast<T>(buf[0]);
    __syncthreads();  // buf is reused by the next channel
  }
}

}  // namespace lk_ew

#define LK_EW_DEFINE(SFX, T)                                                                   \
  extern "C" __global__ void lk_relu_##SFX(const T* x, T* y, long long count) {                \
    lk_ew::relu<T>(x, y, count);                                                               \
  }                                                                                            \
  extern "C" __global__ void lk_relu_backward_##SFX(const T* grad_out, const T* x, T* grad_in, \
                                                    long long count) {                         \
    lk_ew::relu_backward<T>(grad_out, x, grad_in, count);                                      \
  }                                                                                            \
  extern "C" __global__ void lk_bias_relu_##SFX(const T* x, const T* bias, T* y, long long n,  \
                                                long long c, long long s) {                    \
    lk_ew::bias_relu<T, long long>(x, bias, y, n, c, s);                                       \
  }                                                                                            \
  extern "C" __global__ void lk_bias_relu_##SFX##_i32(const T* x, const T* bias, T* y,         \
                                                      long long n, long long c, long long s) { \
    lk_ew::bias_relu<T, int>(x, bias, y, static_cast<int>(n), static_cast<int>(c),             \
                             static_cast<int>(s));                                             \
  }                                                                                            \
  extern "C" __global__ void lk_bias_relu_backward_##SFX(const T* grad_out, const T* y,        \
                                                         T* grad_x, long long count) {         \
    lk_ew::relu_backward<T>(grad_out, y, grad_x, count);                                       \
  }                                                                                            \
  extern "C" __global__ void lk_bias_relu_backward_bias_##SFX(                                 \
      const T* grad_x, T* grad_bias, long long n, long long c, long long s) {                  \
    lk_ew::channel_sum<T, long long>(grad_x, grad_bias, n, c, s);                              \
  }                                                                                            \
  extern "C" __global__ void lk_bias_relu_backward_bias_##SFX##_i32(                           \
      const T* grad_x, T* grad_bias, long long n, long long c, long long s) {                  \
    lk_ew::channel_sum<T, int>(grad_x, grad_bias, static_cast<int>(n), static_cast<int>(c),    \
                               static_cast<int>(s));                                           \
  }

LK_EW_DEFINE(f32, float)
LK_EW_DEFINE(f64, double)

#undef LK_EW_DEFINE

#endif  // LEPTON_CUDA_KERNELS_ELEMENTWISE_CUH
