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
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "bind_common.h"
#include "lepton/conv.h"
#include "lepton/elementwise.h"
#include "lepton/linear.h"
#include "lepton/loss.h"
#include "lepton/pool.h"

namespace lepton_bind {

using py::detail::npy_api;

namespace {

// ---------------------------------------------------------------- operands
constexpr int kF32 = npy_api::NPY_FLOAT_, kF64 = npy_api::NPY_DOUBLE_;
constexpr int kI64 = npy_api::NPY_INT64_, kI8 = npy_api::NPY_BYTE_, kU8 = npy_api::NPY_UBYTE_;
static_assert(sizeof(Py_intptr_t) == sizeof(int64_t), "NumPy dimensions are read as int64");

// DLPack's ABI (dlpack.h; the "dltensor" capsule every producer's to_dlpack returns):
// only the fields read or written here.
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCPU = 1;
constexpr uint8_t kDLInt = 0, kDLUInt = 1, kDLFloat = 2;
constexpr const char* kCapsuleName = "dltensor";

// NumPy type number of a DLPack dtype the kernels take, or -1.
int dlpack_type(const DLDataType& t) {
  if (t.lanes != 1) return -1;
  if (t.code == kDLFloat) return t.bits == 32 ? kF32 : t.bits == 64 ? kF64 : -1;
  if (t.code == kDLInt) return t.bits == 64 ? kI64 : t.bits == 8 ? kI8 : -1;
  if (t.code == kDLUInt) return t.bits == 8 ? kU8 : -1;
  return -1;
}

DLDataType dlpack_dtype(int type) {
  switch (type) {
    case kF32: return {kDLFloat, 32, 1};
    case kF64: return {kDLFloat, 64, 1};
    case kI64: return {kDLInt, 64, 1};
    case kI8: return {kDLInt, 8, 1};
    default: return {kDLUInt, 8, 1};
  }
}

int item_size(int type) { return type == kF64 || type == kI64 ? 8 : type == kF32 ? 4 : 1; }

// One array argument as the kernels read it in place: a NumPy array (exactly
// numpy.ndarray) or an unconsumed DLPack capsule on the CPU, either C-contiguous,
// aligned and in native byte order. The capsule is only read: it stays unconsumed
// and its producer keeps owning the memory.
struct View {
  const char* data = nullptr;
  int nd = 0;
  const int64_t* dims = nullptr;
  int type = -1;        // NumPy type number
  bool dlpack = false;  // read from a capsule: results go back as capsules

  int64_t dim(int i) const { return dims[i]; }
  int64_t count() const {
    int64_t n = 1;
    for (int i = 0; i < nd; ++i) n *= dims[i];
    return n;
  }
  std::vector<int64_t> shape() const { return std::vector<int64_t>(dims, dims + nd); }
  template <class T>
  const T* ptr() const {
    return reinterpret_cast<const T*>(data);
  }
};

bool numpy_view(const py::handle& o, View* v) {
  const auto* a = py::detail::array_proxy(o.ptr());
  constexpr int need = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
  const auto* descr = py::detail::array_descriptor_proxy(a->descr);
  if ((a->flags & need) != need || descr->byteorder == '>') return false;
  v->data = a->data, v->nd = a->nd, v->dims = reinterpret_cast<const int64_t*>(a->dimensions);
  v->type = descr->type_num;
  return true;
}

bool dlpack_view(const py::handle& o, View* v) {
  if (!PyCapsule_IsValid(o.ptr(), kCapsuleName)) return false;
  const auto* m = static_cast<const DLManagedTensor*>(PyCapsule_GetPointer(o.ptr(), kCapsuleName));
  const DLTensor& t = m->dl_tensor;
  const int type = dlpack_type(t.dtype);
  if (t.device.device_type != kDLCPU || type < 0 || t.ndim < 0 || t.ndim > 64 || (t.ndim > 0 && t.shape == nullptr) ||
      (t.data == nullptr && t.ndim > 0))
    return false;
  int64_t bytes = item_size(type);  // a producer's sizes are not trusted: non-negative, no overflow
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] < 0 || __builtin_mul_overflow(bytes, t.shape[i], &bytes)) return false;
  if (t.strides != nullptr) {  // C-contiguous; the stride of a size-1 axis is free
    int64_t expected = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expected) return false;
      expected *= t.shape[i];
    }
  }
  const char* data = static_cast<const char*>(t.data) + t.byte_offset;
  if (reinterpret_cast<uintptr_t>(data) % item_size(type) != 0) return false;
  v->data = data, v->nd = t.ndim, v->dims = t.shape, v->type = type, v->dlpack = true;
  return true;
}

