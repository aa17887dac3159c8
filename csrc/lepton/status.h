// lepton/status.h -- the error type every lepton kernel entry point returns.
// Kernels never throw, exit or abort: they return a Status, and the Python
// bindings turn a non-ok Status into ValueError (invalid_argument) or
// RuntimeError (internal), naming the op.
#pragma once
#include <string>
#include <utility>

namespace lepton {

enum class StatusCode { ok = 0, invalid_argument = 1, internal = 2 };

struct Status {
  StatusCode code = StatusCode::ok;
  std::string message;

  static Status Ok() { return {}; }
  static Status Invalid(std::string msg) { return {StatusCode::invalid_argument, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::internal, std::move(msg)}; }
  bool ok() const { return code == StatusCode::ok; }
};

}  // namespace lepton
