#pragma once
// Every standard header Eigen/Core pulls in, for the ISA-specific kernel
// builds (model_kernels_avx2.cpp, model_kernels_avx512.cpp) to include
// before their target pragma. Parsed here, the standard library's inline
// functions keep the baseline ISA, so the linker can never pick an AVX
// copy of, say, std::vector<...>::operator[] for code that runs on a CPU
// without AVX. Eigen itself is renamed per build and cannot collide.

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cmath>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iosfwd>
#include <istream>
#include <limits>
#include <new>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
