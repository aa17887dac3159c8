// lepton/runtime.h -- CPU feature dispatch, threads, and the machine-limit probes
// the benchmark harness divides by.
#pragma once
#include <cstdint>
#include <string>
#include "lepton/status.h"

namespace lepton {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
Isa detected_isa();  // best variant this CPU and OS support (cpuid + xgetbv)
Isa active_isa();    // the one kernels use now (detected_isa() at start-up)
// Forces a variant (tests use it to run every variant on one machine).
// Refuses an ISA the CPU does not support.
Status set_active_isa(Isa isa);
std::string cpu_features();  // e.g. "sse4.2 avx avx2 fma avx512f avx512bw ... avx512vnni"
// AVX-512 VNNI (vpdpbusd) usable: the avx512_vnni cpuid bit plus the AVX-512
// variant's requirements (F/BW/DQ/VL and OS zmm state).
bool has_vnni();

int num_threads();  // OpenMP threads kernels use
// The most threads a kernel or probe may be given: 4 x the logical CPUs this
// process may run on (omp_get_num_procs). More buys no speed, and tens of
// thousands exhaust the OpenMP runtime (libgomp exits, or a thread's stack
// allocation faults), so every thread count is checked against it.
int max_num_threads();
void set_num_threads(int n);  // clamped to [1, max_num_threads()]

// Peak fp32 FMA throughput of the active ISA over `threads` threads, GFLOP/s
// (2 flops per lane per FMA), measured for about `seconds`.
double measure_fma_gflops(int threads, double seconds);
// Peak int8 throughput of vpdpbusd (AVX-512 VNNI) over `threads` threads,
// GOP/s (2 ops per 8-bit multiply-add, 64 per zmm instruction), measured like
// the FMA probe; 0 when the CPU has no VNNI.
double measure_vnni_gops(int threads, double seconds);
// Sustained copy bandwidth (bytes read + bytes written per second, GB/s)
// copying a buffer of `bytes` with all threads, best of `repeats`.
double measure_copy_gbs(int64_t bytes, int repeats);

}  // namespace lepton
