// cpu/optim.cpp -- multi-tensor SGD / Adam (lepton/optim.h): argument checks, the
// per-call scalars (Adam's bias corrections in double, once), the split of all
// tensors into chunks of at most kChunk elements, and one OpenMP parallel-for over
// the chunks that runs the element loop of the active ISA (cpu/optim_internal.h).
// Layout: each tensor is dense; chunk k covers [begin, begin + len) of tensor t.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cpu/internal.h"
#include "cpu/optim_internal.h"
#include "lepton/optim.h"

namespace lepton {
namespace detail {
namespace generic {
LEPTON_DEFINE_OPTIM_KERNELS
}  // namespace generic
}  // namespace detail

namespace {

// 64K elements: 256 KiB of float32 per array, so a chunk's arrays stay near L2 size
// and a 16M-parameter model splits into ~256 chunks (balanced across threads).
// Work is cut into chunks of at most kChunk elements, each within one tensor. The
// chunk length follows the total, so that every thread gets several chunks: a
// model's tensors differ in size by orders of magnitude (LeNet-5: 6 to 48,000), and
// one chunk per tensor left one of two threads with 80% of the work.
constexpr int64_t kChunk = 65536;
constexpr int64_t kMinChunk = 1024;
constexpr int64_t kChunksPerThread = 4;

struct Chunk {
  int64_t tensor, begin, len;
};

template <class Tensor>
Status make_chunks(const Tensor* tensors, int64_t num, std::vector<Chunk>* chunks, int64_t* total) {
  if (num < 0) return Status::Invalid("num_tensors must be non-negative");
  if (num > 0 && !tensors) return Status::Invalid("null tensor list");
  int64_t sum = 0;
  for (int64_t t = 0; t < num; ++t) {
    if (tensors[t].count < 0) return Status::Invalid("tensor " + std::to_string(t) + ": negative count");
    if (__builtin_add_overflow(sum, tensors[t].count, &sum)) return Status::Invalid("element count overflows int64");
  }
  const int64_t share = (sum + detail::threads_for(sum) * kChunksPerThread - 1) /
                        std::max<int64_t>(1, detail::threads_for(sum) * kChunksPerThread);
  const int64_t len = std::clamp<int64_t>((share + 255) / 256 * 256, kMinChunk, kChunk);
  int64_t count = 0;
  for (int64_t t = 0; t < num; ++t) count += (tensors[t].count + len - 1) / len;
  try {
    chunks->reserve(static_cast<size_t>(count));
  } catch (...) {
    return Status::Internal("out of memory");
  }
  for (int64_t t = 0; t < num; ++t)
    for (int64_t b = 0; b < tensors[t].count; b += len)
      chunks->push_back({t, b, std::min(len, tensors[t].count - b)});
  *total = sum;
  return Status::Ok();
}

// Chunks are taken one at a time (dynamic): their lengths differ (a tensor's last chunk,
// small tensors), and there are few of them, so a static split would leave a thread idle.
template <class F>
void for_chunks(const std::vector<Chunk>& chunks, int64_t total, F fn) {
  const int nt = detail::threads_for(total);
  const int64_t nc = static_cast<int64_t>(chunks.size());
  if (nt <= 1 || nc <= 1) {
    for (const Chunk& c : chunks) fn(c);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t k = 0; k < nc; ++k) fn(chunks[static_cast<size_t>(k)]);
}

Status finite_or_invalid(const char* name, double v) {
  if (std::isnan(v)) return Status::Invalid(std::string(name) + " must not be NaN");
  return Status::Ok();
}

Status check_sgd(const SgdParams& p) {
  for (auto [name, v] : {std::pair<const char*, double>{"lr", p.lr}, {"momentum", p.momentum},
                         {"dampening", p.dampening}, {"weight_decay", p.weight_decay}}) {
    Status st = finite_or_invalid(name, v);
    if (!st.ok()) return st;
  }
  if (p.lr < 0) return Status::Invalid("lr must be >= 0");
  if (p.momentum < 0) return Status::Invalid("momentum must be >= 0");
  if (p.weight_decay < 0) return Status::Invalid("weight_decay must be >= 0");
  if (p.nesterov && (p.momentum <= 0 || p.dampening != 0))
    return Status::Invalid("nesterov needs momentum > 0 and dampening 0");
  return Status::Ok();
}

Status check_adam(const AdamParams& p) {
  for (auto [name, v] : {std::pair<const char*, double>{"lr", p.lr}, {"beta1", p.beta1}, {"beta2", p.beta2},
                         {"eps", p.eps}, {"weight_decay", p.weight_decay}}) {
    Status st = finite_or_invalid(name, v);
    if (!st.ok()) return st;
  }
  if (p.step < 1) return Status::Invalid("step must be >= 1, got " + std::to_string(p.step));
  if (p.lr < 0) return Status::Invalid("lr must be >= 0");
  if (!(p.beta1 >= 0 && p.beta1 < 1)) return Status::Invalid("beta1 must be in [0, 1)");
  if (!(p.beta2 >= 0 && p.beta2 < 1)) return Status::Invalid("beta2 must be in [0, 1)");
  if (p.eps < 0) return Status::Invalid("eps must be >= 0");
  if (p.weight_decay < 0) return Status::Invalid("weight_decay must be >= 0");
  return Status::Ok();
}

template <class T>
using SgdFn = void (*)(const detail::SgdScalars<T>&, T*, const T*, T*, int64_t);
template <class T>
using AdamFn = void (*)(const detail::AdamScalars<T>&, T*, const T*, T*, T*, T*, int64_t);

template <class T>
SgdFn<T> sgd_kernel();
template <>
SgdFn<float> sgd_kernel<float>() {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::sgd_range_f32;
    case Isa::avx2: return detail::avx2::sgd_range_f32;
    default: return detail::generic::sgd_range_f32;
  }
}
template <>
SgdFn<double> sgd_kernel<double>() {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::sgd_range_f64;
    case Isa::avx2: return detail::avx2::sgd_range_f64;
    default: return detail::generic::sgd_range_f64;
  }
}
template <class T>
AdamFn<T> adam_kernel();
template <>
AdamFn<float> adam_kernel<float>() {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::adam_range_f32;
    case Isa::avx2: return detail::avx2::adam_range_f32;
    default: return detail::generic::adam_range_f32;
  }
}
template <>
AdamFn<double> adam_kernel<double>() {
  switch (active_isa()) {
    case Isa::avx512: return detail::avx512::adam_range_f64;
    case Isa::avx2: return detail::avx2::adam_range_f64;
    default: return detail::generic::adam_range_f64;
  }
}

