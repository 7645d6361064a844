#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "edgefl/server/aggregation.hpp"

namespace edgefl::server {
namespace {

// A round's deltas with the ClientUpdate views over them.
struct Round {
  std::vector<std::vector<float>> deltas;
  std::vector<std::string> ids;
  std::vector<ClientUpdate> updates;

  void add(std::vector<float> delta, double weight, double staleness = 0.0) {
    deltas.push_back(std::move(delta));
    ids.push_back("dev-" + std::to_string(ids.size()));
    rebuild(weight, staleness);
  }
  // Views are rebuilt after every push because the vectors may move.
  void rebuild(double lastWeight, double lastStaleness) {
    std::vector<ClientUpdate> old = updates;
    updates.clear();
    for (std::size_t i = 0; i < deltas.size(); ++i) {
      const bool last = i + 1 == deltas.size();
      updates.push_back({deltas[i], last ? lastWeight : old[i].weight, ids[i],
                         last ? lastStaleness : old[i].staleness});
    }
  }
  std::vector<const float*> rows() const {
    std::vector<const float*> out;
    for (const auto& d : deltas) out.push_back(d.data());
    return out;
  }
};

Round randomRound(std::size_t n, std::size_t p, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> value(0.0f, scale);
  std::uniform_int_distribution<int> samples(1, 500);
  Round round;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<float> d(p);
    for (float& x : d) x = value(rng);
    round.add(std::move(d), samples(rng));
  }
  return round;
}

std::unique_ptr<Strategy> make(AggregationOptions options, std::size_t p) {
  auto s = makeStrategy(options, p);
  EXPECT_TRUE(s.ok()) << s.error().toString();
  return std::move(s).value();
}

AggregationOptions named(std::string name) {
  AggregationOptions o;
  o.strategy = std::move(name);
  return o;
}

// Runs one aggregation from a zero model with learning rate 1, so the new
// model is the aggregate itself.
std::vector<float> aggregateFromZero(const AggregationOptions& options, const Round& round,
                                     AggregationReport* report = nullptr) {
  const std::size_t p = round.deltas.front().size();
  auto strategy = make(options, p);
  std::vector<float> global(p, 0.0f);
  std::mt19937_64 rng(7);
  auto r = strategy->aggregate(round.updates, global, rng);
  EXPECT_TRUE(r.ok()) << r.error().toString();
  if (report != nullptr && r.ok()) *report = *r;
  return global;
}

double norm(std::span<const float> v) {
  double s = 0.0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

double distance(std::span<const float> a, std::span<const float> b) {
  double s = 0.0;
  for (std::size_t j = 0; j < a.size(); ++j) {
    const double d = static_cast<double>(a[j]) - b[j];
    s += d * d;
  }
  return std::sqrt(s);
}

// --- Plain reference implementations -------------------------------------

std::vector<double> refWeightedMean(const Round& round, std::span<const double> weights,
                                    std::span<const double> scales) {
  const std::size_t p = round.deltas.front().size();
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::vector<double> out(p, 0.0);
  for (std::size_t i = 0; i < round.deltas.size(); ++i) {
    for (std::size_t j = 0; j < p; ++j) {
      out[j] += weights[i] * scales[i] * round.deltas[i][j] / total;
    }
  }
  return out;
}

// The sorted values of coordinate j as the rule sees them (scale applied in
// float, as the kernels do).
std::vector<float> column(const Round& round, std::span<const float> scales, std::size_t j) {
  std::vector<float> c;
  for (std::size_t i = 0; i < round.deltas.size(); ++i) c.push_back(scales[i] * round.deltas[i][j]);
  std::sort(c.begin(), c.end());
  return c;
}

std::vector<float> refMedian(const Round& round, std::span<const float> scales) {
  const std::size_t p = round.deltas.front().size(), n = round.deltas.size();
  std::vector<float> out(p);
  for (std::size_t j = 0; j < p; ++j) {
    const auto c = column(round, scales, j);
    out[j] = n % 2 == 1 ? c[n / 2]
                        : static_cast<float>((static_cast<double>(c[n / 2 - 1]) + c[n / 2]) / 2);
  }
  return out;
}

std::vector<double> refTrimmedMean(const Round& round, std::span<const float> scales,
                                   std::size_t trim) {
  const std::size_t p = round.deltas.front().size(), n = round.deltas.size();
  std::vector<double> out(p);
  for (std::size_t j = 0; j < p; ++j) {
    const auto c = column(round, scales, j);
    double s = 0.0;
    for (std::size_t k = trim; k < n - trim; ++k) s += c[k];
    out[j] = s / static_cast<double>(n - 2 * trim);
  }
  return out;
}

std::vector<double> refKrumScores(const Round& round, std::size_t f) {
  const std::size_t n = round.deltas.size();
  std::vector<double> scores(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> d;
    for (std::size_t j = 0; j < n; ++j) {
      if (j != i) d.push_back(std::pow(distance(round.deltas[i], round.deltas[j]), 2));
    }
    std::sort(d.begin(), d.end());
    scores[i] = std::accumulate(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(n - f - 2), 0.0);
  }
  return scores;
}

std::vector<double> ones(std::size_t n) {
  return std::vector<double>(n, 1.0);
}

// --- FedAvg ----------------------------------------------------------------

TEST(Aggregation, FedAvgIsTheHandComputedWeightedMean) {
  Round round;
  round.add({1.0f, 0.0f, -2.0f}, 1.0);
  round.add({4.0f, 2.0f, 1.0f}, 2.0);
  round.add({-1.0f, 6.0f, 0.5f}, 5.0);
  // (1*1 + 2*4 + 5*-1)/8 = 0.5; (0 + 4 + 30)/8 = 4.25; (-2 + 2 + 2.5)/8 = 0.3125
  auto strategy = make(named("fedavg"), 3);
  std::vector<float> global{10.0f, 20.0f, 30.0f};
  std::mt19937_64 rng(1);
  auto report = strategy->aggregate(round.updates, global, rng);
  ASSERT_TRUE(report.ok()) << report.error().toString();
  EXPECT_FLOAT_EQ(global[0], 10.5f);
  EXPECT_FLOAT_EQ(global[1], 24.25f);
  EXPECT_FLOAT_EQ(global[2], 30.3125f);
  EXPECT_EQ(report->strategy, "fedavg");
  EXPECT_EQ(report->inputs, 3u);
  EXPECT_EQ(report->used, (std::vector<std::size_t>{0, 1, 2}));
  EXPECT_TRUE(report->excluded.empty());
  EXPECT_EQ(report->clipped, 0u);
  EXPECT_NEAR(report->aggregateNorm, std::sqrt(0.25 + 4.25 * 4.25 + 0.3125 * 0.3125), 1e-6);
  EXPECT_NEAR(report->stepNorm, report->aggregateNorm, 1e-5);
  EXPECT_EQ(report->round, 1u);
}

TEST(Aggregation, FedAvgMatchesReferenceOnRandomData) {
  std::mt19937_64 rng(11);
  for (std::size_t n : {1, 3, 4, 7, 50}) {
    const std::size_t p = 4096 * 2 + 37;  // several blocks and a ragged tail
    Round round = randomRound(n, p, rng);
    std::vector<double> weights;
    for (const auto& u : round.updates) weights.push_back(u.weight);
    AggregationReport report;
    const auto got = aggregateFromZero(named("fedavg"), round, &report);
    const auto want = refWeightedMean(round, weights, ones(n));
    for (std::size_t j = 0; j < p; ++j)
      ASSERT_NEAR(got[j], want[j], 2e-6) << "n=" << n << " j=" << j;
    EXPECT_TRUE(report.preClipNorms.empty()) << "norms are only computed when clipping";
  }
}

TEST(Aggregation, ServerLearningRateScalesTheStep) {
  std::mt19937_64 rng(3);
  Round round = randomRound(5, 100, rng);
  auto options = named("fedavg");
  const auto full = aggregateFromZero(options, round);
  options.serverLearningRate = 0.25;
  const auto quarter = aggregateFromZero(options, round);
  for (std::size_t j = 0; j < 100; ++j) EXPECT_FLOAT_EQ(quarter[j], 0.25f * full[j]);
}

// --- Median and trimmed mean -----------------------------------------------

TEST(Aggregation, MedianMatchesReferenceForEveryKernelPath) {
  std::mt19937_64 rng(5);
  // Sizes on both sides of the sorting-network limit (24), odd and even, and
  // coordinates that do not fill the last 16-lane group or 64-wide block.
  for (std::size_t n : {1, 2, 3, 4, 9, 10, 16, 31, 32, 33, 34, 64, 101, 256, 301}) {
    const std::size_t p = 64 * 3 + 23;
    Round round = randomRound(n, p, rng);
    const auto got = aggregateFromZero(named("median"), round);
    const auto want = refMedian(round, std::vector<float>(n, 1.0f));
    for (std::size_t j = 0; j < p; ++j) ASSERT_EQ(got[j], want[j]) << "n=" << n << " j=" << j;
  }
}

// Inputs that stress the counting selection: heavy ties, a handful of
// distinct values, huge and tiny magnitudes, denormals, signed zeros,
// identical columns, and outliers far outside the honest range.
TEST(Aggregation, RobustKernelsMatchReferenceOnAdversarialValues) {
  std::mt19937_64 rng(17);
  const std::size_t p = 48;
  std::vector<std::function<float(std::size_t, std::size_t)>> generators = {
      [&](std::size_t, std::size_t) { return static_cast<float>(rng() % 3); },
      [&](std::size_t, std::size_t j) { return static_cast<float>(j); },
      [&](std::size_t i, std::size_t) { return i % 2 == 0 ? 0.0f : -0.0f; },
      [&](std::size_t, std::size_t) {
        std::normal_distribution<float> v(0.0f, 1.0f);
        const float x = v(rng);
        return rng() % 5 == 0 ? x * 1e30f : x * 1e-40f;
      },
      [&](std::size_t i, std::size_t) {
        std::normal_distribution<float> v(0.0f, 1.0f);
        return i % 5 == 0 ? -3e38f : v(rng);
      },
      [&](std::size_t, std::size_t) {
        return std::bit_cast<float>(static_cast<std::uint32_t>(rng()) & 0xff7fffffu);
      },
  };
  for (std::size_t g = 0; g < generators.size(); ++g) {
    for (std::size_t n : {7, 20, 40, 97, 200}) {
      Round round;
      for (std::size_t i = 0; i < n; ++i) {
        std::vector<float> d(p);
        for (std::size_t j = 0; j < p; ++j) d[j] = generators[g](i, j);
        round.add(std::move(d), 1.0);
      }
      const auto rows = round.rows();
      const std::vector<float> scales(n, 1.0f);
      std::vector<float> got(p);
      kernels::Scratch scratch;
      kernels::coordinateMedian(rows, scales, p, got, scratch);
      const auto want = refMedian(round, scales);
      for (std::size_t j = 0; j < p; ++j) {
        ASSERT_EQ(std::bit_cast<std::uint32_t>(got[j]) & 0x7fffffffu,
                  std::bit_cast<std::uint32_t>(want[j]) & 0x7fffffffu)
            << "generator " << g << " n=" << n << " j=" << j << " got " << got[j] << " want "
            << want[j];
      }
      // Random bit patterns (the last generator) reach 3e38, where a float
      // sum overflows as FedAvg's would; the median above covers them.
      if (g + 1 == generators.size()) continue;
      const std::size_t trim = n / 5;
      kernels::trimmedMean(rows, scales, p, trim, got, scratch);
      const auto wantTrim = refTrimmedMean(round, scales, trim);
      for (std::size_t j = 0; j < p; ++j) {
        const auto c = column(round, scales, j);
        const double largest = std::max(std::abs(c.front()), std::abs(c.back()));
        ASSERT_NEAR(got[j], wantTrim[j], 1e-5 * (std::abs(wantTrim[j]) + largest))
            << "generator " << g << " n=" << n << " j=" << j;
      }
    }
  }
}

TEST(Aggregation, TrimmedMeanMatchesReference) {
  std::mt19937_64 rng(23);
  for (double fraction : {0.0, 0.1, 0.2, 0.45}) {
    for (std::size_t n : {1, 5, 10, 33, 100, 300}) {
      const std::size_t p = 64 * 2 + 5;
      Round round = randomRound(n, p, rng);
      auto options = named("trimmed_mean");
      options.trimFraction = fraction;
      AggregationReport report;
      const auto got = aggregateFromZero(options, round, &report);
      const auto trim = static_cast<std::size_t>(std::floor(fraction * static_cast<double>(n)));
      EXPECT_EQ(report.trimmedPerEnd, trim);
      EXPECT_EQ(report.trimmedValues, 2 * trim * p);
      const auto want = refTrimmedMean(round, std::vector<float>(n, 1.0f), trim);
      for (std::size_t j = 0; j < p; ++j) {
        ASSERT_NEAR(got[j], want[j], 2e-6) << "fraction " << fraction << " n=" << n << " j=" << j;
      }
    }
  }
}

// --- Krum ------------------------------------------------------------------

TEST(Aggregation, KrumScoresMatchReference) {
  std::mt19937_64 rng(29);
  for (std::size_t n : {5, 12, 40}) {
    const std::size_t p = 2500;  // several Gram column blocks
    Round round = randomRound(n, p, rng);
    for (std::size_t f : {std::size_t{0}, std::size_t{1}, (n - 3) / 2}) {
      const auto rows = round.rows();
      std::vector<double> scores(n);
      kernels::Scratch scratch;
      kernels::krumScores(rows, std::vector<float>(n, 1.0f), p, n - f - 2, scores, scratch);
      const auto want = refKrumScores(round, f);
      for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(scores[i], want[i], 1e-5 * want[i]);

      auto options = named("krum");
      options.krumByzantine = static_cast<std::int64_t>(f);
      AggregationReport report;
      const auto got = aggregateFromZero(options, round, &report);
      const auto best =
          static_cast<std::size_t>(std::min_element(want.begin(), want.end()) - want.begin());
      ASSERT_EQ(report.used, std::vector<std::size_t>{best});
      EXPECT_EQ(report.excluded.size(), n - 1);
      EXPECT_EQ(got, round.deltas[best]);
    }
  }
}

TEST(Aggregation, MultiKrumAveragesTheBestScores) {
  std::mt19937_64 rng(31);
  const std::size_t n = 15, p = 300, f = 3;
  Round round = randomRound(n, p, rng);
  const auto want = refKrumScores(round, f);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return want[a] < want[b]; });
  for (std::int64_t select : {0, 1, 5}) {
    auto options = named("multi_krum");
    options.krumByzantine = f;
    options.multiKrumSelect = select;
    AggregationReport report;
    const auto got = aggregateFromZero(options, round, &report);
    const std::size_t m = select == 0 ? n - f : static_cast<std::size_t>(select);
    std::vector<std::size_t> chosen(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m));
    std::sort(chosen.begin(), chosen.end());
    EXPECT_EQ(report.used, chosen);
    EXPECT_EQ(report.excluded.size(), n - m);
    // Unweighted mean of the chosen deltas, whatever their sample counts.
    for (std::size_t j = 0; j < p; ++j) {
      double mean = 0.0;
      for (std::size_t i : chosen) mean += round.deltas[i][j] / static_cast<double>(m);
      ASSERT_NEAR(got[j], mean, 1e-5);
    }
  }
}

