// Optimizers against hand-computed updates, trainable subsets, FedProx,
// determinism, training quality on synthetic data, and evaluate().

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl {
namespace {

// A 1-input, 1-output linear regression with w = 0.5, b = 0.
Model tinyRegression() {
  ModelOptions options;
  options.task = Task::Regression;
  Model model = createModel("logreg:1-1", options).value();
  model.parameters()[0] = 0.5f;
  model.parameters()[1] = 0.0f;
  return model;
}

TrainOptions sgd(float lr) {
  TrainOptions o;
  o.batchSize = 1;
  o.learningRate = lr;
  return o;
}

TEST(ModelTrain, AdamMatchesHandComputedUpdatesForTwoSteps) {
  Model model = tinyRegression();
  TrainOptions o = sgd(0.1f);
  o.optimizer = OptimizerKind::Adam;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const float x[] = {2.0f};
  const float t[] = {3.0f};
  // Step 1: y = 1, loss = (1 - 3)^2 = 4, dL/dw = 2 (y - t) x = -8,
  // dL/db = -4. Adam's first step moves each weight by lr * sign(g).
  auto loss = trainer->stepRegression(x, t);
  ASSERT_TRUE(loss.ok());
  EXPECT_FLOAT_EQ(*loss, 4.0f);
  EXPECT_FLOAT_EQ(trainer->gradients()[0], -8.0f);
  EXPECT_FLOAT_EQ(trainer->gradients()[1], -4.0f);
  EXPECT_NEAR(model.parameters()[0], 0.6f, 1e-6);
  EXPECT_NEAR(model.parameters()[1], 0.1f, 1e-6);
  // Step 2: y = 1.3, g = (-6.8, -3.4).
  //   m = 0.9 * 0.1 * (-8) + 0.1 * (-6.8) = -1.4;  v = 0.999 * 0.001 * 64 + 0.001 * 46.24
  //   w = 0.6 - 0.1 * (m / 0.19) / (sqrt(v / 0.001999) + 1e-8) = 0.699251...
  //   bias: m = -0.7, v = 0.999 * 0.001 * 16 + 0.001 * 11.56
  loss = trainer->stepRegression(x, t);
  ASSERT_TRUE(loss.ok());
  EXPECT_NEAR(*loss, 1.7f * 1.7f, 1e-5);
  const double mw = -1.4, vw = 0.999 * 0.001 * 64 + 0.001 * 46.24;
  const double mb = -0.7, vb = 0.999 * 0.001 * 16 + 0.001 * 11.56;
  const double w2 = 0.6 - 0.1 * (mw / 0.19) / (std::sqrt(vw / 0.001999) + 1e-8);
  const double b2 = 0.1 - 0.1 * (mb / 0.19) / (std::sqrt(vb / 0.001999) + 1e-8);
  EXPECT_NEAR(w2, 0.6992517, 1e-6);  // the formula above, evaluated by hand
  EXPECT_NEAR(model.parameters()[0], w2, 2e-6);
  EXPECT_NEAR(model.parameters()[1], b2, 2e-6);
  EXPECT_EQ(trainer->stepCount(), 2u);
}

TEST(ModelTrain, SgdMomentumMatchesHandComputedUpdates) {
  Model model = tinyRegression();
  TrainOptions o = sgd(0.01f);
  o.momentum = 0.9f;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const float x[] = {2.0f};
  const float t[] = {3.0f};
  ASSERT_TRUE(trainer->stepRegression(x, t).ok());
  // v = g = (-8, -4): w = 0.5 + 0.08, b = 0.04.
  EXPECT_NEAR(model.parameters()[0], 0.58f, 1e-6);
  EXPECT_NEAR(model.parameters()[1], 0.04f, 1e-6);
  ASSERT_TRUE(trainer->stepRegression(x, t).ok());
  // y = 1.2: g = (2 * -1.8 * 2, 2 * -1.8) = (-7.2, -3.6);
  // v = 0.9 * (-8, -4) + g = (-14.4, -7.2).
  EXPECT_NEAR(model.parameters()[0], 0.58f + 0.144f, 1e-6);
  EXPECT_NEAR(model.parameters()[1], 0.04f + 0.072f, 1e-6);
}

TEST(ModelTrain, WeightDecayAndProximalTermsEnterTheGradient) {
  Model model = tinyRegression();
  TrainOptions o = sgd(0.01f);
  o.weightDecay = 0.5f;
  o.proximalMu = 2.0f;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const float reference[] = {1.5f, -1.0f};
  ASSERT_TRUE(trainer->setReference(reference).ok());
  const float x[] = {2.0f};
  const float t[] = {3.0f};
  ASSERT_TRUE(trainer->stepRegression(x, t).ok());
  // w: g = -8 + 0.5 * 0.5 + 2 * (0.5 - 1.5) = -9.75; b: g = -4 + 0 + 2 * (0 + 1) = -2.
  EXPECT_NEAR(model.parameters()[0], 0.5f + 0.0975f, 1e-6);
  EXPECT_NEAR(model.parameters()[1], 0.02f, 1e-6);
  // A schedule changes the rate of the following steps only.
  ASSERT_TRUE(trainer->setLearningRate(0.02f).ok());
  EXPECT_EQ(trainer->setLearningRate(0.0f).code(), Code::InvalidArgument);
  EXPECT_FLOAT_EQ(trainer->options().learningRate, 0.02f);
  const float w1 = model.parameters()[0];
  const float b1 = model.parameters()[1];
  ASSERT_TRUE(trainer->stepRegression(x, t).ok());
  const float gw = trainer->gradients()[0], gb = trainer->gradients()[1];
  EXPECT_NEAR(model.parameters()[0], w1 - 0.02f * (gw + 0.5f * w1 + 2.0f * (w1 - 1.5f)), 1e-6);
  EXPECT_NEAR(model.parameters()[1], b1 - 0.02f * (gb + 0.5f * b1 + 2.0f * (b1 + 1.0f)), 1e-6);
  const float wrongSize[] = {1.0f};
  EXPECT_EQ(trainer->setReference(wrongSize).code(), Code::ShapeMismatch);
}

// Without a proximal term the trainer keeps no reference: weight decay
// alone still enters the gradient, and a reference set anyway is checked
// for its size and changes nothing.
TEST(ModelTrain, WeightDecayWithoutAProximalTerm) {
  Model model = tinyRegression();
  TrainOptions o = sgd(0.01f);
  o.weightDecay = 0.5f;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const float reference[] = {1.5f, -1.0f};
  ASSERT_TRUE(trainer->setReference(reference).ok());
  const float wrongSize[] = {1.0f};
  EXPECT_EQ(trainer->setReference(wrongSize).code(), Code::ShapeMismatch);
  const float x[] = {2.0f};
  const float t[] = {3.0f};
  ASSERT_TRUE(trainer->stepRegression(x, t).ok());
  // w: g = -8 + 0.5 * 0.5 = -7.75; b: g = -4 + 0.5 * 0 = -4.
  EXPECT_NEAR(model.parameters()[0], 0.5f + 0.0775f, 1e-6);
  EXPECT_NEAR(model.parameters()[1], 0.04f, 1e-6);
}

// The same over tensors of many update chunks (the kernels step through
// 1,024 parameters at a time), for SGD and Adam: every weight of the first
// step moves by exactly what the gradient and the decay give.
TEST(ModelTrain, WeightDecayWithoutAProximalTermOverLargeTensors) {
  for (const OptimizerKind optimizer : {OptimizerKind::Sgd, OptimizerKind::Adam}) {
    ModelOptions options;
    Model model = createModel("logreg:784-10", options).value();
    ASSERT_GT(model.tensorSizes()[0], 1024u);
    const std::vector<float> before(model.parameters().begin(), model.parameters().end());
    TrainOptions o = sgd(0.01f);
    o.optimizer = optimizer;
    o.weightDecay = 0.5f;
    o.batchSize = 1;
    auto trainer = Trainer::prepare(model, o);
    ASSERT_TRUE(trainer.ok()) << trainer.error().toString();
    std::vector<float> x(784, 0.0f);
    x[3] = 1.0f;
    const std::int32_t label[] = {2};
    ASSERT_TRUE(trainer->computeGradients(x, label).ok());
    const std::vector<float> g(trainer->gradients().begin(), trainer->gradients().end());
    std::copy(before.begin(), before.end(), model.parameters().begin());
    auto again = Trainer::prepare(model, o);
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE(again->step(x, label).ok());
    std::size_t checked = 0;
    for (std::size_t i = 0; i < before.size(); ++i) {
      const float total = g[i] + 0.5f * before[i];
      // Adam's first step moves each weight by the rate times the sign of
      // its gradient (to within epsilon).
      const float expected = optimizer == OptimizerKind::Sgd
                                 ? before[i] - 0.01f * total
                                 : before[i] - (total == 0.0f ? 0.0f : std::copysign(0.01f, total));
      if (std::abs(total) > 1e-4f || optimizer == OptimizerKind::Sgd) {
        ASSERT_NEAR(model.parameters()[i], expected, 1e-5f) << i;
        ++checked;
      }
    }
    EXPECT_GT(checked, 2048u);
  }
}

TEST(ModelTrain, SgdConvergesOnALinearProblem) {
  ModelOptions options;
  options.task = Task::Regression;
  Model model = createModel("logreg:1-1", options).value();
  Dataset data;
  data.featureCount = 1;
  data.name = "line";
  for (int i = 0; i < 64; ++i) {
    const float x = -1.0f + 2.0f * static_cast<float>(i) / 63.0f;
    data.features.push_back(x);
    data.targets.push_back(3.0f * x + 1.0f);
  }
  TrainOptions o;
  o.epochs = 200;
  o.batchSize = 8;
  o.learningRate = 0.1f;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  auto report = trainer->train(data);
  ASSERT_TRUE(report.ok()) << report.error().toString();
  EXPECT_NEAR(model.parameters()[0], 3.0f, 1e-3);
  EXPECT_NEAR(model.parameters()[1], 1.0f, 1e-3);
  EXPECT_EQ(report->steps, 200u * 8);
  EXPECT_EQ(report->samples, 200u * 64);
  EXPECT_LT(report->epochLoss.back(), 1e-6f);
  EXPECT_GT(report->epochLoss.front(), report->epochLoss.back());
  auto metrics = evaluate(model, data);
  ASSERT_TRUE(metrics.ok());
  EXPECT_LT(metrics->loss, 1e-6f);
  EXPECT_TRUE(metrics->perClassAccuracy.empty());
}

// Gaussian blobs: `classes` centers in `dims` dimensions, well separated.
Dataset blobs(std::size_t perClass, std::uint32_t classes, std::size_t dims, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.6f);
  std::mt19937 centerRng(99);  // the same centers for train and test
  std::uniform_real_distribution<float> where(-3.0f, 3.0f);
  std::vector<float> centers(classes * dims);
  for (float& c : centers) c = where(centerRng);
  Dataset data;
  data.featureCount = dims;
  data.classCount = classes;
  data.name = "blobs";
  for (std::size_t i = 0; i < perClass * classes; ++i) {
    const std::uint32_t label = static_cast<std::uint32_t>(i % classes);
    for (std::size_t d = 0; d < dims; ++d) {
      data.features.push_back(centers[label * dims + d] + noise(rng));
    }
    data.labels.push_back(static_cast<std::int32_t>(label));
  }
  return data;
}

TEST(ModelTrain, MlpLearnsSeparableClasses) {
  const Dataset train = blobs(100, 4, 8, 1);
  const Dataset test = blobs(50, 4, 8, 2);
  for (OptimizerKind optimizer : {OptimizerKind::Sgd, OptimizerKind::Adam}) {
    SCOPED_TRACE(optimizerName(optimizer));
    Model model = createModel("mlp:8-16-4").value();
    auto before = evaluate(model, test);
    ASSERT_TRUE(before.ok());
    TrainOptions o;
    o.epochs = 10;
    o.batchSize = 16;
    o.optimizer = optimizer;
    o.learningRate = optimizer == OptimizerKind::Adam ? 0.01f : 0.05f;
    o.momentum = optimizer == OptimizerKind::Sgd ? 0.9f : 0.0f;
    auto trainer = Trainer::prepare(model, o);
    ASSERT_TRUE(trainer.ok());
    ASSERT_TRUE(trainer->train(train).ok());
    auto after = evaluate(model, test);
    ASSERT_TRUE(after.ok());
    EXPECT_GE(after->accuracy, 0.97f);
    EXPECT_LT(after->loss, before->loss);
    EXPECT_EQ(after->sampleCount, 200u);
    EXPECT_EQ(after->dataset, "blobs");
    ASSERT_EQ(after->perClassCount.size(), 4u);
    for (std::size_t c = 0; c < 4; ++c) {
      EXPECT_EQ(after->perClassCount[c], 50u);
      EXPECT_GE(after->perClassAccuracy[c], 0.9f);
    }
  }
}

TEST(ModelTrain, SmallCnnLearnsWhereTheBlobIs) {
  // 12x12 images with one bright 3x3 square in one of the four quadrants;
  // the class is the quadrant.
  auto images = [](std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    Dataset d;
    d.featureCount = 144;
    d.classCount = 4;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t label = static_cast<std::uint32_t>(rng() % 4);
      std::vector<float> img(144, 0.0f);
      for (float& v : img) v = static_cast<float>(rng() % 40);
      const std::size_t y0 = (label / 2) * 6 + rng() % 4, x0 = (label % 2) * 6 + rng() % 4;
      for (std::size_t y = y0; y < y0 + 3; ++y) {
        for (std::size_t x = x0; x < x0 + 3; ++x) img[y * 12 + x] = 255.0f;
      }
      d.features.insert(d.features.end(), img.begin(), img.end());
      d.labels.push_back(static_cast<std::int32_t>(label));
    }
    return d;
  };
  InputSchema schema;
  schema.featureCount = 144;
  schema.shape = {1, 12, 12};
  auto model = Model::fromLayers(
      "test-cnn", Task::Classification,
      {Layer::conv2d(1, 4, 3, 1, 1, 12, 12), Layer::relu(576), Layer::maxPool2d(4, 2, 2, 12, 12),
       Layer::flatten(144), Layer::dense(144, 4)},
      schema);
  ASSERT_TRUE(model.ok()) << model.error().toString();
  initializeParameters(*model, 3);
  model->preprocessing().scale.assign(144, 1.0f / 255.0f);
  TrainOptions o;
  o.epochs = 5;
  o.batchSize = 16;
  o.learningRate = 0.05f;
  o.momentum = 0.9f;
  auto trainer = Trainer::prepare(*model, o);
  ASSERT_TRUE(trainer.ok());
  ASSERT_TRUE(trainer->train(images(800, 1)).ok());
  auto metrics = evaluate(*model, images(200, 2));
  ASSERT_TRUE(metrics.ok());
  EXPECT_GE(metrics->accuracy, 0.95f);
}

