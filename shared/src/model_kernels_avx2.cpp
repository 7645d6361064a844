// The model math built for AVX2 + FMA, used only after the CPU was checked
// (model_engine.cpp). The library's compile flags stay portable: this file
// switches the target with a pragma, and gives its copy of Eigen its own
// namespace so that no template instantiated here (with AVX instructions)
// can be merged by the linker with the baseline instantiation that other
// files use. GCC does not define the ISA macros Eigen keys on when the
// target changes by pragma, so they are defined by hand.

#include "model_plan.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)

#include "model_kernels_std.hpp"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __SSE3__ 1
#define __SSSE3__ 1
#define __SSE4_1__ 1
#define __SSE4_2__ 1
#define Eigen EdgeflEigenAvx2
#define EDGEFL_KERNEL_NS avx2
#define EDGEFL_KERNEL_NAME "avx2"
#include "model_kernels_impl.hpp"
#undef Eigen
#pragma GCC pop_options

namespace edgefl::detail {
const KernelSet* avx2Kernels() {
  return &avx2::kKernels;
}
}  // namespace edgefl::detail

#else

namespace edgefl::detail {
const KernelSet* avx2Kernels() {
  return nullptr;
}
}  // namespace edgefl::detail

#endif
