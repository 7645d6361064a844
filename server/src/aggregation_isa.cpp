// The kernels built once per instruction set: the coordinate-wise median
// and trimmed mean (aggregation_robust_lanes.hpp) and the streaming kernels
// (aggregation_stream_lanes.hpp), each written once for vectors of any
// width and built here for the baseline instruction set, for AVX2 and for
// AVX-512 (the standard headers come first, outside the target switches, so
// that their inline functions keep the baseline instruction set); the
// widest the CPU runs is used. CMake builds this file with
// -ffp-contract=off (aggregation_stream.hpp).
//
// The median and the trimmed mean need order statistics of the n client
// values of every coordinate.
// Per-coordinate std::nth_element costs about 10-15 ns per value on random
// data, almost all of it branch mispredictions; the two methods here have no
// data-dependent branches in their inner loops:
//
// - n <= kNetworkMax: a Batcher odd-even merge sorting network, one vector
//   of adjacent coordinates per client, read straight from the rows. The
//   network is a compile-time constant for every n, so the values stay in
//   registers (compare-exchange = one min and one max).
// - larger n: selection by counting, 64 coordinates at a time. A block
//   gathers the n values of 64 coordinates into a transposed buffer (n rows
//   x 64 lanes, four cache lines per client, the next block's asked for on
//   the way) and takes each lane's min, max, mean and standard deviation.
//   For a target rank r each lane keeps a bracket lo < s_r <= hi with the
//   counts #{x <= lo} <= r < #{x <= hi}; a pass over a group of four vectors
//   counts the values <= a pivot and narrows it. The first pass counts
//   against two pivots from a normal approximation of the column (its mean
//   and standard deviation, plus and minus a few standard errors of the
//   quantile), which brackets the honest case tightly; later pivots
//   interpolate the rank inside the bracket, and whenever a pass fails to
//   halve the values in the bracket the next one cuts it in thirds in the
//   order-preserving integer image of the floats, so outliers or any other
//   input finish in a bounded number of passes. Later passes skip the
//   vectors whose lanes are all done. Once s_r is among the three smallest
//   or three largest values of its bracket, one last pass collects those
//   (sorted inserts with min and max, the largest read as the smallest of
//   -x) and the answer is exact. The trimmed mean selects its two ranks in
//   the same passes, then sums what lies between them in one more; the
//   even-n median's two middle ranks share one bracket.
//
// The four vectors of a group are independent chains through every pass,
// so their pivot arithmetic and sorted inserts overlap instead of each
// waiting on its own latency: on bench_aggregation's data this cut the
// median's time by about a third against one 16-lane vector at a time.

#include "aggregation_robust.hpp"
#include "aggregation_stream.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

namespace edgefl::server::kernels {

PivotSpread pivotSpread(std::size_t r0, std::size_t r1, std::size_t n) {
  const double p = 0.5 * static_cast<double>(r0 + r1) / static_cast<double>(n);
  // Normal quantile by Newton's method on the CDF 0.5 * erfc(-z / sqrt(2)).
  double z = 0.0;
  for (int k = 0; k < 40; ++k) {
    const double cdf = 0.5 * std::erfc(-z / std::sqrt(2.0));
    const double density = std::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.141592653589793);
    const double stepZ = (cdf - p) / std::max(density, 1e-12);
    z -= std::clamp(stepZ, -1.0, 1.0);
    if (std::abs(stepZ) < 1e-9) break;
  }
  const double density = std::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.141592653589793);
  const double error = 3.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)) / density;
  return {z - error, z + error};
}

}  // namespace edgefl::server::kernels

namespace edgefl::server::kernels::baseline {
// 4 floats: SSE2 on the x86-64 baseline, NEON on arm64.
constexpr std::size_t kWidth = 4;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDGEFL_LANES_X86 1
#endif
#include "aggregation_vector_lanes.hpp"  // first: the vectors the kernels use
#undef EDGEFL_LANES_X86

#include "aggregation_robust_lanes.hpp"
#include "aggregation_stream_lanes.hpp"
}  // namespace edgefl::server::kernels::baseline

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDGEFL_KERNELS_WIDE 1