TEST(ModelTrain, TrainableSubsetsLeaveOtherParametersBitIdentical) {
  const Dataset data = blobs(20, 3, 6, 3);
  for (TrainableSet set : {TrainableSet::Head, TrainableSet::Bias}) {
    for (OptimizerKind optimizer : {OptimizerKind::Sgd, OptimizerKind::Adam}) {
      SCOPED_TRACE(std::string(trainableName(set)) + " " + std::string(optimizerName(optimizer)));
      Model model = createModel("mlp:6-8-8-3").value();
      // Biases start at zero; give them values so "unchanged" means something.
      for (std::size_t t = 1; t < model.tensorSizes().size(); t += 2) {
        for (std::size_t i = 0; i < model.tensorSizes()[t]; ++i) {
          model.parameters()[model.tensorOffsets()[t] + i] = 0.01f * static_cast<float>(i);
        }
      }
      const std::vector<float> before(model.parameters().begin(), model.parameters().end());
      TrainOptions o;
      o.epochs = 2;
      o.batchSize = 8;
      o.optimizer = optimizer;
      o.momentum = optimizer == OptimizerKind::Sgd ? 0.9f : 0.0f;
      o.weightDecay = 0.01f;  // would move frozen weights if applied to them
      o.proximalMu = 0.1f;
      o.trainable = set;
      auto trainer = Trainer::prepare(model, o);
      ASSERT_TRUE(trainer.ok());
      ASSERT_TRUE(trainer->train(data).ok());
      for (std::size_t t = 0; t < model.tensorSizes().size(); ++t) {
        const std::size_t offset = model.tensorOffsets()[t];
        const std::size_t bytes = model.tensorSizes()[t] * sizeof(float);
        const bool same =
            std::memcmp(before.data() + offset, model.parameters().data() + offset, bytes) == 0;
        const bool expectTrained = set == TrainableSet::Head ? t >= 4 : t % 2 == 1;
        EXPECT_EQ(trainer->trainable(t), expectTrained) << "tensor " << t;
        EXPECT_EQ(same, !expectTrained) << "tensor " << t;
      }
    }
  }
}

