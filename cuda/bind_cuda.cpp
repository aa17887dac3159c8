// cuda/bind_cuda.cpp -- pybind11 module _lepton_cuda: the CUDA kernels of
// cuda/kernels/*.cuh behind raw-pointer entry points.
//
// This module cannot see CuPy or any array type: callers (lepton_kernels._native_cuda)
// pass device pointers as Python ints, sizes, a dtype code (0 = float32,
// 1 = float64; indices are int64) and a stream handle int (0 = legacy default
// stream). Buffers are dense C-contiguous device memory of the stated sizes; a
// pointer that is not device memory of that size is the caller's error and is not
// detectable cheaply. Every call checks sizes, dtype and null pointers
// (-> ValueError), releases the GIL around the launch, and turns a failed launch
// into RuntimeError("<op>: <cuda error>"). Launches are asynchronous: an error
// inside a kernel surfaces at the next synchronizing call. Pooling and convolution
// geometry is checked by the shared lepton::validate* (csrc/geometry, the library
// lepton_geometry that the CPU kernels use too), never by a copy here.
//
// matmul / linear / linear_backward / conv2d / conv2d_backward run the tiled GEMM and
// implicit-GEMM kernels (cuda/gemm.cu, cuda/conv.cu); their index math is 32-bit, so
// the bindings also reject sizes past those limits (kGemmMaxDim, 2^30 per conv size).
// The int8 entry points (quantize ... qlinear_conv2d, cuda/quant.cu, and max_pool2d_int8,
// cuda/pool.cu) take integer type codes instead (0 = int8, 1 = uint8, 2 = int32) and
// check zero points against them; the GEMM / convolution limits are the same.
//
// Importing the module needs no GPU or driver; device_count() is 0 there.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "launch.h"
#include "launch_quant.h"

namespace py = pybind11;
using lepton_cuda::DType;

namespace {

[[noreturn]] void bad(const char* op, const std::string& what) {
  throw py::value_error(std::string(op) + ": " + what);
}

void check(const char* op, cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + cudaGetErrorString(err));
}

DType dtype_of(const char* op, int code) {
  if (code != 0 && code != 1)
    bad(op, "dtype_code must be 0 (float32) or 1 (float64), got " + std::to_string(code));
  return static_cast<DType>(code);
}

void need_nonneg(const char* op, const char* name, int64_t v) {
  if (v < 0) bad(op, std::string(name) + " must be >= 0, got " + std::to_string(v));
}

void need_pos(const char* op, const char* name, int64_t v) {
  if (v < 1) bad(op, std::string(name) + " must be >= 1, got " + std::to_string(v));
}

void need_ptr(const char* op, const char* name, std::uintptr_t p, int64_t count) {
  if (count > 0 && p == 0) bad(op, std::string(name) + " is a null pointer for " + std::to_string(count) + " elements");
}

// Product of non-negative sizes; ValueError instead of a silent int64 overflow.
int64_t product(const char* op, std::initializer_list<int64_t> sizes) {
  int64_t r = 1;
  for (int64_t v : sizes) {
    if (__builtin_mul_overflow(r, v, &r)) bad(op, "sizes overflow int64");
  }
  return r;
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
T* dev(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

// Launch with the GIL released; raise afterwards, with the GIL held again.
template <typename F>
void run(const char* op, F&& launch) {
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = launch();
  }
  check(op, err);
}

// ------------------------------------------------------------------ element-wise

void relu(std::uintptr_t x, std::uintptr_t out, int64_t count, int dtype_code, std::uintptr_t stream) {
  const char* op = "relu";
  const DType dt = dtype_of(op, dtype_code);
  need_nonneg(op, "count", count);
  need_ptr(op, "x_ptr", x, count);
  need_ptr(op, "out_ptr", out, count);
  run(op, [&] { return lepton_cuda::relu(dt, dev<const void>(x), dev<void>(out), count, as_stream(stream)); });
}

void relu_backward(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t grad_in, int64_t count,
                   int dtype_code, std::uintptr_t stream) {
  const char* op = "relu_backward";
  const DType dt = dtype_of(op, dtype_code);
  need_nonneg(op, "count", count);
  need_ptr(op, "grad_out_ptr", grad_out, count);
  need_ptr(op, "x_ptr", x, count);
  need_ptr(op, "grad_in_ptr", grad_in, count);
  run(op, [&] {
    return lepton_cuda::relu_backward(dt, dev<const void>(grad_out), dev<const void>(x), dev<void>(grad_in),
                                      count, as_stream(stream));
  });
}

lepton::BiasReluDesc bias_desc(const char* op, int64_t n, int64_t c, int64_t s, int64_t& count) {
  need_nonneg(op, "n", n);
  need_nonneg(op, "c", c);
  need_nonneg(op, "s", s);
  count = product(op, {n, c, s});
  lepton::BiasReluDesc d;
  d.n = n;
  d.c = c;
  d.s = s;
  return d;
}

void bias_relu(std::uintptr_t x, std::uintptr_t bias, std::uintptr_t out, int64_t n, int64_t c, int64_t s,
               int dtype_code, std::uintptr_t stream) {
  const char* op = "bias_relu";
  const DType dt = dtype_of(op, dtype_code);
  int64_t count = 0;
  const lepton::BiasReluDesc d = bias_desc(op, n, c, s, count);
  need_ptr(op, "x_ptr", x, count);
  need_ptr(op, "bias_ptr", bias, count > 0 ? c : 0);
  need_ptr(op, "out_ptr", out, count);
  run(op, [&] {
    return lepton_cuda::bias_relu(dt, d, dev<const void>(x), dev<const void>(bias), dev<void>(out),
                                  as_stream(stream));
  });
}

void bias_relu_backward(std::uintptr_t grad_out, std::uintptr_t y, std::uintptr_t grad_x,
                        std::uintptr_t grad_bias, int64_t n, int64_t c, int64_t s, int dtype_code,
                        std::uintptr_t stream) {
  const char* op = "bias_relu_backward";
  const DType dt = dtype_of(op, dtype_code);
  int64_t count = 0;
  const lepton::BiasReluDesc d = bias_desc(op, n, c, s, count);
  need_ptr(op, "grad_out_ptr", grad_out, count);
  need_ptr(op, "y_ptr", y, count);
  need_ptr(op, "grad_x_ptr", grad_x, count);  // grad_bias_ptr 0 = do not compute it
  run(op, [&] {
    return lepton_cuda::bias_relu_backward(dt, d, dev<const void>(grad_out), dev<const void>(y),
                                           dev<void>(grad_x), dev<void>(grad_bias), as_stream(stream));
  });
}

// ------------------------------------------------------------------ pooling

// A refusal of the shared descriptor rules (lepton::validate*, csrc/geometry: the same
// code the CPU kernels run) as ValueError("<op>: <what>").
void need_valid(const char* op, const lepton::Status& st) {
  if (!st.ok()) bad(op, st.message);
}

struct Geometry {
  lepton::Pool2dDesc d;
  int64_t in_count = 0, out_count = 0;
};

lepton::Pool2dDesc pool_desc(int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                             int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                             int64_t pad_bottom, int64_t pad_left, int64_t pad_right, int64_t dilation_h,
                             int64_t dilation_w) {
  lepton::Pool2dDesc d;
  d.n = n, d.c = c, d.h = h, d.w = w, d.out_h = out_h, d.out_w = out_w;
  d.kernel_h = kernel_h, d.kernel_w = kernel_w, d.stride_h = stride_h, d.stride_w = stride_w;
  d.pad_top = pad_top, d.pad_bottom = pad_bottom, d.pad_left = pad_left, d.pad_right = pad_right;
  d.dilation_h = dilation_h, d.dilation_w = dilation_w;
  return d;
}

// Element counts of a descriptor lepton::validate accepted (they fit int64).
Geometry counted(const lepton::Pool2dDesc& d) {
  Geometry g;
  g.d = d;
  g.in_count = d.n * d.c * d.h * d.w;
  g.out_count = d.n * d.c * d.out_h * d.out_w;
  return g;
}

// The pool launchers' index math is int64 throughout: lepton::validate's limits (each
// number below 2^31, counts within int64) are all they need.
Geometry pool_geometry(const char* op, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                       int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right, int64_t dilation_h, int64_t dilation_w) {
  const lepton::Pool2dDesc d = pool_desc(n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                                         pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w);
  need_valid(op, lepton::validate(d));
  return counted(d);
}

void max_pool2d(std::uintptr_t x, std::uintptr_t out, std::uintptr_t indices, int64_t n, int64_t c, int64_t h,
                int64_t w, int64_t out_h, int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                int64_t dilation_h, int64_t dilation_w, int dtype_code, std::uintptr_t stream) {
  const char* op = "max_pool2d";
  const DType dt = dtype_of(op, dtype_code);
  const Geometry g = pool_geometry(op, n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                                   pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w);
  // An output element reads only taps inside the input, so an empty input with a
  // non-empty output is fine for memory; x may then be anything.
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.in_count : 0);
  need_ptr(op, "out_ptr", out, g.out_count);  // indices_ptr 0 = no indices
  run(op, [&] {
    return lepton_cuda::max_pool2d(dt, g.d, dev<const void>(x), dev<void>(out), dev<int64_t>(indices),
                                   as_stream(stream));
  });
}