#pragma GCC push_options
#pragma GCC target("avx2")
namespace edgefl::server::kernels::avx2 {
constexpr std::size_t kWidth = 8;
#define EDGEFL_LANES_X86 2
#include "aggregation_vector_lanes.hpp"  // first: the vectors the kernels use
#undef EDGEFL_LANES_X86

#include "aggregation_robust_lanes.hpp"
#include "aggregation_stream_lanes.hpp"
}  // namespace edgefl::server::kernels::avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2")
namespace edgefl::server::kernels::avx512 {
constexpr std::size_t kWidth = 16;
#define EDGEFL_LANES_X86 3
#include "aggregation_vector_lanes.hpp"  // first: the vectors the kernels use
#undef EDGEFL_LANES_X86

#include "aggregation_robust_lanes.hpp"
#include "aggregation_stream_lanes.hpp"
}  // namespace edgefl::server::kernels::avx512
#pragma GCC pop_options

#endif

namespace edgefl::server::kernels {

void rankRangeMeanBaseline(std::span<const float* const> rows, std::span<const float> scales,
                           std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                           Scratch& scratch) {
  baseline::rankRangeMeanLanes(rows, scales, p, r0, r1, out, scratch);
}

#ifdef EDGEFL_KERNELS_WIDE
void rankRangeMeanAvx2(std::span<const float* const> rows, std::span<const float> scales,
                       std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                       Scratch& scratch) {
  avx2::rankRangeMeanLanes(rows, scales, p, r0, r1, out, scratch);
}

void rankRangeMeanAvx512(std::span<const float* const> rows, std::span<const float> scales,
                         std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                         Scratch& scratch) {
  avx512::rankRangeMeanLanes(rows, scales, p, r0, r1, out, scratch);
}
#endif

bool isaRuns(Isa isa) {
  switch (isa) {
    case Isa::Baseline: return true;
#ifdef EDGEFL_KERNELS_WIDE
    case Isa::Avx2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2");
    case Isa::Avx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    case Isa::Avx2:
    case Isa::Avx512: return false;
#endif
  }
  return false;
}

Isa widestIsa() {
  static const Isa widest = isaRuns(Isa::Avx512) ? Isa::Avx512
                            : isaRuns(Isa::Avx2) ? Isa::Avx2
                                                 : Isa::Baseline;
  return widest;
}

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::Baseline: return "baseline";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

const char* instructionSet() {
  return isaName(widestIsa());
}

const StreamKernels* streamKernels(Isa isa) {
  if (!isaRuns(isa)) return nullptr;
  switch (isa) {
    case Isa::Baseline: return &baseline::kStream;
#ifdef EDGEFL_KERNELS_WIDE
    case Isa::Avx2: return &avx2::kStream;
    case Isa::Avx512: return &avx512::kStream;
#else
    case Isa::Avx2:
    case Isa::Avx512: return nullptr;
#endif
  }
  return nullptr;
}

const StreamKernels& streamKernels() {
  static const StreamKernels& widest = *streamKernels(widestIsa());
  return widest;
}

namespace {

RankRangeMean widestKernel() {
#ifdef EDGEFL_KERNELS_WIDE
  switch (widestIsa()) {
    case Isa::Avx512: return &rankRangeMeanAvx512;
    case Isa::Avx2: return &rankRangeMeanAvx2;
    case Isa::Baseline: break;
  }
#endif
  return &rankRangeMeanBaseline;
}

}  // namespace

// Mean of ranks [r0, r1) of every coordinate: the median is [n/2 - 1, n/2 + 1)
// for even n and [(n-1)/2, (n+1)/2) for odd n; the trimmed mean [t, n - t).
void coordinateMedian(std::span<const float* const> rows, std::span<const float> scales,
                      std::size_t p, std::span<float> out, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(n > 0);
  widestKernel()(rows, scales, p, (n - 1) / 2, n / 2 + 1, out, scratch);
}

void trimmedMean(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::size_t trimPerEnd, std::span<float> out, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(2 * trimPerEnd < n);
  widestKernel()(rows, scales, p, trimPerEnd, n - trimPerEnd, out, scratch);
}

}  // namespace edgefl::server::kernels
