// cuda/conv.cu -- launchers for the implicit-GEMM convolution kernels of
// cuda/kernels/conv.cuh (the same source CuPy compiles with NVRTC). NCHW / OIHW;
// semantics of lepton/conv.h. Launch shapes: gemm_plan in launch.h, one GEMM per
// group (grid.z). The bias gradient is the bias_grad launcher of cuda/gemm.cu.
#define LK_GEMM_NO_ENTRIES  // the dense GEMM entry points live in gemm.cu
#include "launch.h"
#include "kernels/conv.cuh"

namespace lepton_cuda {
namespace {

#define LK_PICK(op, sfx, small) ((small) ? lk_##op##_s_##sfx : lk_##op##_##sfx)

// Kernel arguments after the pointers, in the order of LK_CONV_GEOM_PARAMS.
#define LK_GEOM(d)                                                                          \
  (d).n, (d).c_in, (d).h, (d).w, (d).c_out, (d).kernel_h, (d).kernel_w, (d).out_h,          \
      (d).out_w, (d).stride_h, (d).stride_w, (d).pad_top, (d).pad_left, (d).dilation_h,     \
      (d).dilation_w, (d).groups

template <typename T>
const T* in(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* out(void* p) {
  return static_cast<T*>(p);
}

dim3 grid_of(const GemmPlan& p) { return dim3(p.gx, p.gy, p.gz); }

}  // namespace

// Per group: (c_out/groups) x (n*out_h*out_w) outputs.
cudaError_t conv2d(DType dtype, const lepton::Conv2dDesc& d, const void* x, const void* w, const void* bias,
                   void* y, cudaStream_t stream) {
  if (d.n <= 0 || d.c_out <= 0 || d.out_h <= 0 || d.out_w <= 0) return cudaSuccess;
  const GemmPlan p = gemm_plan(dtype, d.c_out / d.groups, d.n * d.out_h * d.out_w, d.groups);
  const int relu = d.relu ? 1 : 0;
  if (dtype == DType::f32)
    LK_PICK(conv2d, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<float>(x), in<float>(w), in<float>(bias), out<float>(y), LK_GEOM(d), relu);
  else
    LK_PICK(conv2d, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
        in<double>(x), in<double>(w), in<double>(bias), out<double>(y), LK_GEOM(d), relu);
  return cudaGetLastError();
}

// grad_w per group: (c_out/g) x (c_in/g*kh*kw), reduced over n*out_h*out_w inside the
// block; grad_x per group: (c_in/g) x (n*h*w), gathered over (c_out/g)*kh*kw.
cudaError_t conv2d_backward(DType dtype, const lepton::Conv2dDesc& d, const void* grad_out, const void* x,
                            const void* w, const void* y, void* grad_x, void* grad_w, void* grad_b,
                            cudaStream_t stream) {
  const int64_t cg = d.c_in / d.groups, og = d.c_out / d.groups, khw = d.kernel_h * d.kernel_w;
  if (grad_w != nullptr && og > 0 && cg > 0) {
    const GemmPlan p = gemm_plan(dtype, og, cg * khw, d.groups);
    if (dtype == DType::f32)
      LK_PICK(conv2d_grad_w, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<float>(grad_out), in<float>(y), in<float>(x), out<float>(grad_w), LK_GEOM(d));
    else
      LK_PICK(conv2d_grad_w, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<double>(grad_out), in<double>(y), in<double>(x), out<double>(grad_w), LK_GEOM(d));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_x != nullptr && cg > 0 && d.n > 0 && d.h > 0 && d.w > 0) {
    const GemmPlan p = gemm_plan(dtype, cg, d.n * d.h * d.w, d.groups);
    if (dtype == DType::f32)
      LK_PICK(conv2d_grad_x, f32, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<float>(grad_out), in<float>(y), in<float>(w), out<float>(grad_x), LK_GEOM(d));
    else
      LK_PICK(conv2d_grad_x, f64, p.small)<<<grid_of(p), kGemmThreads, 0, stream>>>(
          in<double>(grad_out), in<double>(y), in<double>(w), out<double>(grad_x), LK_GEOM(d));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (grad_b != nullptr)
    return bias_grad(dtype, d.n, d.c_out, d.out_h * d.out_w, grad_out, y, grad_b, stream);
  return cudaSuccess;
}

#undef LK_PICK
#undef LK_GEOM

}  // namespace lepton_cuda