// --- Attacks -----------------------------------------------------------------

// 16 honest clients send mu + noise; 4 (20%) send -100 x (mu + noise), a
// sign-flipped and scaled update. Each robust rule must land within 15% of
// ||mu|| of the honest mean while FedAvg is dragged more than 10 x ||mu|| away.
TEST(Aggregation, RobustRulesResistSignFlipScalingAttack) {
  const std::size_t honest = 16, attackers = 4, p = 2000;
  std::mt19937_64 rng(37);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> mu(p);
  for (float& x : mu) x = unit(rng);
  Round round;
  std::vector<float> honestMean(p, 0.0f);
  std::vector<std::size_t> attackerIds;
  for (std::size_t i = 0; i < honest + attackers; ++i) {
    const bool attacker = i % 5 == 4;  // spread through the list
    std::vector<float> d(p);
    for (std::size_t j = 0; j < p; ++j) d[j] = mu[j] + 0.1f * unit(rng);
    if (attacker) {
      for (float& x : d) x *= -100.0f;
      attackerIds.push_back(i);
    } else {
      for (std::size_t j = 0; j < p; ++j) honestMean[j] += d[j] / static_cast<float>(honest);
    }
    round.add(std::move(d), 100.0);
  }
  const double scale = norm(mu);
  auto relError = [&](const AggregationOptions& options, AggregationReport* report = nullptr) {
    return distance(aggregateFromZero(options, round, report), honestMean) / scale;
  };
  const double fedavg = relError(named("fedavg"));
  EXPECT_GT(fedavg, 10.0);
  auto trimmed = named("trimmed_mean");
  trimmed.trimFraction = 0.2;
  auto krum = named("krum");
  krum.krumByzantine = 4;
  auto multiKrum = named("multi_krum");
  multiKrum.krumByzantine = 4;
  for (const auto& options : {named("median"), trimmed, krum, multiKrum}) {
    AggregationReport report;
    const double error = relError(options, &report);
    EXPECT_LT(error, 0.15) << options.strategy << " (fedavg: " << fedavg << ")";
    RecordProperty(options.strategy + "_relative_error", std::to_string(error));
    if (options.strategy == "krum" || options.strategy == "multi_krum") {
      for (std::size_t a : attackerIds) {
        EXPECT_TRUE(std::find(report.used.begin(), report.used.end(), a) == report.used.end());
        const bool reported = std::any_of(
            report.excluded.begin(), report.excluded.end(), [&](const ExcludedUpdate& e) {
              return e.index == a && e.id == round.ids[a] && e.reason == Exclusion::KrumOutlier;
            });
        EXPECT_TRUE(reported) << options.strategy << " did not report attacker " << a;
      }
    }
  }
  RecordProperty("fedavg_relative_error", std::to_string(fedavg));
}

