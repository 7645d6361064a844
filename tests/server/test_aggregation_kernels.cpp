// Every instruction-set build of the median / trimmed-mean kernel against
// a sort-based reference, not only the one the dispatcher picks on this CPU,
// every build of the streaming kernels against the baseline's bits, and the
// streaming sums of squares against a row at a time.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../../server/src/aggregation_robust.hpp"
#include "../../server/src/aggregation_stream.hpp"

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

// Groups of 16, 32 or 64 coordinates per build, each narrowed until its
// slowest lane is done: the trimmed mean's sums and every median must
// still be the baseline's bits, whatever lanes share a group.
TEST(AggregationKernels, RobustKernelsOfEveryBuildReturnTheBaselineBits) {
  std::mt19937_64 rng(53);
  const auto builds = buildsThisCpuRuns();
  ASSERT_EQ(builds.front().name, "baseline");
  for (int kind = 0; kind < 4; ++kind) {
    for (std::size_t n : {25, 40, 101, 300}) {
      // Widths that end inside a vector, a group and a block of every build.
      for (std::size_t p : {std::size_t{5}, std::size_t{64 * 3 + 40}}) {
        Rows r(n, p, kind, rng);
        for (auto [r0, r1] : {std::pair{(n - 1) / 2, n / 2 + 1}, std::pair{n / 10, n - n / 10},
                              std::pair{std::size_t{1}, n - 3}}) {
          std::vector<float> want(p);
          Scratch scratch;
          builds.front().kernel(r.rows, r.scales, p, r0, r1, want, scratch);
          for (const Build& build : builds) {
            std::vector<float> got(p);
            build.kernel(r.rows, r.scales, p, r0, r1, got, scratch);
            for (std::size_t j = 0; j < p; ++j) {
              ASSERT_EQ(std::bit_cast<std::uint32_t>(got[j]), std::bit_cast<std::uint32_t>(want[j]))
                  << build.name << " kind " << kind << " n=" << n << " p=" << p << " ranks [" << r0
                  << ", " << r1 << ") j=" << j << " got " << got[j] << " baseline " << want[j];
            }
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

std::uint32_t bits(float x) {
  return std::bit_cast<std::uint32_t>(x);
}
std::uint64_t bits(double x) {
  return std::bit_cast<std::uint64_t>(x);
}

std::vector<Isa> isasThisCpuRuns() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::Baseline, Isa::Avx2, Isa::Avx512}) {
    if (streamKernels(isa) != nullptr) isas.push_back(isa);
  }
  return isas;
}

TEST(AggregationKernels, TheDispatcherRunsTheWidestBuildThisCpuRuns) {
  const auto isas = isasThisCpuRuns();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::Baseline);
  EXPECT_EQ(widestIsa(), isas.back());
  EXPECT_EQ(&streamKernels(), streamKernels(widestIsa()));
  EXPECT_STREQ(instructionSet(), isaName(widestIsa()));
}

// Rows in every grouping the sum uses (8, 4, 2, 1 and 10 at once), steps
// and blocks cut short, scales that round: every build must give the
// baseline's bits for the sum, the norms, the step check, the fused sum and
// check, and the SGD step, and the sum must be the weighted sum.
TEST(AggregationKernels, StreamKernelsOfEveryBuildReturnTheBaselineBits) {
  std::mt19937_64 rng(53);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const StreamKernels& base = *streamKernels(Isa::Baseline);
  for (std::size_t n : {1, 2, 3, 5, 8, 9, 10, 11, 15, 16, 17, 33}) {
    for (std::size_t p : {1, 31, 32, 33, 4096, 4096 + 47, 3 * 4096 + 5}) {
      std::vector<float> values(n * p), scales(n), old(p), next(p);
      for (float& v : values) v = normal(rng) * (rng() % 5 == 0 ? 100.0f : 0.01f);
      for (float& s : scales) s = unit(rng) / static_cast<float>(n);
      for (float& v : old) v = normal(rng);
      for (float& v : next) v = normal(rng);
      std::vector<const float*> rows;
      for (std::size_t i = 0; i < n; ++i) rows.push_back(values.data() + i * p);
      const float lr = 0.7f;

      std::vector<float> want(p);
      base.weightedSum(rows, scales, p, want.data());
      for (std::size_t j = 0; j < p; ++j) {
        double exact = 0.0, magnitude = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          exact += static_cast<double>(scales[i]) * rows[i][j];
          magnitude += std::abs(static_cast<double>(scales[i]) * rows[i][j]);
        }
        ASSERT_NEAR(want[j], exact, 1e-6 * magnitude + 1e-30) << "n=" << n << " p=" << p;
      }
      std::vector<double> wantSquares(n);
      base.sumSquares(rows, p, wantSquares.data());
      const StepCheck wantSgd = base.checkStep(want.data(), old.data(), nullptr, lr, p);
      const StepCheck wantNext = base.checkStep(want.data(), old.data(), next.data(), lr, p);
      ASSERT_TRUE(wantSgd.finite && wantNext.finite);
      std::vector<float> wantModel = old;
      base.applySgd(wantModel.data(), want.data(), lr, p);

      for (Isa isa : isasThisCpuRuns()) {
        const StreamKernels& k = *streamKernels(isa);
        const std::string at =
            std::string(isaName(isa)) + " n=" + std::to_string(n) + " p=" + std::to_string(p);
        std::vector<float> got(p, -1.0f);
        k.weightedSum(rows, scales, p, got.data());
        for (std::size_t j = 0; j < p; ++j) ASSERT_EQ(bits(got[j]), bits(want[j])) << at;

        std::vector<float> fused(p, -1.0f);
        const StepCheck check = k.weightedSumSgd(rows, scales, p, fused.data(), old.data(), lr);
        for (std::size_t j = 0; j < p; ++j) ASSERT_EQ(bits(fused[j]), bits(want[j])) << at;
        EXPECT_TRUE(check.finite) << at;
        EXPECT_EQ(bits(check.aggregateSquares), bits(wantSgd.aggregateSquares)) << at;
        EXPECT_EQ(bits(check.stepSquares), bits(wantSgd.stepSquares)) << at;

        std::vector<double> squares(n);
        k.sumSquares(rows, p, squares.data());
        for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(bits(squares[i]), bits(wantSquares[i])) << at;

        const StepCheck sgd = k.checkStep(want.data(), old.data(), nullptr, lr, p);
        const StepCheck withNext = k.checkStep(want.data(), old.data(), next.data(), lr, p);
        EXPECT_EQ(bits(sgd.aggregateSquares), bits(wantSgd.aggregateSquares)) << at;
        EXPECT_EQ(bits(sgd.stepSquares), bits(wantSgd.stepSquares)) << at;
        EXPECT_EQ(bits(withNext.stepSquares), bits(wantNext.stepSquares)) << at;
        double step = 0.0;
        for (std::size_t j = 0; j < p; ++j) {
          const double d = static_cast<double>(next[j]) - old[j];
          step += d * d;
        }
        EXPECT_NEAR(withNext.stepSquares, step, 1e-5 * step) << at;

        std::vector<float> model = old;
        k.applySgd(model.data(), want.data(), lr, p);
        for (std::size_t j = 0; j < p; ++j) ASSERT_EQ(bits(model[j]), bits(wantModel[j])) << at;
      }
    }
  }
}

// A NaN or infinity anywhere, in a delta or in the old model, fails every
// build's fused and full check. A finite value whose float square
// overflows (the fused sum has no NaN-propagating sum of its own, so it may
// call that not finite) passes the full check.
TEST(AggregationKernels, StepChecksOfEveryBuildCatchWhatIsNotFinite) {
  const std::size_t n = 3, p = 4096 + 40;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (Isa isa : isasThisCpuRuns()) {
    const StreamKernels& k = *streamKernels(isa);
    for (std::size_t at : {std::size_t{0}, std::size_t{17}, p - 1}) {
      for (int where = 0; where < 5; ++where) {
        std::vector<float> values(n * p, 0.25f), scales(n, 0.5f), old(p, 1.0f), out(p);
        std::vector<const float*> rows;
        for (std::size_t i = 0; i < n; ++i) rows.push_back(values.data() + i * p);
        switch (where) {
          case 0: values[p + at] = nan; break;
          case 1: values[2 * p + at] = -inf; break;
          case 2: old[at] = nan; break;
          case 3: old[at] = inf; break;
          default: values[at] = 1e20f; break;  // finite, but its square is not
        }
        const std::string label = std::string(isaName(isa)) + " where=" + std::to_string(where) +
                                  " at=" + std::to_string(at);
        const StepCheck fused = k.weightedSumSgd(rows, scales, p, out.data(), old.data(), 0.5f);
        if (where < 4) {
          EXPECT_FALSE(fused.finite) << label;
        }
        const StepCheck full = k.checkStep(out.data(), old.data(), nullptr, 0.5f, p);
        EXPECT_EQ(full.finite, where == 4) << label;
      }
    }
  }
}

}  // namespace
}  // namespace edgefl::server::kernels