// `o` as a View, or false for anything else (the op's general path handles it).
bool view_of(const py::handle& o, View* v) {
  if (Py_TYPE(o.ptr()) == npy_api::get().PyArray_Type_) return numpy_view(o, v);
  return dlpack_view(o, v);
}

// A float32/float64 operand with at least one element.
bool float_view(const py::handle& o, View* v) {
  return view_of(o, v) && (v->type == kF32 || v->type == kF64) && v->count() > 0;
}

// `o` as a View of `like`'s dtype; None is allowed (and leaves v empty) when optional.
bool same_dtype(const py::handle& o, const View& like, View* v, bool optional) {
  if (o.is_none()) return optional;
  return view_of(o, v) && v->type == like.type;
}

// Runs f(T{}) with T the float type of `v` (float32 or float64).
template <class F>
void with_float(const View& v, F&& f) {
  if (v.type == kF32)
    f(float{});
  else
    f(double{});
}

// ---------------------------------------------------------------- results
// A DLPack result: the buffer (64-byte aligned), its shape, and the managed tensor
// handed out; the deleter frees all three (it takes no GIL: it touches no Python object).
struct OwnedTensor {
  DLManagedTensor managed{};
  std::vector<int64_t> shape;
  void* buffer = nullptr;

  static void destroy(DLManagedTensor* m) {
    auto* self = static_cast<OwnedTensor*>(m->manager_ctx);
    std::free(self->buffer);
    delete self;
  }
};

// An unconsumed capsule still owns its tensor; a consumer renames it "used_dltensor".
void capsule_destructor(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kCapsuleName)) return;
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  m->deleter(m);
}

// The result of a whole call, in the kind of its first operand: a NumPy array (the
// allocation rule of new_array) or a DLPack capsule the producer's from_dlpack takes.
class Result {
 public:
  Result(const View& like, int type, std::vector<int64_t> shape) {
    if (!like.dlpack) {
      array_ = new_array(py::dtype(type), shape);
      data_ = array_.mutable_data();
      return;
    }
    owned_.reset(new OwnedTensor);
    int64_t nbytes = item_size(type);
    for (int64_t s : shape) nbytes *= s;  // the shape came from validated operands
    owned_->buffer = std::aligned_alloc(kAlign, static_cast<size_t>((nbytes + kAlign - 1) / kAlign * kAlign));
    if (owned_->buffer == nullptr) throw std::bad_alloc();
    owned_->shape = std::move(shape);
    DLTensor& t = owned_->managed.dl_tensor;
    t.data = owned_->buffer;
    t.device = {kDLCPU, 0};
    t.ndim = static_cast<int32_t>(owned_->shape.size());
    t.dtype = dlpack_dtype(type);
    t.shape = owned_->shape.data();
    t.strides = nullptr;  // C-contiguous
    t.byte_offset = 0;
    owned_->managed.manager_ctx = owned_.get();
    owned_->managed.deleter = &OwnedTensor::destroy;
    data_ = owned_->buffer;
  }
  ~Result() {
    if (owned_) std::free(owned_->buffer);
  }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  template <class T>
  T* ptr() {
    return static_cast<T*>(data_);
  }

  py::object release() {
    if (!owned_) return std::move(array_);
    PyObject* capsule = PyCapsule_New(&owned_->managed, kCapsuleName, &capsule_destructor);
    if (capsule == nullptr) throw py::error_already_set();
    owned_.release();  // the capsule owns it now
    return py::reinterpret_steal<py::object>(capsule);
  }

 private:
  py::array array_;
  std::unique_ptr<OwnedTensor> owned_;
  void* data_ = nullptr;
};