TEST(ModelTrain, ProximalTermPullsTowardTheReference) {
  const Dataset data = blobs(30, 3, 6, 4);
  auto distanceAfter = [&](float mu) {
    Model model = createModel("mlp:6-8-3", ModelOptions{.seed = 5}).value();
    const std::vector<float> base(model.parameters().begin(), model.parameters().end());
    TrainOptions o;
    o.epochs = 5;
    o.batchSize = 8;
    o.learningRate = 0.1f;
    o.proximalMu = mu;
    auto trainer = Trainer::prepare(model, o);
    EXPECT_TRUE(trainer.ok());
    EXPECT_TRUE(trainer->train(data).ok());
    double d = 0;
    for (std::size_t i = 0; i < base.size(); ++i) {
      d += std::pow(double(model.parameters()[i]) - base[i], 2);
    }
    return std::sqrt(d);
  };
  const double free = distanceAfter(0.0f);
  const double pulled = distanceAfter(1.0f);
  EXPECT_GT(free, 0.0);
  EXPECT_LT(pulled, 0.7 * free);
}

TEST(ModelTrain, SameSeedSameModelDifferentSeedDifferentModel) {
  const Dataset data = blobs(25, 3, 6, 5);
  auto trained = [&](std::uint64_t seed) {
    Model model = createModel("mlp:6-8-3").value();
    TrainOptions o;
    o.epochs = 2;
    o.batchSize = 7;  // a ragged last batch
    o.seed = seed;
    o.optimizer = OptimizerKind::Adam;
    auto trainer = Trainer::prepare(model, o);
    EXPECT_TRUE(trainer.ok());
    EXPECT_TRUE(trainer->train(data).ok());
    return std::vector<float>(model.parameters().begin(), model.parameters().end());
  };
  const auto a = trained(7), b = trained(7), c = trained(8);
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)), 0);
}

