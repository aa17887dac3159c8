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

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bind_common.h"
#include "lepton/activation.h"
#include "lepton/conv.h"
#include "lepton/elementwise.h"
#include "lepton/gemm.h"
#include "lepton/linear.h"
#include "lepton/loss.h"
#include "lepton/norm.h"
#include "lepton/optim.h"
#include "lepton/pool.h"
#include "lepton/quant.h"
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

using lepton_bind::raise_status;

std::string type_name(const py::handle& o) {
  return py::str(py::type::handle_of(o).attr("__name__")).cast<std::string>();
}

using lepton_bind::shape_str;

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

// Runs f(T{}) for the arrays' float type.
template <class F>
lepton::Status for_dtype(DType dt, F f) {
  return dt == DType::f32 ? f(float{}) : f(double{});
}

// x and an out of its shape and dtype (out may be exactly x: in place).
std::pair<Arg, Arg> unary_args(const std::string& op, const py::object& xo, const py::object& oo) {
  Arg x = float_arg(op, "x", xo, false);
  Arg out = float_arg(op, "out", oo, true, &x);
  expect_shape(op, out, shape_of(x.a));
  expect_disjoint(op, out, x, true);
  return {x, out};
}

// grad_out, the forward array the derivative reads (`saved_name`), and an out of
// grad_out's shape and dtype (out may be exactly either input).
std::tuple<Arg, Arg, Arg> unary_grad_args(const std::string& op, const py::object& go, const char* saved_name,
                                          const py::object& so, const py::object& oo) {
  Arg g = float_arg(op, "grad_out", go, false);
  Arg saved = float_arg(op, saved_name, so, false, &g);
  Arg out = float_arg(op, "out", oo, true, &g);
  expect_shape(op, saved, shape_of(g.a));
  expect_shape(op, out, shape_of(g.a));
  expect_disjoint(op, out, g, true);
  expect_disjoint(op, out, saved, true);
  return {g, saved, out};
}

// ---------------------------------------------------------------- elementwise
void relu(const py::object& xo, const py::object& oo) {
  const std::string op = "relu";
  auto [x, out] = unary_args(op, xo, oo);
  const int64_t n = x.a.size();
  raise_status(op, for_dtype(x.dt, [&, &x = x, &out = out](auto t) {
    using T = decltype(t);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(out);
    py::gil_scoped_release nogil;
    return lepton::relu(xp, yp, n);
  }));
}