// Sizes only: the scatter follows the indices, so no window geometry is taken or
// checked (as lepton::max_pool2d_backward, which uses only n, c, h, w, out_h, out_w).
void max_pool2d_backward(std::uintptr_t grad_out, std::uintptr_t indices, std::uintptr_t grad_in, int64_t n,
                         int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w, int dtype_code,
                         std::uintptr_t stream) {
  const char* op = "max_pool2d_backward";
  const DType dt = dtype_of(op, dtype_code);
  lepton::Pool2dDesc d;
  d.n = n, d.c = c, d.h = h, d.w = w, d.out_h = out_h, d.out_w = out_w;
  need_valid(op, lepton::validate_sizes(d));  // as the CPU kernel: sizes only
  const int64_t planes = n * c, in_plane = h * w, out_plane = out_h * out_w;
  const int64_t in_count = planes * in_plane, out_count = planes * out_plane;  // validate_sizes: fit int64
  need_ptr(op, "grad_out_ptr", grad_out, in_count > 0 ? out_count : 0);
  need_ptr(op, "indices_ptr", indices, in_count > 0 ? out_count : 0);
  need_ptr(op, "grad_in_ptr", grad_in, in_count);
  run(op, [&] {
    return lepton_cuda::max_pool2d_backward(dt, planes, in_plane, out_plane, dev<const void>(grad_out),
                                            dev<const int64_t>(indices), dev<void>(grad_in), as_stream(stream));
  });
}

Geometry avg_geometry(const char* op, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h, int64_t out_w,
                      int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                      int64_t pad_bottom, int64_t pad_left, int64_t pad_right, bool count_include_pad,
                      int64_t divisor_override) {
  lepton::Pool2dDesc d = pool_desc(n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                   pad_bottom, pad_left, pad_right, 1, 1);
  d.count_include_pad = count_include_pad;
  d.divisor_override = divisor_override;
  need_valid(op, lepton::validate_avg_pool(d));
  return counted(d);
}

void avg_pool2d(std::uintptr_t x, std::uintptr_t out, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right, bool count_include_pad,
                int64_t divisor_override, int dtype_code, std::uintptr_t stream) {
  const char* op = "avg_pool2d";
  const DType dt = dtype_of(op, dtype_code);
  const Geometry g = avg_geometry(op, n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                  pad_bottom, pad_left, pad_right, count_include_pad, divisor_override);
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.in_count : 0);
  need_ptr(op, "out_ptr", out, g.out_count);
  run(op, [&] {
    return lepton_cuda::avg_pool2d(dt, g.d, dev<const void>(x), dev<void>(out), as_stream(stream));
  });
}

void avg_pool2d_backward(std::uintptr_t grad_out, std::uintptr_t grad_in, int64_t n, int64_t c, int64_t h,
                         int64_t w, int64_t out_h, int64_t out_w, int64_t kernel_h, int64_t kernel_w,
                         int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                         int64_t pad_left, int64_t pad_right, bool count_include_pad, int64_t divisor_override,
                         int dtype_code, std::uintptr_t stream) {
  const char* op = "avg_pool2d_backward";
  const DType dt = dtype_of(op, dtype_code);
  const Geometry g = avg_geometry(op, n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                  pad_bottom, pad_left, pad_right, count_include_pad, divisor_override);
  need_ptr(op, "grad_out_ptr", grad_out, g.in_count > 0 ? g.out_count : 0);
  need_ptr(op, "grad_in_ptr", grad_in, g.in_count);
  run(op, [&] {
    return lepton_cuda::avg_pool2d_backward(dt, g.d, dev<const void>(grad_out), dev<void>(grad_in),
                                            as_stream(stream));
  });
}

// ------------------------------------------------------------------ GEMM / linear

void need_dim(const char* op, const char* name, int64_t v) {
  need_nonneg(op, name, v);
  if (v > lepton_cuda::kGemmMaxDim)
    bad(op, std::string(name) + " = " + std::to_string(v) + " exceeds the GEMM limit " +
                std::to_string(lepton_cuda::kGemmMaxDim));
}

lepton::LinearDesc linear_desc(const char* op, int64_t m, int64_t k, int64_t n) {
  need_dim(op, "m", m);
  need_dim(op, "k", k);
  need_dim(op, "n", n);
  lepton::LinearDesc d;
  d.m = m, d.k = k, d.n = n;
  return d;
}

void matmul(std::uintptr_t a, std::uintptr_t b, std::uintptr_t out, int64_t m, int64_t k, int64_t n,
            int dtype_code, std::uintptr_t stream) {
  const char* op = "matmul";
  const DType dt = dtype_of(op, dtype_code);
  linear_desc(op, m, k, n);
  const int64_t out_count = m * n;  // each factor < 2^31
  need_ptr(op, "a_ptr", a, out_count > 0 ? m * k : 0);
  need_ptr(op, "b_ptr", b, out_count > 0 ? k * n : 0);
  need_ptr(op, "out_ptr", out, out_count);
  run(op, [&] {
    return lepton_cuda::matmul(dt, dev<const void>(a), dev<const void>(b), dev<void>(out), m, k, n,
                               as_stream(stream));
  });
}

