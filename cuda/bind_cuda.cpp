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
// inside a kernel surfaces at the next synchronizing call.
//
// Importing the module needs no GPU or driver; device_count() is 0 there.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "launch.h"

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

// out must be floor(span / stride) + 1 or ceil(span / stride) + 1, span = the padded
// input minus the dilated kernel extent (0 outputs when the kernel does not fit).
void check_axis(const char* op, const char* axis, int64_t in, int64_t out, int64_t k, int64_t s, int64_t d,
                int64_t pad_lo, int64_t pad_hi) {
  const int64_t span = in + pad_lo + pad_hi - ((k - 1) * d + 1);
  int64_t lo = 0, hi = 0;
  if (span >= 0) {
    lo = span / s + 1;
    hi = (span + s - 1) / s + 1;
  }
  if (out == lo || out == hi) return;
  bad(op, std::string("out_") + axis + " = " + std::to_string(out) + " does not match the geometry (expected " +
              std::to_string(lo) + (hi != lo ? " or " + std::to_string(hi) : std::string()) + ")");
}

struct Geometry {
  lepton::Pool2dDesc d;
  int64_t in_count = 0, out_count = 0;
};

Geometry pool_geometry(const char* op, int64_t n, int64_t c, int64_t h, int64_t w, int64_t out_h,
                       int64_t out_w, int64_t kernel_h, int64_t kernel_w, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right, int64_t dilation_h, int64_t dilation_w) {
  need_nonneg(op, "n", n);
  need_nonneg(op, "c", c);
  need_nonneg(op, "h", h);
  need_nonneg(op, "w", w);
  need_nonneg(op, "out_h", out_h);
  need_nonneg(op, "out_w", out_w);
  need_pos(op, "kernel_h", kernel_h);
  need_pos(op, "kernel_w", kernel_w);
  need_pos(op, "stride_h", stride_h);
  need_pos(op, "stride_w", stride_w);
  need_pos(op, "dilation_h", dilation_h);
  need_pos(op, "dilation_w", dilation_w);
  need_nonneg(op, "pad_top", pad_top);
  need_nonneg(op, "pad_bottom", pad_bottom);
  need_nonneg(op, "pad_left", pad_left);
  need_nonneg(op, "pad_right", pad_right);
  // As lepton::validate: each size below 2^31 keeps every sum/product the launchers
  // form inside int64, and out_h/out_w must match floor or ceil rounding.
  const int64_t limit = int64_t(1) << 31;
  for (int64_t v : {h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_bottom,
                    pad_left, pad_right, dilation_h, dilation_w}) {
    if (v >= limit) bad(op, "a size, kernel, stride, padding or dilation is >= 2^31 (" + std::to_string(v) + ")");
  }
  check_axis(op, "h", h, out_h, kernel_h, stride_h, dilation_h, pad_top, pad_bottom);
  check_axis(op, "w", w, out_w, kernel_w, stride_w, dilation_w, pad_left, pad_right);
  Geometry g;
  g.in_count = product(op, {n, c, h, w});
  g.out_count = product(op, {n, c, out_h, out_w});
  lepton::Pool2dDesc& d = g.d;
  d.n = n, d.c = c, d.h = h, d.w = w, d.out_h = out_h, d.out_w = out_w;
  d.kernel_h = kernel_h, d.kernel_w = kernel_w, d.stride_h = stride_h, d.stride_w = stride_w;
  d.pad_top = pad_top, d.pad_bottom = pad_bottom, d.pad_left = pad_left, d.pad_right = pad_right;
  d.dilation_h = dilation_h, d.dilation_w = dilation_w;
  return g;
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
  need_nonneg(op, "n", n);
  need_nonneg(op, "c", c);
  need_nonneg(op, "h", h);
  need_nonneg(op, "w", w);
  need_nonneg(op, "out_h", out_h);
  need_nonneg(op, "out_w", out_w);
  const int64_t limit = int64_t(1) << 31;
  for (int64_t v : {h, w, out_h, out_w}) {
    if (v >= limit) bad(op, "a size is >= 2^31 (" + std::to_string(v) + ")");
  }
  const int64_t planes = product(op, {n, c});
  const int64_t in_plane = h * w, out_plane = out_h * out_w;  // each < 2^62
  const int64_t in_count = product(op, {planes, in_plane});
  const int64_t out_count = product(op, {planes, out_plane});
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
  need_nonneg(op, "divisor_override", divisor_override);
  if (divisor_override >= (int64_t(1) << 31))
    bad(op, "divisor_override must be < 2^31, got " + std::to_string(divisor_override));
  Geometry g = pool_geometry(op, n, c, h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                             pad_bottom, pad_left, pad_right, 1, 1);
  g.d.count_include_pad = count_include_pad;
  g.d.divisor_override = divisor_override;
  return g;
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

  m.def("device_count", &device_count, "Number of CUDA devices; 0 when there is no driver or device.");
  m.def("device_name", &device_name, "Name of CUDA device `index`.", arg("index"));
  m.def("runtime_version", &runtime_version, "CUDA runtime version linked in (e.g. 13000).");
  m.def("driver_version", &driver_version, "CUDA driver version, 0 when there is no driver.");
  m.def("synchronize", &synchronize, "cudaDeviceSynchronize(); RuntimeError on a pending kernel error.");
  m.attr("DTYPE_FLOAT32") = 0;
  m.attr("DTYPE_FLOAT64") = 1;
}