void relu_backward(const py::object& go, const py::object& xo, const py::object& oo) {
  const std::string op = "relu_backward";
  auto [g, x, out] = unary_grad_args(op, go, "x", xo, oo);
  const int64_t n = g.a.size();
  raise_status(op, for_dtype(g.dt, [&, &g = g, &x = x, &out = out](auto t) {
    using T = decltype(t);
    const T *gp = cptr<T>(g), *xp = cptr<T>(x);
    T* ip = mptr<T>(out);
    py::gil_scoped_release nogil;
    return lepton::relu_backward(gp, xp, ip, n);
  }));
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

// The optional int64 indices output of max_pool2d: out's shape, apart from x and out.
std::optional<Arg> pool_indices_arg(const std::string& op, const py::object& io, const Arg& x, const Arg& out) {
  if (io.is_none()) return std::nullopt;
  Arg ind = index_arg(op, "indices", io, true);
  expect_shape(op, ind, shape_of(out.a));
  expect_disjoint(op, ind, x, false);
  expect_disjoint(op, ind, out, false);
  return ind;
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
  std::optional<Arg> ind = pool_indices_arg(op, io, x, out);
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

// None -> 0 ("no override"); a negative value is refused by lepton::validate_avg_pool.
int64_t divisor_value(const std::optional<int64_t>& v) { return v ? *v : 0; }

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
  d.divisor_override = divisor_value(divisor);
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
  d.divisor_override = divisor_value(divisor);
  lepton::Status st =
      g.dt == DType::f32 ? call_avg_bwd<float>(d, g, gi) : call_avg_bwd<double>(d, g, gi);
  raise_status(op, st);
}

// ---------------------------------------------------------------- linear algebra
std::optional<Arg> optional_float(const std::string& op, const char* name, const py::object& o,
                                  bool writeable, const Arg* like) {
  if (o.is_none()) return std::nullopt;
  return float_arg(op, name, o, writeable, like);
}

// Every output must be disjoint from every input and from the other outputs.
void expect_outputs_disjoint(const std::string& op, const std::vector<const Arg*>& outs,
                             const std::vector<const Arg*>& ins) {
  for (size_t i = 0; i < outs.size(); ++i) {
    for (const Arg* in : ins) expect_disjoint(op, *outs[i], *in, false);
    for (size_t j = 0; j < i; ++j) expect_disjoint(op, *outs[i], *outs[j], false);
  }
}

template <class T>
const T* opt_cptr(const std::optional<Arg>& a) {
  return a ? cptr<T>(*a) : nullptr;
}
template <class T>
T* opt_mptr(std::optional<Arg>& a) {
  return a ? mptr<T>(*a) : nullptr;
}

template <class T>
lepton::Status call_matmul(int64_t m, int64_t k, int64_t n, const Arg& a, const Arg& b, Arg& c) {
  const T *ap = cptr<T>(a), *bp = cptr<T>(b);
  T* cp = mptr<T>(c);
  py::gil_scoped_release nogil;
  return lepton::matmul(m, k, n, ap, bp, cp);
}

void matmul(const py::object& ao, const py::object& bo, const py::object& oo) {
  const std::string op = "matmul";
  Arg a = float_arg(op, "a", ao, false);
  Arg b = float_arg(op, "b", bo, false, &a);
  Arg out = float_arg(op, "out", oo, true, &a);
  expect_ndim(op, a, 2, "(M, K)");
  expect_ndim(op, b, 2, "(K, N)");
  const int64_t m = a.a.shape(0), k = a.a.shape(1), n = b.a.shape(1);
  if (b.a.shape(0) != k)
    value_error(op, "b must have " + std::to_string(k) + " rows (a is " +
                        shape_str(shape_of(a.a)) + "), got shape " + shape_str(shape_of(b.a)));
  expect_shape(op, out, {m, n});
  expect_outputs_disjoint(op, {&out}, {&a, &b});
  lepton::Status st = a.dt == DType::f32 ? call_matmul<float>(m, k, n, a, b, out)
                                         : call_matmul<double>(m, k, n, a, b, out);
  raise_status(op, st);
}

// x2 (M, K) and weight (N, K): the descriptor, after checking K.
lepton::LinearDesc linear_desc(const std::string& op, const Arg& x, const Arg& w) {
  expect_ndim(op, x, 2, "(M, K)");
  expect_ndim(op, w, 2, "(N, K)");
  if (w.a.shape(1) != x.a.shape(1))
    value_error(op, std::string(w.name) + " must have " + std::to_string(x.a.shape(1)) +
                        " columns (in_features of " + x.name + "), got shape " +
                        shape_str(shape_of(w.a)));
  lepton::LinearDesc d;
  d.m = x.a.shape(0);
  d.k = x.a.shape(1);
  d.n = w.a.shape(0);
  return d;
}

template <class T>
lepton::Status call_linear(const lepton::LinearDesc& d, const Arg& x, const Arg& w,
                           const std::optional<Arg>& b, Arg& out) {
  const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = opt_cptr<T>(b);
  T* yp = mptr<T>(out);
  py::gil_scoped_release nogil;
  return lepton::linear(d, xp, wp, bp, yp);
}

void linear(const py::object& xo, const py::object& wo, const py::object& bo,
            const py::object& oo, bool relu) {
  const std::string op = "linear";
  Arg x = float_arg(op, "x2", xo, false);
  Arg w = float_arg(op, "weight", wo, false, &x);
  std::optional<Arg> b = optional_float(op, "bias", bo, false, &x);
  Arg out = float_arg(op, "out2", oo, true, &x);
  lepton::LinearDesc d = linear_desc(op, x, w);
  d.relu = relu;
  if (b) expect_shape(op, *b, {d.n});
  expect_shape(op, out, {d.m, d.n});
  std::vector<const Arg*> ins{&x, &w};
  if (b) ins.push_back(&*b);
  expect_outputs_disjoint(op, {&out}, ins);
  lepton::Status st = x.dt == DType::f32 ? call_linear<float>(d, x, w, b, out)
                                         : call_linear<double>(d, x, w, b, out);
  raise_status(op, st);
}

template <class T>
lepton::Status call_linear_bwd(const lepton::LinearDesc& d, const Arg& g, const Arg& x,
                               const Arg& w, const std::optional<Arg>& y, std::optional<Arg>& gx,
                               std::optional<Arg>& gw, std::optional<Arg>& gb) {
  const T *gp = cptr<T>(g), *xp = cptr<T>(x), *wp = cptr<T>(w), *yp = opt_cptr<T>(y);
  T *gxp = opt_mptr<T>(gx), *gwp = opt_mptr<T>(gw), *gbp = opt_mptr<T>(gb);
  py::gil_scoped_release nogil;
  return lepton::linear_backward(d, gp, xp, wp, yp, gxp, gwp, gbp);
}

void linear_backward(const py::object& go, const py::object& xo, const py::object& wo,
                     const py::object& yo, const py::object& gxo, const py::object& gwo,
                     const py::object& gbo) {
  const std::string op = "linear_backward";
  Arg g = float_arg(op, "grad_out2", go, false);
  Arg x = float_arg(op, "x2", xo, false, &g);
  Arg w = float_arg(op, "weight", wo, false, &g);
  std::optional<Arg> y = optional_float(op, "y2", yo, false, &g);
  std::optional<Arg> gx = optional_float(op, "grad_x2", gxo, true, &g);
  std::optional<Arg> gw = optional_float(op, "grad_w", gwo, true, &g);
  std::optional<Arg> gb = optional_float(op, "grad_b", gbo, true, &g);
  lepton::LinearDesc d = linear_desc(op, x, w);
  d.relu = y.has_value();
  expect_shape(op, g, {d.m, d.n});
  if (y) expect_shape(op, *y, {d.m, d.n});
  if (gx) expect_shape(op, *gx, {d.m, d.k});
  if (gw) expect_shape(op, *gw, {d.n, d.k});
  if (gb) expect_shape(op, *gb, {d.n});
  std::vector<const Arg*> ins{&g, &x, &w}, outs;
  if (y) ins.push_back(&*y);
  for (auto* o : {&gx, &gw, &gb})
    if (*o) outs.push_back(&**o);
  expect_outputs_disjoint(op, outs, ins);
  lepton::Status st = g.dt == DType::f32 ? call_linear_bwd<float>(d, g, x, w, y, gx, gw, gb)
                                         : call_linear_bwd<double>(d, g, x, w, y, gx, gw, gb);
  raise_status(op, st);
}

// ---------------------------------------------------------------- convolution
struct ConvGeometry {
  int64_t sh, sw, pt, pb, pl, pr, dh, dw, groups;
};

// x (N, C, H, W), weight (O, C/groups, KH, KW): the descriptor without out_h/out_w.
lepton::Conv2dDesc conv_desc(const std::string& op, const Arg& x, const Arg& w,
                             const ConvGeometry& g) {
  expect_ndim(op, x, 4, "(N, C, H, W)");
  expect_ndim(op, w, 4, "(O, C/groups, KH, KW)");
  if (g.groups < 1) value_error(op, "groups must be >= 1, got " + std::to_string(g.groups));
  const int64_t c = x.a.shape(1), o = w.a.shape(0);
  if (c % g.groups != 0 || o % g.groups != 0)
    value_error(op, "groups (" + std::to_string(g.groups) + ") must divide the input channels (" +
                        std::to_string(c) + ") and the output channels (" + std::to_string(o) +
                        ")");
  if (w.a.shape(1) * g.groups != c)
    value_error(op, std::string(w.name) + " must have C/groups = " + std::to_string(c / g.groups) +
                        " input channels, got shape " + shape_str(shape_of(w.a)));
  lepton::Conv2dDesc d;
  d.n = x.a.shape(0), d.c_in = c, d.h = x.a.shape(2), d.w = x.a.shape(3);
  d.c_out = o, d.kernel_h = w.a.shape(2), d.kernel_w = w.a.shape(3);
  d.stride_h = g.sh, d.stride_w = g.sw;
  d.pad_top = g.pt, d.pad_bottom = g.pb, d.pad_left = g.pl, d.pad_right = g.pr;
  d.dilation_h = g.dh, d.dilation_w = g.dw;
  d.groups = g.groups;
  return d;
}

// out-like (N, O, OH, OW): sets out_h/out_w (the kernel checks them against the geometry).
void conv_out_shape(const std::string& op, const Arg& out, lepton::Conv2dDesc* d) {
  expect_ndim(op, out, 4, "(N, O, OH, OW)");
  if (out.a.shape(0) != d->n || out.a.shape(1) != d->c_out)
    value_error(op, std::string(out.name) + " must have shape (" + std::to_string(d->n) + ", " +
                        std::to_string(d->c_out) + ", OH, OW), got " + shape_str(shape_of(out.a)));
  d->out_h = out.a.shape(2);
  d->out_w = out.a.shape(3);
}

template <class T>
lepton::Status call_conv(const lepton::Conv2dDesc& d, const Arg& x, const Arg& w,
                         const std::optional<Arg>& b, Arg& out) {
  const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = opt_cptr<T>(b);
  T* yp = mptr<T>(out);
  py::gil_scoped_release nogil;
  return lepton::conv2d(d, xp, wp, bp, yp);
}

void conv2d(const py::object& xo, const py::object& wo, const py::object& bo,
            const py::object& oo, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
            int64_t pr, int64_t dh, int64_t dw, int64_t groups, bool relu) {
  const std::string op = "conv2d";
  Arg x = float_arg(op, "x", xo, false);
  Arg w = float_arg(op, "weight", wo, false, &x);
  std::optional<Arg> b = optional_float(op, "bias", bo, false, &x);
  Arg out = float_arg(op, "out", oo, true, &x);
  lepton::Conv2dDesc d = conv_desc(op, x, w, {sh, sw, pt, pb, pl, pr, dh, dw, groups});
  d.relu = relu;
  if (b) expect_shape(op, *b, {d.c_out});
  conv_out_shape(op, out, &d);
  std::vector<const Arg*> ins{&x, &w};
  if (b) ins.push_back(&*b);
  expect_outputs_disjoint(op, {&out}, ins);
  lepton::Status st = x.dt == DType::f32 ? call_conv<float>(d, x, w, b, out)
                                         : call_conv<double>(d, x, w, b, out);
  raise_status(op, st);
}

template <class T>
lepton::Status call_conv_bwd(const lepton::Conv2dDesc& d, const Arg& g, const Arg& x,
                             const Arg& w, const std::optional<Arg>& y, std::optional<Arg>& gx,
                             std::optional<Arg>& gw, std::optional<Arg>& gb) {
  const T *gp = cptr<T>(g), *xp = cptr<T>(x), *wp = cptr<T>(w), *yp = opt_cptr<T>(y);
  T *gxp = opt_mptr<T>(gx), *gwp = opt_mptr<T>(gw), *gbp = opt_mptr<T>(gb);
  py::gil_scoped_release nogil;
  return lepton::conv2d_backward(d, gp, xp, wp, yp, gxp, gwp, gbp);
}

void conv2d_backward(const py::object& go, const py::object& xo, const py::object& wo,
                     const py::object& yo, const py::object& gxo, const py::object& gwo,
                     const py::object& gbo, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                     int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  const std::string op = "conv2d_backward";
  Arg g = float_arg(op, "grad_out", go, false);
  Arg x = float_arg(op, "x", xo, false, &g);
  Arg w = float_arg(op, "weight", wo, false, &g);
  std::optional<Arg> y = optional_float(op, "y", yo, false, &g);
  std::optional<Arg> gx = optional_float(op, "grad_x", gxo, true, &g);
  std::optional<Arg> gw = optional_float(op, "grad_w", gwo, true, &g);
  std::optional<Arg> gb = optional_float(op, "grad_b", gbo, true, &g);
  lepton::Conv2dDesc d = conv_desc(op, x, w, {sh, sw, pt, pb, pl, pr, dh, dw, groups});
  conv_out_shape(op, g, &d);
  if (y) expect_shape(op, *y, shape_of(g.a));
  if (gx) expect_shape(op, *gx, shape_of(x.a));
  if (gw) expect_shape(op, *gw, shape_of(w.a));
  if (gb) expect_shape(op, *gb, {d.c_out});
  std::vector<const Arg*> ins{&g, &x, &w}, outs;
  if (y) ins.push_back(&*y);
  for (auto* o : {&gx, &gw, &gb})
    if (*o) outs.push_back(&**o);
  expect_outputs_disjoint(op, outs, ins);
  lepton::Status st = g.dt == DType::f32 ? call_conv_bwd<float>(d, g, x, w, y, gx, gw, gb)
                                         : call_conv_bwd<double>(d, g, x, w, y, gx, gw, gb);
  raise_status(op, st);
}

// ---------------------------------------------------------------- optimizers
// One call updates every tensor of the lists. Every array is checked (and every
// pair of arrays for overlap) before any is touched; errors name the list and index.
struct ListItem {
  const char* list;  // e.g. "exp_avgs"
  size_t index;
  py::array a;
  DType dt = DType::f32;
  bool updated = false;

  std::string name() const { return std::string(list) + "[" + std::to_string(index) + "]"; }  // errors only
};

// float_arg's checks for the common case, without building the argument's name (a list of
// forty arrays paid more for the names than for the update): exactly numpy.ndarray,
// C-contiguous, aligned, native float32/float64, writeable when asked. False sends the
// caller through float_arg, which names what is wrong.
bool quick_float(const py::handle& o, bool writeable, DType* dt) {
  using py::detail::npy_api;
  if (Py_TYPE(o.ptr()) != npy_api::get().PyArray_Type_) return false;
  const auto* a = py::detail::array_proxy(o.ptr());
  const int need = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_ |
                   (writeable ? npy_api::NPY_ARRAY_WRITEABLE_ : 0);
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  if ((a->flags & need) != need || d->byteorder == '>') return false;
  if (d->type_num == npy_api::NPY_FLOAT_) *dt = DType::f32;
  else if (d->type_num == npy_api::NPY_DOUBLE_) *dt = DType::f64;
  else return false;
  return true;
}

py::list as_list(const std::string& op, const char* name, const py::object& o) {
  if (py::isinstance<py::list>(o)) return py::reinterpret_borrow<py::list>(o);
  if (py::isinstance<py::tuple>(o)) return py::list(o);
  type_error(op, std::string(name) + " must be a list of numpy arrays, got " + type_name(o));
}

bool same_shape(const py::array& a, const py::array& b) {
  if (a.ndim() != b.ndim()) return false;
  for (py::ssize_t k = 0; k < a.ndim(); ++k)
    if (a.shape(k) != b.shape(k)) return false;
  return true;
}

// Checks items[i] of list `name` like params[i]: float dtype (== params[0]'s), C-contiguous,
// writeable when updated, the param's shape.
ListItem list_item(const std::string& op, const char* list, size_t i, const py::object& o, bool updated,
                   const ListItem* param, const ListItem* first) {
  ListItem r{list, i, py::array(), DType::f32, updated};
  if (o.is_none()) value_error(op, r.name() + " is None but is needed");
  if (quick_float(o, updated, &r.dt)) {
    r.a = py::reinterpret_borrow<py::array>(o);
  } else {
    Arg a = float_arg(op, r.name().c_str(), o, updated);
    r.a = a.a;
    r.dt = a.dt;
  }
  if (first && first->dt != r.dt)
    type_error(op, r.name() + " must have the dtype of " + first->name() + " (" + dtype_str(first->a) +
                       "), got " + dtype_str(r.a));
  // The same shape exactly, as documented: (1, 8) for an (8,) param would update
  // correctly here but hides a caller's mix-up (and broadcasts differently elsewhere).
  if (param && !same_shape(param->a, r.a))
    value_error(op, r.name() + " must have the shape of " + param->name() + " " + shape_str(shape_of(param->a)) +
                        ", got " + shape_str(shape_of(r.a)));
  return r;
}

// No updated array may overlap any other array (updated or gradient); gradients may
// share memory with each other. Sweep over the arrays sorted by start address.
void expect_list_disjoint(const std::string& op, const std::vector<const ListItem*>& items) {
  struct Span {
    uintptr_t lo, hi;
    const ListItem* item;
  };
  std::vector<Span> spans;
  for (const ListItem* it : items) {
    if (it->a.nbytes() == 0) continue;
    const auto lo = reinterpret_cast<uintptr_t>(it->a.data());
    spans.push_back({lo, lo + static_cast<uintptr_t>(it->a.nbytes()), it});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.lo < b.lo; });
  uintptr_t end_all = 0, end_upd = 0;
  const ListItem *owner_all = nullptr, *owner_upd = nullptr;
  for (const Span& s : spans) {
    const ListItem* other = nullptr;
    if (s.item->updated && s.lo < end_all) other = owner_all;
    if (!s.item->updated && s.lo < end_upd) other = owner_upd;
    if (other)
      value_error(op, s.item->name() + " shares memory with " + other->name() +
                          "; every updated array must be separate from every other array");
    if (s.hi > end_all) end_all = s.hi, owner_all = s.item;
    if (s.item->updated && s.hi > end_upd) end_upd = s.hi, owner_upd = s.item;
  }
}