template <class T>
Status sgd_impl(const SgdParams& p, const SgdTensor<T>* tensors, int64_t num) {
  Status st = check_sgd(p);
  if (!st.ok()) return st;
  const bool use_buf = p.momentum != 0;
  for (int64_t t = 0; t < num && tensors; ++t) {
    const SgdTensor<T>& x = tensors[t];
    if (x.count > 0 && (!x.param || !x.grad || (use_buf && !x.momentum_buffer)))
      return Status::Invalid("tensor " + std::to_string(t) + ": null pointer");
  }
  std::vector<Chunk> chunks;
  int64_t total = 0;
  st = make_chunks(tensors, num, &chunks, &total);
  if (!st.ok() || total == 0) return st;
  detail::SgdScalars<T> s;
  s.lr = static_cast<T>(p.lr);
  s.momentum = static_cast<T>(p.momentum);
  s.dampening_c = static_cast<T>(1.0 - p.dampening);
  s.weight_decay = static_cast<T>(p.weight_decay);
  s.sign = p.maximize ? T(-1) : T(1);
  s.mode = !use_buf ? detail::SgdMode::plain : (p.nesterov ? detail::SgdMode::nesterov : detail::SgdMode::momentum);
  s.first_step = p.first_step;
  s.has_wd = p.weight_decay != 0;
  const SgdFn<T> fn = sgd_kernel<T>();
  for_chunks(chunks, total, [&](const Chunk& c) {
    const SgdTensor<T>& x = tensors[c.tensor];
    fn(s, x.param + c.begin, x.grad + c.begin, use_buf ? x.momentum_buffer + c.begin : nullptr, c.len);
  });
  return Status::Ok();
}

template <class T>
Status adam_impl(const AdamParams& p, const AdamTensor<T>* tensors, int64_t num) {
  Status st = check_adam(p);
  if (!st.ok()) return st;
  for (int64_t t = 0; t < num && tensors; ++t) {
    const AdamTensor<T>& x = tensors[t];
    if (x.count > 0 && (!x.param || !x.grad || !x.exp_avg || !x.exp_avg_sq || (p.amsgrad && !x.max_exp_avg_sq)))
      return Status::Invalid("tensor " + std::to_string(t) + ": null pointer");
  }
  std::vector<Chunk> chunks;
  int64_t total = 0;
  st = make_chunks(tensors, num, &chunks, &total);
  if (!st.ok() || total == 0) return st;
  // As torch: step_size = lr / (1 - beta1^step), bias2_sqrt = sqrt(1 - beta2^step), in double.
  const double bias1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(p.beta2, static_cast<double>(p.step)));
  detail::AdamScalars<T> s;
  s.beta1_c = static_cast<T>(1.0 - p.beta1);
  s.beta2 = static_cast<T>(p.beta2);
  s.beta2_c = static_cast<T>(1.0 - p.beta2);
  s.eps = static_cast<T>(p.eps);
  s.weight_decay = static_cast<T>(p.weight_decay);
  s.decay_factor = static_cast<T>(1.0 - p.lr * p.weight_decay);
  s.step_size = static_cast<T>(p.lr / bias1);
  s.bias2_sqrt = static_cast<T>(bias2_sqrt);
  s.sign = p.maximize ? T(-1) : T(1);
  s.has_wd = p.weight_decay != 0;
  s.decoupled = p.decoupled;
  s.amsgrad = p.amsgrad;
  const AdamFn<T> fn = adam_kernel<T>();
  for_chunks(chunks, total, [&](const Chunk& c) {
    const AdamTensor<T>& x = tensors[c.tensor];
    const int64_t b = c.begin;
    fn(s, x.param + b, x.grad + b, x.exp_avg + b, x.exp_avg_sq + b,
       p.amsgrad ? x.max_exp_avg_sq + b : nullptr, c.len);
  });
  return Status::Ok();
}

}  // namespace

Status sgd_step(const SgdParams& p, const SgdTensor<float>* t, int64_t n) { return sgd_impl(p, t, n); }
Status sgd_step(const SgdParams& p, const SgdTensor<double>* t, int64_t n) { return sgd_impl(p, t, n); }
Status adam_step(const AdamParams& p, const AdamTensor<float>* t, int64_t n) { return adam_impl(p, t, n); }
Status adam_step(const AdamParams& p, const AdamTensor<double>* t, int64_t n) { return adam_impl(p, t, n); }

}  // namespace lepton