void linear(std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t out, int64_t m, int64_t k,
            int64_t n, bool relu, int dtype_code, std::uintptr_t stream) {
  const char* op = "linear";
  const DType dt = dtype_of(op, dtype_code);
  lepton::LinearDesc d = linear_desc(op, m, k, n);
  d.relu = relu;
  const int64_t out_count = m * n;
  need_ptr(op, "x_ptr", x, out_count > 0 ? m * k : 0);
  need_ptr(op, "w_ptr", w, out_count > 0 ? n * k : 0);  // bias_ptr 0 = no bias
  need_ptr(op, "out_ptr", out, out_count);
  run(op, [&] {
    return lepton_cuda::linear(dt, d, dev<const void>(x), dev<const void>(w), dev<const void>(bias),
                               dev<void>(out), as_stream(stream));
  });
}

void linear_backward(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t w, std::uintptr_t y,
                     std::uintptr_t grad_x, std::uintptr_t grad_w, std::uintptr_t grad_b, int64_t m, int64_t k,
                     int64_t n, int dtype_code, std::uintptr_t stream) {
  const char* op = "linear_backward";
  const DType dt = dtype_of(op, dtype_code);
  const lepton::LinearDesc d = linear_desc(op, m, k, n);
  const bool want_x = grad_x != 0 && m * k > 0, want_w = grad_w != 0 && n * k > 0;
  const bool want_b = grad_b != 0 && n > 0;
  // g (and y, when given) is read by every gradient; x only by grad_w, w only by grad_x.
  need_ptr(op, "grad_out_ptr", grad_out, (want_x || want_w || want_b) ? m * n : 0);
  need_ptr(op, "x_ptr", x, want_w ? m * k : 0);
  need_ptr(op, "w_ptr", w, want_x ? n * k : 0);  // y_ptr 0 = no ReLU mask
  run(op, [&] {
    return lepton_cuda::linear_backward(dt, d, dev<const void>(grad_out), dev<const void>(x),
                                        dev<const void>(w), dev<const void>(y),
                                        want_x ? dev<void>(grad_x) : nullptr,
                                        want_w ? dev<void>(grad_w) : nullptr,
                                        want_b ? dev<void>(grad_b) : nullptr, as_stream(stream));
  });
}

// ------------------------------------------------------------------ convolution

struct ConvGeometry {
  lepton::Conv2dDesc d;
  int64_t x_count = 0, w_count = 0, out_count = 0;
};

// CUDA-only limits, on top of lepton::validate: conv.cuh's implicit GEMM indexes with
// 32-bit ints, so every number, the padded input and each GEMM dimension stay below
// 2^30 / kGemmMaxDim. The per-number limit runs first so that its message, not a
// geometry mismatch it would cause, names what is too large.
void need_cuda_conv_numbers(const char* op, const lepton::Conv2dDesc& d) {
  const int64_t limit = int64_t(1) << 30;
  const std::pair<const char*, int64_t> numbers[] = {
      {"n", d.n}, {"c_in", d.c_in}, {"h", d.h}, {"w", d.w}, {"c_out", d.c_out}, {"kernel_h", d.kernel_h},
      {"kernel_w", d.kernel_w}, {"out_h", d.out_h}, {"out_w", d.out_w}, {"stride_h", d.stride_h},
      {"stride_w", d.stride_w}, {"pad_top", d.pad_top}, {"pad_bottom", d.pad_bottom}, {"pad_left", d.pad_left},
      {"pad_right", d.pad_right}, {"dilation_h", d.dilation_h}, {"dilation_w", d.dilation_w},
      {"groups", d.groups}};
  for (const auto& [name, v] : numbers)
    if (v >= limit)
      bad(op, "a size, kernel, stride, padding, dilation or groups is >= 2^30 (" + std::string(name) + " = " +
                  std::to_string(v) + "), the limit of the CUDA kernels' 32-bit index math");
}

// After lepton::validate (every number in [0, 2^31), so the sums below are exact).
void need_cuda_conv_extents(const char* op, const lepton::Conv2dDesc& d) {
  const int64_t limit = int64_t(1) << 30;
  if (d.h + d.pad_top + d.pad_bottom >= limit || d.w + d.pad_left + d.pad_right >= limit)
    bad(op, "the padded input is 2^30 or more rows or columns");
  const int64_t khw = d.kernel_h * d.kernel_w;
  // Every GEMM dimension of the forward and both backward products.
  need_dim(op, "n*out_h*out_w", product(op, {d.n, d.out_h, d.out_w}));
  need_dim(op, "n*h*w", product(op, {d.n, d.h, d.w}));
  need_dim(op, "c_in/groups*kernel_h*kernel_w", product(op, {d.c_in / d.groups, khw}));
  need_dim(op, "c_out/groups*kernel_h*kernel_w", product(op, {d.c_out / d.groups, khw}));
}

ConvGeometry conv_geometry(const char* op, int64_t n, int64_t c_in, int64_t h, int64_t w, int64_t c_out,
                           int64_t kernel_h, int64_t kernel_w, int64_t out_h, int64_t out_w, int64_t stride_h,
                           int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                           int64_t pad_right, int64_t dilation_h, int64_t dilation_w, int64_t groups) {
  ConvGeometry g;
  lepton::Conv2dDesc& d = g.d;
  d.n = n, d.c_in = c_in, d.h = h, d.w = w, d.c_out = c_out, d.kernel_h = kernel_h, d.kernel_w = kernel_w;
  d.out_h = out_h, d.out_w = out_w, d.stride_h = stride_h, d.stride_w = stride_w;
  d.pad_top = pad_top, d.pad_bottom = pad_bottom, d.pad_left = pad_left, d.pad_right = pad_right;
  d.dilation_h = dilation_h, d.dilation_w = dilation_w, d.groups = groups;
  need_cuda_conv_numbers(op, d);
  need_valid(op, lepton::validate(d));  // the rules the CPU float and int8 convolutions check
  need_cuda_conv_extents(op, d);
  // lepton::validate: each count fits int64.
  g.x_count = n * c_in * h * w;
  g.w_count = c_out * (c_in / groups) * kernel_h * kernel_w;
  g.out_count = n * c_out * out_h * out_w;
  return g;
}

void conv2d(std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t out, int64_t n, int64_t c_in,
            int64_t h, int64_t wd, int64_t c_out, int64_t kernel_h, int64_t kernel_w, int64_t out_h, int64_t out_w,
            int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
            int64_t pad_right, int64_t dilation_h, int64_t dilation_w, int64_t groups, bool relu, int dtype_code,
            std::uintptr_t stream) {
  const char* op = "conv2d";
  const DType dt = dtype_of(op, dtype_code);
  ConvGeometry g = conv_geometry(op, n, c_in, h, wd, c_out, kernel_h, kernel_w, out_h, out_w, stride_h, stride_w,
                                 pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w, groups);
  g.d.relu = relu;
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.x_count : 0);
  need_ptr(op, "w_ptr", w, g.out_count > 0 ? g.w_count : 0);  // bias_ptr 0 = no bias
  need_ptr(op, "out_ptr", out, g.out_count);
  run(op, [&] {
    return lepton_cuda::conv2d(dt, g.d, dev<const void>(x), dev<const void>(w), dev<const void>(bias),
                               dev<void>(out), as_stream(stream));
  });
}