TEST(ModelTrain, IndicesAndMaxSamplesSelectTheTrainingSamples) {
  Dataset data = blobs(10, 2, 4, 6);
  Model model = createModel("logreg:4-2").value();
  TrainOptions o;
  o.batchSize = 4;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const std::uint32_t picked[] = {0, 3, 5};
  auto report = trainer->train(data, picked);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->samples, 3u);
  EXPECT_EQ(report->steps, 1u);
  o.maxSamples = 6;
  auto limited = Trainer::prepare(model, o);
  ASSERT_TRUE(limited.ok());
  report = limited->train(data);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->samples, 6u);
  EXPECT_EQ(report->steps, 2u);
}

TEST(ModelTrain, BadBatchesAndDataAreRejectedWithoutUpdating) {
  Model model = createModel("logreg:4-3").value();
  TrainOptions o;
  o.batchSize = 2;
  auto trainer = Trainer::prepare(model, o);
  ASSERT_TRUE(trainer.ok());
  const std::vector<float> before(model.parameters().begin(), model.parameters().end());
  const float x3[12] = {};
  const std::int32_t l3[3] = {0, 1, 2};
  EXPECT_EQ(trainer->step(x3, l3).code(), Code::ShapeMismatch);  // over batchSize
  const float x1[4] = {};
  const std::int32_t bad[1] = {3};
  auto r = trainer->step(x1, bad);
  EXPECT_EQ(r.code(), Code::OutOfRange);
  EXPECT_NE(r.error().detail.find("label 3"), std::string::npos);
  const std::int32_t negative[1] = {-1};
  EXPECT_EQ(trainer->step(x1, negative).code(), Code::OutOfRange);
  const std::int32_t two[2] = {0, 1};
  EXPECT_EQ(trainer->step(x1, two).code(), Code::ShapeMismatch);
  const float x5[5] = {};
  const std::int32_t one[1] = {0};
  EXPECT_EQ(trainer->step(x5, one).code(), Code::ShapeMismatch);
  const float t1[3] = {};
  EXPECT_EQ(trainer->stepRegression(x1, t1).code(), Code::BadModel);
  EXPECT_EQ(std::memcmp(before.data(), model.parameters().data(), before.size() * sizeof(float)),
            0);
  EXPECT_EQ(trainer->stepCount(), 0u);

  Dataset data = blobs(3, 3, 4, 7);
  data.labels[2] = 9;
  EXPECT_EQ(trainer->train(data).code(), Code::OutOfRange);
  EXPECT_EQ(evaluate(model, data).code(), Code::OutOfRange);
  const std::uint32_t beyond[] = {0, 100};
  EXPECT_EQ(trainer->train(blobs(3, 3, 4, 7), beyond).code(), Code::OutOfRange);
  Dataset wide = blobs(3, 3, 5, 7);
  EXPECT_EQ(trainer->train(wide).code(), Code::ShapeMismatch);
  EXPECT_EQ(evaluate(model, wide).code(), Code::ShapeMismatch);
  Dataset empty;
  empty.featureCount = 4;
  EXPECT_EQ(trainer->train(empty).code(), Code::InvalidArgument);
  Dataset unlabeled = blobs(3, 3, 4, 7);
  unlabeled.labels.clear();
  EXPECT_EQ(trainer->train(unlabeled).code(), Code::ShapeMismatch);
}