// The lists as ListItems, checked: names[k] is the k-th list; lists marked optional
// in `skip` (nullopt) are not read.
struct OptimLists {
  std::vector<std::vector<ListItem>> cols;  // cols[k][i]
  size_t count = 0;
  DType dt = DType::f32;
};

OptimLists optim_lists(const std::string& op, const std::vector<std::pair<const char*, py::object>>& named,
                       const std::vector<bool>& use, const std::vector<bool>& updated) {
  OptimLists r;
  std::vector<py::list> lists;
  for (size_t k = 0; k < named.size(); ++k) {
    lists.push_back(use[k] ? as_list(op, named[k].first, named[k].second) : py::list());
    if (use[k] && py::len(lists[k]) != py::len(lists[0]))
      value_error(op, std::string("the lists must have equal lengths, got ") + named[0].first + ": " +
                          std::to_string(py::len(lists[0])) + ", " + named[k].first + ": " +
                          std::to_string(py::len(lists[k])));
  }
  r.count = py::len(lists[0]);
  r.cols.resize(named.size());
  for (size_t i = 0; i < r.count; ++i) {
    const ListItem* first = i ? &r.cols[0][0] : nullptr;
    r.cols[0].push_back(list_item(op, named[0].first, i, lists[0][i], updated[0], nullptr, first));
    const ListItem* param = &r.cols[0][i];
    for (size_t k = 1; k < named.size(); ++k) {
      if (!use[k]) continue;
      r.cols[k].push_back(list_item(op, named[k].first, i, lists[k][i], updated[k], param, &r.cols[0][0]));
    }
  }
  std::vector<const ListItem*> all;
  for (auto& col : r.cols)
    for (auto& it : col) all.push_back(&it);
  expect_list_disjoint(op, all);
  if (r.count) r.dt = r.cols[0][0].dt;
  return r;
}

template <class T>
T* item_ptr(ListItem& it) {
  return static_cast<T*>(it.a.mutable_data());
}

template <class T>
lepton::Status call_sgd(const lepton::SgdParams& hp, OptimLists& L, bool use_buf) {
  std::vector<lepton::SgdTensor<T>> ts(L.count);
  for (size_t i = 0; i < L.count; ++i)
    ts[i] = {item_ptr<T>(L.cols[0][i]), static_cast<const T*>(L.cols[1][i].a.data()),
             use_buf ? item_ptr<T>(L.cols[2][i]) : nullptr, static_cast<int64_t>(L.cols[0][i].a.size())};
  py::gil_scoped_release nogil;
  return lepton::sgd_step(hp, ts.data(), static_cast<int64_t>(ts.size()));
}

void sgd_step(const py::object& params, const py::object& grads, const py::object& bufs, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              bool first_step) {
  const std::string op = "sgd_step";
  const bool use_buf = momentum != 0;
  if (use_buf && bufs.is_none()) value_error(op, "bufs (momentum buffers) are required when momentum != 0");
  OptimLists L = optim_lists(op, {{"params", params}, {"grads", grads}, {"momentum_buffers", bufs}},
                             {true, true, use_buf}, {true, false, true});
  lepton::SgdParams hp;
  hp.lr = lr, hp.momentum = momentum, hp.dampening = dampening, hp.weight_decay = weight_decay;
  hp.nesterov = nesterov, hp.maximize = maximize, hp.first_step = first_step;
  lepton::Status st = L.dt == DType::f32 ? call_sgd<float>(hp, L, use_buf) : call_sgd<double>(hp, L, use_buf);
  raise_status(op, st);
}

template <class T>
lepton::Status call_adam(const lepton::AdamParams& hp, OptimLists& L) {
  std::vector<lepton::AdamTensor<T>> ts(L.count);
  for (size_t i = 0; i < L.count; ++i)
    ts[i] = {item_ptr<T>(L.cols[0][i]), static_cast<const T*>(L.cols[1][i].a.data()), item_ptr<T>(L.cols[2][i]),
             item_ptr<T>(L.cols[3][i]), hp.amsgrad ? item_ptr<T>(L.cols[4][i]) : nullptr,
             static_cast<int64_t>(L.cols[0][i].a.size())};
  py::gil_scoped_release nogil;
  return lepton::adam_step(hp, ts.data(), static_cast<int64_t>(ts.size()));
}

void adam_step(const py::object& params, const py::object& grads, const py::object& exp_avgs,
               const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs, int64_t step, double lr,
               double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool amsgrad,
               bool maximize) {
  const std::string op = "adam_step";
  if (amsgrad && max_exp_avg_sqs.is_none()) value_error(op, "amsgrad=True needs max_exp_avg_sqs");
  OptimLists L = optim_lists(op,
                             {{"params", params}, {"grads", grads}, {"exp_avgs", exp_avgs},
                              {"exp_avg_sqs", exp_avg_sqs}, {"max_exp_avg_sqs", max_exp_avg_sqs}},
                             {true, true, true, true, amsgrad}, {true, false, true, true, true});
  lepton::AdamParams hp;
  hp.step = step, hp.lr = lr, hp.beta1 = beta1, hp.beta2 = beta2, hp.eps = eps;
  hp.weight_decay = weight_decay, hp.decoupled = decoupled, hp.amsgrad = amsgrad, hp.maximize = maximize;
  lepton::Status st = L.dt == DType::f32 ? call_adam<float>(hp, L) : call_adam<double>(hp, L);
  raise_status(op, st);
}

