// The model math built with the project's portable compile flags.

#include "model_plan.hpp"

#define EDGEFL_KERNEL_NS generic
#define EDGEFL_KERNEL_NAME "generic"
#include "model_kernels_impl.hpp"

namespace edgefl::detail {

const KernelSet& genericKernels() {
  return generic::kKernels;
}

}  // namespace edgefl::detail