// --- Server optimizers -----------------------------------------------------

struct OptimizerReference {
  std::string kind;
  double eta, mu, b1, b2, tau;
  std::vector<double> x, m, v;

  void step(std::span<const double> delta) {
    for (std::size_t j = 0; j < x.size(); ++j) {
      const double g = -delta[j];  // pseudo-gradient
      if (kind == "fedavgm") {
        m[j] = mu * m[j] + g;
        x[j] -= eta * m[j];
      } else {
        m[j] = b1 * m[j] + (1 - b1) * g;
        if (kind == "fedadam") {
          v[j] = b2 * v[j] + (1 - b2) * g * g;
        } else {
          const double d = v[j] - g * g;
          v[j] = v[j] - (1 - b2) * g * g * (d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0));
        }
        x[j] -= eta * m[j] / (std::sqrt(v[j]) + tau);
      }
    }
  }
};

std::vector<float> stateVector(std::span<const std::byte> snapshot, std::size_t index,
                               std::size_t p) {
  // Layout from aggregation.hpp: magic, version, name length, name, P,
  // round, vector count, vectors.
  std::uint32_t nameLength;
  std::memcpy(&nameLength, snapshot.data() + 8, 4);
  const std::size_t offset = 12 + nameLength + 8 + 8 + 4 + index * p * sizeof(float);
  std::vector<float> out(p);
  std::memcpy(out.data(), snapshot.data() + offset, p * sizeof(float));
  return out;
}