// ---------------------------------------------------------------- losses
template <class T>
lepton::Status call_cross_entropy(const lepton::CrossEntropyDesc& d, const Arg& z, const Arg& t,
                                  const std::optional<Arg>& w, Arg& losses, std::optional<Arg>& dl) {
  const T *zp = cptr<T>(z), *wp = opt_cptr<T>(w);
  const int64_t* tp = cptr<int64_t>(t);
  T *lp = mptr<T>(losses), *dp = opt_mptr<T>(dl);
  py::gil_scoped_release nogil;
  return lepton::cross_entropy(d, zp, tp, wp, lp, dp);
}

void cross_entropy(const py::object& zo, const py::object& to, const py::object& wo, int64_t ignore_index,
                   double label_smoothing, const py::object& lo, const py::object& dlo) {
  const std::string op = "cross_entropy";
  Arg z = float_arg(op, "logits", zo, false);
  expect_ndim(op, z, 2, "(N, C)");
  const int64_t n = z.a.shape(0), c = z.a.shape(1);
  Arg t = index_arg(op, "target", to, false);
  expect_shape(op, t, {n});
  std::optional<Arg> w = optional_float(op, "weight", wo, false, &z);
  if (w) expect_shape(op, *w, {c});
  Arg losses = float_arg(op, "losses", lo, true, &z);
  expect_shape(op, losses, {n});
  std::optional<Arg> dl = optional_float(op, "dlogits", dlo, true, &z);
  if (dl) expect_shape(op, *dl, {n, c});
  std::vector<const Arg*> ins{&z, &t}, outs{&losses};
  if (w) ins.push_back(&*w);
  if (dl) outs.push_back(&*dl);
  expect_outputs_disjoint(op, outs, ins);
  lepton::CrossEntropyDesc d;
  d.n = n, d.c = c, d.ignore_index = ignore_index, d.label_smoothing = label_smoothing;
  lepton::Status st = z.dt == DType::f32 ? call_cross_entropy<float>(d, z, t, w, losses, dl)
                                         : call_cross_entropy<double>(d, z, t, w, losses, dl);
  raise_status(op, st);
}

// ---------------------------------------------------------------- batch normalization
lepton::BatchNormDesc norm_desc(const std::string& op, const Arg& x3) {
  expect_ndim(op, x3, 3, "(N, C, S)");
  lepton::BatchNormDesc d;
  d.n = x3.a.shape(0), d.c = x3.a.shape(1), d.s = x3.a.shape(2);
  return d;
}

// (C,) vectors of x3's dtype, checked; `writeable` for outputs.
std::vector<Arg> channel_args(const std::string& op, const Arg& x3, int64_t c,
                              std::initializer_list<std::pair<const char*, const py::object*>> named, bool writeable) {
  std::vector<Arg> out;
  for (const auto& [name, o] : named) {
    out.push_back(float_arg(op, name, *o, writeable, &x3));
    expect_shape(op, out.back(), {c});
  }
  return out;
}

void batch_norm_stats(const py::object& xo, const py::object& mo, const py::object& vo) {
  const std::string op = "batch_norm_stats";
  Arg x = float_arg(op, "x3", xo, false);
  const lepton::BatchNormDesc d = norm_desc(op, x);
  std::vector<Arg> mv = channel_args(op, x, d.c, {{"mean", &mo}, {"var", &vo}}, true);
  expect_outputs_disjoint(op, {&mv[0], &mv[1]}, {&x});
  raise_status(op, for_dtype(x.dt, [&](auto t) {
    using T = decltype(t);
    const T* xp = cptr<T>(x);
    T *mp = mptr<T>(mv[0]), *vp = mptr<T>(mv[1]);
    py::gil_scoped_release nogil;
    return lepton::batch_norm_stats(d, xp, mp, vp);
  }));
}

void batch_norm_apply(const py::object& xo, const py::object& ao, const py::object& bo, const py::object& oo,
                      bool relu) {
  const std::string op = "batch_norm_apply";
  Arg x = float_arg(op, "x3", xo, false);
  const lepton::BatchNormDesc d = norm_desc(op, x);
  std::vector<Arg> ab = channel_args(op, x, d.c, {{"scale", &ao}, {"shift", &bo}}, false);
  Arg out = float_arg(op, "out3", oo, true, &x);
  expect_shape(op, out, shape_of(x.a));
  expect_outputs_disjoint(op, {&out}, {&x, &ab[0], &ab[1]});
  raise_status(op, for_dtype(x.dt, [&](auto t) {
    using T = decltype(t);
    const T *xp = cptr<T>(x), *ap = cptr<T>(ab[0]), *bp = cptr<T>(ab[1]);
    T* yp = mptr<T>(out);
    py::gil_scoped_release nogil;
    return lepton::batch_norm_apply(d, xp, ap, bp, relu, yp);
  }));
}

// grad_out3 and x3 of one shape, mean (C,), and the fused ReLU's output y3 (or None).
struct NormGrads {
  Arg g, x, mean;
  std::optional<Arg> y;
  lepton::BatchNormDesc d;
};

NormGrads norm_grads(const std::string& op, const py::object& go, const py::object& xo, const py::object& mo,
                     const py::object& yo) {
  Arg g = float_arg(op, "grad_out3", go, false);
  Arg x = float_arg(op, "x3", xo, false, &g);
  const lepton::BatchNormDesc d = norm_desc(op, g);
  expect_shape(op, x, shape_of(g.a));
  Arg mean = channel_args(op, g, d.c, {{"mean", &mo}}, false)[0];
  std::optional<Arg> y = optional_float(op, "y3", yo, false, &g);
  if (y) expect_shape(op, *y, shape_of(g.a));
  return {g, x, mean, y, d};
}

void batch_norm_backward_reduce(const py::object& go, const py::object& xo, const py::object& mo,
                                const py::object& yo, const py::object& sgo, const py::object& sgxo) {
  const std::string op = "batch_norm_backward_reduce";
  NormGrads a = norm_grads(op, go, xo, mo, yo);
  std::vector<Arg> sums = channel_args(op, a.g, a.d.c, {{"sum_g", &sgo}, {"sum_gx", &sgxo}}, true);
  std::vector<const Arg*> ins{&a.g, &a.x, &a.mean};
  if (a.y) ins.push_back(&*a.y);
  expect_outputs_disjoint(op, {&sums[0], &sums[1]}, ins);
  raise_status(op, for_dtype(a.g.dt, [&](auto t) {
    using T = decltype(t);
    const T *gp = cptr<T>(a.g), *xp = cptr<T>(a.x), *mp = cptr<T>(a.mean), *yp = opt_cptr<T>(a.y);
    T *sg = mptr<T>(sums[0]), *sgx = mptr<T>(sums[1]);
    py::gil_scoped_release nogil;
    return lepton::batch_norm_backward_reduce(a.d, gp, xp, mp, yp, sg, sgx);
  }));
}

void batch_norm_backward_apply(const py::object& go, const py::object& xo, const py::object& mo,
                               const py::object& yo, const py::object& k1o, const py::object& k2o,
                               const py::object& k3o, const py::object& gxo) {
  const std::string op = "batch_norm_backward_apply";
  NormGrads a = norm_grads(op, go, xo, mo, yo);
  std::vector<Arg> k = channel_args(op, a.g, a.d.c, {{"k1", &k1o}, {"k2", &k2o}, {"k3", &k3o}}, false);
  Arg gx = float_arg(op, "grad_x3", gxo, true, &a.g);
  expect_shape(op, gx, shape_of(a.g.a));
  std::vector<const Arg*> ins{&a.g, &a.x, &a.mean, &k[0], &k[1], &k[2]};
  if (a.y) ins.push_back(&*a.y);
  expect_outputs_disjoint(op, {&gx}, ins);
  raise_status(op, for_dtype(a.g.dt, [&](auto t) {
    using T = decltype(t);
    const T *gp = cptr<T>(a.g), *xp = cptr<T>(a.x), *mp = cptr<T>(a.mean), *yp = opt_cptr<T>(a.y);
    const T *p1 = cptr<T>(k[0]), *p2 = cptr<T>(k[1]), *p3 = cptr<T>(k[2]);
    T* out = mptr<T>(gx);
    py::gil_scoped_release nogil;
    return lepton::batch_norm_backward_apply(a.d, gp, xp, mp, yp, p1, p2, p3, out);
  }));
}

// ---------------------------------------------------------------- activations
lepton::Activation activation_kind(const std::string& op, const std::string& name) {
  static const std::pair<const char*, lepton::Activation> kinds[] = {
      {"relu6", lepton::Activation::relu6},     {"leaky_relu", lepton::Activation::leaky_relu},
      {"sigmoid", lepton::Activation::sigmoid}, {"tanh", lepton::Activation::tanh},
      {"silu", lepton::Activation::silu},       {"gelu", lepton::Activation::gelu},
      {"gelu_tanh", lepton::Activation::gelu_tanh}, {"hardswish", lepton::Activation::hardswish}};
  for (const auto& [n, k] : kinds)
    if (name == n) return k;
  value_error(op, "unknown activation '" + name + "'");
}

void activation(const py::object& xo, const py::object& oo, const std::string& kind, double param) {
  const std::string op = "activation";
  const lepton::Activation a = activation_kind(op, kind);
  auto [x, out] = unary_args(op, xo, oo);
  const int64_t n = x.a.size();
  raise_status(op, for_dtype(x.dt, [&, &x = x, &out = out](auto t) {
    using T = decltype(t);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(out);
    py::gil_scoped_release nogil;
    return lepton::activation(a, xp, yp, n, param);
  }));
}