void conv2d_backward(std::uintptr_t grad_out, std::uintptr_t x, std::uintptr_t w, std::uintptr_t y,
                     std::uintptr_t grad_x, std::uintptr_t grad_w, std::uintptr_t grad_b, int64_t n, int64_t c_in,
                     int64_t h, int64_t wd, int64_t c_out, int64_t kernel_h, int64_t kernel_w, int64_t out_h,
                     int64_t out_w, int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                     int64_t pad_left, int64_t pad_right, int64_t dilation_h, int64_t dilation_w, int64_t groups,
                     int dtype_code, std::uintptr_t stream) {
  const char* op = "conv2d_backward";
  const DType dt = dtype_of(op, dtype_code);
  const ConvGeometry g = conv_geometry(op, n, c_in, h, wd, c_out, kernel_h, kernel_w, out_h, out_w, stride_h,
                                       stride_w, pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w,
                                       groups);
  const bool want_x = grad_x != 0 && g.x_count > 0, want_w = grad_w != 0 && g.w_count > 0;
  const bool want_b = grad_b != 0 && c_out > 0;
  need_ptr(op, "grad_out_ptr", grad_out, (want_x || want_w || want_b) ? g.out_count : 0);
  need_ptr(op, "x_ptr", x, want_w ? g.x_count : 0);
  need_ptr(op, "w_ptr", w, want_x ? g.w_count : 0);  // y_ptr 0 = no ReLU mask
  run(op, [&] {
    return lepton_cuda::conv2d_backward(dt, g.d, dev<const void>(grad_out), dev<const void>(x),
                                        dev<const void>(w), dev<const void>(y),
                                        want_x ? dev<void>(grad_x) : nullptr,
                                        want_w ? dev<void>(grad_w) : nullptr,
                                        want_b ? dev<void>(grad_b) : nullptr, as_stream(stream));
  });
}

// The launch shape the launchers use (tests compare it with the CuPy backend's copy).
// ------------------------------------------------------------------ optimizers and losses
// Pointer tables (lists of ints), one entry per tensor; every table and count is
// checked before the first launch, so a bad entry leaves every tensor untouched.

using PtrList = std::vector<std::uintptr_t>;

void need_len(const char* op, const char* name, size_t got, size_t want) {
  if (got != want)
    bad(op, std::string("the lists must have equal lengths, got ") + name + ": " + std::to_string(got) +
                ", param_ptrs: " + std::to_string(want));
}

void need_not_nan(const char* op, const char* name, double v) {
  if (v != v) bad(op, std::string(name) + " must not be NaN");
}

void need_table(const char* op, const char* name, const PtrList& ptrs, const std::vector<int64_t>& counts) {
  need_len(op, name, ptrs.size(), counts.size());
  for (size_t i = 0; i < ptrs.size(); ++i) {
    if (counts[i] > 0 && ptrs[i] == 0)
      bad(op, std::string(name) + "[" + std::to_string(i) + "] is a null pointer for " + std::to_string(counts[i]) +
                  " elements");
  }
}

void need_counts(const char* op, const std::vector<int64_t>& counts) {
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] < 0) bad(op, "counts[" + std::to_string(i) + "] must be >= 0, got " + std::to_string(counts[i]));
  }
}

template <typename T>
std::vector<T> as_table(const PtrList& ptrs) {
  std::vector<T> r(ptrs.size());
  for (size_t i = 0; i < ptrs.size(); ++i) r[i] = reinterpret_cast<T>(ptrs[i]);
  return r;
}

void sgd_step(const PtrList& params, const PtrList& grads, const std::optional<PtrList>& bufs,
              const std::vector<int64_t>& counts, int dtype_code, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool maximize, bool first_step, std::uintptr_t stream) {
  const char* op = "sgd_step";
  const DType dt = dtype_of(op, dtype_code);
  for (auto [name, v] : {std::pair<const char*, double>{"lr", lr}, {"momentum", momentum},
                         {"dampening", dampening}, {"weight_decay", weight_decay}})
    need_not_nan(op, name, v);
  if (lr < 0) bad(op, "lr must be >= 0");
  if (momentum < 0) bad(op, "momentum must be >= 0");
  if (weight_decay < 0) bad(op, "weight_decay must be >= 0");
  if (nesterov && (momentum <= 0 || dampening != 0)) bad(op, "nesterov needs momentum > 0 and dampening 0");
  need_counts(op, counts);
  need_table(op, "param_ptrs", params, counts);
  need_table(op, "grad_ptrs", grads, counts);
  const bool use_buf = momentum != 0;
  if (use_buf && !bufs) bad(op, "buf_ptrs are required when momentum != 0");
  if (use_buf) need_table(op, "buf_ptrs", *bufs, counts);
  lepton::SgdParams p;
  p.lr = lr, p.momentum = momentum, p.dampening = dampening, p.weight_decay = weight_decay;
  p.nesterov = nesterov, p.maximize = maximize, p.first_step = first_step;
  const auto pp = as_table<void*>(params), bp = use_buf ? as_table<void*>(*bufs) : std::vector<void*>();
  const auto gp = as_table<const void*>(grads);
  run(op, [&] {
    return lepton_cuda::sgd_step(dt, p, static_cast<int64_t>(counts.size()), pp.data(), gp.data(),
                                 use_buf ? bp.data() : nullptr, counts.data(), as_stream(stream));
  });
}

void adam_step(const PtrList& params, const PtrList& grads, const PtrList& exp_avgs, const PtrList& exp_avg_sqs,
               const std::optional<PtrList>& vmaxs, const std::vector<int64_t>& counts, int dtype_code,
               int64_t step, double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
               bool amsgrad, bool maximize, std::uintptr_t stream) {
  const char* op = "adam_step";
  const DType dt = dtype_of(op, dtype_code);
  for (auto [name, v] : {std::pair<const char*, double>{"lr", lr}, {"beta1", beta1}, {"beta2", beta2},
                         {"eps", eps}, {"weight_decay", weight_decay}})
    need_not_nan(op, name, v);
  if (step < 1) bad(op, "step must be >= 1, got " + std::to_string(step));
  if (lr < 0) bad(op, "lr must be >= 0");
  if (!(beta1 >= 0 && beta1 < 1)) bad(op, "beta1 must be in [0, 1)");
  if (!(beta2 >= 0 && beta2 < 1)) bad(op, "beta2 must be in [0, 1)");
  if (eps < 0) bad(op, "eps must be >= 0");
  if (weight_decay < 0) bad(op, "weight_decay must be >= 0");
  need_counts(op, counts);
  need_table(op, "param_ptrs", params, counts);
  need_table(op, "grad_ptrs", grads, counts);
  need_table(op, "exp_avg_ptrs", exp_avgs, counts);
  need_table(op, "exp_avg_sq_ptrs", exp_avg_sqs, counts);
  if (amsgrad && !vmaxs) bad(op, "amsgrad=True needs max_exp_avg_sq_ptrs");
  if (amsgrad) need_table(op, "max_exp_avg_sq_ptrs", *vmaxs, counts);
  lepton::AdamParams p;
  p.step = step, p.lr = lr, p.beta1 = beta1, p.beta2 = beta2, p.eps = eps, p.weight_decay = weight_decay;
  p.decoupled = decoupled, p.amsgrad = amsgrad, p.maximize = maximize;
  const auto pp = as_table<void*>(params), mp = as_table<void*>(exp_avgs), vp = as_table<void*>(exp_avg_sqs);
  const auto xp = amsgrad ? as_table<void*>(*vmaxs) : std::vector<void*>();
  const auto gp = as_table<const void*>(grads);
  run(op, [&] {
    return lepton_cuda::adam_step(dt, p, static_cast<int64_t>(counts.size()), pp.data(), gp.data(), mp.data(),
                                  vp.data(), amsgrad ? xp.data() : nullptr, counts.data(), as_stream(stream));
  });
}