TEST(Aggregation, ServerOptimizerStateFollowsTheFormulasOverThreeRounds) {
  const std::size_t p = 257, n = 6;
  for (std::string kind : {"fedavgm", "fedadam", "fedyogi"}) {
    AggregationOptions options = named(kind);
    options.serverLearningRate = kind == "fedavgm" ? 0.7 : 0.05;
    options.serverMomentum = 0.8;
    options.beta1 = 0.85;
    options.beta2 = 0.95;
    options.tau = 1e-2;
    auto strategy = make(options, p);
    std::mt19937_64 rng(41);
    std::normal_distribution<float> init(0.0f, 1.0f);
    std::vector<float> global(p);
    for (float& x : global) x = init(rng);
    OptimizerReference ref{kind,
                           options.serverLearningRate,
                           options.serverMomentum,
                           options.beta1,
                           options.beta2,
                           options.tau,
                           std::vector<double>(global.begin(), global.end()),
                           std::vector<double>(p, 0.0),
                           std::vector<double>(p, options.tau * options.tau)};
    for (int round = 1; round <= 3; ++round) {
      Round r = randomRound(n, p, rng, 0.1f * static_cast<float>(round));
      std::vector<double> weights;
      for (const auto& u : r.updates) weights.push_back(u.weight);
      ref.step(refWeightedMean(r, weights, ones(n)));
      auto report = strategy->aggregate(r.updates, global, rng);
      ASSERT_TRUE(report.ok()) << report.error().toString();
      EXPECT_EQ(report->round, static_cast<std::uint64_t>(round));
      const auto snapshot = strategy->saveState();
      const auto m = stateVector(snapshot, 0, p);
      for (std::size_t j = 0; j < p; ++j) {
        ASSERT_NEAR(global[j], ref.x[j], 1e-5 * std::max(1.0, std::abs(ref.x[j])))
            << kind << " round " << round << " j=" << j;
        ASSERT_NEAR(m[j], ref.m[j], 1e-5 * std::max(1e-2, std::abs(ref.m[j])))
            << kind << " round " << round << " j=" << j;
      }
      if (kind != "fedavgm") {
        const auto v = stateVector(snapshot, 1, p);
        for (std::size_t j = 0; j < p; ++j) {
          ASSERT_NEAR(v[j], ref.v[j], 1e-5 * std::abs(ref.v[j])) << kind << " j=" << j;
        }
      }
    }
  }
}

