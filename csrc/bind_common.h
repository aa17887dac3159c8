// bind_common.h -- what the source files of the _lepton_cpu module share:
// bind_cpu.cpp (kernels into caller-preallocated outputs), bind_calls.cpp
// (whole calls that also allocate) and bind_buffers.cpp (staging-buffer moves).
// Internal to the modules (bind_geometry.cpp uses the messages' helpers too): not installed.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "lepton/status.h"

namespace lepton_bind {

namespace py = pybind11;

// A non-ok Status becomes ValueError (invalid_argument) or RuntimeError (internal),
// prefixed with the op name.
inline void raise_status(const std::string& op, const lepton::Status& st) {
  if (st.ok()) return;
  if (st.code == lepton::StatusCode::invalid_argument) throw py::value_error(op + ": " + st.message);
  throw std::runtime_error(op + ": " + st.message);
}

// "(2, 3)", "(4,)": a shape as Python prints a tuple, for messages.
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + (s.size() == 1 ? ",)" : ")");
}

// Results of at least this many bytes start on a cache line (malloc gives 16 bytes):
// every 64-byte store of a kernel then writes one line, not parts of two, which is 15%
// of an int8 convolution that writes more than it computes (CIFAR's first layer).
// Smaller results are plain NumPy allocations: the extra view costs more than the
// split stores. This is the one allocation rule of every NumPy result the ops return.
constexpr int64_t kAlignFromBytes = int64_t(1) << 20;
constexpr int64_t kAlign = 64;
constexpr int64_t kInt64Max = INT64_MAX;

// A new C-contiguous NumPy array of `dtype` and `shape` (bind_alloc.cpp).
py::array new_array(const py::dtype& dtype, const std::vector<int64_t>& shape);

// Registers empty and the result cache's controls (bind_alloc.cpp).
void register_alloc(py::module_& m);

// Registers the whole-call entries (bind_calls.cpp) on the module.
void register_calls(py::module_& m);

// Registers gather/scatter, the staging-buffer moves of the collectives (bind_buffers.cpp).
void register_buffers(py::module_& m);

}  // namespace lepton_bind
