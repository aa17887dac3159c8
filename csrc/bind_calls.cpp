// bind_calls.cpp -- whole-call entries of _lepton_cpu: the common NumPy call of an
// op (plain C-contiguous arrays, no out=) checked, allocated and run in one C++
// call, with the GIL released while the kernel runs. This is the small-call path:
// a Python op costs more in intake and validation than a 16x16 ReLU costs to
// compute, so the ops in lepton_kernels/ops try these first.
//
// Contract with the Python ops: each call_<op> returns the result, or None when the
// arguments are not the plain case it handles (a subclass or non-contiguous array,
// another dtype, an empty tensor, a geometry or shape its rules refuse). The op then
// runs its general path, which copies what needs copying and raises the error that
// names the argument; the rules themselves stay where they are written (csrc/geometry
// and the kernels' validate()). A non-ok Status from a kernel raises as in bind_cpu.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bind_common.h"
#include "lepton/conv.h"
#include "lepton/elementwise.h"
#include "lepton/linear.h"
#include "lepton/loss.h"
#include "lepton/pool.h"

namespace lepton_bind {

using py::detail::npy_api;

// ---------------------------------------------------------------- allocation
py::array new_array(const py::dtype& dtype, const std::vector<int64_t>& shape) {
  int64_t nbytes = dtype.itemsize();
  for (int64_t s : shape)
    if (s < 0 || __builtin_mul_overflow(nbytes, s, &nbytes) || nbytes > kInt64Max - kAlign)
      throw py::value_error("empty: the shape's byte count is negative or overflows int64");
  if (nbytes < kAlignFromBytes) return py::array(dtype, shape);
  py::array_t<uint8_t> raw(nbytes + kAlign);
  uint8_t* start = raw.mutable_data();
  start += (kAlign - reinterpret_cast<uintptr_t>(start) % kAlign) % kAlign;
  return py::array(dtype, shape, {}, start, raw);  // a view keeping raw alive
}

namespace {

// ---------------------------------------------------------------- taking arrays as they are
constexpr int kF32 = npy_api::NPY_FLOAT_, kF64 = npy_api::NPY_DOUBLE_;
constexpr int kI64 = npy_api::NPY_INT64_;

// Exactly numpy.ndarray, C-contiguous, aligned, native byte order: the arrays the
// kernels read in place. Anything else: nullptr (the op's general path handles it).
const py::detail::PyArray_Proxy* plain(const py::handle& o) {
  const npy_api& api = npy_api::get();
  if (Py_TYPE(o.ptr()) != api.PyArray_Type_) return nullptr;
  const auto* a = py::detail::array_proxy(o.ptr());
  constexpr int need = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
  if ((a->flags & need) != need) return nullptr;
  if (py::detail::array_descriptor_proxy(a->descr)->byteorder == '>') return nullptr;
  return a;
}

int type_num(const py::detail::PyArray_Proxy* a) {
  return py::detail::array_descriptor_proxy(a->descr)->type_num;
}

int64_t dim(const py::detail::PyArray_Proxy* a, int i) { return a->dimensions[i]; }

int64_t element_count(const py::detail::PyArray_Proxy* a) {
  int64_t n = 1;
  for (int i = 0; i < a->nd; ++i) n *= a->dimensions[i];
  return n;
}

// A plain float32/float64 array with at least one element, or nullptr.
const py::detail::PyArray_Proxy* plain_float(const py::handle& o) {
  const auto* a = plain(o);
  if (a == nullptr || (type_num(a) != kF32 && type_num(a) != kF64) || element_count(a) == 0) return nullptr;
  return a;
}

// `o` as a plain array of `like`'s dtype (None allowed when optional), or false.
bool same_dtype(const py::handle& o, const py::detail::PyArray_Proxy* like,
                const py::detail::PyArray_Proxy** out, bool optional) {
  *out = nullptr;
  if (o.is_none()) return optional;
  *out = plain(o);
  return *out != nullptr && type_num(*out) == type_num(like);
}

std::vector<int64_t> shape_of(const py::detail::PyArray_Proxy* a) {
  return std::vector<int64_t>(a->dimensions, a->dimensions + a->nd);
}

py::dtype dtype_of(const py::detail::PyArray_Proxy* a) {
  return py::reinterpret_borrow<py::dtype>(a->descr);
}

template <class T>
const T* cptr(const py::detail::PyArray_Proxy* a) {
  return a ? reinterpret_cast<const T*>(a->data) : nullptr;
}
template <class T>
T* mptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// Runs f(T{}) with T the float type of `a` (float32 or float64).
template <class F>
void with_float(const py::detail::PyArray_Proxy* a, F&& f) {
  if (type_num(a) == kF32)
    f(float{});
  else
    f(double{});
}

// ---------------------------------------------------------------- plain geometry arguments
// The spellings the general path's memo calls plain (_arrays.plain): an exact int (a
// bool is not one), or an exact tuple of them. Anything else -- a float, a list, a
// NumPy integer, a string padding -- is left to the general path, which parses it or
// names it in a TypeError. Range rules (kernel >= 1, padding >= 0, ...) are not
// checked here: the geometry functions of csrc/geometry refuse what breaks them.
bool exact_int(const py::handle& o, int64_t* v) {
  if (!PyLong_CheckExact(o.ptr())) return false;
  int overflow = 0;
  *v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  return overflow == 0;
}

// int -> (v, v); (v,) -> (v, v); (a, b) -> (a, b).
bool int_pair(const py::handle& o, int64_t* a, int64_t* b) {
  if (exact_int(o, a)) {
    *b = *a;
    return true;
  }
  if (!PyTuple_CheckExact(o.ptr())) return false;
  const Py_ssize_t n = PyTuple_GET_SIZE(o.ptr());
  if (n == 1) return exact_int(PyTuple_GET_ITEM(o.ptr(), 0), a) && (*b = *a, true);
  return n == 2 && exact_int(PyTuple_GET_ITEM(o.ptr(), 0), a) && exact_int(PyTuple_GET_ITEM(o.ptr(), 1), b);
}

// int, (ph, pw) or ((top, bottom), (left, right)) -> top, bottom, left, right.
bool padding_of(const py::handle& o, int64_t* p) {
  if (PyTuple_CheckExact(o.ptr()) && PyTuple_GET_SIZE(o.ptr()) == 2 &&
      PyTuple_CheckExact(PyTuple_GET_ITEM(o.ptr(), 0)) && PyTuple_CheckExact(PyTuple_GET_ITEM(o.ptr(), 1)))
    return int_pair(PyTuple_GET_ITEM(o.ptr(), 0), &p[0], &p[1]) &&
           int_pair(PyTuple_GET_ITEM(o.ptr(), 1), &p[2], &p[3]);
  if (!int_pair(o, &p[0], &p[2])) return false;
  p[1] = p[0], p[3] = p[2];
  return true;
}

bool exact_bool(const py::handle& o, bool* v) {
  if (o.ptr() != Py_True && o.ptr() != Py_False) return false;
  *v = o.ptr() == Py_True;
  return true;
}

// ---------------------------------------------------------------- element-wise
py::object call_relu(const py::handle& xo) {
  const auto* x = plain_float(xo);
  if (x == nullptr) return py::none();
  py::array y = new_array(dtype_of(x), shape_of(x));
  const int64_t n = element_count(x);
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    st = lepton::relu(xp, yp, n);
  });
  raise_status("relu", st);
  return std::move(y);
}