TEST(Aggregation, SnapshotRestoreContinuesBitIdentically) {
  const std::size_t p = 300;
  for (std::string_view name : strategyNames()) {
    AggregationOptions options = named(std::string(name));
    options.clipNorm = 5.0;
    options.dpNoiseMultiplier = 0.3;
    options.serverLearningRate = 0.1;
    std::mt19937_64 data(43);
    std::vector<Round> rounds;
    for (int i = 0; i < 3; ++i) rounds.push_back(randomRound(9, p, data));

    auto first = make(options, p);
    std::vector<float> global(p, 0.5f);
    std::mt19937_64 rng(47);
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(first->aggregate(rounds[i].updates, global, rng).ok());
    const auto snapshot = first->saveState();
    const std::vector<float> saved = global;
    const std::mt19937_64 savedRng = rng;
    ASSERT_TRUE(first->aggregate(rounds[2].updates, global, rng).ok());

    // A restarted coordinator: a fresh strategy, the persisted state, the
    // persisted model and the same noise stream.
    auto second = make(options, p);
    ASSERT_TRUE(second->restoreState(snapshot).ok()) << name;
    std::vector<float> resumed = saved;
    std::mt19937_64 resumedRng = savedRng;
    auto report = second->aggregate(rounds[2].updates, resumed, resumedRng);
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->round, 3u) << name;
    EXPECT_EQ(std::memcmp(resumed.data(), global.data(), p * sizeof(float)), 0) << name;
    EXPECT_EQ(second->saveState(), first->saveState()) << name;
  }
}

TEST(Aggregation, RestoreRejectsForeignOrDamagedSnapshots) {
  const std::size_t p = 16;
  auto adam = make(named("fedadam"), p);
  const auto good = adam->saveState();
  const auto before = adam->saveState();

  auto expectCode = [&](std::vector<std::byte> bytes, Code code) {
    auto status = adam->restoreState(bytes);
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.code(), code) << status.error().toString();
    EXPECT_EQ(adam->saveState(), before) << "state changed by a failed restore";
  };
  expectCode(make(named("fedyogi"), p)->saveState(), Code::WrongKind);
  expectCode(make(named("fedadam"), p + 1)->saveState(), Code::ShapeMismatch);
  expectCode({good.begin(), good.end() - 1}, Code::Truncated);
  expectCode({good.begin(), good.begin() + 3}, Code::Truncated);
  auto trailing = good;
  trailing.push_back(std::byte{0});
  expectCode(trailing, Code::BadField);
  auto magic = good;
  magic[0] = std::byte{'X'};
  expectCode(magic, Code::BadField);
  auto version = good;
  version[4] = std::byte{9};
  expectCode(version, Code::BadField);
  // Overwrites the float at `offset` from the end of a snapshot.
  auto withFloat = [&](std::size_t fromEnd, float value) {
    auto bytes = good;
    const auto raw = std::bit_cast<std::array<std::byte, 4>>(value);
    for (std::size_t k = 0; k < raw.size(); ++k) bytes.at(bytes.size() - fromEnd + k) = raw[k];
    return bytes;
  };
  // The last float of m, then the last float of v.
  expectCode(withFloat(4 * p + 4, std::numeric_limits<float>::quiet_NaN()), Code::NonFinite);
  const auto negative = withFloat(4, -1.0f);
  expectCode(negative, Code::BadField);
  ASSERT_TRUE(adam->restoreState(good).ok());
  // Stateless strategies keep a header-only snapshot that round-trips.
  auto median = make(named("median"), p);
  EXPECT_TRUE(median->restoreState(median->saveState()).ok());
}

