#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "edgefl/server/validation_gate.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl::server {
namespace {

// Two well-separated Gaussian blobs per class in 4 dimensions.
Dataset blobs(std::size_t n, std::uint64_t seed) {
  Dataset d;
  d.featureCount = 4;
  d.classCount = 3;
  d.name = "blobs";
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 3);
    for (std::size_t f = 0; f < 4; ++f) {
      d.features.push_back((f == static_cast<std::size_t>(label) ? 2.0f : 0.0f) + noise(rng));
    }
    d.labels.push_back(label);
  }
  return d;
}

Model trained(const Dataset& data) {
  Model m = std::move(createModel("logreg:4-3").value());
  TrainOptions o;
  o.epochs = 20;
  o.learningRate = 0.1f;
  auto t = Trainer::prepare(m, o);
  EXPECT_TRUE(t.ok());
  EXPECT_TRUE(t->train(data).ok());
  return m;
}

TEST(ValidationGate, PassesAnImprovementAndRejectsARegression) {
  Dataset holdout = blobs(300, 2);
  Model good = trained(blobs(600, 1));
  Model untrained = std::move(createModel("logreg:4-3").value());
  ValidationGate gate(GateOptions{}, holdout);
  auto up = gate.judge(good, &untrained);
  ASSERT_TRUE(up.ok());
  EXPECT_TRUE(up->passed) << up->reason;
  EXPECT_GT(up->candidate.accuracy, 0.95f);
  auto down = gate.judge(untrained, &good);
  ASSERT_TRUE(down.ok());
  EXPECT_FALSE(down->passed);
  EXPECT_EQ(down->reason.rfind("Regression:", 0), 0u) << down->reason;
}

TEST(ValidationGate, RejectsASliceRegressionHiddenByTheAverage) {
  Dataset holdout = blobs(300, 2);
  Model good = trained(blobs(600, 1));
  // Break class 2 only: its weight row and bias sink.
  Model sliced = good;
  auto p = sliced.parameters();
  for (std::size_t f = 0; f < 4; ++f) p[2 * 4 + f] = -5.0f;
  GateOptions o;
  o.tolerance = 1.0;  // the overall drop alone would be allowed
  ValidationGate gate(o, holdout);
  auto r = gate.judge(sliced, &good);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->reason.rfind("SliceRegression: class 2", 0), 0u) << r->reason;
}

TEST(ValidationGate, RejectsNonFiniteAndOverBudgetModels) {
  Dataset holdout = blobs(90, 2);
  Model good = trained(blobs(300, 1));
  ValidationGate gate(GateOptions{}, holdout);
  Model broken = good;
  broken.parameters()[0] = std::nanf("");
  auto nf = gate.judge(broken, &good);
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->reason.rfind("NonFinite", 0), 0u) << nf->reason;

  GateOptions tight;
  tight.maxParameters = 10;
  auto big = ValidationGate(tight, holdout).judge(good, nullptr);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->reason.rfind("OverBudget: 15 parameters > 10", 0), 0u) << big->reason;
  GateOptions small;
  small.maxModelBytes = 100;
  auto bytes = ValidationGate(small, holdout).judge(good, nullptr);
  EXPECT_EQ(bytes->reason.rfind("OverBudget:", 0), 0u) << bytes->reason;
}

TEST(ValidationGate, HoldoutThatDoesNotFitIsAnError) {
  Dataset wrong = blobs(30, 1);
  wrong.featureCount = 2;
  ValidationGate gate(GateOptions{}, wrong);
  Model m = std::move(createModel("logreg:4-3").value());
  EXPECT_FALSE(gate.judge(m, nullptr).ok());
}

}  // namespace
}  // namespace edgefl::server