void cross_entropy(std::uintptr_t logits, std::uintptr_t target, std::uintptr_t weight, std::uintptr_t losses,
                   std::uintptr_t dlogits, int64_t n, int64_t c, int64_t ignore_index, double label_smoothing,
                   int dtype_code, std::uintptr_t stream) {
  const char* op = "cross_entropy";
  const DType dt = dtype_of(op, dtype_code);
  need_nonneg(op, "n", n);
  need_nonneg(op, "c", c);
  const int64_t count = product(op, {n, c});
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    bad(op, "label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  need_ptr(op, "logits_ptr", logits, count);
  need_ptr(op, "target_ptr", target, n);
  need_ptr(op, "losses_ptr", losses, n);  // weight_ptr / dlogits_ptr 0 = none
  lepton::CrossEntropyDesc d;
  d.n = n, d.c = c, d.ignore_index = ignore_index, d.label_smoothing = label_smoothing;
  run(op, [&] {
    return lepton_cuda::cross_entropy(dt, d, dev<const void>(logits), dev<const int64_t>(target),
                                      dev<const void>(weight), dev<void>(losses), dev<void>(dlogits),
                                      as_stream(stream));
  });
}

py::tuple gemm_plan(int64_t m, int64_t n, int64_t groups, int dtype_code) {
  const char* op = "gemm_plan";
  const DType dt = dtype_of(op, dtype_code);
  need_dim(op, "m", m);
  need_dim(op, "n", n);
  need_pos(op, "groups", groups);
  const lepton_cuda::GemmPlan p = lepton_cuda::gemm_plan(dt, m, n, groups);
  return py::make_tuple(p.small, p.gx, p.gy, p.gz, lepton_cuda::kGemmThreads);
}

// ------------------------------------------------------------------ int8 quantization
// Integer dtype codes: 0 = int8, 1 = uint8, 2 = int32 (dequantize input only). Zero
// points given as ints are checked against their type's range; per-channel zero points,
// biases and multipliers are device arrays (int32 / int32 / float32) and are trusted.

lepton_cuda::QType qtype_of(const char* op, const char* name, int code, bool allow_s32) {
  if (code == 0 || code == 1 || (allow_s32 && code == 2)) return static_cast<lepton_cuda::QType>(code);
  bad(op, std::string(name) + " must be 0 (int8), 1 (uint8)" + (allow_s32 ? ", 2 (int32)" : "") + ", got " +
              std::to_string(code));
}

void need_in_range(const char* op, const char* name, int64_t v, lepton_cuda::QType t) {
  const int64_t lo = t == lepton_cuda::QType::s8 ? -128 : 0, hi = t == lepton_cuda::QType::s8 ? 127 : 255;
  if (v < lo || v > hi)
    bad(op, std::string(name) + " must lie in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                std::to_string(v));
}

lepton::QuantDesc quant_desc(const char* op, int64_t outer, int64_t channels, int64_t inner, int64_t& count) {
  need_nonneg(op, "outer", outer);
  need_nonneg(op, "channels", channels);
  need_nonneg(op, "inner", inner);
  count = product(op, {outer, channels, inner});
  lepton::QuantDesc d;
  d.outer = outer, d.channels = channels, d.inner = inner;
  return d;
}

// max_pool2d on int8 / uint8 (x_dtype 0 / 1), forward only; the checks of max_pool2d.
void max_pool2d_int8(std::uintptr_t x, std::uintptr_t out, std::uintptr_t indices, int64_t n, int64_t c, int64_t h,
                     int64_t w, int64_t out_h, int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                     int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                     int64_t dilation_h, int64_t dilation_w, int x_dtype, std::uintptr_t stream) {
  const char* op = "max_pool2d_int8";
  const bool is_signed = qtype_of(op, "x_dtype", x_dtype, false) == lepton_cuda::QType::s8;
  const Geometry g = pool_geometry(op, n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                                   pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w);
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.in_count : 0);
  need_ptr(op, "out_ptr", out, g.out_count);  // indices_ptr 0 = no indices
  run(op, [&] {
    return lepton_cuda::max_pool2d_int8(is_signed, g.d, dev<const void>(x), dev<void>(out), dev<int64_t>(indices),
                                        as_stream(stream));
  });
}

void quantize(std::uintptr_t x, std::uintptr_t scale, std::uintptr_t zero_point, std::uintptr_t q, int64_t outer,
              int64_t channels, int64_t inner, int q_dtype, std::uintptr_t stream) {
  const char* op = "quantize";
  const lepton_cuda::QType t = qtype_of(op, "q_dtype", q_dtype, false);
  int64_t count = 0;
  const lepton::QuantDesc d = quant_desc(op, outer, channels, inner, count);
  need_ptr(op, "x_ptr", x, count);
  need_ptr(op, "scale_ptr", scale, count > 0 ? channels : 0);
  need_ptr(op, "zero_point_ptr", zero_point, count > 0 ? channels : 0);
  need_ptr(op, "q_ptr", q, count);
  run(op, [&] {
    return lepton_cuda::quantize(t, d, dev<const float>(x), dev<const float>(scale), dev<const int32_t>(zero_point),
                                 dev<void>(q), as_stream(stream));
  });
}

void dequantize(std::uintptr_t q, std::uintptr_t scale, std::uintptr_t zero_point, std::uintptr_t y, int64_t outer,
                int64_t channels, int64_t inner, int q_dtype, std::uintptr_t stream) {
  const char* op = "dequantize";
  const lepton_cuda::QType t = qtype_of(op, "q_dtype", q_dtype, true);
  int64_t count = 0;
  const lepton::QuantDesc d = quant_desc(op, outer, channels, inner, count);
  need_ptr(op, "q_ptr", q, count);
  need_ptr(op, "scale_ptr", scale, count > 0 ? channels : 0);
  need_ptr(op, "zero_point_ptr", zero_point, count > 0 ? channels : 0);
  need_ptr(op, "y_ptr", y, count);
  run(op, [&] {
    return lepton_cuda::dequantize(t, d, dev<const void>(q), dev<const float>(scale),
                                   dev<const int32_t>(zero_point), dev<float>(y), as_stream(stream));
  });
}

py::tuple dynamic_quantize(std::uintptr_t x, std::uintptr_t q, int64_t n, std::uintptr_t stream) {
  const char* op = "dynamic_quantize";
  need_nonneg(op, "n", n);
  need_ptr(op, "x_ptr", x, n);
  need_ptr(op, "q_ptr", q, n);
  float scale = 0.0f;
  uint8_t zero_point = 0;
  run(op, [&] {
    return lepton_cuda::dynamic_quantize(n, dev<const float>(x), dev<uint8_t>(q), &scale, &zero_point,
                                         as_stream(stream));
  });
  return py::make_tuple(scale, static_cast<int>(zero_point));
}

struct QOperands {
  lepton_cuda::QType a, b;
};

QOperands int8_operands(const char* op, int a_dtype, int b_dtype, const char* a_name, const char* b_name) {
  return {qtype_of(op, a_name, a_dtype, false), qtype_of(op, b_name, b_dtype, false)};
}

void matmul_integer(std::uintptr_t a, std::uintptr_t b, std::uintptr_t b_zero_point, std::uintptr_t out, int64_t m,
                    int64_t k, int64_t n, int64_t a_zero_point, int a_dtype, int b_dtype, std::uintptr_t stream) {
  const char* op = "matmul_integer";
  const QOperands t = int8_operands(op, a_dtype, b_dtype, "a_dtype", "b_dtype");
  linear_desc(op, m, k, n);
  need_in_range(op, "a_zero_point", a_zero_point, t.a);
  const int64_t out_count = m * n;  // each factor < 2^31
  need_ptr(op, "a_ptr", a, out_count > 0 ? m * k : 0);
  need_ptr(op, "b_ptr", b, out_count > 0 ? k * n : 0);  // b_zero_point_ptr 0 = zero point 0
  need_ptr(op, "out_ptr", out, out_count);
  run(op, [&] {
    return lepton_cuda::matmul_integer(dev<const void>(a), t.a == lepton_cuda::QType::u8, dev<const void>(b),
                                       t.b == lepton_cuda::QType::u8, static_cast<int32_t>(a_zero_point),
                                       dev<const int32_t>(b_zero_point), dev<int32_t>(out), m, k, n,
                                       as_stream(stream));
  });
}

void qlinear_matmul(std::uintptr_t a, std::uintptr_t b, std::uintptr_t b_zero_point, std::uintptr_t bias,
                    std::uintptr_t multiplier, std::uintptr_t out, int64_t m, int64_t k, int64_t n,
                    int64_t a_zero_point, int64_t y_zero_point, bool relu, int a_dtype, int b_dtype, int out_dtype,
                    std::uintptr_t stream) {
  const char* op = "qlinear_matmul";
  const QOperands t = int8_operands(op, a_dtype, b_dtype, "a_dtype", "b_dtype");
  const lepton_cuda::QType ot = qtype_of(op, "out_dtype", out_dtype, false);
  linear_desc(op, m, k, n);
  need_in_range(op, "a_zero_point", a_zero_point, t.a);
  need_in_range(op, "y_zero_point", y_zero_point, ot);
  const int64_t out_count = m * n;
  need_ptr(op, "a_ptr", a, out_count > 0 ? m * k : 0);
  need_ptr(op, "b_ptr", b, out_count > 0 ? k * n : 0);
  need_ptr(op, "multiplier_ptr", multiplier, out_count > 0 ? n : 0);  // bias / b_zero_point 0 = none
  need_ptr(op, "out_ptr", out, out_count);
  run(op, [&] {
    return lepton_cuda::qlinear_matmul(ot, dev<const void>(a), t.a == lepton_cuda::QType::u8, dev<const void>(b),
                                       t.b == lepton_cuda::QType::u8, static_cast<int32_t>(a_zero_point),
                                       dev<const int32_t>(b_zero_point), dev<const int32_t>(bias),
                                       dev<const float>(multiplier), static_cast<int32_t>(y_zero_point), relu,
                                       dev<void>(out), m, k, n, as_stream(stream));
  });
}

void conv2d_integer(std::uintptr_t x, std::uintptr_t w, std::uintptr_t w_zero_point, std::uintptr_t out, int64_t n,
                    int64_t c_in, int64_t h, int64_t wd, int64_t c_out, int64_t kernel_h, int64_t kernel_w,
                    int64_t out_h, int64_t out_w, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                    int64_t pad_bottom, int64_t pad_left, int64_t pad_right, int64_t dilation_h, int64_t dilation_w,
                    int64_t groups, int64_t x_zero_point, int x_dtype, int w_dtype, std::uintptr_t stream) {
  const char* op = "conv2d_integer";
  const QOperands t = int8_operands(op, x_dtype, w_dtype, "x_dtype", "w_dtype");
  const ConvGeometry g = conv_geometry(op, n, c_in, h, wd, c_out, kernel_h, kernel_w, out_h, out_w, stride_h,
                                       stride_w, pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w,
                                       groups);
  need_in_range(op, "x_zero_point", x_zero_point, t.a);
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.x_count : 0);
  need_ptr(op, "w_ptr", w, g.out_count > 0 ? g.w_count : 0);  // w_zero_point_ptr 0 = zero point 0
  need_ptr(op, "out_ptr", out, g.out_count);
  run(op, [&] {
    return lepton_cuda::conv2d_integer(g.d, dev<const void>(x), t.a == lepton_cuda::QType::u8, dev<const void>(w),
                                       t.b == lepton_cuda::QType::u8, static_cast<int32_t>(x_zero_point),
                                       dev<const int32_t>(w_zero_point), dev<int32_t>(out), as_stream(stream));
  });
}

