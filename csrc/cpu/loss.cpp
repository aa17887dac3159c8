// cpu/loss.cpp -- fused cross-entropy (lepton/loss.h): log-softmax + NLL with class
// weights, ignore_index and label smoothing. Rows run in parallel; each row is
// handled once by one thread while it sits in cache: max, sum of exp (the
// exponentials kept in dlogits), then the loss and the gradient. Sums in double.
// Layout: logits / dlogits (n, c) row-major, target int64 (n,).
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>

#include "cpu/internal.h"
#include "lepton/loss.h"

namespace lepton {
namespace {

template <class T>
void row(const CrossEntropyDesc& d, const T* z, int64_t t, const T* weight, T* loss, T* dl) {
  const int64_t c = d.c;
  if (t == d.ignore_index) {
    *loss = T(0);
    if (dl)
      for (int64_t j = 0; j < c; ++j) dl[j] = T(0);
    return;
  }
  const double eps = d.label_smoothing;
  double zmax = static_cast<double>(z[0]);
  for (int64_t j = 1; j < c; ++j) {
    const double v = static_cast<double>(z[j]);
    zmax = (v > zmax || v != v) ? v : zmax;  // a NaN logit makes the row NaN
  }
  double total = 0.0;
  for (int64_t j = 0; j < c; ++j) {
    const double e = std::exp(static_cast<double>(z[j]) - zmax);
    if (dl) dl[j] = static_cast<T>(e);
    total += e;
  }
  const double lse = std::log(total) + zmax;
  const double w_t = weight ? static_cast<double>(weight[t]) : 1.0;
  double q_sum = (1.0 - eps) * w_t;
  double loss_v = -(1.0 - eps) * w_t * (static_cast<double>(z[t]) - lse);
  if (eps != 0.0) {  // skipped at eps == 0, so a -inf logit off the target stays harmless
    double sw = 0.0, swz = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      const double w = weight ? static_cast<double>(weight[j]) : 1.0;
      sw += w;
      swz += w * (static_cast<double>(z[j]) - lse);
    }
    q_sum += eps * sw / static_cast<double>(c);
    loss_v -= eps * swz / static_cast<double>(c);
  }
  *loss = static_cast<T>(loss_v);
  if (!dl) return;
  const double scale = q_sum / total, smooth = eps / static_cast<double>(c);
  if (eps != 0.0) {
    for (int64_t j = 0; j < c; ++j) {
      const double w = weight ? static_cast<double>(weight[j]) : 1.0;
      dl[j] = static_cast<T>(static_cast<double>(dl[j]) * scale - smooth * w);
    }
  } else {
    for (int64_t j = 0; j < c; ++j) dl[j] = static_cast<T>(static_cast<double>(dl[j]) * scale);
  }
  // The target also carries (1 - eps) w_t; recomputed in double (no cancellation
  // against a probability already rounded to T).
  const double p_t = std::exp(static_cast<double>(z[t]) - zmax) / total;
  dl[t] = static_cast<T>(p_t * q_sum - smooth * w_t - (1.0 - eps) * w_t);
}

template <class T>
Status cross_entropy_impl(const CrossEntropyDesc& d, const T* z, const int64_t* target, const T* weight,
                          T* losses, T* dl) {
  if (d.n < 0 || d.c < 0) return Status::Invalid("n and c must be non-negative");
  if (d.c > 0 && d.n > std::numeric_limits<int64_t>::max() / d.c) return Status::Invalid("n*c overflows int64");
  if (!(d.label_smoothing >= 0.0 && d.label_smoothing <= 1.0))
    return Status::Invalid("label_smoothing must be in [0, 1]");
  if (d.n == 0) return Status::Ok();
  if (!target || !losses || (d.c > 0 && !z)) return Status::Invalid("null data pointer");
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t t = target[i];
    if (t != d.ignore_index && (t < 0 || t >= d.c))
      return Status::Invalid("target[" + std::to_string(i) + "] = " + std::to_string(t) +
                             " is outside [0, " + std::to_string(d.c) + ") and is not ignore_index (" +
                             std::to_string(d.ignore_index) + ")");
  }
  const int64_t c = d.c;
  auto one = [&](int64_t i) {
    row(d, z + i * c, target[i], weight, losses + i, dl ? dl + i * c : nullptr);
  };
  const int nt = detail::threads_for(d.n * (c > 0 ? c : 1) * 4);  // exp costs more than a copy
  if (nt <= 1) {
    for (int64_t i = 0; i < d.n; ++i) one(i);
  } else {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < d.n; ++i) one(i);
  }
  return Status::Ok();
}

}  // namespace

Status cross_entropy(const CrossEntropyDesc& d, const float* logits, const int64_t* target, const float* weight,
                     float* losses, float* dlogits) {
  return cross_entropy_impl(d, logits, target, weight, losses, dlogits);
}
Status cross_entropy(const CrossEntropyDesc& d, const double* logits, const int64_t* target, const double* weight,
                     double* losses, double* dlogits) {
  return cross_entropy_impl(d, logits, target, weight, losses, dlogits);
}

}  // namespace lepton
