// Every instruction-set build of the median / trimmed-mean kernel against
// a sort-based reference, not only the one the dispatcher picks on this CPU,
// and the streaming sums of squares against a row at a time.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../../server/src/aggregation_robust.hpp"

namespace edgefl::server::kernels {
namespace {

struct Build {
  std::string name;
  RankRangeMean kernel;
};

std::vector<Build> buildsThisCpuRuns() {
  std::vector<Build> builds = {{"baseline", &rankRangeMeanBaseline}};
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) builds.push_back({"avx2", &rankRangeMeanAvx2});
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    builds.push_back({"avx512", &rankRangeMeanAvx512});
  }
#endif
  return builds;
}

// n rows of p values; `kind` picks how the values are drawn.
struct Rows {
  std::size_t n, p;
  std::vector<float> values, scales;
  std::vector<const float*> rows;

  Rows(std::size_t n_, std::size_t p_, int kind, std::mt19937_64& rng)
      : n(n_), p(p_), values(n_ * p_), scales(n_, 1.0f) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (std::size_t k = 0; k < values.size(); ++k) {
      switch (kind) {
        case 0: values[k] = normal(rng); break;
        // Heavy ties among a few values, with normal values between.
        case 1: values[k] = rng() % 4 == 0 ? static_cast<float>(rng() % 3) : normal(rng); break;
        // Signed zeros only.
        case 2: values[k] = rng() % 2 == 0 ? 0.0f : -0.0f; break;
        // Outliers far outside the honest range.
        default: values[k] = rng() % 7 == 0 ? 1e30f * normal(rng) : 1e-3f * normal(rng); break;
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (rng() % 3 == 0) scales[i] = 0.5f;
      rows.push_back(values.data() + i * p);
    }
  }

  std::vector<float> column(std::size_t j) const {
    std::vector<float> c;
    for (std::size_t i = 0; i < n; ++i) c.push_back(scales[i] * values[i * p + j]);
    std::sort(c.begin(), c.end());
    return c;
  }
};

TEST(AggregationKernels, MedianOfEveryBuildMatchesTheReference) {
  std::mt19937_64 rng(41);
  for (const Build& build : buildsThisCpuRuns()) {
    for (int kind = 0; kind < 4; ++kind) {
      // Both sides of the network limit, odd and even, and widths that do
      // not fill the last vector, group or block.
      for (std::size_t n : {1, 2, 3, 9, 10, 23, 24, 25, 26, 27, 40, 64, 101, 256}) {
        for (std::size_t p : {1, 7, 16, 64 * 2 + 23}) {
          Rows r(n, p, kind, rng);
          std::vector<float> got(p);
          Scratch scratch;
          build.kernel(r.rows, r.scales, p, (n - 1) / 2, n / 2 + 1, got, scratch);
          for (std::size_t j = 0; j < p; ++j) {
            const auto c = r.column(j);
            const float want =
                n % 2 == 1 ? c[n / 2]
                           : static_cast<float>((static_cast<double>(c[n / 2 - 1]) + c[n / 2]) / 2);
            ASSERT_EQ(std::bit_cast<std::uint32_t>(got[j]) & 0x7fffffffu,
                      std::bit_cast<std::uint32_t>(want) & 0x7fffffffu)
                << build.name << " kind " << kind << " n=" << n << " p=" << p << " j=" << j
                << " got " << got[j] << " want " << want;
          }
        }
      }
    }
  }
}

TEST(AggregationKernels, TrimmedMeanOfEveryBuildMatchesTheReference) {
  std::mt19937_64 rng(43);
  for (const Build& build : buildsThisCpuRuns()) {
    for (int kind = 0; kind < 3; ++kind) {
      for (std::size_t n : {3, 10, 24, 25, 26, 33, 100, 257}) {
        for (std::size_t trim : {std::size_t{1}, n / 10, n / 4, (n - 1) / 2}) {
          const std::size_t p = 64 + 19;
          Rows r(n, p, kind, rng);
          std::vector<float> got(p);
          Scratch scratch;
          build.kernel(r.rows, r.scales, p, trim, n - trim, got, scratch);
          for (std::size_t j = 0; j < p; ++j) {
            const auto c = r.column(j);
            double sum = 0.0;
            for (std::size_t k = trim; k < n - trim; ++k) sum += c[k];
            const double want = sum / static_cast<double>(n - 2 * trim);
            const double largest = std::max(std::abs(c.front()), std::abs(c.back()));
            ASSERT_NEAR(got[j], want, 1e-5 * (std::abs(want) + largest))
                << build.name << " kind " << kind << " n=" << n << " trim=" << trim << " j=" << j;
          }
        }
      }
    }
  }
}

// sumSquares reads rows side by side; every row's sum must still be the
// one that row gets alone, to the bit, for any row count and any tail.
TEST(AggregationKernels, SumSquaresOfRowsTogetherMatchesEachRowAlone) {
  std::mt19937_64 rng(47);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::size_t n : {1, 2, 3, 4, 5, 7, 8, 9}) {
    for (std::size_t p : {1, 15, 16, 4096, 4096 + 16 + 3, 3 * 4096 + 1}) {
      std::vector<float> values(n * p);
      for (float& v : values) v = normal(rng);
      std::vector<const float*> rows;
      for (std::size_t i = 0; i < n; ++i) rows.push_back(values.data() + i * p);
      std::vector<double> together(n);
      sumSquares(rows, p, together);
      for (std::size_t i = 0; i < n; ++i) {
        double alone = 0.0;
        sumSquares(std::span<const float* const>(&rows[i], 1), p, std::span<double>(&alone, 1));
        ASSERT_EQ(std::bit_cast<std::uint64_t>(together[i]), std::bit_cast<std::uint64_t>(alone))
            << "n=" << n << " p=" << p << " row " << i << " together " << together[i] << " alone "
            << alone;
        double exact = 0.0;
        for (std::size_t j = 0; j < p; ++j) exact += static_cast<double>(rows[i][j]) * rows[i][j];
        ASSERT_NEAR(alone, exact, 1e-5 * exact) << "n=" << n << " p=" << p << " row " << i;
      }
    }
  }
}

}  // namespace
}  // namespace edgefl::server::kernels