void qlinear_conv2d(std::uintptr_t x, std::uintptr_t w, std::uintptr_t w_zero_point, std::uintptr_t bias,
                    std::uintptr_t multiplier, std::uintptr_t out, int64_t n, int64_t c_in, int64_t h, int64_t wd,
                    int64_t c_out, int64_t kernel_h, int64_t kernel_w, int64_t out_h, int64_t out_w,
                    int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                    int64_t pad_right, int64_t dilation_h, int64_t dilation_w, int64_t groups,
                    int64_t x_zero_point, int64_t y_zero_point, bool relu, int x_dtype, int w_dtype, int out_dtype,
                    std::uintptr_t stream) {
  const char* op = "qlinear_conv2d";
  const QOperands t = int8_operands(op, x_dtype, w_dtype, "x_dtype", "w_dtype");
  const lepton_cuda::QType ot = qtype_of(op, "out_dtype", out_dtype, false);
  const ConvGeometry g = conv_geometry(op, n, c_in, h, wd, c_out, kernel_h, kernel_w, out_h, out_w, stride_h,
                                       stride_w, pad_top, pad_bottom, pad_left, pad_right, dilation_h, dilation_w,
                                       groups);
  need_in_range(op, "x_zero_point", x_zero_point, t.a);
  need_in_range(op, "y_zero_point", y_zero_point, ot);
  need_ptr(op, "x_ptr", x, g.out_count > 0 ? g.x_count : 0);
  need_ptr(op, "w_ptr", w, g.out_count > 0 ? g.w_count : 0);
  need_ptr(op, "multiplier_ptr", multiplier, g.out_count > 0 ? c_out : 0);
  need_ptr(op, "out_ptr", out, g.out_count);
  run(op, [&] {
    return lepton_cuda::qlinear_conv2d(ot, g.d, dev<const void>(x), t.a == lepton_cuda::QType::u8,
                                       dev<const void>(w), t.b == lepton_cuda::QType::u8,
                                       static_cast<int32_t>(x_zero_point), dev<const int32_t>(w_zero_point),
                                       dev<const int32_t>(bias), dev<const float>(multiplier),
                                       static_cast<int32_t>(y_zero_point), relu, dev<void>(out), as_stream(stream));
  });
}

py::tuple qgemm_plan(int64_t m, int64_t n, int64_t groups) {
  const char* op = "qgemm_plan";
  need_dim(op, "m", m);
  need_dim(op, "n", n);
  need_pos(op, "groups", groups);
  const dim3 g = lepton_cuda::qgemm_grid(m, n, groups);
  return py::make_tuple(g.x, g.y, g.z, lepton_cuda::kQuantThreads);
}

// ------------------------------------------------------------------ device queries

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: not an error for this query
    return 0;
  }
  return n;
}

