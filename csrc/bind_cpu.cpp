// bind_cpu.cpp -- the pybind11 module _lepton_cpu: NumPy arrays in, results
// written in place into caller-preallocated outputs. Every argument is checked
// here (dtype, C-contiguity, alignment, writeability, shapes, overlap) while
// the GIL is held; the kernel then runs with the GIL released and a non-ok
// Status becomes ValueError (invalid_argument) or RuntimeError (internal),
// prefixed with the op name. Arrays are taken as plain objects and never
// converted: a converted output would be a silent copy.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lepton/elementwise.h"
#include "lepton/pool.h"
#include "lepton/runtime.h"

namespace py = pybind11;

namespace {

enum class DType { f32, f64 };

[[noreturn]] void type_error(const std::string& op, const std::string& msg) {
  throw py::type_error(op + ": " + msg);
}
[[noreturn]] void value_error(const std::string& op, const std::string& msg) {
  throw py::value_error(op + ": " + msg);
}

void raise_status(const std::string& op, const lepton::Status& st) {
  if (st.ok()) return;
  if (st.code == lepton::StatusCode::invalid_argument) value_error(op, st.message);
  throw std::runtime_error(op + ": " + st.message);
}

std::string type_name(const py::handle& o) {
  return py::str(py::type::handle_of(o).attr("__name__")).cast<std::string>();
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + (s.size() == 1 ? ",)" : ")");
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// One checked array argument.
struct Arg {
  const char* name;
  py::array a;
  DType dt = DType::f32;
};

Arg array_arg(const std::string& op, const char* name, const py::object& o, bool writeable) {
  if (!py::isinstance<py::array>(o))
    type_error(op, std::string(name) + " must be a numpy.ndarray, got " + type_name(o));
  Arg r{name, py::reinterpret_borrow<py::array>(o)};
  if (!(r.a.flags() & py::array::c_style))
    value_error(op, std::string(name) + " must be C-contiguous");
  if (writeable && !r.a.writeable()) value_error(op, std::string(name) + " must be writeable");
  if (reinterpret_cast<uintptr_t>(r.a.data()) % static_cast<uintptr_t>(r.a.itemsize()) != 0)
    value_error(op, std::string(name) + " must be aligned to its itemsize");
  return r;
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A float32/float64 array; `like` (when given) fixes the dtype it must have.
Arg float_arg(const std::string& op, const char* name, const py::object& o, bool writeable,
              const Arg* like = nullptr) {
  Arg r = array_arg(op, name, o, writeable);
  if (py::isinstance<py::array_t<float>>(r.a))
    r.dt = DType::f32;
  else if (py::isinstance<py::array_t<double>>(r.a))
    r.dt = DType::f64;
  else
    type_error(op, std::string(name) + " must have dtype float32 or float64, got " + dtype_str(r.a));
  if (like && like->dt != r.dt)
    type_error(op, std::string(name) + " must have the same dtype as " + like->name + " (" +
                       dtype_str(like->a) + "), got " + dtype_str(r.a));
  return r;
}

Arg index_arg(const std::string& op, const char* name, const py::object& o, bool writeable) {
  Arg r = array_arg(op, name, o, writeable);
  if (!py::isinstance<py::array_t<int64_t>>(r.a))
    type_error(op, std::string(name) + " must have dtype int64, got " + dtype_str(r.a));
  return r;
}

void expect_ndim(const std::string& op, const Arg& a, int ndim, const char* layout) {
  if (a.a.ndim() != ndim)
    value_error(op, std::string(a.name) + " must be " + std::to_string(ndim) + "-D " + layout +
                        ", got shape " + shape_str(shape_of(a.a)));
}

void expect_shape(const std::string& op, const Arg& a, const std::vector<int64_t>& want) {
  std::vector<int64_t> got = shape_of(a.a);
  if (got != want)
    value_error(op, std::string(a.name) + " must have shape " + shape_str(want) + ", got " +
                        shape_str(got));
}

// `out` must not overlap `in`; an exact alias (same start, same size) is
// allowed only when `allow_alias` (elementwise ops in place).
void expect_disjoint(const std::string& op, const Arg& out, const Arg& in, bool allow_alias) {
  const auto o0 = reinterpret_cast<uintptr_t>(out.a.data()), i0 = reinterpret_cast<uintptr_t>(in.a.data());
  const auto on = static_cast<uintptr_t>(out.a.nbytes()), in_n = static_cast<uintptr_t>(in.a.nbytes());
  if (on == 0 || in_n == 0) return;
  if (o0 >= i0 + in_n || i0 >= o0 + on) return;
  if (allow_alias && o0 == i0 && on == in_n) return;
  value_error(op, std::string(out.name) + " must not overlap " + in.name +
                      (allow_alias ? " (except being exactly the same array)" : ""));
}

template <class T>
const T* cptr(const Arg& a) {
  return static_cast<const T*>(a.a.data());
}
template <class T>
T* mptr(Arg& a) {
  return static_cast<T*>(a.a.mutable_data());
}

// ---------------------------------------------------------------- elementwise
void relu(const py::object& xo, const py::object& oo) {
  const std::string op = "relu";
  Arg x = float_arg(op, "x", xo, false);
  Arg out = float_arg(op, "out", oo, true, &x);
  expect_shape(op, out, shape_of(x.a));
  expect_disjoint(op, out, x, true);
  const int64_t n = x.a.size();
  lepton::Status st;
  if (x.dt == DType::f32) {
    const float* xp = cptr<float>(x);
    float* yp = mptr<float>(out);
    py::gil_scoped_release nogil;
    st = lepton::relu(xp, yp, n);
  } else {
    const double* xp = cptr<double>(x);
    double* yp = mptr<double>(out);
    py::gil_scoped_release nogil;
    st = lepton::relu(xp, yp, n);
  }
  raise_status(op, st);
}

void relu_backward(const py::object& go, const py::object& xo, const py::object& oo) {
  const std::string op = "relu_backward";
  Arg g = float_arg(op, "grad_out", go, false);
  Arg x = float_arg(op, "x", xo, false, &g);
  Arg out = float_arg(op, "out", oo, true, &g);
  expect_shape(op, x, shape_of(g.a));
  expect_shape(op, out, shape_of(g.a));
  expect_disjoint(op, out, g, true);
  expect_disjoint(op, out, x, true);
  const int64_t n = g.a.size();
  lepton::Status st;
  if (g.dt == DType::f32) {
    const float *gp = cptr<float>(g), *xp = cptr<float>(x);
    float* op_ = mptr<float>(out);
    py::gil_scoped_release nogil;
    st = lepton::relu_backward(gp, xp, op_, n);
  } else {
    const double *gp = cptr<double>(g), *xp = cptr<double>(x);
    double* op_ = mptr<double>(out);
    py::gil_scoped_release nogil;
    st = lepton::relu_backward(gp, xp, op_, n);
  }
  raise_status(op, st);
}

lepton::BiasReluDesc bias_desc(const Arg& x3) {
  lepton::BiasReluDesc d;
  d.n = x3.a.shape(0);
  d.c = x3.a.shape(1);
  d.s = x3.a.shape(2);
  return d;
}

void bias_relu(const py::object& xo, const py::object& bo, const py::object& oo) {
  const std::string op = "bias_relu";
  Arg x = float_arg(op, "x3", xo, false);
  Arg b = float_arg(op, "bias", bo, false, &x);
  Arg out = float_arg(op, "out3", oo, true, &x);
  expect_ndim(op, x, 3, "(N, C, S)");
  expect_shape(op, b, {x.a.shape(1)});
  expect_shape(op, out, shape_of(x.a));
  expect_disjoint(op, out, x, true);
  expect_disjoint(op, out, b, false);
  const lepton::BiasReluDesc d = bias_desc(x);
  lepton::Status st;
  if (x.dt == DType::f32) {
    const float *xp = cptr<float>(x), *bp = cptr<float>(b);
    float* yp = mptr<float>(out);
    py::gil_scoped_release nogil;
    st = lepton::bias_relu(d, xp, bp, yp);
  } else {
    const double *xp = cptr<double>(x), *bp = cptr<double>(b);
    double* yp = mptr<double>(out);
    py::gil_scoped_release nogil;
    st = lepton::bias_relu(d, xp, bp, yp);
  }
  raise_status(op, st);
}

void bias_relu_backward(const py::object& go, const py::object& yo, const py::object& gxo,
                        const py::object& gbo) {
  const std::string op = "bias_relu_backward";
  Arg g = float_arg(op, "grad_out3", go, false);
  Arg y = float_arg(op, "y3", yo, false, &g);
  Arg gx = float_arg(op, "grad_x3", gxo, true, &g);
  expect_ndim(op, g, 3, "(N, C, S)");
  expect_shape(op, y, shape_of(g.a));
  expect_shape(op, gx, shape_of(g.a));
  expect_disjoint(op, gx, g, true);
  expect_disjoint(op, gx, y, true);
  std::optional<Arg> gb;
  if (!gbo.is_none()) {
    gb = float_arg(op, "grad_bias", gbo, true, &g);
    expect_shape(op, *gb, {g.a.shape(1)});
    expect_disjoint(op, *gb, g, false);
    expect_disjoint(op, *gb, y, false);
    expect_disjoint(op, *gb, gx, false);
  }
  const lepton::BiasReluDesc d = bias_desc(g);
  lepton::Status st;
  if (g.dt == DType::f32) {
    const float *gp = cptr<float>(g), *yp = cptr<float>(y);
    float* gxp = mptr<float>(gx);
    float* gbp = gb ? mptr<float>(*gb) : nullptr;
    py::gil_scoped_release nogil;
    st = lepton::bias_relu_backward(d, gp, yp, gxp, gbp);
  } else {
    const double *gp = cptr<double>(g), *yp = cptr<double>(y);
    double* gxp = mptr<double>(gx);
    double* gbp = gb ? mptr<double>(*gb) : nullptr;
    py::gil_scoped_release nogil;
    st = lepton::bias_relu_backward(d, gp, yp, gxp, gbp);
  }
  raise_status(op, st);
}

// ---------------------------------------------------------------- pooling
lepton::Pool2dDesc pool_desc(const Arg& in4, const Arg& out4, int64_t kh, int64_t kw, int64_t sh,
                             int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                             int64_t dh, int64_t dw) {
  lepton::Pool2dDesc d;
  d.n = in4.a.shape(0), d.c = in4.a.shape(1), d.h = in4.a.shape(2), d.w = in4.a.shape(3);
  d.out_h = out4.a.shape(2), d.out_w = out4.a.shape(3);
  d.kernel_h = kh, d.kernel_w = kw, d.stride_h = sh, d.stride_w = sw;
  d.pad_top = pt, d.pad_bottom = pb, d.pad_left = pl, d.pad_right = pr;
  d.dilation_h = dh, d.dilation_w = dw;
  return d;
}

// in4 is (N, C, H, W), out4 must be (N, C, *, *).
void expect_pool_shapes(const std::string& op, const Arg& in4, const Arg& out4) {
  expect_ndim(op, in4, 4, "(N, C, H, W)");
  expect_ndim(op, out4, 4, "(N, C, OH, OW)");
  if (out4.a.shape(0) != in4.a.shape(0) || out4.a.shape(1) != in4.a.shape(1))
    value_error(op, std::string(out4.name) + " must have shape (" + std::to_string(in4.a.shape(0)) +
                        ", " + std::to_string(in4.a.shape(1)) + ", OH, OW), got " +
                        shape_str(shape_of(out4.a)));
}

template <class T>
lepton::Status call_max_pool(const lepton::Pool2dDesc& d, const Arg& x, Arg& out, int64_t* ind) {
  const T* xp = cptr<T>(x);
  T* yp = mptr<T>(out);
  py::gil_scoped_release nogil;
  return lepton::max_pool2d(d, xp, yp, ind);
}

void max_pool2d(const py::object& xo, const py::object& oo, const py::object& io, int64_t kh,
                int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                int64_t pr, int64_t dh, int64_t dw) {
  const std::string op = "max_pool2d";
  Arg x = float_arg(op, "x", xo, false);
  Arg out = float_arg(op, "out", oo, true, &x);
  expect_pool_shapes(op, x, out);
  expect_disjoint(op, out, x, false);
  std::optional<Arg> ind;
  if (!io.is_none()) {
    ind = index_arg(op, "indices", io, true);
    expect_shape(op, *ind, shape_of(out.a));
    expect_disjoint(op, *ind, x, false);
    expect_disjoint(op, *ind, out, false);
  }
  const lepton::Pool2dDesc d = pool_desc(x, out, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw);
  int64_t* ip = ind ? mptr<int64_t>(*ind) : nullptr;
  lepton::Status st = x.dt == DType::f32 ? call_max_pool<float>(d, x, out, ip)
                                         : call_max_pool<double>(d, x, out, ip);
  raise_status(op, st);
}

template <class T>
lepton::Status call_max_pool_bwd(const lepton::Pool2dDesc& d, const Arg& g, const Arg& ind,
                                 Arg& gi) {
  const T* gp = cptr<T>(g);
  const int64_t* ip = cptr<int64_t>(ind);
  T* gip = mptr<T>(gi);
  py::gil_scoped_release nogil;
  return lepton::max_pool2d_backward(d, gp, ip, gip);
}

void max_pool2d_backward(const py::object& go, const py::object& io, const py::object& gio) {
  const std::string op = "max_pool2d_backward";
  Arg g = float_arg(op, "grad_out", go, false);
  Arg ind = index_arg(op, "indices", io, false);
  Arg gi = float_arg(op, "grad_in", gio, true, &g);
  expect_pool_shapes(op, gi, g);
  expect_shape(op, ind, shape_of(g.a));
  expect_disjoint(op, gi, g, false);
  expect_disjoint(op, gi, ind, false);
  // The indices carry the geometry; the descriptor needs only the sizes.
  const lepton::Pool2dDesc d = pool_desc(gi, g, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1);
  lepton::Status st = g.dt == DType::f32 ? call_max_pool_bwd<float>(d, g, ind, gi)
                                         : call_max_pool_bwd<double>(d, g, ind, gi);
  raise_status(op, st);
}

int64_t divisor_value(const std::string& op, const std::optional<int64_t>& v) {
  if (!v) return 0;
  if (*v < 0) value_error(op, "divisor_override must be None or a positive integer, got " +
                                  std::to_string(*v));
  return *v;
}

template <class T>
lepton::Status call_avg(const lepton::Pool2dDesc& d, const Arg& x, Arg& out) {
  const T* xp = cptr<T>(x);
  T* yp = mptr<T>(out);
  py::gil_scoped_release nogil;
  return lepton::avg_pool2d(d, xp, yp);
}

void avg_pool2d(const py::object& xo, const py::object& oo, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, bool include_pad,
                std::optional<int64_t> divisor) {
  const std::string op = "avg_pool2d";
  Arg x = float_arg(op, "x", xo, false);
  Arg out = float_arg(op, "out", oo, true, &x);
  expect_pool_shapes(op, x, out);
  expect_disjoint(op, out, x, false);
  lepton::Pool2dDesc d = pool_desc(x, out, kh, kw, sh, sw, pt, pb, pl, pr, 1, 1);
  d.count_include_pad = include_pad;
  d.divisor_override = divisor_value(op, divisor);
  lepton::Status st = x.dt == DType::f32 ? call_avg<float>(d, x, out) : call_avg<double>(d, x, out);
  raise_status(op, st);
}

template <class T>
lepton::Status call_avg_bwd(const lepton::Pool2dDesc& d, const Arg& g, Arg& gi) {
  const T* gp = cptr<T>(g);
  T* gip = mptr<T>(gi);
  py::gil_scoped_release nogil;
  return lepton::avg_pool2d_backward(d, gp, gip);
}

void avg_pool2d_backward(const py::object& go, const py::object& gio, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                         bool include_pad, std::optional<int64_t> divisor) {
  const std::string op = "avg_pool2d_backward";
  Arg g = float_arg(op, "grad_out", go, false);
  Arg gi = float_arg(op, "grad_in", gio, true, &g);
  expect_pool_shapes(op, gi, g);
  expect_disjoint(op, gi, g, false);
  lepton::Pool2dDesc d = pool_desc(gi, g, kh, kw, sh, sw, pt, pb, pl, pr, 1, 1);
  d.count_include_pad = include_pad;
  d.divisor_override = divisor_value(op, divisor);
  lepton::Status st =
      g.dt == DType::f32 ? call_avg_bwd<float>(d, g, gi) : call_avg_bwd<double>(d, g, gi);
  raise_status(op, st);
}

// ---------------------------------------------------------------- runtime
void set_isa(const std::string& name) {
  lepton::Isa isa;
  if (name == "generic")
    isa = lepton::Isa::generic;
  else if (name == "avx2")
    isa = lepton::Isa::avx2;
  else if (name == "avx512")
    isa = lepton::Isa::avx512;
  else
    value_error("set_isa", "unknown ISA '" + name + "' (expected 'generic', 'avx2' or 'avx512')");
  raise_status("set_isa", lepton::set_active_isa(isa));
}

void set_num_threads(int n) {
  if (n < 1) value_error("set_num_threads", "n must be >= 1, got " + std::to_string(n));
  lepton::set_num_threads(n);
}

int parallel_region_threads() {
  int seen = 0;
  const int want = lepton::num_threads();
  py::gil_scoped_release nogil;
#pragma omp parallel num_threads(want)
  {
#pragma omp master
    seen = omp_get_num_threads();
  }
  return seen;
}

double measure_fma_gflops(int threads, double seconds) {
  if (threads < 1) value_error("measure_fma_gflops", "threads must be >= 1, got " + std::to_string(threads));
  if (!(seconds > 0) || seconds > 600)
    value_error("measure_fma_gflops", "seconds must be in (0, 600], got " + std::to_string(seconds));
  py::gil_scoped_release nogil;
  return lepton::measure_fma_gflops(threads, seconds);
}

double measure_copy_gbs(int64_t bytes, int repeats) {
  if (bytes < 1) value_error("measure_copy_gbs", "bytes must be >= 1, got " + std::to_string(bytes));
  if (repeats < 1) value_error("measure_copy_gbs", "repeats must be >= 1, got " + std::to_string(repeats));
  double r;
  {
    py::gil_scoped_release nogil;
    r = lepton::measure_copy_gbs(bytes, repeats);
  }
  if (!(r > 0)) throw std::runtime_error("measure_copy_gbs: could not allocate the copy buffers");
  return r;
}

}  // namespace

#ifndef LEPTON_VERSION
#define LEPTON_VERSION ""
#endif

PYBIND11_MODULE(_lepton_cpu, m) {
  m.doc() = "lepton_kernels native CPU kernels (SIMD + OpenMP). Outputs are preallocated "
            "NumPy arrays written in place.";
  const char* version = LEPTON_VERSION;
  m.attr("__version__") = (version[0] ? version : "0.0.0");

  m.def("relu", &relu, py::arg("x"), py::arg("out"),
        "out = max(x, 0) elementwise (NaN stays NaN). float32/float64, C-contiguous; out may be x.");
  m.def("relu_backward", &relu_backward, py::arg("grad_out"), py::arg("x"), py::arg("out"),
        "out = 0 where x <= 0 else grad_out (a NaN x passes the gradient). out may alias an input.");
  m.def("bias_relu", &bias_relu, py::arg("x3"), py::arg("bias"), py::arg("out3"),
        "out3[n,c,s] = max(x3[n,c,s] + bias[c], 0). x3/out3 (N, C, S), bias (C,); out3 may be x3.");
  m.def("bias_relu_backward", &bias_relu_backward, py::arg("grad_out3"), py::arg("y3"),
        py::arg("grad_x3"), py::arg("grad_bias") = py::none(),
        "grad_x3 = 0 where y3 <= 0 else grad_out3; grad_bias[c] = sum over n, s of grad_x3 "
        "(deterministic order; skipped when grad_bias is None).");
  m.def("max_pool2d", &max_pool2d, py::arg("x"), py::arg("out"), py::arg("indices"),
        py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"),
        py::arg("dilation_h"), py::arg("dilation_w"),
        "2-D max pooling, NCHW. x (N,C,H,W) -> out (N,C,OH,OW); indices None or int64 "
        "(N,C,OH,OW) receiving ih*W+iw (-1 for a window entirely in padding, value -inf). "
        "First strictly greater tap wins; a NaN in the window gives NaN.");
  m.def("max_pool2d_backward", &max_pool2d_backward, py::arg("grad_out"), py::arg("indices"),
        py::arg("grad_in"),
        "grad_in (N,C,H,W) = 0, then grad_out scattered (added) at indices; index -1 is "
        "skipped, any other index outside [0, H*W) raises ValueError.");
  m.def("avg_pool2d", &avg_pool2d, py::arg("x"), py::arg("out"), py::arg("kernel_h"),
        py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"),
        py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"),
        py::arg("count_include_pad"), py::arg("divisor_override"),
        "2-D average pooling, NCHW (no dilation). Divisor: divisor_override if given (None or "
        "0 = none), else the window clipped to the padded input (count_include_pad) or the "
        "taps inside the input; a window with no input tap gives 0.");
  m.def("avg_pool2d_backward", &avg_pool2d_backward, py::arg("grad_out"), py::arg("grad_in"),
        py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"),
        py::arg("count_include_pad"), py::arg("divisor_override"),
        "grad_in (N,C,H,W) = sum over windows of grad_out / divisor (same divisor rules as "
        "avg_pool2d).");

  m.def("isa", [] { return std::string(lepton::isa_name(lepton::active_isa())); },
        "The SIMD variant kernels use now: 'generic', 'avx2' or 'avx512'.");
  m.def("detected_isa", [] { return std::string(lepton::isa_name(lepton::detected_isa())); },
        "The best SIMD variant this CPU and OS support (cpuid + xgetbv).");
  m.def("set_isa", &set_isa, py::arg("name"),
        "Force a SIMD variant ('generic', 'avx2', 'avx512'); ValueError if unknown or unsupported.");
  m.def("cpu_features", &lepton::cpu_features, "Space-separated CPU/OS features seen by cpuid.");
  m.def("get_num_threads", &lepton::num_threads, "OpenMP threads the kernels use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Set the OpenMP threads the kernels use (n >= 1).");
  m.def("parallel_region_threads", &parallel_region_threads,
        "Run an OpenMP parallel region and return omp_get_num_threads() seen inside it.");
  m.def("openmp_version", [] { return static_cast<int>(_OPENMP); },
        "The _OPENMP version macro the module was compiled with (e.g. 201511).");
  m.def("measure_fma_gflops", &measure_fma_gflops, py::arg("threads"), py::arg("seconds"),
        "Measured peak fp32 FMA GFLOP/s of the active ISA on `threads` threads.");
  m.def("measure_copy_gbs", &measure_copy_gbs, py::arg("bytes"), py::arg("repeats"),
        "Measured copy bandwidth (bytes read + written per second, GB/s), best of `repeats`.");
}