void activation_backward(const py::object& go, const py::object& so, const py::object& oo, const std::string& kind,
                         double param) {
  const std::string op = "activation_backward";
  const lepton::Activation a = activation_kind(op, kind);
  auto [g, saved, out] = unary_grad_args(op, go, "saved", so, oo);
  const int64_t n = g.a.size();
  raise_status(op, for_dtype(g.dt, [&, &g = g, &saved = saved, &out = out](auto t) {
    using T = decltype(t);
    const T *gp = cptr<T>(g), *sp = cptr<T>(saved);
    T* ip = mptr<T>(out);
    py::gil_scoped_release nogil;
    return lepton::activation_backward(a, gp, sp, ip, n, param);
  }));
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

// Thread counts go through this one check (lepton::max_num_threads() is the rule).
void check_threads(const char* op, const char* name, int64_t n) {
  const int most = lepton::max_num_threads();
  if (n < 1 || n > most)
    value_error(op, std::string(name) + " must be in [1, " + std::to_string(most) +
                        "] (4 x the logical CPUs this process may use), got " + std::to_string(n));
}

void set_num_threads(int64_t n) {
  check_threads("set_num_threads", "n", n);
  lepton::set_num_threads(static_cast<int>(n));
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

double measure_fma_gflops(int64_t threads, double seconds) {
  check_threads("measure_fma_gflops", "threads", threads);
  if (!(seconds > 0) || seconds > 600)
    value_error("measure_fma_gflops", "seconds must be in (0, 600], got " + std::to_string(seconds));
  py::gil_scoped_release nogil;
  return lepton::measure_fma_gflops(static_cast<int>(threads), seconds);
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

// ---------------------------------------------------------------- int8 quantization
enum class IType { i8, u8, i32 };

const char* itype_name(IType t) { return t == IType::i8 ? "int8" : t == IType::u8 ? "uint8" : "int32"; }

// An int8/uint8 (or, with allow_i32, int32) array.
IType int_arg_type(const std::string& op, const Arg& a, bool allow_i32) {
  if (py::isinstance<py::array_t<int8_t>>(a.a)) return IType::i8;
  if (py::isinstance<py::array_t<uint8_t>>(a.a)) return IType::u8;
  if (allow_i32 && py::isinstance<py::array_t<int32_t>>(a.a)) return IType::i32;
  type_error(op, std::string(a.name) + " must have dtype int8 or uint8" + (allow_i32 ? " or int32" : "") +
                     ", got " + dtype_str(a.a));
}

Arg typed_arg(const std::string& op, const char* name, const py::object& o, bool writeable,
              const py::dtype& want, const char* want_name) {
  Arg r = array_arg(op, name, o, writeable);
  if (!r.a.dtype().is(want) && !r.a.dtype().equal(want))
    type_error(op, std::string(name) + " must have dtype " + want_name + ", got " + dtype_str(r.a));
  return r;
}
Arg f32_arg(const std::string& op, const char* name, const py::object& o, bool writeable) {
  return typed_arg(op, name, o, writeable, py::dtype::of<float>(), "float32");
}
Arg i32_arg(const std::string& op, const char* name, const py::object& o, bool writeable) {
  return typed_arg(op, name, o, writeable, py::dtype::of<int32_t>(), "int32");
}

// Zero points: None (0), shape (1,) (one for all) or (count,) (one per column/channel).
struct ZeroPoints {
  std::optional<Arg> arg;
  bool per = false;
  const int32_t* ptr() const { return arg ? cptr<int32_t>(*arg) : nullptr; }
};
ZeroPoints zero_points_arg(const std::string& op, const char* name, const py::object& o, int64_t count) {
  ZeroPoints z;
  if (o.is_none()) return z;
  z.arg = i32_arg(op, name, o, false);
  const std::vector<int64_t> s = shape_of(z.arg->a);
  if (s.size() != 1 || (s[0] != 1 && s[0] != count))
    value_error(op, std::string(name) + " must have shape (1,) or (" + std::to_string(count) + ",), got " +
                        shape_str(s));
  z.per = s[0] == count && count != 1;
  return z;
}

lepton::QuantDesc quant_desc(const Arg& x3) {
  lepton::QuantDesc d;
  d.outer = x3.a.shape(0);
  d.channels = x3.a.shape(1);
  d.inner = x3.a.shape(2);
  return d;
}

void quantize(const py::object& xo, const py::object& so, const py::object& zo, const py::object& oo) {
  const std::string op = "quantize";
  Arg x = f32_arg(op, "x3", xo, false);
  expect_ndim(op, x, 3, "(outer, channels, inner)");
  Arg s = f32_arg(op, "scale", so, false);
  Arg z = i32_arg(op, "zero_point", zo, false);
  Arg out = array_arg(op, "out3", oo, true);
  const IType qt = int_arg_type(op, out, false);
  expect_shape(op, s, {x.a.shape(1)});
  expect_shape(op, z, {x.a.shape(1)});
  expect_shape(op, out, shape_of(x.a));
  expect_outputs_disjoint(op, {&out}, {&x, &s, &z});
  const lepton::QuantDesc d = quant_desc(x);
  const float *xp = cptr<float>(x), *sp = cptr<float>(s);
  const int32_t* zp = cptr<int32_t>(z);
  void* qp = out.a.mutable_data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = qt == IType::i8 ? lepton::quantize(d, xp, sp, zp, static_cast<int8_t*>(qp))
                         : lepton::quantize(d, xp, sp, zp, static_cast<uint8_t*>(qp));
  }
  raise_status(op, st);
}

void dequantize(const py::object& qo, const py::object& so, const py::object& zo, const py::object& oo) {
  const std::string op = "dequantize";
  Arg q = array_arg(op, "q3", qo, false);
  const IType qt = int_arg_type(op, q, true);
  expect_ndim(op, q, 3, "(outer, channels, inner)");
  Arg s = f32_arg(op, "scale", so, false);
  Arg z = i32_arg(op, "zero_point", zo, false);
  Arg out = f32_arg(op, "out3", oo, true);
  expect_shape(op, s, {q.a.shape(1)});
  expect_shape(op, z, {q.a.shape(1)});
  expect_shape(op, out, shape_of(q.a));
  expect_outputs_disjoint(op, {&out}, {&q, &s, &z});
  const lepton::QuantDesc d = quant_desc(q);
  const void* qp = q.a.data();
  const float* sp = cptr<float>(s);
  const int32_t* zp = cptr<int32_t>(z);
  float* yp = mptr<float>(out);
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    switch (qt) {
      case IType::i8: st = lepton::dequantize(d, static_cast<const int8_t*>(qp), sp, zp, yp); break;
      case IType::u8: st = lepton::dequantize(d, static_cast<const uint8_t*>(qp), sp, zp, yp); break;
      case IType::i32: st = lepton::dequantize(d, static_cast<const int32_t*>(qp), sp, zp, yp); break;
    }
  }
  raise_status(op, st);
}

py::tuple dynamic_quantize(const py::object& xo, const py::object& oo) {
  const std::string op = "dynamic_quantize";
  Arg x = f32_arg(op, "x", xo, false);
  Arg out = typed_arg(op, "out", oo, true, py::dtype::of<uint8_t>(), "uint8");
  expect_ndim(op, x, 1, "(n,)");
  expect_shape(op, out, shape_of(x.a));
  expect_outputs_disjoint(op, {&out}, {&x});
  const int64_t n = x.a.shape(0);
  const float* xp = cptr<float>(x);
  uint8_t* qp = mptr<uint8_t>(out);
  float scale = 0.f;
  uint8_t zp = 0;
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = lepton::dynamic_quantize(n, xp, qp, &scale, &zp);
  }
  raise_status(op, st);
  return py::make_tuple(scale, static_cast<int>(zp));
}

// (a type, b type) -> the matching overload.
template <class F>
lepton::Status dispatch_ab(IType ta, IType tb, const void* a, const void* b, F f) {
  if (ta == IType::u8 && tb == IType::i8) return f(static_cast<const uint8_t*>(a), static_cast<const int8_t*>(b));
  if (ta == IType::u8 && tb == IType::u8) return f(static_cast<const uint8_t*>(a), static_cast<const uint8_t*>(b));
  if (ta == IType::i8 && tb == IType::i8) return f(static_cast<const int8_t*>(a), static_cast<const int8_t*>(b));
  return f(static_cast<const int8_t*>(a), static_cast<const uint8_t*>(b));
}

int32_t int_scalar(const std::string& op, const char* name, int64_t v) {
  if (v < INT32_MIN || v > INT32_MAX) value_error(op, std::string(name) + " out of range: " + std::to_string(v));
  return static_cast<int32_t>(v);  // the kernel checks it against the operand's type range
}