TEST(ModelTrain, OptionsAreChecked) {
  Model model = createModel("logreg:4-3").value();
  auto expectInvalid = [&](TrainOptions o, const char* what) {
    auto trainer = Trainer::prepare(model, o);
    ASSERT_FALSE(trainer.ok()) << what;
    EXPECT_EQ(trainer.code(), Code::InvalidArgument) << what;
    EXPECT_NE(trainer.error().detail.find(what), std::string::npos) << trainer.error().detail;
  };
  TrainOptions o;
  o.epochs = 0;
  expectInvalid(o, "epochs");
  o = {};
  o.batchSize = 0;
  expectInvalid(o, "batchSize");
  o = {};
  o.learningRate = NAN;
  expectInvalid(o, "learningRate");
  o = {};
  o.learningRate = -1;
  expectInvalid(o, "learningRate");
  o = {};
  o.momentum = 1.0f;
  expectInvalid(o, "momentum");
  o = {};
  o.weightDecay = -0.1f;
  expectInvalid(o, "weightDecay");
  o = {};
  o.proximalMu = INFINITY;
  expectInvalid(o, "proximalMu");
  o = {};
  o.adamBeta2 = 1.0f;
  expectInvalid(o, "adamBeta2");
  o = {};
  o.adamEpsilon = 0;
  expectInvalid(o, "adamEpsilon");

  // No Dense layer: head-only training has nothing to train.
  InputSchema schema;
  schema.featureCount = 4;
  auto relu = Model::fromLayers("test-relu", Task::Classification, {Layer::relu(4)}, schema);
  ASSERT_TRUE(relu.ok());
  o = {};
  o.trainable = TrainableSet::Head;
  EXPECT_EQ(Trainer::prepare(*relu, o).code(), Code::BadModel);
}

