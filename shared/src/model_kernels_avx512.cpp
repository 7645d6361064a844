// The model math built for AVX-512 (F, DQ, BW, VL), used only after the CPU
// was checked (model_engine.cpp). See model_kernels_avx2.cpp for why the
// target is switched by pragma and Eigen's namespace is renamed.

#include "model_plan.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX512F__)

// GCC 12's _mm512_undefined_ps() is `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports wherever Eigen's AVX-512 transposes inline
// it (GCC bug 105593), as -Wuninitialized at -O1; the value is deliberately
// undefined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "model_kernels_std.hpp"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __SSE3__ 1
#define __SSSE3__ 1
#define __SSE4_1__ 1
#define __SSE4_2__ 1
#define __AVX512F__ 1
#define __AVX512DQ__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define Eigen EdgeflEigenAvx512
#define EDGEFL_KERNEL_NS avx512
#define EDGEFL_KERNEL_NAME "avx512"
#include "model_kernels_impl.hpp"
#undef Eigen
#pragma GCC pop_options

namespace edgefl::detail {
const KernelSet* avx512Kernels() {
  return &avx512::kKernels;
}
}  // namespace edgefl::detail

#else

namespace edgefl::detail {
const KernelSet* avx512Kernels() {
  return nullptr;
}
}  // namespace edgefl::detail

#endif