py::object call_bias_relu(const py::handle& xo, const py::handle& bo) {
  const auto* x = plain_float(xo);
  const py::detail::PyArray_Proxy* b = nullptr;
  if (x == nullptr || x->nd < 2 || !same_dtype(bo, x, &b, false) || b->nd != 1 || dim(b, 0) != dim(x, 1))
    return py::none();
  lepton::BiasReluDesc d;
  d.n = dim(x, 0), d.c = dim(x, 1), d.s = element_count(x) / (d.n * d.c);
  py::array y = new_array(dtype_of(x), shape_of(x));
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T *xp = cptr<T>(x), *bp = cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    st = lepton::bias_relu(d, xp, bp, yp);
  });
  raise_status("bias_relu", st);
  return std::move(y);
}

// ---------------------------------------------------------------- pooling
// The descriptor of x (C, H, W) or (N, C, H, W) pooled with these arguments (as
// torch.nn.functional's: stride None or () means the kernel size), with its output
// size; false when an argument is not plain or pool2d_output_size refuses the geometry.
bool pool_geometry(const py::detail::PyArray_Proxy* x, const py::handle& kernel_size, const py::handle& stride,
                   const py::handle& padding, const py::handle& dilation, const py::handle& ceil_mode,
                   lepton::Pool2dDesc* d) {
  if (x->nd != 3 && x->nd != 4) return false;
  const int o = x->nd - 3;
  d->n = o ? dim(x, 0) : 1, d->c = dim(x, o), d->h = dim(x, o + 1), d->w = dim(x, o + 2);
  int64_t pad[4];
  bool ceil = false;
  if (!int_pair(kernel_size, &d->kernel_h, &d->kernel_w) || !padding_of(padding, pad) ||
      !int_pair(dilation, &d->dilation_h, &d->dilation_w) || !exact_bool(ceil_mode, &ceil))
    return false;
  const bool default_stride =
      stride.is_none() || (PyTuple_CheckExact(stride.ptr()) && PyTuple_GET_SIZE(stride.ptr()) == 0);
  if (default_stride)
    d->stride_h = d->kernel_h, d->stride_w = d->kernel_w;
  else if (!int_pair(stride, &d->stride_h, &d->stride_w))
    return false;
  d->pad_top = pad[0], d->pad_bottom = pad[1], d->pad_left = pad[2], d->pad_right = pad[3];
  return lepton::pool2d_output_size(*d, ceil, &d->out_h, &d->out_w).ok();
}