// The operands of an integer matmul: a (M, K) and b (K, N) int8/uint8, b's zero points, the descriptor.
struct IntMatmulArgs {
  Arg a, b;
  IType ta, tb;
  ZeroPoints bz;
  lepton::MatmulIntegerDesc d;
};
IntMatmulArgs int_matmul_args(const std::string& op, const py::object& ao, const py::object& bo, int64_t azp,
                              const py::object& bzo) {
  Arg a = array_arg(op, "a", ao, false);
  Arg b = array_arg(op, "b", bo, false);
  const IType ta = int_arg_type(op, a, false), tb = int_arg_type(op, b, false);
  expect_ndim(op, a, 2, "(M, K)");
  expect_ndim(op, b, 2, "(K, N)");
  if (a.a.shape(1) != b.a.shape(0))
    value_error(op, "inner dimensions differ: a is " + shape_str(shape_of(a.a)) + ", b is " + shape_str(shape_of(b.a)));
  ZeroPoints bz = zero_points_arg(op, "b_zero_point", bzo, b.a.shape(1));
  lepton::MatmulIntegerDesc d;
  d.m = a.a.shape(0), d.k = a.a.shape(1), d.n = b.a.shape(1);
  d.lda = d.k, d.ldb = d.n, d.ldc = d.n;
  d.a_zero_point = int_scalar(op, "a_zero_point", azp);
  d.b_zero_point_per_column = bz.per;
  return {std::move(a), std::move(b), ta, tb, std::move(bz), d};
}

// a (M, K) against a packed b, and the descriptor.
struct PackedMatmulArgs {
  Arg a;
  IType ta;
  lepton::MatmulIntegerDesc d;
};
PackedMatmulArgs packed_matmul_args(const std::string& op, const py::object& ao, const lepton::PackedIntB& pb,
                                    int64_t azp) {
  Arg a = array_arg(op, "a", ao, false);
  const IType ta = int_arg_type(op, a, false);
  expect_ndim(op, a, 2, "(M, K)");
  if (a.a.shape(1) != pb.k())
    value_error(op, "a must have K = " + std::to_string(pb.k()) + " columns (the packed b), got shape " +
                        shape_str(shape_of(a.a)));
  lepton::MatmulIntegerDesc d;
  d.m = a.a.shape(0), d.k = pb.k(), d.n = pb.n();
  d.lda = d.k, d.ldb = d.n, d.ldc = d.n;
  d.a_zero_point = int_scalar(op, "a_zero_point", azp);
  return {std::move(a), ta, d};
}

void matmul_integer(const py::object& ao, const py::object& bo, int64_t azp, const py::object& bzo,
                    const py::object& oo) {
  const std::string op = "matmul_integer";
  const IntMatmulArgs m = int_matmul_args(op, ao, bo, azp, bzo);
  Arg out = i32_arg(op, "out", oo, true);
  expect_shape(op, out, {m.d.m, m.d.n});
  std::vector<const Arg*> ins{&m.a, &m.b};
  if (m.bz.arg) ins.push_back(&*m.bz.arg);
  expect_outputs_disjoint(op, {&out}, ins);
  const int32_t* bzp = m.bz.ptr();
  int32_t* cp = mptr<int32_t>(out);
  const void *ap = m.a.a.data(), *bp = m.b.a.data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = dispatch_ab(m.ta, m.tb, ap, bp,
                     [&](auto* pa, auto* pb) { return lepton::matmul_integer(m.d, pa, pb, bzp, cp); });
  }
  raise_status(op, st);
}

// Packed weights: owns its copy of B (the numpy array may be freed afterwards).
std::unique_ptr<lepton::PackedIntB> pack_matmul_integer_b(const py::object& bo, const py::object& bzo) {
  const std::string op = "pack_matmul_integer_b";
  Arg b = array_arg(op, "b", bo, false);
  const IType tb = int_arg_type(op, b, false);
  expect_ndim(op, b, 2, "(K, N)");
  const ZeroPoints bz = zero_points_arg(op, "b_zero_point", bzo, b.a.shape(1));
  const int64_t k = b.a.shape(0), n = b.a.shape(1);
  const int32_t* bzp = bz.ptr();
  const bool per = bz.per;
  const void* bp = b.a.data();
  auto packed = std::make_unique<lepton::PackedIntB>();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = tb == IType::i8 ? lepton::pack_matmul_integer_b(k, n, static_cast<const int8_t*>(bp), n, bzp, per, packed.get())
                         : lepton::pack_matmul_integer_b(k, n, static_cast<const uint8_t*>(bp), n, bzp, per, packed.get());
  }
  raise_status(op, st);
  return packed;
}

void matmul_integer_packed(const py::object& ao, const lepton::PackedIntB& pb, int64_t azp, const py::object& oo) {
  const std::string op = "matmul_integer_packed";
  const PackedMatmulArgs m = packed_matmul_args(op, ao, pb, azp);
  Arg out = i32_arg(op, "out", oo, true);
  expect_shape(op, out, {m.d.m, m.d.n});
  expect_outputs_disjoint(op, {&out}, {&m.a});
  int32_t* cp = mptr<int32_t>(out);
  const void* ap = m.a.a.data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = m.ta == IType::u8 ? lepton::matmul_integer_packed(m.d, static_cast<const uint8_t*>(ap), pb, cp)
                           : lepton::matmul_integer_packed(m.d, static_cast<const int8_t*>(ap), pb, cp);
  }
  raise_status(op, st);
}

void conv2d_integer(const py::object& xo, const py::object& wo, int64_t xzp, const py::object& wzo,
                    const py::object& oo, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                    int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  const std::string op = "conv2d_integer";
  Arg x = array_arg(op, "x", xo, false);
  Arg w = array_arg(op, "weight", wo, false);
  const IType tx = int_arg_type(op, x, false), tw = int_arg_type(op, w, false);
  lepton::Conv2dDesc d = conv_desc(op, x, w, {sh, sw, pt, pb, pl, pr, dh, dw, groups});
  Arg out = i32_arg(op, "out", oo, true);
  conv_out_shape(op, out, &d);
  const ZeroPoints wz = zero_points_arg(op, "w_zero_point", wzo, d.c_out);
  std::vector<const Arg*> ins{&x, &w};
  if (wz.arg) ins.push_back(&*wz.arg);
  expect_outputs_disjoint(op, {&out}, ins);
  const int32_t xz = int_scalar(op, "x_zero_point", xzp);
  const int32_t* wzp = wz.ptr();
  const bool per = wz.per;
  int32_t* yp = mptr<int32_t>(out);
  const void *xp = x.a.data(), *wp = w.a.data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = dispatch_ab(tx, tw, xp, wp, [&](auto* px, auto* pw) {
      return lepton::conv2d_integer(d, px, xz, pw, wzp, per, yp);
    });
  }
  raise_status(op, st);
}

// The requantization of a qlinear op: multiplier float32 (count,), bias int32 (count,) or None.
struct RequantArgs {
  Arg multiplier;
  std::optional<Arg> bias;
  lepton::Requant r;
};
RequantArgs requant_args(const std::string& op, const py::object& bo, const py::object& mo, int64_t yzp, bool relu,
                         int64_t count) {
  RequantArgs q{f32_arg(op, "multiplier", mo, false), std::nullopt, {}};
  expect_shape(op, q.multiplier, {count});
  if (!bo.is_none()) {
    q.bias = i32_arg(op, "bias", bo, false);
    expect_shape(op, *q.bias, {count});
  }
  q.r.multiplier = cptr<float>(q.multiplier);
  q.r.bias = q.bias ? cptr<int32_t>(*q.bias) : nullptr;
  q.r.y_zero_point = int_scalar(op, "y_zero_point", yzp);
  q.r.relu = relu;
  return q;
}

// Calls f(y) with out's data typed as its int8/uint8 element type.
template <class F>
lepton::Status dispatch_y(IType ty, void* y, F f) {
  return ty == IType::i8 ? f(static_cast<int8_t*>(y)) : f(static_cast<uint8_t*>(y));
}

void qlinear_matmul(const py::object& ao, const py::object& bo, int64_t azp, const py::object& bzo,
                    const py::object& biaso, const py::object& mo, int64_t yzp, bool relu, const py::object& oo) {
  const std::string op = "qlinear_matmul";
  const IntMatmulArgs m = int_matmul_args(op, ao, bo, azp, bzo);
  Arg out = array_arg(op, "out", oo, true);
  const IType ty = int_arg_type(op, out, false);
  expect_shape(op, out, {m.d.m, m.d.n});
  const RequantArgs q = requant_args(op, biaso, mo, yzp, relu, m.d.n);
  std::vector<const Arg*> ins{&m.a, &m.b, &q.multiplier};
  if (m.bz.arg) ins.push_back(&*m.bz.arg);
  if (q.bias) ins.push_back(&*q.bias);
  expect_outputs_disjoint(op, {&out}, ins);
  const int32_t* bzp = m.bz.ptr();
  const void *ap = m.a.a.data(), *bp = m.b.a.data();
  void* yp = out.a.mutable_data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = dispatch_ab(m.ta, m.tb, ap, bp, [&](auto* pa, auto* pb) {
      return dispatch_y(ty, yp, [&](auto* py_) { return lepton::qlinear_matmul(m.d, pa, pb, bzp, q.r, py_); });
    });
  }
  raise_status(op, st);
}