// Runs kernel(x's data, y's data) as const T* / T* for x's float type T with the GIL
// released, raises a non-ok Status naming `op`, and hands y back.
template <class F>
py::object run_float(const char* op, const View& x, Result& y, F&& kernel) {
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T* xp = x.ptr<T>();
    T* yp = y.ptr<T>();
    py::gil_scoped_release nogil;
    st = kernel(xp, yp);
  });
  raise_status(op, st);
  return y.release();
}

// The element type T of a `const T*` a generic kernel lambda receives.
template <class P>
using Elem = std::remove_const_t<std::remove_pointer_t<P>>;

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
  View x;
  if (!float_view(xo, &x)) return py::none();
  Result y(x, x.type, x.shape());
  const int64_t n = x.count();
  return run_float("relu", x, y, [&](auto xp, auto yp) { return lepton::relu(xp, yp, n); });
}

// A NumPy array that repeats one value through stride 0 on every axis (np.broadcast_to of a
// scalar: the gradient autograd hands down from a sum), as that value.
template <class T>
bool broadcast_scalar(const py::handle& o, const View& like, T* value) {
  if (Py_TYPE(o.ptr()) != npy_api::get().PyArray_Type_) return false;
  const auto* a = py::detail::array_proxy(o.ptr());
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (d->type_num != like.type || d->byteorder == '>' || a->nd != like.nd) return false;
  for (int i = 0; i < a->nd; ++i)
    if (a->dimensions[i] != like.dims[i] || a->strides[i] != 0) return false;
  std::memcpy(value, a->data, sizeof(T));  // no alignment assumed
  return true;
}

// relu_backward(grad_out, x): grad_out a plain array of x's shape, or one value broadcast
// over it (read as that value, never copied out to x's size).
py::object call_relu_backward(const py::handle& go, const py::handle& xo) {
  View x, g;
  if (!float_view(xo, &x)) return py::none();
  const bool plain_grad = view_of(go, &g) && g.type == x.type && g.shape() == x.shape();
  Result y(x, x.type, x.shape());
  const int64_t n = x.count();
  bool taken = false;
  lepton::Status st;
  with_float(x, [&](auto t) {
    using T = decltype(t);
    const T* xp = x.ptr<T>();
    T* yp = y.ptr<T>();
    T value{};
    if (plain_grad) {
      const T* gp = g.ptr<T>();
      py::gil_scoped_release nogil;
      st = lepton::relu_backward(gp, xp, yp, n);
      taken = true;
    } else if (broadcast_scalar<T>(go, x, &value)) {
      py::gil_scoped_release nogil;
      for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] <= T(0) ? T(0) : value;  // a NaN x passes the gradient
      taken = true;
    }
  });
  if (!taken) return py::none();
  raise_status("relu_backward", st);
  return y.release();
}

py::object call_bias_relu(const py::handle& xo, const py::handle& bo) {
  View x, b;
  if (!float_view(xo, &x) || x.nd < 2 || !same_dtype(bo, x, &b, false) || b.nd != 1 || b.dim(0) != x.dim(1))
    return py::none();
  lepton::BiasReluDesc d;
  d.n = x.dim(0), d.c = x.dim(1), d.s = x.count() / (d.n * d.c);
  Result y(x, x.type, x.shape());
  return run_float("bias_relu", x, y, [&](auto xp, auto yp) {
    return lepton::bias_relu(d, xp, b.ptr<Elem<decltype(xp)>>(), yp);
  });
}

