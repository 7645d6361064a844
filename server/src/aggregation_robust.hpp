#pragma once
// Private to the coordinate-wise median and trimmed mean: the one kernel
// both are made of, built in aggregation_isa.cpp once per instruction set
// (baseline, AVX2, AVX-512) from the same width-generic code in
// aggregation_robust_lanes.hpp. The public functions use the widest build
// the CPU runs; every build returns the same bits.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "edgefl/server/aggregation.hpp"

namespace edgefl::server::kernels {

// Batcher's odd-even merge sort for n inputs (pairs reaching past n pruned):
// emit(lower, upper) for each compare-exchange, in order.
template <typename Emit>
constexpr void batcherNetwork(std::size_t n, Emit&& emit) {
  for (std::size_t p = 1; p < n; p <<= 1) {
    for (std::size_t k = p; k >= 1; k >>= 1) {
      for (std::size_t j = k % p; j + k < n; j += 2 * k) {
        for (std::size_t i = 0; i < std::min(k, n - j - k); ++i) {
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) emit(i + j, i + j + k);
        }
      }
    }
  }
}

template <std::size_t N>
constexpr std::size_t networkLength() {
  std::size_t count = 0;
  batcherNetwork(N, [&](std::size_t, std::size_t) { ++count; });
  return count;
}

template <std::size_t N>
constexpr auto networkPairs() {
  std::array<std::array<std::uint8_t, 2>, networkLength<N>()> pairs{};
  std::size_t k = 0;
  batcherNetwork(N, [&](std::size_t a, std::size_t b) {
    pairs[k][0] = static_cast<std::uint8_t>(a);
    pairs[k][1] = static_cast<std::uint8_t>(b);
    ++k;
  });
  return pairs;
}

// Where the first counting pass puts its two pivots for the ranks [r0, r1)
// of n, in standard deviations from the mean: the normal quantile of the
// middle of the range, (r0 + r1) / 2n, plus and minus three standard errors
// of that empirical quantile (sqrt(p (1 - p) / n) / density).
struct PivotSpread {
  double low = 0.0, high = 0.0;
};
PivotSpread pivotSpread(std::size_t r0, std::size_t r1, std::size_t n);

// out[j] = mean of the values of ranks [r0, r1) among scales[i] * rows[i][j]
// over i < n, for j < p. Needs 0 <= r0 < r1 <= n = rows.size(), finite
// values, out.size() == p.
using RankRangeMean = void (*)(std::span<const float* const> rows, std::span<const float> scales,
                               std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                               Scratch& scratch);

void rankRangeMeanBaseline(std::span<const float* const> rows, std::span<const float> scales,
                           std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                           Scratch& scratch);
// Defined only where the compiler can target them (GCC on x86-64); call
// them only when the CPU has AVX2, or AVX-512 F/DQ/BW/VL.
void rankRangeMeanAvx2(std::span<const float* const> rows, std::span<const float> scales,
                       std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                       Scratch& scratch);
void rankRangeMeanAvx512(std::span<const float* const> rows, std::span<const float> scales,
                         std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                         Scratch& scratch);

}  // namespace edgefl::server::kernels