// qlinear_matmul with the weights packed once (pack_matmul_integer_b with their zero point).
void qlinear_matmul_packed(const py::object& ao, const lepton::PackedIntB& pb, int64_t azp, const py::object& biaso,
                           const py::object& mo, int64_t yzp, bool relu, const py::object& oo) {
  const std::string op = "qlinear_matmul_packed";
  const PackedMatmulArgs m = packed_matmul_args(op, ao, pb, azp);
  Arg out = array_arg(op, "out", oo, true);
  const IType ty = int_arg_type(op, out, false);
  expect_shape(op, out, {m.d.m, m.d.n});
  const RequantArgs q = requant_args(op, biaso, mo, yzp, relu, m.d.n);
  std::vector<const Arg*> ins{&m.a, &q.multiplier};
  if (q.bias) ins.push_back(&*q.bias);
  expect_outputs_disjoint(op, {&out}, ins);
  const void* ap = m.a.a.data();
  void* yp = out.a.mutable_data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = dispatch_y(ty, yp, [&](auto* py_) {
      return m.ta == IType::u8 ? lepton::qlinear_matmul_packed(m.d, static_cast<const uint8_t*>(ap), pb, q.r, py_)
                               : lepton::qlinear_matmul_packed(m.d, static_cast<const int8_t*>(ap), pb, q.r, py_);
    });
  }
  raise_status(op, st);
}

void qlinear_conv2d(const py::object& xo, const py::object& wo, int64_t xzp, const py::object& wzo,
                    const py::object& biaso, const py::object& mo, int64_t yzp, bool relu, const py::object& oo,
                    int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                    int64_t groups) {
  const std::string op = "qlinear_conv2d";
  Arg x = array_arg(op, "x", xo, false);
  Arg w = array_arg(op, "weight", wo, false);
  const IType tx = int_arg_type(op, x, false), tw = int_arg_type(op, w, false);
  lepton::Conv2dDesc d = conv_desc(op, x, w, {sh, sw, pt, pb, pl, pr, dh, dw, groups});
  Arg out = array_arg(op, "out", oo, true);
  const IType ty = int_arg_type(op, out, false);
  conv_out_shape(op, out, &d);
  const ZeroPoints wz = zero_points_arg(op, "w_zero_point", wzo, d.c_out);
  const RequantArgs q = requant_args(op, biaso, mo, yzp, relu, d.c_out);
  std::vector<const Arg*> ins{&x, &w, &q.multiplier};
  if (wz.arg) ins.push_back(&*wz.arg);
  if (q.bias) ins.push_back(&*q.bias);
  expect_outputs_disjoint(op, {&out}, ins);
  const int32_t xz = int_scalar(op, "x_zero_point", xzp);
  const int32_t* wzp = wz.ptr();
  const bool per = wz.per;
  const void *xp = x.a.data(), *wp = w.a.data();
  void* yp = out.a.mutable_data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = dispatch_ab(tx, tw, xp, wp, [&](auto* px, auto* pw) {
      return dispatch_y(ty, yp, [&](auto* py_) { return lepton::qlinear_conv2d(d, px, xz, pw, wzp, per, q.r, py_); });
    });
  }
  raise_status(op, st);
}

// max_pool2d on quantized activations (int8 / uint8); out has x's type.
void max_pool2d_int8(const py::object& xo, const py::object& oo, const py::object& io, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  const std::string op = "max_pool2d";
  Arg x = array_arg(op, "x", xo, false);
  const IType tx = int_arg_type(op, x, false);
  Arg out = array_arg(op, "out", oo, true);
  if (int_arg_type(op, out, false) != tx)
    type_error(op, "out must have x's dtype (" + dtype_str(x.a) + "), got " + dtype_str(out.a));
  expect_pool_shapes(op, x, out);
  expect_disjoint(op, out, x, false);
  std::optional<Arg> ind = pool_indices_arg(op, io, x, out);
  const lepton::Pool2dDesc d = pool_desc(x, out, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw);
  int64_t* ip = ind ? mptr<int64_t>(*ind) : nullptr;
  const void* xp = x.a.data();
  void* yp = out.a.mutable_data();
  lepton::Status st;
  {
    py::gil_scoped_release nogil;
    st = tx == IType::u8 ? lepton::max_pool2d(d, static_cast<const uint8_t*>(xp), static_cast<uint8_t*>(yp), ip)
                         : lepton::max_pool2d(d, static_cast<const int8_t*>(xp), static_cast<int8_t*>(yp), ip);
  }
  raise_status(op, st);
}

double measure_vnni_gops(int64_t threads, double seconds) {
  check_threads("measure_vnni_gops", "threads", threads);
  if (!(seconds > 0) || seconds > 600)
    value_error("measure_vnni_gops", "seconds must be in (0, 600], got " + std::to_string(seconds));
  py::gil_scoped_release nogil;
  return lepton::measure_vnni_gops(static_cast<int>(threads), seconds);
}

void set_igemm_path(const std::string& name) {
  lepton::IgemmPath p;
  if (name == "auto") p = lepton::IgemmPath::automatic;
  else if (name == "vnni") p = lepton::IgemmPath::vnni;
  else if (name == "avx2") p = lepton::IgemmPath::avx2;
  else if (name == "generic") p = lepton::IgemmPath::generic;
  else value_error("set_igemm_path", "name must be 'auto', 'vnni', 'avx2' or 'generic', got '" + name + "'");
  raise_status("set_igemm_path", lepton::set_igemm_path(p));
}