// ---------------------------------------------------------------- pooling
// The descriptor of x (C, H, W) or (N, C, H, W) pooled with these arguments (as
// torch.nn.functional's: stride None or () means the kernel size), with its output
// size; false when an argument is not plain or pool2d_output_size refuses the geometry.
bool pool_geometry(const View& x, const py::handle& kernel_size, const py::handle& stride,
                   const py::handle& padding, const py::handle& dilation, const py::handle& ceil_mode,
                   lepton::Pool2dDesc* d) {
  if (x.nd != 3 && x.nd != 4) return false;
  const int o = x.nd - 3;
  d->n = o ? x.dim(0) : 1, d->c = x.dim(o), d->h = x.dim(o + 1), d->w = x.dim(o + 2);
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
std::vector<int64_t> pooled_shape(const View& x, const lepton::Pool2dDesc& d) {
  std::vector<int64_t> shape = x.shape();
  shape[x.nd - 2] = d.out_h;
  shape[x.nd - 1] = d.out_w;
  return shape;
}

template <class T>
lepton::Status max_pool_into(const lepton::Pool2dDesc& d, const View& x, Result& y) {
  const T* xp = x.ptr<T>();
  T* yp = y.ptr<T>();
  py::gil_scoped_release nogil;
  return lepton::max_pool2d(d, xp, yp, nullptr);
}

py::object call_max_pool2d(const py::handle& xo, const py::handle& kernel_size, const py::handle& stride,
                           const py::handle& padding, const py::handle& dilation, const py::handle& ceil_mode) {
  View x;
  if (!view_of(xo, &x) || x.count() == 0) return py::none();
  if (x.type != kF32 && x.type != kF64 && x.type != kI8 && x.type != kU8) return py::none();
  lepton::Pool2dDesc d;
  if (!pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, &d)) return py::none();
  Result y(x, x.type, pooled_shape(x, d));
  lepton::Status st = x.type == kF32   ? max_pool_into<float>(d, x, y)
                      : x.type == kF64 ? max_pool_into<double>(d, x, y)
                      : x.type == kI8  ? max_pool_into<int8_t>(d, x, y)
                                       : max_pool_into<uint8_t>(d, x, y);
  raise_status("max_pool2d", st);
  return y.release();
}

py::object call_avg_pool2d(const py::handle& xo, const py::handle& kernel_size, const py::handle& stride,
                           const py::handle& padding, const py::handle& ceil_mode,
                           const py::handle& count_include_pad, const py::handle& divisor_override) {
  View x;
  if (!float_view(xo, &x)) return py::none();
  lepton::Pool2dDesc d;
  const py::int_ one(1);
  if (!pool_geometry(x, kernel_size, stride, padding, one, ceil_mode, &d) ||
      !exact_bool(count_include_pad, &d.count_include_pad))
    return py::none();
  if (!divisor_override.is_none() && !(exact_int(divisor_override, &d.divisor_override) && d.divisor_override > 0))
    return py::none();
  Result y(x, x.type, pooled_shape(x, d));
  return run_float("avg_pool2d", x, y, [&](auto xp, auto yp) { return lepton::avg_pool2d(d, xp, yp); });
}

// ---------------------------------------------------------------- convolution and dense layers
py::object call_conv2d(const py::handle& xo, const py::handle& wo, const py::handle& bo, const py::handle& stride,
                       const py::handle& padding, const py::handle& dilation, const py::handle& groups, bool relu) {
  View x, w, b;
  if (!float_view(xo, &x) || x.nd != 4 || !same_dtype(wo, x, &w, false) || w.nd != 4 || w.count() == 0 ||
      !same_dtype(bo, x, &b, true) || (b.data && (b.nd != 1 || b.dim(0) != w.dim(0))))
    return py::none();
  lepton::Conv2dDesc d;
  int64_t pad[4];
  if (!int_pair(stride, &d.stride_h, &d.stride_w) || !padding_of(padding, pad) ||
      !int_pair(dilation, &d.dilation_h, &d.dilation_w) || !exact_int(groups, &d.groups) || d.groups < 1)
    return py::none();
  d.n = x.dim(0), d.c_in = x.dim(1), d.h = x.dim(2), d.w = x.dim(3);
  d.c_out = w.dim(0), d.kernel_h = w.dim(2), d.kernel_w = w.dim(3);
  d.pad_top = pad[0], d.pad_bottom = pad[1], d.pad_left = pad[2], d.pad_right = pad[3];
  d.relu = relu;
  if (d.c_in % d.groups != 0 || d.c_out % d.groups != 0 || w.dim(1) != d.c_in / d.groups ||
      !lepton::conv2d_output_size(d, &d.out_h, &d.out_w).ok())
    return py::none();
  Result y(x, x.type, {d.n, d.c_out, d.out_h, d.out_w});
  return run_float("conv2d", x, y, [&](auto xp, auto yp) {
    using T = Elem<decltype(xp)>;
    return lepton::conv2d(d, xp, w.ptr<T>(), b.ptr<T>(), yp);
  });
}