// The pooled output's shape: x's, with (H, W) replaced by the output's.
std::vector<int64_t> pooled_shape(const py::detail::PyArray_Proxy* x, const lepton::Pool2dDesc& d) {
  std::vector<int64_t> shape = shape_of(x);
  shape[x->nd - 2] = d.out_h;
  shape[x->nd - 1] = d.out_w;
  return shape;
}

template <class T>
lepton::Status max_pool_into(const lepton::Pool2dDesc& d, const py::detail::PyArray_Proxy* x, py::array& y) {
  const T* xp = cptr<T>(x);
  T* yp = mptr<T>(y);
  py::gil_scoped_release nogil;
  return lepton::max_pool2d(d, xp, yp, nullptr);
}

py::object call_max_pool2d(const py::handle& xo, const py::handle& kernel_size, const py::handle& stride,
                           const py::handle& padding, const py::handle& dilation, const py::handle& ceil_mode) {
  const auto* x = plain(xo);
  if (x == nullptr || element_count(x) == 0) return py::none();
  const int t = type_num(x);
  if (t != kF32 && t != kF64 && t != npy_api::NPY_BYTE_ && t != npy_api::NPY_UBYTE_) return py::none();
  lepton::Pool2dDesc d;
  if (!pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, &d)) return py::none();
  py::array y = new_array(dtype_of(x), pooled_shape(x, d));
  lepton::Status st = t == kF32 ? max_pool_into<float>(d, x, y)
                      : t == kF64 ? max_pool_into<double>(d, x, y)
                      : t == npy_api::NPY_BYTE_ ? max_pool_into<int8_t>(d, x, y)
                                                 : max_pool_into<uint8_t>(d, x, y);
  raise_status("max_pool2d", st);
  return std::move(y);
}