// --- Clipping, DP, staleness -------------------------------------------------

TEST(Aggregation, ClippingBoundsEachUpdatesNorm) {
  std::mt19937_64 rng(53);
  const std::size_t p = 1000;
  Round round = randomRound(8, p, rng);
  for (std::size_t i = 0; i < 8; i += 2) {
    for (float& x : round.deltas[i]) x *= 10.0f;  // norms ~316 against ~32
  }
  auto options = named("fedavg");
  options.clipNorm = 50.0;
  AggregationReport report;
  const auto got = aggregateFromZero(options, round, &report);
  EXPECT_EQ(report.clipped, 4u);
  EXPECT_EQ(report.clipNorm, 50.0);
  std::vector<double> weights, scales;
  for (std::size_t i = 0; i < 8; ++i) {
    const double n = norm(round.deltas[i]);
    EXPECT_NEAR(report.preClipNorms[i], n, 1e-4 * n);
    weights.push_back(round.updates[i].weight);
    scales.push_back(std::min(1.0, 50.0 / n));
  }
  const auto want = refWeightedMean(round, weights, scales);
  for (std::size_t j = 0; j < p; ++j) ASSERT_NEAR(got[j], want[j], 1e-4);

  // Alone, each update moves the model by at most clipNorm, in every rule.
  for (std::string_view name : {"fedavg", "median", "trimmed_mean"}) {
    auto single = named(std::string(name));
    single.clipNorm = 50.0;
    for (std::size_t i = 0; i < 8; ++i) {
      Round one;
      one.add(round.deltas[i], 1.0);
      AggregationReport r;
      const auto moved = aggregateFromZero(single, one, &r);
      EXPECT_LE(norm(moved), 50.0 * (1 + 1e-6)) << name;
      EXPECT_NEAR(norm(moved), std::min(50.0, norm(round.deltas[i])), 1e-3) << name;
    }
  }
}

TEST(Aggregation, CentralDpNoiseHasTheStatedStd) {
  // Zero deltas, so the aggregate is the noise alone: std = z * C / n =
  // 2 * 1 / 4 = 0.5. Over 200k coordinates the sample std has a relative
  // standard error of 1/sqrt(2 * 200k) = 0.16%; 1% is over 6 of those.
  const std::size_t p = 200'000, n = 4;
  Round round;
  for (std::size_t i = 0; i < n; ++i) round.add(std::vector<float>(p, 0.0f), 1.0);
  auto options = named("fedavg");
  options.clipNorm = 1.0;
  options.dpNoiseMultiplier = 2.0;
  AggregationReport report;
  const auto noise = aggregateFromZero(options, round, &report);
  EXPECT_DOUBLE_EQ(report.noiseMultiplier, 2.0);
  EXPECT_DOUBLE_EQ(report.noiseStd, 0.5);
  double mean = 0.0, sq = 0.0;
  for (float x : noise) mean += x;
  mean /= static_cast<double>(p);
  for (float x : noise) sq += (x - mean) * (x - mean);
  const double std = std::sqrt(sq / static_cast<double>(p - 1));
  EXPECT_NEAR(std, 0.5, 0.005);
  EXPECT_NEAR(mean, 0.0, 5 * 0.5 / std::sqrt(static_cast<double>(p)));
  // Krum combines a single delta, so its noise uses n = 1.
  auto krum = named("krum");
  krum.clipNorm = 1.0;
  krum.dpNoiseMultiplier = 2.0;
  krum.krumByzantine = 0;
  Round three;
  for (int i = 0; i < 3; ++i) three.add(std::vector<float>(100, 0.0f), 1.0);
  aggregateFromZero(krum, three, &report);
  EXPECT_DOUBLE_EQ(report.noiseStd, 2.0);
  // Without DP nothing is added and the report says so.
  aggregateFromZero(named("fedavg"), round, &report);
  EXPECT_EQ(report.noiseStd, 0.0);
  EXPECT_EQ(report.noiseMultiplier, 0.0);
}

TEST(Aggregation, StalenessDiscountsWeights) {
  Round round;
  round.add({1.0f, 1.0f}, 10.0, 0.0);
  round.add({3.0f, -1.0f}, 10.0, 3.0);  // factor 1/(1+3)^0.5 = 0.5
  auto options = named("fedavg");
  options.stalenessExponent = 0.5;
  AggregationReport report;
  const auto got = aggregateFromZero(options, round, &report);
  EXPECT_DOUBLE_EQ(report.stalenessFactors[1], 0.5);
  EXPECT_DOUBLE_EQ(report.effectiveWeights[1], 5.0);
  // (10*1 + 5*3)/15 and (10*1 + 5*-1)/15
  EXPECT_FLOAT_EQ(got[0], 25.0f / 15.0f);
  EXPECT_FLOAT_EQ(got[1], 5.0f / 15.0f);
  // Exponent 0 (synchronous default) ignores staleness.
  options.stalenessExponent = 0.0;
  aggregateFromZero(options, round, &report);
  EXPECT_EQ(report.effectiveWeights[1], 10.0);
  // Rank-based rules scale the stale delta instead: median of {1, 1.5} and
  // {1, -0.5} for n = 2 is their mean.
  auto median = named("median");
  median.stalenessExponent = 0.5;
  const auto med = aggregateFromZero(median, round, &report);
  EXPECT_FLOAT_EQ(med[0], 1.25f);
  EXPECT_FLOAT_EQ(med[1], 0.25f);
}