// x (..., K) @ weight(N, K).T + bias, leading dims flattened into rows.
py::object call_linear(const py::handle& xo, const py::handle& wo, const py::handle& bo, bool relu) {
  View x, w, b;
  if (!float_view(xo, &x) || x.nd < 1 || !same_dtype(wo, x, &w, false) || w.nd != 2 || w.count() == 0 ||
      w.dim(1) != x.dim(x.nd - 1) || !same_dtype(bo, x, &b, true) || (b.data && (b.nd != 1 || b.dim(0) != w.dim(0))))
    return py::none();
  lepton::LinearDesc d;
  d.k = w.dim(1), d.n = w.dim(0), d.m = x.count() / d.k, d.relu = relu;
  std::vector<int64_t> shape = x.shape();
  shape.back() = d.n;
  Result y(x, x.type, std::move(shape));
  return run_float("linear", x, y, [&](auto xp, auto yp) {
    using T = Elem<decltype(xp)>;
    return lepton::linear(d, xp, w.ptr<T>(), b.ptr<T>(), yp);
  });
}

// ---------------------------------------------------------------- losses
// Reductions by their index in ops/loss.py's REDUCTIONS: "none", "mean", "sum".
enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// Logits (N, C) and int64 targets (N,) without class weights; None unless every target
// is a class or ignore_index (the general path names the bad ones).
py::object call_cross_entropy(const py::handle& zo, const py::handle& to, int64_t ignore_index,
                              double label_smoothing, int64_t reduction) {
  View z, t;
  if (!float_view(zo, &z) || z.nd != 2 || !view_of(to, &t) || t.type != kI64 || t.nd != 1 || t.dim(0) != z.dim(0) ||
      !(label_smoothing >= 0.0 && label_smoothing <= 1.0) || reduction < kNone || reduction > kSum)
    return py::none();
  lepton::CrossEntropyDesc d;
  d.n = z.dim(0), d.c = z.dim(1), d.ignore_index = ignore_index, d.label_smoothing = label_smoothing;
  const int64_t* tp = t.ptr<int64_t>();
  int64_t kept = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    if (tp[i] == ignore_index) continue;
    if (tp[i] < 0 || tp[i] >= d.c) return py::none();
    ++kept;
  }
  py::object result;
  with_float(z, [&](auto tag) {
    using T = decltype(tag);
    // "none" returns the per-row losses; "mean"/"sum" reduce them, in float64 as the general path.
    std::vector<T> rows(reduction == kNone ? 0 : d.n);
    Result per_row(z, z.type, reduction == kNone ? std::vector<int64_t>{d.n} : std::vector<int64_t>{});
    T* lp = reduction == kNone ? per_row.ptr<T>() : rows.data();
    const T* zp = z.ptr<T>();
    lepton::Status st;
    {
      py::gil_scoped_release nogil;
      st = lepton::cross_entropy(d, zp, tp, nullptr, lp, nullptr);
    }
    raise_status("cross_entropy", st);
    if (reduction != kNone) {
      double total = 0.0;
      for (T v : rows) total += v;
      *per_row.ptr<T>() = static_cast<T>(reduction == kMean ? total / static_cast<double>(kept) : total);
    }
    result = per_row.release();
  });
  return result;
}

}  // namespace

void register_calls(py::module_& m) {
  const char* none_doc = " None when the arguments are not the plain case (the op's general path then runs).";
  m.def("call_relu", &call_relu, py::arg("x"), (std::string("relu(x), allocated.") + none_doc).c_str());
  m.def("call_relu_backward", &call_relu_backward, py::arg("grad_out"), py::arg("x"),
        (std::string("relu_backward(grad_out, x), allocated; grad_out may be one value broadcast (stride 0).") +
         none_doc).c_str());
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
}

}  // namespace lepton_bind
