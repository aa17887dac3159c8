// bind_buffers.cpp -- the pack and unpack of a collective's staging buffer
// (lepton_kernels.distributed): many arrays copied, optionally scaled, into or out
// of one contiguous buffer in a single call with the GIL released. In NumPy these
// are one call per array (slicing, ufunc dispatch), which cost LeNet-5's all-reduce
// a third of its time on one machine.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bind_common.h"

namespace lepton_bind {

namespace {

struct Span {
  char* data;
  int64_t count;  // elements
};

[[noreturn]] void fail(const char* fn, const std::string& what) { throw py::value_error(std::string(fn) + ": " + what); }

// The parts as spans of the buffer's dtype; every part C-contiguous (and writeable when
// it is written); their element counts add up to the buffer's.
std::vector<Span> spans_of(const char* fn, const py::list& parts, const py::array& buffer, bool writeable) {
  std::vector<Span> spans;
  spans.reserve(parts.size());
  int64_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const py::handle o = parts[i];
    if (!py::isinstance<py::array>(o))
      throw py::type_error(std::string(fn) + ": parts[" + std::to_string(i) + "] must be a numpy.ndarray");
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (!a.dtype().equal(buffer.dtype()))
      throw py::type_error(std::string(fn) + ": parts[" + std::to_string(i) + "] must have the buffer's dtype");
    if (!(a.flags() & py::array::c_style)) fail(fn, "parts[" + std::to_string(i) + "] must be C-contiguous");
    if (writeable && !a.writeable()) fail(fn, "parts[" + std::to_string(i) + "] is read-only");
    spans.push_back({static_cast<char*>(const_cast<void*>(a.data())), static_cast<int64_t>(a.size())});
    total += a.size();
  }
  if (total != buffer.size())
    fail(fn, "the parts hold " + std::to_string(total) + " elements, the buffer " + std::to_string(buffer.size()));
  return spans;
}

void check_buffer(const char* fn, const py::array& buffer, bool writeable, double factor) {
  if (buffer.ndim() != 1 || !(buffer.flags() & py::array::c_style)) fail(fn, "buffer must be 1-D and contiguous");
  if (writeable && !buffer.writeable()) fail(fn, "buffer is read-only");
  const char kind = buffer.dtype().kind();
  if (factor != 1.0 && !(kind == 'f' && (buffer.itemsize() == 4 || buffer.itemsize() == 8)))
    fail(fn, "a scale or divisor other than 1 needs a float32 or float64 buffer");
}

// dst <- src * factor, or src / factor: NumPy's multiply and divide, element for element.
// Dividing by a power of two is multiplying by its reciprocal, bit for bit (both round
// the same exact value), and costs a multiply instead of a division: the common
// world sizes 2, 4, 8 of an all-reduce's "mean".
template <class T>
void scaled_copy(const T* src, T* dst, int64_t n, T factor, bool divide) {
  int exponent = 0;
  if (divide && std::frexp(factor, &exponent) == T(0.5)) {
    factor = T(1) / factor;
    divide = false;
  }
  if (divide)
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i] / factor;
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i] * factor;
}

// n elements of the buffer's dtype from src to dst, times (or divided by) factor; a
// plain copy when factor is 1.
void move(const char* src, char* dst, int64_t n, int64_t itemsize, double factor, bool divide) {
  if (factor == 1.0)
    std::memmove(dst, src, static_cast<size_t>(n * itemsize));
  else if (itemsize == 4)
    scaled_copy(reinterpret_cast<const float*>(src), reinterpret_cast<float*>(dst), n, static_cast<float>(factor),
                divide);
  else
    scaled_copy(reinterpret_cast<const double*>(src), reinterpret_cast<double*>(dst), n, factor, divide);
}

void gather(const py::list& parts, py::array buffer, double scale) {
  check_buffer("gather", buffer, true, scale);
  const std::vector<Span> spans = spans_of("gather", parts, buffer, false);
  char* out = static_cast<char*>(buffer.mutable_data());
  const int64_t itemsize = buffer.itemsize();
  py::gil_scoped_release nogil;
  for (const Span& s : spans) {
    move(s.data, out, s.count, itemsize, scale, false);
    out += s.count * itemsize;
  }
}

void scatter(const py::array& buffer, const py::list& parts, double divisor) {
  check_buffer("scatter", buffer, false, divisor);
  const std::vector<Span> spans = spans_of("scatter", parts, buffer, true);
  const char* in = static_cast<const char*>(buffer.data());
  const int64_t itemsize = buffer.itemsize();
  py::gil_scoped_release nogil;
  for (const Span& s : spans) {
    move(in, s.data, s.count, itemsize, divisor, true);
    in += s.count * itemsize;
  }
}

}  // namespace

void register_buffers(py::module_& m) {
  m.def("gather", &gather, py::arg("parts"), py::arg("buffer"), py::arg("scale") = 1.0,
        "buffer <- concatenate(parts) * scale (parts: C-contiguous arrays of buffer's dtype, sizes adding up "
        "to buffer's).");
  m.def("scatter", &scatter, py::arg("buffer"), py::arg("parts"), py::arg("divisor") = 1.0,
        "Each part <- its slice of buffer / divisor, in order (the inverse of gather).");
}

}  // namespace lepton_bind