// --- Validation ---------------------------------------------------------------

TEST(Aggregation, RejectsBadInputsWithTheValuesAndLeavesTheModelAlone) {
  const std::size_t p = 8;
  auto strategy = make(named("fedavg"), p);
  std::mt19937_64 rng(59);
  const std::vector<float> original(p, 1.0f);
  auto expectError = [&](const Round& round, Code code, const std::string& needle,
                         std::size_t globalSize = 8) {
    std::vector<float> global(globalSize, 1.0f);
    auto r = strategy->aggregate(round.updates, global, rng);
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.code(), code) << r.error().toString();
    EXPECT_NE(r.error().detail.find(needle), std::string::npos) << r.error().detail;
    if (globalSize == p) {
      EXPECT_EQ(global, original);
    }
  };
  auto good = [] {
    Round r;
    r.add(std::vector<float>(8, 0.5f), 2.0);
    r.add(std::vector<float>(8, -0.5f), 3.0);
    return r;
  };
  expectError(Round{}, Code::InvalidArgument, "no updates");
  expectError(good(), Code::ShapeMismatch, "global model has 7 values; expected 8", 7);
  Round shorter = good();
  shorter.add(std::vector<float>(5, 0.0f), 1.0);
  expectError(shorter, Code::ShapeMismatch, "update 2 (dev-2) has 5 values; expected 8");
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Round r = good();
    r.deltas[1][6] = bad;
    expectError(r, Code::NonFinite, "update 1 (dev-1) has");
    expectError(r, Code::NonFinite, "at index 6");
  }
  Round negative = good();
  negative.updates[0].weight = -1.0;
  expectError(negative, Code::InvalidArgument, "update 0 (dev-0) weight = -1");
  Round nanWeight = good();
  nanWeight.updates[1].weight = std::numeric_limits<double>::quiet_NaN();
  expectError(nanWeight, Code::InvalidArgument, "weight = nan");
  Round zero = good();
  zero.updates[0].weight = 0.0;
  zero.updates[1].weight = 0.0;
  expectError(zero, Code::InvalidArgument, "total effective weight = 0");
  Round stale = good();
  stale.updates[1].staleness = -2.0;
  expectError(stale, Code::InvalidArgument, "staleness = -2");

  std::vector<float> global(p, 1.0f);
  global[3] = std::numeric_limits<float>::infinity();
  Round r = good();
  auto result = strategy->aggregate(r.updates, global, rng);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.code(), Code::NonFinite);
  EXPECT_NE(result.error().detail.find("global model has inf at index 3"), std::string::npos);

  // The median and Krum paths check finiteness in their own pass.
  for (std::string name : {"median", "krum"}) {
    auto robust = make(named(name), p);
    Round bad = good();
    bad.add(std::vector<float>(8, 0.0f), 1.0);
    bad.add(std::vector<float>(8, 0.0f), 1.0);
    bad.add(std::vector<float>(8, 0.0f), 1.0);
    bad.deltas[3][2] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> g(p, 1.0f);
    auto e = robust->aggregate(bad.updates, g, rng);
    ASSERT_FALSE(e.ok()) << name;
    EXPECT_EQ(e.code(), Code::NonFinite) << name;
    EXPECT_NE(e.error().detail.find("update 3 (dev-3) has nan at index 2"), std::string::npos)
        << e.error().detail;
  }
}

TEST(Aggregation, KrumNeedsMoreThanTwoFPlusTwoUpdates) {
  for (std::string name : {"krum", "multi_krum"}) {
    auto options = named(name);
    options.krumByzantine = 2;
    auto strategy = make(options, 4);
    std::mt19937_64 rng(61);
    Round round = randomRound(6, 4, rng);
    std::vector<float> global(4, 0.0f);
    auto r = strategy->aggregate(round.updates, global, rng);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.code(), Code::InvalidArgument);
    EXPECT_NE(r.error().detail.find("n > 2f + 2; n = 6, f = 2"), std::string::npos)
        << r.error().detail;
    round.add(std::vector<float>(4, 0.0f), 1.0);
    EXPECT_TRUE(strategy->aggregate(round.updates, global, rng).ok()) << name << " with n = 7";
  }
  auto options = named("multi_krum");
  options.krumByzantine = 1;
  options.multiKrumSelect = 9;
  auto strategy = make(options, 4);
  std::mt19937_64 rng(67);
  Round round = randomRound(5, 4, rng);
  std::vector<float> global(4, 0.0f);
  auto r = strategy->aggregate(round.updates, global, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Code::InvalidArgument);
  EXPECT_NE(r.error().detail.find("m = 9 of n = 5"), std::string::npos) << r.error().detail;
}