py::object call_avg_pool2d(const py::handle& xo, const py::handle& kernel_size, const py::handle& stride,
                           const py::handle& padding, const py::handle& ceil_mode,
                           const py::handle& count_include_pad, const py::handle& divisor_override) {
  const auto* x = plain_float(xo);
  if (x == nullptr) return py::none();
  lepton::Pool2dDesc d;
  const py::int_ one(1);
  if (!pool_geometry(x, kernel_size, stride, padding, one, ceil_mode, &d) ||
      !exact_bool(count_include_pad, &d.count_include_pad))
    return py::none();
  if (!divisor_override.is_none() && !(exact_int(divisor_override, &d.divisor_override) && d.divisor_override > 0))
    return py::none();
  py::array y = new_array(dtype_of(x), pooled_shape(x, d));
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T* xp = cptr<T>(x);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    st = lepton::avg_pool2d(d, xp, yp);
  });
  raise_status("avg_pool2d", st);
  return std::move(y);
}

// ---------------------------------------------------------------- convolution and dense layers
py::object call_conv2d(const py::handle& xo, const py::handle& wo, const py::handle& bo, const py::handle& stride,
                       const py::handle& padding, const py::handle& dilation, const py::handle& groups, bool relu) {
  const auto* x = plain_float(xo);
  const py::detail::PyArray_Proxy *w = nullptr, *b = nullptr;
  if (x == nullptr || x->nd != 4 || !same_dtype(wo, x, &w, false) || w->nd != 4 || element_count(w) == 0 ||
      !same_dtype(bo, x, &b, true) || (b && (b->nd != 1 || dim(b, 0) != dim(w, 0))))
    return py::none();
  lepton::Conv2dDesc d;
  int64_t pad[4];
  if (!int_pair(stride, &d.stride_h, &d.stride_w) || !padding_of(padding, pad) ||
      !int_pair(dilation, &d.dilation_h, &d.dilation_w) || !exact_int(groups, &d.groups) || d.groups < 1)
    return py::none();
  d.n = dim(x, 0), d.c_in = dim(x, 1), d.h = dim(x, 2), d.w = dim(x, 3);
  d.c_out = dim(w, 0), d.kernel_h = dim(w, 2), d.kernel_w = dim(w, 3);
  d.pad_top = pad[0], d.pad_bottom = pad[1], d.pad_left = pad[2], d.pad_right = pad[3];
  d.relu = relu;
  if (d.c_in % d.groups != 0 || d.c_out % d.groups != 0 || dim(w, 1) != d.c_in / d.groups ||
      !lepton::conv2d_output_size(d, &d.out_h, &d.out_w).ok())
    return py::none();
  py::array y = new_array(dtype_of(x), {d.n, d.c_out, d.out_h, d.out_w});
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    st = lepton::conv2d(d, xp, wp, bp, yp);
  });
  raise_status("conv2d", st);
  return std::move(y);
}

// x (..., K) @ weight(N, K).T + bias, leading dims flattened into rows.
py::object call_linear(const py::handle& xo, const py::handle& wo, const py::handle& bo, bool relu) {
  const auto* x = plain_float(xo);
  const py::detail::PyArray_Proxy *w = nullptr, *b = nullptr;
  if (x == nullptr || x->nd < 1 || !same_dtype(wo, x, &w, false) || w->nd != 2 || element_count(w) == 0 ||
      dim(w, 1) != dim(x, x->nd - 1) || !same_dtype(bo, x, &b, true) || (b && (b->nd != 1 || dim(b, 0) != dim(w, 0))))
    return py::none();
  lepton::LinearDesc d;
  d.k = dim(w, 1), d.n = dim(w, 0), d.m = element_count(x) / d.k, d.relu = relu;
  std::vector<int64_t> shape = shape_of(x);
  shape.back() = d.n;
  py::array y = new_array(dtype_of(x), shape);
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
    T* yp = mptr<T>(y);
    py::gil_scoped_release nogil;
    st = lepton::linear(d, xp, wp, bp, yp);
  });
  raise_status("linear", st);
  return std::move(y);
}

// ---------------------------------------------------------------- losses
// Reductions by their index in ops/loss.py's REDUCTIONS: "none", "mean", "sum".
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

