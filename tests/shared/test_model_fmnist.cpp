// Training quality on Fashion-MNIST: lenet >= 0.90 and an MLP >= 0.885
// test accuracy, trained from scratch with the engine's own Trainer.
//
// Minutes of CPU, so these run only with EDGEFL_FMNIST_QUALITY=1 (and the
// Debian package dataset-fashion-mnist installed); the unit tests cover the
// math on synthetic data in seconds.

#include <gtest/gtest.h>

#include <cstdlib>
#include <numeric>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl {
namespace {

struct Recipe {
  const char* arch;
  OptimizerKind optimizer;
  float learningRate;
  float momentum;
  float weightDecay;
  bool normalize;  // (x / 255 - 0.2860) / 0.3530, the dataset's pixel mean and std
  std::uint32_t epochs;
  std::uint32_t decayAt;  // epoch from which the learning rate is divided by 10
  float minAccuracy;
};

class FashionMnist : public ::testing::TestWithParam<Recipe> {
 protected:
  void SetUp() override {
    const char* enabled = std::getenv("EDGEFL_FMNIST_QUALITY");
    if (enabled == nullptr || std::string(enabled) != "1") {
      GTEST_SKIP() << "set EDGEFL_FMNIST_QUALITY=1 to train on Fashion-MNIST (minutes)";
    }
  }
};

TEST_P(FashionMnist, ReachesTheTargetAccuracy) {
  const Recipe& recipe = GetParam();
  auto train = loadFashionMnist("train");
  auto test = loadFashionMnist("test");
  if (!train.ok() || !test.ok()) GTEST_SKIP() << "Fashion-MNIST is not installed";
  ModelOptions modelOptions;
  modelOptions.seed = 1;
  modelOptions.inputShape = {1, 28, 28};
  auto model = createModel(recipe.arch, modelOptions);
  ASSERT_TRUE(model.ok()) << model.error().toString();
  if (recipe.normalize) {
    model->preprocessing().shift.assign(784, 0.2860f * 255.0f);
    model->preprocessing().scale.assign(784, 1.0f / (0.3530f * 255.0f));
  }
  TrainOptions options;
  options.batchSize = 64;
  options.optimizer = recipe.optimizer;
  options.learningRate = recipe.learningRate;
  options.momentum = recipe.momentum;
  options.weightDecay = recipe.weightDecay;
  auto trainer = Trainer::prepare(*model, options);
  ASSERT_TRUE(trainer.ok()) << trainer.error().toString();
  // One epoch per train() call so the rate can drop; a rotated index list
  // gives each epoch its own shuffle.
  std::vector<std::uint32_t> order(train->size());
  float accuracy = 0;
  for (std::uint32_t epoch = 0; epoch < recipe.epochs; ++epoch) {
    if (epoch == recipe.decayAt) {
      ASSERT_TRUE(trainer->setLearningRate(recipe.learningRate / 10).ok());
    }
    for (std::size_t i = 0; i < order.size(); ++i) {
      order[i] = static_cast<std::uint32_t>((i + epoch * 7919u) % order.size());
    }
    auto report = trainer->train(*train, order);
    ASSERT_TRUE(report.ok()) << report.error().toString();
    auto metrics = evaluate(*model, *test);
    ASSERT_TRUE(metrics.ok());
    accuracy = metrics->accuracy;
    std::printf("%s epoch %u: train loss %.4f, test accuracy %.4f, test loss %.4f\n", recipe.arch,
                epoch + 1, static_cast<double>(report->epochLoss[0]), static_cast<double>(accuracy),
                static_cast<double>(metrics->loss));
  }
  EXPECT_GE(accuracy, recipe.minAccuracy);
}

INSTANTIATE_TEST_SUITE_P(Quality, FashionMnist,
                         ::testing::Values(Recipe{"lenet", OptimizerKind::Sgd, 0.02f, 0.9f, 5e-4f,
                                                  true, 15, 10, 0.90f},
                                           Recipe{"mlp:784-256-128-10", OptimizerKind::Adam, 1e-3f,
                                                  0.0f, 0.0f, false, 12, 8, 0.885f}),
                         [](const ::testing::TestParamInfo<Recipe>& param) {
                           return std::string(param.param.arch[0] == 'l' ? "lenet" : "mlp");
                         });

}  // namespace
}  // namespace edgefl
