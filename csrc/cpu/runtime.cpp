// cpu/runtime.cpp -- ISA detection (cpuid + xgetbv), the active-ISA switch
// (capped once at start-up by the LEPTON_ISA environment variable), OpenMP
// thread count, cache size, and the machine-limit probes (FMA GFLOP/s and copy
// GB/s) that the benchmark harness divides by. Generic x86-64 code only.
#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu/igemm_internal.h"
#include "cpu/internal.h"

namespace lepton {
namespace {

struct CpuInfo {
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, avxvnni = false;
  bool os_ymm = false, os_zmm = false;
};

uint64_t read_xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

CpuInfo probe_cpu() {
  CpuInfo c;
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
  c.sse42 = cx & (1u << 20);
  c.fma = cx & (1u << 12);
  c.f16c = cx & (1u << 29);
  bool osxsave = cx & (1u << 27);
  c.avx = cx & (1u << 28);
  if (osxsave) {
    uint64_t xcr0 = read_xcr0();
    c.os_ymm = (xcr0 & 0x6) == 0x6;           // XMM + YMM state
    c.os_zmm = c.os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  }
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, cx, d);
    c.avx2 = b & (1u << 5);
    c.avx512f = b & (1u << 16);
    c.avx512dq = b & (1u << 17);
    c.avx512bw = b & (1u << 30);
    c.avx512vl = b & (1u << 31);
    c.avx512vnni = cx & (1u << 11);
    __cpuid_count(7, 1, a, b, cx, d);
    c.avxvnni = a & (1u << 4);
    c.avx512bf16 = a & (1u << 5);
  }
  return c;
}

const CpuInfo& cpu() {
  static const CpuInfo info = probe_cpu();
  return info;
}

bool isa_supported(Isa isa) {
  const CpuInfo& c = cpu();
  bool avx2 = c.avx && c.avx2 && c.fma && c.f16c && c.os_ymm;
  switch (isa) {
    case Isa::generic: return true;
    case Isa::avx2: return avx2;
    case Isa::avx512:
      return avx2 && c.avx512f && c.avx512bw && c.avx512dq && c.avx512vl && c.os_zmm;
  }
  return false;
}

Isa detect() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::generic;
}

// Start-up choice: the detected ISA, capped by LEPTON_ISA (unknown values ignored).
int initial_isa() {
  Isa best = detect();
  const char* env = std::getenv("LEPTON_ISA");
  if (env && *env) {
    Isa cap = best;
    if (!std::strcmp(env, "generic")) cap = Isa::generic;
    else if (!std::strcmp(env, "avx2")) cap = Isa::avx2;
    else if (!std::strcmp(env, "avx512")) cap = Isa::avx512;
    if (static_cast<int>(cap) < static_cast<int>(best)) best = cap;
  }
  return static_cast<int>(best);
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{initial_isa()};
  return slot;
}

std::atomic<int>& threads_slot() {
  // OMP_NUM_THREADS sets the start value, within the same bound as set_num_threads.
  static std::atomic<int> slot{std::clamp(omp_get_max_threads(), 1, max_num_threads())};
  return slot;
}

int64_t read_llc_sysfs() {
  int64_t best = 0;
  for (int idx = 0; idx < 8; ++idx) {
    char path[96];
    std::snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu0/cache/index%d/size", idx);
    FILE* f = std::fopen(path, "r");
    if (!f) continue;
    long long v = 0;
    char unit = 0;
    int got = std::fscanf(f, "%lld%c", &v, &unit);
    std::fclose(f);
    if (got < 1) continue;
    int64_t bytes = v;
    if (got == 2 && (unit == 'K' || unit == 'k')) bytes *= 1024;
    if (got == 2 && (unit == 'M' || unit == 'm')) bytes *= 1024 * 1024;
    best = std::max(best, bytes);
  }
  return best;
}

int64_t read_llc_cpuid() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000006u) {
    __cpuid(0x80000006u, a, b, c, d);
    int64_t l3 = static_cast<int64_t>((c >> 18) & 0x3FFF) * 512 * 1024;  // AMD encoding
    if (l3 > 0) return l3;
  }
  return 0;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa detected_isa() { return detect(); }

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

Status set_active_isa(Isa isa) {
  if (isa != Isa::generic && isa != Isa::avx2 && isa != Isa::avx512)
    return Status::Invalid("unknown ISA");
  if (!isa_supported(isa))
    return Status::Invalid(std::string("ISA '") + isa_name(isa) +
                           "' is not supported by this CPU/OS (detected '" +
                           isa_name(detect()) + "')");
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return Status::Ok();
}