TEST(ModelTrain, TrainingConfigFromTheWire) {
  capnp::MallocMessageBuilder builder;
  auto config = builder.initRoot<wire::TrainingConfig>();
  auto defaults = trainOptionsFromWire(config.asReader());
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->epochs, 1u);
  EXPECT_EQ(defaults->batchSize, 32u);
  EXPECT_FLOAT_EQ(defaults->learningRate, 0.01f);
  config.setOptimizer(wire::Optimizer::ADAM);
  config.setTrainable(wire::Trainable::BIAS);
  config.setProximalMu(0.01f);
  config.setMaxSamples(100);
  config.setSeed(9);
  auto set = trainOptionsFromWire(config.asReader());
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->optimizer, OptimizerKind::Adam);
  EXPECT_EQ(set->trainable, TrainableSet::Bias);
  EXPECT_FLOAT_EQ(set->proximalMu, 0.01f);
  EXPECT_EQ(set->maxSamples, 100u);
  EXPECT_EQ(set->seed, 9u);
  config.setOptimizer(static_cast<wire::Optimizer>(7));
  EXPECT_EQ(trainOptionsFromWire(config.asReader()).code(), Code::BadField);
  config.setOptimizer(wire::Optimizer::SGD);
  config.setTrainable(static_cast<wire::Trainable>(5));
  EXPECT_EQ(trainOptionsFromWire(config.asReader()).code(), Code::BadField);
  config.setTrainable(wire::Trainable::ALL);
  config.setMomentum(1.5f);
  auto bad = trainOptionsFromWire(config.asReader());
  EXPECT_EQ(bad.code(), Code::BadField);
  EXPECT_NE(bad.error().detail.find("momentum"), std::string::npos);
}