TEST(Aggregation, OverflowIsNonFiniteNotAWrongModel) {
  // Squares of 1e20 overflow float; the norm is still computed exactly.
  Round big;
  big.add(std::vector<float>(4, 1e20f), 1.0);
  AggregationReport report;
  auto clipped = named("fedavg");
  clipped.clipNorm = 1e30;
  const auto got = aggregateFromZero(clipped, big, &report);
  EXPECT_FLOAT_EQ(got[0], 1e20f);
  EXPECT_NEAR(report.preClipNorms[0], 2e20, 1e14);
  EXPECT_NEAR(report.aggregateNorm, 2e20, 1e14);
  // A step that overflows the model is refused and leaves it unchanged.
  Round huge;
  huge.add(std::vector<float>(4, 3e38f), 1.0);
  auto strategy = make(named("fedavg"), 4);
  std::vector<float> global(4, 3e38f);
  std::mt19937_64 rng(71);
  auto r = strategy->aggregate(huge.updates, global, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Code::NonFinite);
  EXPECT_NE(r.error().detail.find("new model overflowed"), std::string::npos);
  EXPECT_EQ(global, std::vector<float>(4, 3e38f));

  // Plain FedAvg (no clip) over a vector wide enough for the vector lanes,
  // whose float squares overflow: the weighted sum's own check cannot tell
  // this from a NaN, so the full check decides, and the round succeeds.
  Round wide;
  wide.add(std::vector<float>(96, 1e20f), 1.0);
  wide.add(std::vector<float>(96, 1e20f), 1.0);
  AggregationReport wideReport;
  const auto model = aggregateFromZero(named("fedavg"), wide, &wideReport);
  ASSERT_EQ(model.size(), 96u);
  EXPECT_FLOAT_EQ(model[95], 1e20f);
  EXPECT_NEAR(wideReport.aggregateNorm, std::sqrt(96.0) * 1e20, 1e15);
}

TEST(Aggregation, MakeStrategyRejectsUnknownNamesAndBadOptions) {
  auto expectInvalid = [](const AggregationOptions& o, const std::string& needle,
                          std::size_t p = 10) {
    auto s = makeStrategy(o, p);
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_EQ(s.code(), Code::InvalidArgument);
    EXPECT_NE(s.error().detail.find(needle), std::string::npos) << s.error().detail;
  };
  expectInvalid(named("fedsgd"), "unknown aggregation strategy 'fedsgd'");
  expectInvalid(named("fedavg"), "parameterCount = 0", 0);
  auto o = named("fedavg");
  o.serverLearningRate = 0.0;
  expectInvalid(o, "serverLearningRate = 0");
  o = named("fedavg");
  o.dpNoiseMultiplier = 1.0;
  expectInvalid(o, "needs clipNorm > 0");
  o = named("fedavg");
  o.clipNorm = -1.0;
  expectInvalid(o, "clipNorm = -1");
  o = named("fedavg");
  o.stalenessExponent = std::numeric_limits<double>::infinity();
  expectInvalid(o, "stalenessExponent = inf");
  o = named("fedavgm");
  o.serverMomentum = 1.0;
  expectInvalid(o, "serverMomentum = 1");
  o = named("fedadam");
  o.beta1 = 1.0;
  expectInvalid(o, "beta1 = 1");
  o = named("fedyogi");
  o.beta2 = -0.1;
  expectInvalid(o, "beta2 = -0.1");
  o = named("fedyogi");
  o.tau = 0.0;
  expectInvalid(o, "tau = 0");
  o = named("trimmed_mean");
  o.trimFraction = 0.5;
  expectInvalid(o, "trimFraction = 0.5");
  o = named("krum");
  o.krumByzantine = -1;
  expectInvalid(o, "krumByzantine = -1");
  o = named("multi_krum");
  o.multiKrumSelect = -3;
  expectInvalid(o, "multiKrumSelect = -3");
  // Options a strategy does not use are not its business.
  o = named("fedavg");
  o.beta1 = 1.0;
  EXPECT_TRUE(makeStrategy(o, 10).ok());
}

TEST(Aggregation, StrategyTableMatchesTheConfigFile) {
  for (std::string_view name : strategyNames()) {
    const std::string text = "[aggregation]\nstrategy = \"" + std::string(name) + "\"\n";
    auto config = parseCoordinatorConfig(text, "c.toml");
    ASSERT_TRUE(config.ok()) << name << ": " << config.error().toString();
    const auto options = aggregationOptionsFromConfig(*config);
    EXPECT_EQ(options.strategy, name);
    auto strategy = makeStrategy(options, 10);
    ASSERT_TRUE(strategy.ok()) << strategy.error().toString();
    EXPECT_EQ((*strategy)->name(), name);
    EXPECT_EQ((*strategy)->parameterCount(), 10u);
  }
  EXPECT_EQ(strategyNames().size(), 8u);
  CoordinatorConfig config;
  config.aggregation.trimFraction = 0.3;
  config.aggregation.krumByzantine = 5;
  config.rounds.stalenessExponent = 0.75;
  const auto options = aggregationOptionsFromConfig(config);
  EXPECT_EQ(options.trimFraction, 0.3);
  EXPECT_EQ(options.krumByzantine, 5);
  EXPECT_EQ(options.stalenessExponent, 0.75);
}

}  // namespace
}  // namespace edgefl::server