std::string cpu_features() {
  const CpuInfo& c = cpu();
  std::string s;
  auto add = [&s](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(c.sse42, "sse4.2");
  add(c.avx, "avx");
  add(c.avx2, "avx2");
  add(c.fma, "fma");
  add(c.f16c, "f16c");
  add(c.avxvnni, "avxvnni");
  add(c.avx512f, "avx512f");
  add(c.avx512bw, "avx512bw");
  add(c.avx512dq, "avx512dq");
  add(c.avx512vl, "avx512vl");
  add(c.avx512vnni, "avx512vnni");
  add(c.avx512bf16, "avx512bf16");
  add(c.os_ymm, "os-ymm");
  add(c.os_zmm, "os-zmm");
  return s;
}

bool has_vnni() { return isa_supported(Isa::avx512) && cpu().avx512vnni; }

int num_threads() { return threads_slot().load(std::memory_order_relaxed); }

int max_num_threads() {
  constexpr int kThreadsPerCpu = 4;
  return kThreadsPerCpu * std::max(1, omp_get_num_procs());
}

void set_num_threads(int n) {
  n = std::clamp(n, 1, max_num_threads());
  threads_slot().store(n, std::memory_order_relaxed);
  omp_set_num_threads(n);
}

namespace detail {

int64_t llc_bytes() {
  static const int64_t bytes = [] {
    int64_t v = read_llc_sysfs();
    if (v <= 0) v = read_llc_cpuid();
    return v > 0 ? v : int64_t(32) << 20;
  }();
  return bytes;
}

// Twelve independent multiply-add chains; the compiler may vectorize them
// with SSE (no FMA in the generic build), which is what generic code reaches.
double fma_probe_generic(int64_t iters) {
  float acc[12];
  for (int k = 0; k < 12; ++k) acc[k] = 0.001f * static_cast<float>(k);
  const float a = 0.999999f, b = 1e-6f;
  for (int64_t it = 0; it < iters; ++it)
    for (int k = 0; k < 12; ++k) acc[k] = acc[k] * a + b;
  float s = 0.f;
  for (int k = 0; k < 12; ++k) s += acc[k];
  volatile float sink = s;
  (void)sink;
  return 12.0 * 2.0 * static_cast<double>(iters);
}

}  // namespace detail

double measure_fma_gflops(int threads, double seconds) {
  threads = std::clamp(threads, 1, max_num_threads());
  if (!(seconds > 0)) seconds = 0.1;
  Isa isa = active_isa();
  auto run = [isa](int64_t iters) -> double {
    switch (isa) {
      case Isa::avx512: return detail::avx512::fma_probe(iters);
      case Isa::avx2: return detail::avx2::fma_probe(iters);
      default: return detail::fma_probe_generic(iters);
    }
  };
  const int64_t batch = 1 << 16;
  double total_flops = 0, worst = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total_flops) reduction(max : worst)
  {
    run(batch);  // warm up the clocks and the vector units
#pragma omp barrier
    double t0 = omp_get_wtime(), el = 0;
    do {
      total_flops += run(batch);
      el = omp_get_wtime() - t0;
    } while (el < seconds);
    worst = el;
  }
  return worst > 0 ? total_flops / worst / 1e9 : 0.0;
}

double measure_vnni_gops(int threads, double seconds) {
  if (!has_vnni()) return 0.0;
  threads = std::clamp(threads, 1, max_num_threads());
  if (!(seconds > 0)) seconds = 0.1;
  const int64_t batch = 1 << 16;
  double total_ops = 0, worst = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total_ops) reduction(max : worst)
  {
    detail::vnni::vnni_probe(batch);  // warm up the clocks and the vector units
#pragma omp barrier
    double t0 = omp_get_wtime(), el = 0;
    do {
      total_ops += detail::vnni::vnni_probe(batch);
      el = omp_get_wtime() - t0;
    } while (el < seconds);
    worst = el;
  }
  return worst > 0 ? total_ops / worst / 1e9 : 0.0;
}

double measure_copy_gbs(int64_t bytes, int repeats) {
  if (bytes < 4096) bytes = 4096;
  bytes = (bytes + 63) / 64 * 64;  // whole cache lines for the streaming copy
  if (repeats < 1) repeats = 1;
  detail::AlignedBuffer<char> src(static_cast<size_t>(bytes)), dst(static_cast<size_t>(bytes));
  if (src.empty() || dst.empty()) return 0.0;
  const int nt = num_threads();
  const int64_t chunk = ((bytes + nt - 1) / nt + 63) / 64 * 64;
  char* s = src.get();
  char* d = dst.get();
  auto part = [&](int t, int64_t* off, int64_t* len) {
    *off = std::min<int64_t>(bytes, t * chunk);
    *len = std::min<int64_t>(bytes, *off + chunk) - *off;
  };
#pragma omp parallel num_threads(nt)
  {
    int64_t off, len;
    part(omp_get_thread_num(), &off, &len);
    std::memset(s + off, 1, static_cast<size_t>(len));
    std::memset(d + off, 0, static_cast<size_t>(len));
  }
  // The limit is the faster of glibc memcpy and a streaming-store copy of the active ISA
  // (kernels that write with streaming stores would otherwise exceed 100% of "copy").
  const Isa isa = active_isa();
  double best = 1e30;
  for (int method = 0; method < (isa == Isa::generic ? 1 : 2); ++method) {
    for (int r = 0; r < repeats + 1; ++r) {  // first pass is a warm-up
      double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
      {
        int64_t off, len;
        part(omp_get_thread_num(), &off, &len);
        if (method == 0)
          std::memcpy(d + off, s + off, static_cast<size_t>(len));
        else if (isa == Isa::avx512)
          detail::avx512::stream_copy(s + off, d + off, len / 64 * 64);
        else
          detail::avx2::stream_copy(s + off, d + off, len / 64 * 64);
      }
      double el = omp_get_wtime() - t0;
      if (r > 0) best = std::min(best, el);
    }
  }
  return 2.0 * static_cast<double>(bytes) / best / 1e9;
}

}  // namespace lepton