TEST(ModelTrain, EvaluateCountsPerClass) {
  // Logits = x: the prediction is the largest feature.
  Model model = createModel("logreg:3-3").value();
  auto p = model.parameters();
  std::fill(p.begin(), p.end(), 0.0f);
  for (std::size_t c = 0; c < 3; ++c) p[c * 3 + c] = 1.0f;
  Dataset data;
  data.featureCount = 3;
  data.name = "hand";
  data.features = {5, 0, 0, /**/ 0, 5, 0, /**/ 0, 5, 0, /**/ 0, 0, 5, /**/ 5, 0, 0};
  data.labels = {0, 1, 2, 2, 2};
  auto m = evaluate(model, data, {}, {.batchSize = 2, .isa = KernelIsa::Auto});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->sampleCount, 5u);
  EXPECT_FLOAT_EQ(m->accuracy, 3.0f / 5.0f);
  EXPECT_EQ(m->perClassCount, (std::vector<std::uint64_t>{1, 1, 3}));
  EXPECT_FLOAT_EQ(m->perClassAccuracy[0], 1.0f);
  EXPECT_FLOAT_EQ(m->perClassAccuracy[1], 1.0f);
  EXPECT_FLOAT_EQ(m->perClassAccuracy[2], 1.0f / 3.0f);
  // Right: -log(e^5 / (e^5 + 2)); wrong: -log(1 / (e^5 + 2)).
  const double right = std::log(std::exp(5.0) + 2) - 5, wrong = std::log(std::exp(5.0) + 2);
  EXPECT_NEAR(m->loss, (3 * right + 2 * wrong) / 5, 1e-5);
  const std::uint32_t subset[] = {3};
  auto one = evaluate(model, data, subset);
  ASSERT_TRUE(one.ok());
  EXPECT_FLOAT_EQ(one->accuracy, 1.0f);
  EXPECT_EQ(one->perClassCount, (std::vector<std::uint64_t>{0, 0, 1}));
}

}  // namespace
}  // namespace edgefl