template <class T>
py::object reduce_losses(py::array& losses, int64_t reduction, int64_t kept) {
  if (reduction == kNone) return std::move(losses);
  const T* lp = mptr<T>(losses);
  double total = 0.0;  // float64 accumulation, as the general path
  for (py::ssize_t i = 0; i < losses.size(); ++i) total += lp[i];
  const double value = reduction == kMean ? total / static_cast<double>(kept) : total;
  py::array r = new_array(losses.dtype(), {});
  *mptr<T>(r) = static_cast<T>(value);
  return std::move(r);
}

// Logits (N, C) and int64 targets (N,) without class weights; None unless every target
// is a class or ignore_index (the general path names the bad ones).
py::object call_cross_entropy(const py::handle& zo, const py::handle& to, int64_t ignore_index,
                              double label_smoothing, int64_t reduction) {
  const auto* z = plain_float(zo);
  const auto* t = plain(to);
  if (z == nullptr || z->nd != 2 || t == nullptr || type_num(t) != kI64 || t->nd != 1 || dim(t, 0) != dim(z, 0) ||
      !(label_smoothing >= 0.0 && label_smoothing <= 1.0) || reduction < kNone || reduction > kSum)
    return py::none();
  lepton::CrossEntropyDesc d;
  d.n = dim(z, 0), d.c = dim(z, 1), d.ignore_index = ignore_index, d.label_smoothing = label_smoothing;
  const int64_t* tp = cptr<int64_t>(t);
  int64_t kept = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    if (tp[i] == ignore_index) continue;
    if (tp[i] < 0 || tp[i] >= d.c) return py::none();
    ++kept;
  }
  py::array losses = new_array(dtype_of(z), {d.n});
  lepton::Status st;
  py::object result;
  with_float(z, [&](auto tag) {
    using T = decltype(tag);
    const T* zp = cptr<T>(z);
    T* lp = mptr<T>(losses);
    {
      py::gil_scoped_release nogil;
      st = lepton::cross_entropy(d, zp, tp, nullptr, lp, nullptr);
    }
    raise_status("cross_entropy", st);
    result = reduce_losses<T>(losses, reduction, kept);
  });
  return result;
}

}  // namespace

void register_calls(py::module_& m) {
  const char* none_doc = " None when the arguments are not the plain case (the op's general path then runs).";
  m.def("call_relu", &call_relu, py::arg("x"), (std::string("relu(x), allocated.") + none_doc).c_str());
  m.def("call_bias_relu", &call_bias_relu, py::arg("x"), py::arg("bias"),
        (std::string("bias_relu(x, bias), allocated.") + none_doc).c_str());
  m.def("call_max_pool2d", &call_max_pool2d, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
        (std::string("max_pool2d(x, ...) without indices, allocated.") + none_doc).c_str());
  m.def("call_avg_pool2d", &call_avg_pool2d, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"),
        (std::string("avg_pool2d(x, ...), allocated.") + none_doc).c_str());
  m.def("call_conv2d", &call_conv2d, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("relu"),
        (std::string("conv2d(x, weight, bias, ...) with numeric padding, allocated.") + none_doc).c_str());
  m.def("call_linear", &call_linear, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("relu"),
        (std::string("linear over x's last axis.") + none_doc).c_str());
  m.def("call_cross_entropy", &call_cross_entropy, py::arg("logits"), py::arg("target"), py::arg("ignore_index"),
        py::arg("label_smoothing"), py::arg("reduction"),
        (std::string("cross_entropy without class weights; reduction 0 none, 1 mean, 2 sum.") + none_doc).c_str());
  m.def("empty", [](const py::tuple& shape, const py::dtype& dtype) {
          std::vector<int64_t> s;
          for (const py::handle& v : shape) s.push_back(v.cast<int64_t>());
          return new_array(dtype, s);
        },
        py::arg("shape"), py::arg("dtype"),
        "A new C-contiguous array; results of 1 MiB or more start on a 64-byte line.");
}

}  // namespace lepton_bind
