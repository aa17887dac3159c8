// bind_geometry.cpp -- the pybind11 module _lepton_geometry: the output-size and
// validation rules of pooling and convolution (csrc/geometry, the lepton_geometry
// library the CPU kernels and the CUDA module also link), for the Python ops. Its own
// module, with no OpenMP and no ISA flags, so the ops size and check their outputs by
// the one C++ rule whichever backend then runs (Numba and CuPy included).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bind_common.h"
#include "lepton/conv.h"
#include "lepton/pool.h"

namespace py = pybind11;
using lepton_bind::raise_status;
using lepton_bind::shape_str;

namespace {

[[noreturn]] void fail(const std::string& op, const std::string& msg) { throw py::value_error(op + ": " + msg); }

// Output (OH, OW) of max_pool2d / avg_pool2d for an input of shape (C, H, W) or
// (N, C, H, W): lepton::pool2d_output_size, errors prefixed with the caller's op.
py::tuple pool2d_output_size(const std::string& op, const std::vector<int64_t>& shape, int64_t kh,
                             int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                             int64_t pr, int64_t dh, int64_t dw, bool ceil_mode) {
  if (shape.size() != 3 && shape.size() != 4)
    fail(op, "input shape must be (C, H, W) or (N, C, H, W), got " + shape_str(shape));
  lepton::Pool2dDesc d;
  const size_t o = shape.size() - 3;
  d.n = o ? shape[0] : 1, d.c = shape[o], d.h = shape[o + 1], d.w = shape[o + 2];
  d.kernel_h = kh, d.kernel_w = kw, d.stride_h = sh, d.stride_w = sw;
  d.pad_top = pt, d.pad_bottom = pb, d.pad_left = pl, d.pad_right = pr;
  d.dilation_h = dh, d.dilation_w = dw;
  int64_t oh = 0, ow = 0;
  raise_status(op, lepton::pool2d_output_size(d, ceil_mode, &oh, &ow));
  return py::make_tuple(oh, ow);
}

// Output (OH, OW) of conv2d for x (N, C_in, H, W) and weight (C_out, C_in/groups, KH, KW):
// lepton::conv2d_output_size, then weight's channels against x's.
py::tuple conv2d_output_size(const std::string& op, const std::vector<int64_t>& x_shape,
                             const std::vector<int64_t>& w_shape, int64_t sh, int64_t sw, int64_t pt,
                             int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  if (x_shape.size() != 4) fail(op, "x shape must be (N, C_in, H, W), got " + shape_str(x_shape));
  if (w_shape.size() != 4)
    fail(op, "weight shape must be (C_out, C_in/groups, KH, KW), got " + shape_str(w_shape));
  lepton::Conv2dDesc d;
  d.n = x_shape[0], d.c_in = x_shape[1], d.h = x_shape[2], d.w = x_shape[3];
  d.c_out = w_shape[0], d.kernel_h = w_shape[2], d.kernel_w = w_shape[3];
  d.stride_h = sh, d.stride_w = sw;
  d.pad_top = pt, d.pad_bottom = pb, d.pad_left = pl, d.pad_right = pr;
  d.dilation_h = dh, d.dilation_w = dw;
  d.groups = groups;
  int64_t oh = 0, ow = 0;
  raise_status(op, lepton::conv2d_output_size(d, &oh, &ow));
  if (w_shape[1] != d.c_in / groups)  // groups divides c_in: checked above
    fail(op, "weight must have C_in/groups = " + std::to_string(d.c_in / groups) +
                        " input channels, got shape " + shape_str(w_shape));
  return py::make_tuple(oh, ow);
}

}  // namespace

PYBIND11_MODULE(_lepton_geometry, m) {
  m.doc() = "Output sizes and checks of pooling and convolution geometry (csrc/geometry), for the Python ops.";
  m.def("pool2d_output_size", &pool2d_output_size, py::arg("op"), py::arg("shape"), py::arg("kernel_h"),
        py::arg("kernel_w"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"),
        py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"),
        py::arg("dilation_w"), py::arg("ceil_mode"),
        "(OH, OW) of 2-D pooling over shape (C, H, W) or (N, C, H, W): span = size + padding - "
        "(dilation*(kernel-1) + 1), out = span // stride + 1, plus 1 in ceil_mode when the extra "
        "window starts inside the input or the leading padding (PyTorch's rule). Exact for any "
        "int64; ValueError '<op>: ...' naming the argument for a bad window, a padded size or an "
        "output element count past int64.");
  m.def("conv2d_output_size", &conv2d_output_size, py::arg("op"), py::arg("x_shape"),
        py::arg("weight_shape"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_top"),
        py::arg("pad_bottom"), py::arg("pad_left"), py::arg("pad_right"), py::arg("dilation_h"),
        py::arg("dilation_w"), py::arg("groups"),
        "(OH, OW) of conv2d for x (N, C_in, H, W) and weight (C_out, C_in/groups, KH, KW): "
        "(size + padding - dilation*(kernel-1) - 1) // stride + 1. Exact for any int64; "
        "ValueError '<op>: ...' naming the argument for a bad window or groups, weight channels "
        "that do not match, a padded size or an output element count past int64.");
}