std::string igemm_path() {
  switch (lepton::active_igemm_path()) {
    case lepton::IgemmPath::vnni: return "vnni";
    case lepton::IgemmPath::avx2: return "avx2";
    case lepton::IgemmPath::generic: return "generic";
    default: return "auto";
  }
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
  lepton_bind::register_alloc(m);
  lepton_bind::register_calls(m);
  lepton_bind::register_buffers(m);

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


  m.def("matmul", &matmul, py::arg("a"), py::arg("b"), py::arg("out"),
        "out (M, N) = a (M, K) @ b (K, N). float32/float64, C-contiguous, out disjoint from inputs.");
  m.def("linear", &linear, py::arg("x2"), py::arg("weight"), py::arg("bias"), py::arg("out2"),
        py::arg("relu") = false,
        "out2 (M, N) = act(x2 (M, K) @ weight (N, K)^T + bias (N,)); bias may be None; act is "
        "ReLU (NaN kept) when relu.");
  m.def("set_gemv_enabled", &lepton::set_gemv_enabled, py::arg("on"),
        "Test/benchmark hook: False sends matmul and linear with few rows (M <= 8) through the "
        "packed GEMM instead of the GEMV-shaped kernels; True (the default) restores them.");
  m.def("gemv_enabled", &lepton::gemv_enabled,
        "True when matmul and linear with few rows use the GEMV-shaped kernels.");
  m.def("linear_backward", &linear_backward, py::arg("grad_out2"), py::arg("x2"),
        py::arg("weight"), py::arg("y2"), py::arg("grad_x2"), py::arg("grad_w"), py::arg("grad_b"),
        "g' = grad_out2 masked where y2 <= 0 (when y2 is given); grad_x2 = g' @ weight, grad_w = "
        "g'^T @ x2, grad_b = sum of g' over rows. Each gradient may be None (skipped).");
  m.def("conv2d", &conv2d, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"),
        py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"),
        py::arg("groups"), py::arg("relu") = false,
        "2-D convolution (cross-correlation), NCHW x (N,C,H,W), OIHW weight (O,C/groups,KH,KW), "
        "bias (O,) or None, out (N,O,OH,OW) with OH/OW from the floor formula; out = act(conv + "
        "bias), act ReLU (NaN kept) when relu.");
  m.def("conv2d_backward", &conv2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("weight"),
        py::arg("y"), py::arg("grad_x"), py::arg("grad_w"), py::arg("grad_b"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"), py::arg("pad_left"),
        py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        "Gradients of conv2d: g' = grad_out masked where y <= 0 (when y, the fused-ReLU output, "
        "is given); grad_x (transposed convolution), grad_w, grad_b (sums over the batch in a "
        "fixed order: deterministic). Each gradient may be None (skipped).");


  m.def("sgd_step", &sgd_step, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"), py::arg("lr"),
        py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("first_step"),
        "torch.optim.SGD update of every array of `params` in place, one call (lepton/optim.h). Lists of "
        "float32/float64 C-contiguous arrays of one dtype; bufs entries may be None when momentum == 0. "
        "Everything is checked before anything is written.");
  m.def("adam_step", &adam_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
        py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"), py::arg("beta1"),
        py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("amsgrad"),
        py::arg("maximize"),
        "torch.optim.Adam / AdamW (decoupled) update of every array of `params` in place, one call "
        "(lepton/optim.h); max_exp_avg_sqs is a list when amsgrad, else None. Everything is checked before "
        "anything is written.");
  m.def("cross_entropy", &cross_entropy, py::arg("logits"), py::arg("target"), py::arg("weight"),
        py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("losses"), py::arg("dlogits"),
        "Fused log-softmax + NLL (lepton/loss.h): logits (N, C), target int64 (N,), weight (C,) or None -> "
        "losses (N,) and, unless None, dlogits (N, C) = d loss_i / d logits. A target outside [0, C) that is "
        "not ignore_index raises ValueError.");

  m.def("activation", &activation, py::arg("x"), py::arg("out"), py::arg("kind"), py::arg("param") = 0.0,
        "out = f(x) for kind relu6, leaky_relu (param: negative slope), sigmoid, tanh, silu, gelu, gelu_tanh, "
        "hardswish; out may be x.");
  m.def("activation_backward", &activation_backward, py::arg("grad_out"), py::arg("saved"), py::arg("out"),
        py::arg("kind"), py::arg("param") = 0.0,
        "out = f'(saved) * grad_out; saved is the forward's x, or its output for sigmoid and tanh.");
  m.def("batch_norm_stats", &batch_norm_stats, py::arg("x3"), py::arg("mean"), py::arg("var"),
        "Per channel of x3 (N, C, S): mean and biased variance (sums in double).");
  m.def("batch_norm_apply", &batch_norm_apply, py::arg("x3"), py::arg("scale"), py::arg("shift"), py::arg("out3"),
        py::arg("relu") = false, "out3 = x3 * scale[c] + shift[c] (then ReLU, NaN kept, when relu).");
  m.def("batch_norm_backward_reduce", &batch_norm_backward_reduce, py::arg("grad_out3"), py::arg("x3"),
        py::arg("mean"), py::arg("y3"), py::arg("sum_g"), py::arg("sum_gx"),
        "sum_g[c] = sum g', sum_gx[c] = sum g' (x - mean[c]); g' = grad_out masked where y3 <= 0 (y3 may be None).");
  m.def("batch_norm_backward_apply", &batch_norm_backward_apply, py::arg("grad_out3"), py::arg("x3"),
        py::arg("mean"), py::arg("y3"), py::arg("k1"), py::arg("k2"), py::arg("k3"), py::arg("grad_x3"),
        "grad_x3 = k1[c] g' + k2[c] (x - mean[c]) + k3[c], g' as batch_norm_backward_reduce's.");
  m.def("isa", [] { return std::string(lepton::isa_name(lepton::active_isa())); },
        "The SIMD variant kernels use now: 'generic', 'avx2' or 'avx512'.");
  m.def("detected_isa", [] { return std::string(lepton::isa_name(lepton::detected_isa())); },
        "The best SIMD variant this CPU and OS support (cpuid + xgetbv).");
  m.def("set_isa", &set_isa, py::arg("name"),
        "Force a SIMD variant ('generic', 'avx2', 'avx512'); ValueError if unknown or unsupported.");
  m.def("cpu_features", &lepton::cpu_features, "Space-separated CPU/OS features seen by cpuid.");
  m.def("get_num_threads", &lepton::num_threads, "OpenMP threads the kernels use.");
  m.def("max_num_threads", &lepton::max_num_threads,
        "The most threads set_num_threads and the probes accept: 4 x the logical CPUs this process may use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Set the OpenMP threads the kernels use (1 <= n <= max_num_threads()).");
  m.def("parallel_region_threads", &parallel_region_threads,
        "Run an OpenMP parallel region and return omp_get_num_threads() seen inside it.");
  m.def("openmp_version", [] { return static_cast<int>(_OPENMP); },
        "The _OPENMP version macro the module was compiled with (e.g. 201511).");
  m.def("measure_fma_gflops", &measure_fma_gflops, py::arg("threads"), py::arg("seconds"),
        "Measured peak fp32 FMA GFLOP/s of the active ISA on `threads` threads.");
  m.def("measure_copy_gbs", &measure_copy_gbs, py::arg("bytes"), py::arg("repeats"),
        "Measured copy bandwidth (bytes read + written per second, GB/s), best of `repeats`.");
  m.def("quantize", &quantize, py::arg("x3"), py::arg("scale"), py::arg("zero_point"), py::arg("out3"),
        "ONNX QuantizeLinear (lepton/quant.h): out3 (int8/uint8) = saturate(round_half_to_even(x3 / scale[c]) "
        "+ zero_point[c]) over (outer, channels, inner); NaN -> zero point, +-inf saturate.");
  m.def("dequantize", &dequantize, py::arg("q3"), py::arg("scale"), py::arg("zero_point"), py::arg("out3"),
        "ONNX DequantizeLinear: out3 float32 = (q3 - zero_point[c]) * scale[c]; q3 int8, uint8 or int32.");
  m.def("dynamic_quantize", &dynamic_quantize, py::arg("x"), py::arg("out"),
        "ONNX DynamicQuantizeLinear of a finite float32 vector into out (uint8); returns (scale, zero_point).");
  m.def("matmul_integer", &matmul_integer, py::arg("a"), py::arg("b"), py::arg("a_zero_point"),
        py::arg("b_zero_point"), py::arg("out"),
        "ONNX MatMulInteger: out int32 (M, N) = (a - a_zero_point) @ (b - b_zero_point); a/b uint8 or int8; "
        "b_zero_point int32 (N,), (1,) or None.");
  py::class_<lepton::PackedIntB>(m, "PackedIntB",
                                 "Integer GEMM right operand (K, N) with its zero point, packed once.")
      .def_property_readonly("k", &lepton::PackedIntB::k)
      .def_property_readonly("n", &lepton::PackedIntB::n)
      .def_property_readonly("nbytes", &lepton::PackedIntB::bytes);
  m.def("pack_matmul_integer_b", &pack_matmul_integer_b, py::arg("b"), py::arg("b_zero_point"),
        "Pack b (K, N) int8/uint8 with its zero point (int32 (N,), (1,) or None) for matmul_integer_packed.");
  m.def("matmul_integer_packed", &matmul_integer_packed, py::arg("a"), py::arg("packed"),
        py::arg("a_zero_point"), py::arg("out"),
        "out int32 (M, N) = (a - a_zero_point) @ (B - b_zero_point) with B packed by pack_matmul_integer_b.");
  m.def("conv2d_integer", &conv2d_integer, py::arg("x"), py::arg("weight"), py::arg("x_zero_point"),
        py::arg("w_zero_point"), py::arg("out"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"),
        py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"),
        py::arg("dilation_w"), py::arg("groups"),
        "ONNX ConvInteger: out int32 (N, O, OH, OW) = conv of (x - x_zero_point) and (weight - w_zero_point[o]); "
        "padding takes x_zero_point; w_zero_point int32 (O,), (1,) or None.");
  m.def("qlinear_matmul", &qlinear_matmul, py::arg("a"), py::arg("b"), py::arg("a_zero_point"),
        py::arg("b_zero_point"), py::arg("bias"), py::arg("multiplier"), py::arg("y_zero_point"), py::arg("relu"),
        py::arg("out"),
        "ONNX QLinearMatMul (lepton/quant.h): out int8/uint8 (M, N) = clamp(rint(float(int32((a - a_zp) @ "
        "(b - b_zp[j]) + bias[j])) * multiplier[j]) + y_zero_point) in float32; multiplier float32 (N,), bias int32 (N,) or None; "
        "relu raises the lower bound to y_zero_point.");
  m.def("qlinear_matmul_packed", &qlinear_matmul_packed, py::arg("a"), py::arg("b"), py::arg("a_zero_point"),
        py::arg("bias"), py::arg("multiplier"), py::arg("y_zero_point"), py::arg("relu"), py::arg("out"),
        "qlinear_matmul with b packed once by pack_matmul_integer_b (its zero point included).");
  m.def("qlinear_conv2d", &qlinear_conv2d, py::arg("x"), py::arg("weight"), py::arg("x_zero_point"),
        py::arg("w_zero_point"), py::arg("bias"), py::arg("multiplier"), py::arg("y_zero_point"), py::arg("relu"),
        py::arg("out"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_bottom"),
        py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"), py::arg("dilation_w"), py::arg("groups"),
        "ONNX QLinearConv: conv2d_integer requantized per output channel o like qlinear_matmul (multiplier, "
        "bias of length O); out int8/uint8 (N, O, OH, OW).");
  m.def("max_pool2d_int8", &max_pool2d_int8, py::arg("x"), py::arg("out"), py::arg("indices"),
        py::arg("kernel_h"), py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"),
        py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"),
        py::arg("dilation_w"),
        "max_pool2d on int8/uint8 NCHW (quantized activations); an empty window gives the type's minimum.");
  m.def("has_vnni", &lepton::has_vnni, "True when the CPU and OS support AVX-512 VNNI (vpdpbusd).");
  m.def("measure_vnni_gops", &measure_vnni_gops, py::arg("threads"), py::arg("seconds"),
        "Measured peak int8 VNNI GOP/s (2 ops per multiply-add) on `threads` threads; 0 without VNNI.");
  m.def("set_igemm_path", &set_igemm_path, py::arg("name"),
        "Force the integer GEMM path ('auto', 'vnni', 'avx2', 'generic'); ValueError if unsupported.");
  m.def("igemm_path", &igemm_path, "The integer GEMM path calls use now.");
}