std::string device_name(int index) {
  const int n = device_count();
  if (index < 0 || index >= n)
    bad("device_name", "index must be in [0, " + std::to_string(n) + "), got " + std::to_string(index));
  cudaDeviceProp prop{};
  check("device_name", cudaGetDeviceProperties(&prop, index));
  return std::string(prop.name);
}

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
}

void synchronize() {
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = cudaDeviceSynchronize();
  }
  check("synchronize", err);
}

}  // namespace

PYBIND11_MODULE(_lepton_cuda, m) {
  m.doc() =
      "lepton_kernels CUDA kernels over raw device pointers (ints). dtype_code: 0 = float32, "
      "1 = float64; indices are int64; stream: a cudaStream_t as int (0 = legacy default stream).";
  using py::arg;
  const auto stream = arg("stream") = std::uintptr_t(0);

  m.def("relu", &relu, "out = max(x, 0) (NaN stays NaN); out may equal x.", arg("x_ptr"), arg("out_ptr"),
        arg("count"), arg("dtype_code"), stream);
  m.def("relu_backward", &relu_backward, "grad_in = (x <= 0) ? 0 : grad_out.", arg("grad_out_ptr"),
        arg("x_ptr"), arg("grad_in_ptr"), arg("count"), arg("dtype_code"), stream);
  m.def("bias_relu", &bias_relu, "out[n,c,s] = max(x[n,c,s] + bias[c], 0); out may equal x.", arg("x_ptr"),
        arg("bias_ptr"), arg("out_ptr"), arg("n"), arg("c"), arg("s"), arg("dtype_code"), stream);
  m.def("bias_relu_backward", &bias_relu_backward,
        "grad_x = (y <= 0) ? 0 : grad_out; grad_bias[c] = sum over (n, s) of grad_x, in a fixed order "
        "(skipped when grad_bias_ptr is 0).",
        arg("grad_out_ptr"), arg("y_ptr"), arg("grad_x_ptr"), arg("grad_bias_ptr"), arg("n"), arg("c"),
        arg("s"), arg("dtype_code"), stream);
  m.def("max_pool2d", &max_pool2d,
        "Max pooling, NCHW (lepton/pool.h). indices_ptr 0 = no indices; else int64 flat ih*w+iw.",
        arg("x_ptr"), arg("out_ptr"), arg("indices_ptr"), arg("n"), arg("c"), arg("h"), arg("w"), arg("out_h"),
        arg("out_w"), arg("kernel_h"), arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"),
        arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("dilation_h"), arg("dilation_w"),
        arg("dtype_code"), stream);
  m.def("max_pool2d_int8", &max_pool2d_int8,
        "max_pool2d on int8 (x_dtype 0) or uint8 (x_dtype 1) x and out, forward only; a window entirely "
        "in padding gives the type's minimum and index -1.",
        arg("x_ptr"), arg("out_ptr"), arg("indices_ptr"), arg("n"), arg("c"), arg("h"), arg("w"), arg("out_h"),
        arg("out_w"), arg("kernel_h"), arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"),
        arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("dilation_h"), arg("dilation_w"),
        arg("x_dtype"), stream);
  m.def("max_pool2d_backward", &max_pool2d_backward,
        "grad_in = 0, then grad_out scattered to its plane's flat indices ih*w+iw in row-major output "
        "order (deterministic); no pooling geometry is needed. An index outside [0, h*w) is skipped.",
        arg("grad_out_ptr"), arg("indices_ptr"), arg("grad_in_ptr"), arg("n"), arg("c"), arg("h"), arg("w"),
        arg("out_h"), arg("out_w"), arg("dtype_code"), stream);
  m.def("avg_pool2d", &avg_pool2d, "Average pooling, NCHW (lepton/pool.h divisor rules).", arg("x_ptr"),
        arg("out_ptr"), arg("n"), arg("c"), arg("h"), arg("w"), arg("out_h"), arg("out_w"), arg("kernel_h"),
        arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"), arg("pad_bottom"), arg("pad_left"),
        arg("pad_right"), arg("count_include_pad"), arg("divisor_override"), arg("dtype_code"), stream);
  m.def("avg_pool2d_backward", &avg_pool2d_backward,
        "grad_in = sum over windows of grad_out / divisor (deterministic); grad_in is overwritten.",
        arg("grad_out_ptr"), arg("grad_in_ptr"), arg("n"), arg("c"), arg("h"), arg("w"), arg("out_h"),
        arg("out_w"), arg("kernel_h"), arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"),
        arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("count_include_pad"), arg("divisor_override"),
        arg("dtype_code"), stream);

  m.def("matmul", &matmul, "out (m, n) = a (m, k) @ b (k, n), row-major.", arg("a_ptr"), arg("b_ptr"),
        arg("out_ptr"), arg("m"), arg("k"), arg("n"), arg("dtype_code"), stream);
  m.def("linear", &linear,
        "out (m, n) = act(x (m, k) @ w (n, k)^T + bias); bias_ptr 0 = no bias; relu: v <= 0 ? 0 : v.",
        arg("x_ptr"), arg("w_ptr"), arg("bias_ptr"), arg("out_ptr"), arg("m"), arg("k"), arg("n"), arg("relu"),
        arg("dtype_code"), stream);
  m.def("linear_backward", &linear_backward,
        "g' = y_ptr ? (y <= 0 ? 0 : g) : g; grad_x = g' @ w, grad_w = g'^T @ x, grad_b = column sums of g' "
        "(fixed order); a 0 output pointer skips that gradient.",
        arg("g_ptr"), arg("x_ptr"), arg("w_ptr"), arg("y_ptr"), arg("gx_ptr"), arg("gw_ptr"), arg("gb_ptr"),
        arg("m"), arg("k"), arg("n"), arg("dtype_code"), stream);
  m.def("conv2d", &conv2d,
        "2-D convolution, NCHW x, OIHW w (lepton/conv.h) as an implicit GEMM; bias_ptr 0 = no bias; "
        "relu fused. out_h/out_w must follow the floor formula.",
        arg("x_ptr"), arg("w_ptr"), arg("bias_ptr"), arg("out_ptr"), arg("n"), arg("c_in"), arg("h"), arg("w"),
        arg("c_out"), arg("kernel_h"), arg("kernel_w"), arg("out_h"), arg("out_w"), arg("stride_h"),
        arg("stride_w"), arg("pad_top"), arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("dilation_h"),
        arg("dilation_w"), arg("groups"), arg("relu"), arg("dtype_code"), stream);
  m.def("conv2d_backward", &conv2d_backward,
        "Gradients of conv2d with g' = y_ptr ? (y <= 0 ? 0 : g) : g: grad_x (transposed convolution, a "
        "gather), grad_w, grad_b; deterministic; a 0 output pointer skips that gradient.",
        arg("g_ptr"), arg("x_ptr"), arg("w_ptr"), arg("y_ptr"), arg("gx_ptr"), arg("gw_ptr"), arg("gb_ptr"),
        arg("n"), arg("c_in"), arg("h"), arg("w"), arg("c_out"), arg("kernel_h"), arg("kernel_w"), arg("out_h"),
        arg("out_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"), arg("pad_bottom"), arg("pad_left"),
        arg("pad_right"), arg("dilation_h"), arg("dilation_w"), arg("groups"), arg("dtype_code"), stream);
  m.def("sgd_step", &sgd_step,
        "torch.optim.SGD update of every tensor of the pointer tables, in place, in list order on `stream` "
        "(lepton/optim.h); buf_ptrs may be None when momentum == 0. Tables and counts are checked first.",
        arg("param_ptrs"), arg("grad_ptrs"), arg("buf_ptrs"), arg("counts"), arg("dtype_code"), arg("lr"),
        arg("momentum"), arg("dampening"), arg("weight_decay"), arg("nesterov"), arg("maximize"),
        arg("first_step"), stream);
  m.def("adam_step", &adam_step,
        "torch.optim.Adam / AdamW (decoupled) update of every tensor of the pointer tables, in place "
        "(lepton/optim.h); max_exp_avg_sq_ptrs is None unless amsgrad.",
        arg("param_ptrs"), arg("grad_ptrs"), arg("exp_avg_ptrs"), arg("exp_avg_sq_ptrs"),
        arg("max_exp_avg_sq_ptrs"), arg("counts"), arg("dtype_code"), arg("step"), arg("lr"), arg("beta1"),
        arg("beta2"), arg("eps"), arg("weight_decay"), arg("decoupled"), arg("amsgrad"), arg("maximize"), stream);
  m.def("cross_entropy", &cross_entropy,
        "Fused log-softmax + NLL (lepton/loss.h), one block per row: logits (n, c), target int64 (n,), "
        "weight_ptr 0 = no weights, losses (n,), dlogits_ptr 0 = no gradient. Targets must be in [0, c) or "
        "ignore_index (a target outside gives a NaN row, never an out-of-bounds read).",
        arg("logits_ptr"), arg("target_ptr"), arg("weight_ptr"), arg("losses_ptr"), arg("dlogits_ptr"), arg("n"),
        arg("c"), arg("ignore_index"), arg("label_smoothing"), arg("dtype_code"), stream);
  m.def("gemm_plan", &gemm_plan,
        "(small_tile, grid_x, grid_y, grid_z, threads) of the tiled GEMM kernels for an (m x n) output per "
        "group.",
        arg("m"), arg("n"), arg("groups"), arg("dtype_code"));
  m.attr("GEMM_MAX_DIM") = lepton_cuda::kGemmMaxDim;

  m.def("quantize", &quantize,
        "ONNX QuantizeLinear of float32 x (outer, channels, inner) with per-channel float32 scale and int32 zero "
        "point (device arrays of `channels` entries): q = saturate(rint(x / s) + zp), float32 division; NaN -> zp. "
        "q_dtype: 0 int8, 1 uint8.",
        arg("x_ptr"), arg("scale_ptr"), arg("zero_point_ptr"), arg("q_ptr"), arg("outer"), arg("channels"),
        arg("inner"), arg("q_dtype"), stream);
  m.def("dequantize", &dequantize,
        "ONNX DequantizeLinear: y = float32((q - zp) * scale) (one float64 product). q_dtype: 0 int8, 1 uint8, "
        "2 int32.",
        arg("q_ptr"), arg("scale_ptr"), arg("zero_point_ptr"), arg("y_ptr"), arg("outer"), arg("channels"),
        arg("inner"), arg("q_dtype"), stream);
  m.def("dynamic_quantize", &dynamic_quantize,
        "ONNX DynamicQuantizeLinear of n float32 values into uint8 q; waits for the stream and returns "
        "(scale, zero_point).",
        arg("x_ptr"), arg("q_ptr"), arg("n"), stream);
  m.def("matmul_integer", &matmul_integer,
        "ONNX MatMulInteger: out (m, n) int32 = (a - a_zero_point) @ (b - b_zero_point[col]) with int32 "
        "wraparound (dp4a tiles); b_zero_point_ptr 0 = zero point 0. dtypes: 0 int8, 1 uint8.",
        arg("a_ptr"), arg("b_ptr"), arg("b_zero_point_ptr"), arg("out_ptr"), arg("m"), arg("k"), arg("n"),
        arg("a_zero_point"), arg("a_dtype"), arg("b_dtype"), stream);
  m.def("qlinear_matmul", &qlinear_matmul,
        "matmul_integer requantized per column in float32 (as ONNX Runtime): out = clip(rint(float(int32(acc + "
        "bias)) * multiplier) + y_zero_point), lower bound max(min, y_zero_point) with relu; bias_ptr 0 = none; "
        "multiplier float32 (n,).",
        arg("a_ptr"), arg("b_ptr"), arg("b_zero_point_ptr"), arg("bias_ptr"), arg("multiplier_ptr"),
        arg("out_ptr"), arg("m"), arg("k"), arg("n"), arg("a_zero_point"), arg("y_zero_point"), arg("relu"),
        arg("a_dtype"), arg("b_dtype"), arg("out_dtype"), stream);
  m.def("conv2d_integer", &conv2d_integer,
        "ONNX ConvInteger, NCHW x, OIHW w (lepton/conv.h geometry) as a dp4a implicit GEMM; padding takes "
        "x_zero_point; w_zero_point_ptr: int32 per output channel, 0 = zero point 0.",
        arg("x_ptr"), arg("w_ptr"), arg("w_zero_point_ptr"), arg("out_ptr"), arg("n"), arg("c_in"), arg("h"),
        arg("w"), arg("c_out"), arg("kernel_h"), arg("kernel_w"), arg("out_h"), arg("out_w"), arg("stride_h"),
        arg("stride_w"), arg("pad_top"), arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("dilation_h"),
        arg("dilation_w"), arg("groups"), arg("x_zero_point"), arg("x_dtype"), arg("w_dtype"),
        stream);
  m.def("qlinear_conv2d", &qlinear_conv2d,
        "conv2d_integer requantized per output channel (as qlinear_matmul); bias_ptr 0 = none.",
        arg("x_ptr"), arg("w_ptr"), arg("w_zero_point_ptr"), arg("bias_ptr"), arg("multiplier_ptr"),
        arg("out_ptr"), arg("n"), arg("c_in"), arg("h"), arg("w"), arg("c_out"), arg("kernel_h"),
        arg("kernel_w"), arg("out_h"), arg("out_w"), arg("stride_h"), arg("stride_w"), arg("pad_top"),
        arg("pad_bottom"), arg("pad_left"), arg("pad_right"), arg("dilation_h"), arg("dilation_w"),
        arg("groups"), arg("x_zero_point"), arg("y_zero_point"), arg("relu"), arg("x_dtype"), arg("w_dtype"),
        arg("out_dtype"), stream);
  m.def("qgemm_plan", &qgemm_plan,
        "(grid_x, grid_y, grid_z, threads) of the integer GEMM kernels for an (m x n) output per group.",
        arg("m"), arg("n"), arg("groups"));

  m.def("device_count", &device_count, "Number of CUDA devices; 0 when there is no driver or device.");
  m.def("device_name", &device_name, "Name of CUDA device `index`.", arg("index"));
  m.def("runtime_version", &runtime_version, "CUDA runtime version linked in (e.g. 13000).");
  m.def("driver_version", &driver_version, "CUDA driver version, 0 when there is no driver.");
  m.def("synchronize", &synchronize, "cudaDeviceSynchronize(); RuntimeError on a pending kernel error.");
  m.attr("DTYPE_FLOAT32") = 0;
  m.attr("DTYPE_FLOAT64") = 1;
}
