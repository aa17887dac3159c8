// cpu/optim_avx2.cpp -- the SGD / Adam element loops of cpu/optim_internal.h compiled
// with the AVX2 flags (CMake adds them by file suffix); the compiler vectorizes
// the branch-free template bodies. Dispatch and chunking live in optim.cpp.
#include "cpu/optim_internal.h"

namespace lepton {
namespace detail {
namespace avx2 {
LEPTON_DEFINE_OPTIM_KERNELS
}  // namespace avx2
}  // namespace detail
}  // namespace lepton
