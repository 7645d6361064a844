// Training one epoch per train() call is the same as all epochs in one call:
// each epoch gets its own shuffle, whoever drives the loop.

#include <gtest/gtest.h>

#include <random>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl {
namespace {

Dataset noise(std::size_t n) {
  Dataset d;
  d.featureCount = 6;
  d.classCount = 3;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g;
  for (std::size_t i = 0; i < n; ++i) {
    for (int f = 0; f < 6; ++f) d.features.push_back(g(rng));
    d.labels.push_back(static_cast<std::int32_t>(i % 3));
  }
  return d;
}

TEST(TrainEpochs, SplitCallsMatchOneCall) {
  const Dataset data = noise(200);
  auto base = createModel("mlp:6-8-3");
  ASSERT_TRUE(base.ok());
  TrainOptions o;
  o.batchSize = 16;
  o.learningRate = 0.05f;
  o.seed = 11;

  Model once = *base;
  o.epochs = 3;
  auto t1 = Trainer::prepare(once, o);
  ASSERT_TRUE(t1.ok());
  ASSERT_TRUE(t1->train(data).ok());

  Model split = *base;
  o.epochs = 1;
  auto t2 = Trainer::prepare(split, o);
  ASSERT_TRUE(t2.ok());
  for (int e = 0; e < 3; ++e) ASSERT_TRUE(t2->train(data).ok());

  ASSERT_EQ(once.parameterCount(), split.parameterCount());
  for (std::size_t i = 0; i < once.parameterCount(); ++i) {
    ASSERT_EQ(once.parameters()[i], split.parameters()[i]) << "parameter " << i;
  }

  // And the epochs really differ: repeating epoch 0's order three times
  // gives other weights.
  Model same = *base;
  std::vector<float> after(same.parameterCount());
  for (int e = 0; e < 3; ++e) {
    auto t = Trainer::prepare(same, o);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->train(data).ok());
  }
  bool differs = false;
  for (std::size_t i = 0; i < once.parameterCount(); ++i) {
    differs = differs || once.parameters()[i] != same.parameters()[i];
  }
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace edgefl
