// Input validation, drift statistics and the model health check.

#include "edgefl/device/input_monitor.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "device/device_fixture.hpp"
#include "edgefl/device/health_check.hpp"

namespace edgefl::device {
namespace {

TEST(InputMonitor, ChecksCountFiniteAndRange) {
  const Model model = test::smallModel();
  InputMonitor monitor;
  monitor.prepare(model);
  std::vector<float> x(8, 0.5f);
  EXPECT_TRUE(monitor.check(x).ok());
  x[0] = 0.0f;
  x[7] = 1.0f;  // both ends are inclusive
  EXPECT_TRUE(monitor.check(x).ok());
  EXPECT_EQ(monitor.check(std::vector<float>(9, 0.5f)).code, Code::ShapeMismatch);
  x[2] = std::numeric_limits<float>::infinity();
  SampleCheck c = monitor.check(x);
  EXPECT_EQ(c.code, Code::NonFinite);
  EXPECT_EQ(c.feature, 2u);
  x[2] = -0.001f;
  c = monitor.check(x);
  EXPECT_EQ(c.code, Code::OutOfRange);
  EXPECT_FLOAT_EQ(c.value, -0.001f);
}

TEST(InputMonitor, UnboundedSchemaAcceptsAnyFiniteValue) {
  auto model = createModel("mlp:3-4-2");
  ASSERT_TRUE(model.ok());
  InputMonitor monitor;
  monitor.prepare(model.value());
  EXPECT_TRUE(monitor.check(std::vector<float>{-1e30f, 0.0f, 3e38f}).ok());
  EXPECT_EQ(monitor.check(std::vector<float>{NAN, 0.0f, 0.0f}).code, Code::NonFinite);
  // No reference histogram: statistics are kept, PSI is not.
  monitor.add(std::vector<float>{1.0f, 2.0f, 3.0f});
  EXPECT_EQ(monitor.drift().samples, 0u);
  EXPECT_EQ(monitor.featureStatistics()[2].count, 1u);
}

TEST(InputMonitor, BinsLikeTheReferenceStatistics) {
  // The reference histogram of a data set, against the histogram of the
  // same data set seen by the monitor: identical, so every PSI is 0.
  Model model = test::smallModel();
  const Dataset data = test::syntheticData(8, 3, 500, 4);
  auto stats = computeReferenceStats(model, data, 7);
  ASSERT_TRUE(stats.ok());
  model.referenceStats() = stats.value();
  InputMonitor monitor;
  monitor.prepare(model);
  for (std::size_t i = 0; i < data.size(); ++i) monitor.add(data.sample(i));
  DriftSummary d = monitor.drift();
  EXPECT_EQ(d.samples, 500u);
  EXPECT_NEAR(d.psiMax, 0.0f, 1e-6f);
  const auto features = monitor.featureStatistics();
  for (std::size_t f = 0; f < 8; ++f) {
    EXPECT_NEAR(features[f].mean, stats->mean[f], 1e-4);
    EXPECT_NEAR(features[f].std, stats->std[f], 1e-4);
  }

  // One feature moved to the top bin: it is the worst, the others are not.
  monitor.reset();
  for (std::size_t i = 0; i < data.size(); ++i) {
    std::vector<float> x(data.sample(i).begin(), data.sample(i).end());
    x[5] = 0.99f;
    monitor.add(x);
  }
  d = monitor.drift();
  EXPECT_EQ(d.worstFeature, 5u);
  EXPECT_GT(d.psiMax, 2.0f);
  EXPECT_NEAR(d.psiMean, d.psiMax / 8, 1e-3f);
  // The summary is kept between calls and redone after every change.
  EXPECT_EQ(monitor.drift().psiMax, d.psiMax);
  monitor.add(data.sample(0));
  EXPECT_EQ(monitor.drift().samples, 501u);
  EXPECT_LT(monitor.drift().psiMax, d.psiMax);
}

TEST(LatencyHistogram, CountsIntoFixedBuckets) {
  LatencyHistogram h;
  h.record(1.0);
  h.record(2.0);  // bounds are inclusive upper limits
  h.record(3.0);
  h.record(1e6);
  const auto counts = h.counts();
  ASSERT_EQ(counts.size(), LatencyHistogram::kBounds + 1);
  EXPECT_EQ(counts[0], 2u);
  EXPECT_EQ(counts[1], 1u);
  EXPECT_EQ(counts[LatencyHistogram::kBounds], 1u);
}

TEST(HealthCheck, ProbesComeFromTheSchemaAndStatistics) {
  const Model model = test::smallModel();
  const auto probes = probeInputs(model, 8);
  ASSERT_EQ(probes.size(), 8u * 8);
  for (float v : probes) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
  EXPECT_FLOAT_EQ(probes[0], model.referenceStats().mean[0]);
  EXPECT_FLOAT_EQ(probes[8], 0.0f);          // the lower ends
  EXPECT_FLOAT_EQ(probes[16], 1.0f);         // the upper ends
  EXPECT_EQ(probes, probeInputs(model, 8));  // deterministic

  // Unbounded inputs without statistics: around zero, not at +-FLT_MAX.
  auto plain = createModel("mlp:3-4-2");
  ASSERT_TRUE(plain.ok());
  for (float v : probeInputs(plain.value(), 5)) EXPECT_LE(std::fabs(v), 1.0f);
}

TEST(HealthCheck, PassesAHealthyModelAndCatchesOverflow) {
  Model model = test::smallModel();
  auto scorer = Scorer::prepare(model);
  ASSERT_TRUE(scorer.ok());
  EXPECT_TRUE(healthCheck(model, scorer.value()).ok());
  // Finite weights that overflow in the forward pass.
  for (float& w : model.parameters()) w = 3e37f;
  ASSERT_TRUE(validateModel(model).ok());
  EXPECT_EQ(healthCheck(model, scorer.value()).code(), Code::NonFinite);
}

}  // namespace
}  // namespace edgefl::device
