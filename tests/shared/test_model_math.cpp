// The optimized model math (im2col + GEMM, every kernel build) against the
// plain-loop reference, and every layer's and loss's gradient against
// central finite differences of the reference in double precision.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/train.hpp"
#include "test_model_reference.hpp"

namespace edgefl {
namespace {

using testing::referenceForward;
using testing::referenceLoss;
using testing::softmax;

void fillUniform(std::span<float> out, float lo, float hi, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : out) v = dist(rng);
}

std::vector<float> uniform(std::size_t n, float lo, float hi, std::uint32_t seed) {
  std::vector<float> out(n);
  fillUniform(out, lo, hi, seed);
  return out;
}

// Random parameters (biases too, so their gradients are exercised) and a
// non-identity preprocessing.
Model randomized(Model model, std::uint32_t seed) {
  fillUniform(model.parameters(), -0.5f, 0.5f, seed);
  model.preprocessing().shift = uniform(model.featureCount(), -0.5f, 0.5f, seed + 1);
  model.preprocessing().scale = uniform(model.featureCount(), 0.5f, 2.0f, seed + 2);
  return model;
}

Model custom(std::string arch, Task task, std::vector<Layer> layers,
             std::vector<std::uint32_t> shape) {
  InputSchema schema;
  schema.featureCount = 1;
  for (std::uint32_t d : shape) schema.featureCount *= d;
  schema.shape = std::move(shape);
  auto model = Model::fromLayers(std::move(arch), task, std::move(layers), std::move(schema));
  EXPECT_TRUE(model.ok()) << model.error().toString();
  return std::move(model.value());
}

struct Case {
  std::string name;
  Model model;
};

// One model per layer configuration the engine distinguishes.
std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"mlp", randomized(createModel("mlp:6-7-5-3").value(), 11)});
  out.push_back(
      {"conv_pad_pool",
       randomized(custom("test-conv", Task::Classification,
                         {Layer::conv2d(2, 3, 3, 1, 1, 6, 6), Layer::relu(108),
                          Layer::maxPool2d(3, 2, 2, 6, 6), Layer::flatten(27), Layer::dense(27, 4)},
                         {2, 6, 6}),
                  12)});
  // Stride 2 with padding, then overlapping pooling windows (stride < size).
  out.push_back(
      {"conv_stride_overlap",
       randomized(custom("test-stride", Task::Classification,
                         {Layer::conv2d(1, 2, 3, 2, 1, 7, 7), Layer::maxPool2d(2, 3, 1, 4, 4),
                          Layer::flatten(8), Layer::relu(8), Layer::dense(8, 3)},
                         {1, 7, 7}),
                  13)});
  // Two convolutions: the input gradient of the second (col2im) is used.
  out.push_back(
      {"conv_conv",
       randomized(custom("test-conv2", Task::Classification,
                         {Layer::conv2d(1, 2, 3, 1, 0, 8, 8), Layer::relu(72),
                          Layer::maxPool2d(2, 2, 2, 6, 6), Layer::conv2d(2, 3, 2, 1, 1, 3, 3),
                          Layer::relu(48), Layer::flatten(48), Layer::dense(48, 3)},
                         {1, 8, 8}),
                  14)});
  ModelOptions regression;
  regression.task = Task::Regression;
  out.push_back({"regression", randomized(createModel("mlp:5-6-2", regression).value(), 15)});
  return out;
}

struct Batch {
  std::vector<float> features;
  std::vector<std::int32_t> labels;
  std::vector<float> targets;
};

Batch batchFor(const Model& model, std::size_t n, std::uint32_t seed) {
  Batch b;
  b.features = uniform(n * model.featureCount(), -1.0f, 1.0f, seed);
  std::mt19937 rng(seed + 7);
  for (std::size_t i = 0; i < n; ++i) {
    b.labels.push_back(static_cast<std::int32_t>(rng() % model.outputCount()));
  }
  b.targets = uniform(n * model.outputCount(), -2.0f, 2.0f, seed + 8);
  return b;
}

std::vector<double> toDouble(std::span<const float> v) {
  return {v.begin(), v.end()};
}

std::string isaTestName(const ::testing::TestParamInfo<KernelIsa>& param) {
  return std::string(kernelIsaName(param.param));
}

class ModelMath : public ::testing::TestWithParam<KernelIsa> {
 protected:
  void SetUp() override {
    if (!kernelIsaAvailable(GetParam())) {
      GTEST_SKIP() << kernelIsaName(GetParam()) << " is not available on this CPU";
    }
  }
};

TEST_P(ModelMath, ForwardMatchesReferenceLoops) {
  for (Case& c : cases()) {
    SCOPED_TRACE(c.name);
    constexpr std::size_t n = 5;
    auto scorer = Scorer::prepare(c.model, {.maxBatch = n, .isa = GetParam()});
    ASSERT_TRUE(scorer.ok()) << scorer.error().toString();
    EXPECT_EQ(scorer->isa(), GetParam());
    const Batch b = batchFor(c.model, n, 21);
    const std::size_t k = c.model.outputCount();
    std::vector<float> out(n * k);
    scorer->scoreBatch(b.features, out);
    const auto params = toDouble(c.model.parameters());
    for (std::size_t s = 0; s < n; ++s) {
      auto y = referenceForward<double>(
          c.model, params,
          std::span<const float>(b.features)
              .subspan(s * c.model.featureCount(), c.model.featureCount()));
      if (c.model.task() == Task::Classification) y = softmax(y);
      for (std::size_t j = 0; j < k; ++j) {
        EXPECT_NEAR(out[s * k + j], y[j], 1e-5 * std::max(1.0, std::abs(y[j])))
            << "sample " << s << " output " << j;
      }
      // One sample at a time (the matrix-vector path) agrees with the batch.
      std::vector<float> single(k);
      scorer->score(std::span<const float>(b.features)
                        .subspan(s * c.model.featureCount(), c.model.featureCount()),
                    single);
      for (std::size_t j = 0; j < k; ++j) EXPECT_NEAR(single[j], out[s * k + j], 1e-6);
    }
  }
}

TEST_P(ModelMath, ForwardOfBuiltInArchitecturesMatchesReference) {
  for (const char* spec : {"lenet", "mlp:784-128-10", "logreg:784-10"}) {
    SCOPED_TRACE(spec);
    auto model = createModel(spec, {.inputShape = {1, 28, 28}});
    ASSERT_TRUE(model.ok()) << model.error().toString();
    // Non-zero biases, so the bias paths count.
    for (std::size_t t = 1; t < model->tensorSizes().size(); t += 2) {
      fillUniform(model->parameters().subspan(model->tensorOffsets()[t], model->tensorSizes()[t]),
                  -0.1f, 0.1f, static_cast<std::uint32_t>(t));
    }
    auto scorer = Scorer::prepare(*model, {.maxBatch = 3, .isa = GetParam()});
    ASSERT_TRUE(scorer.ok());
    const auto pixels = uniform(3 * 784, 0.0f, 255.0f, 6);
    std::vector<float> out(30);
    scorer->scoreBatch(pixels, out);
    const auto params = toDouble(model->parameters());
    for (std::size_t s = 0; s < 3; ++s) {
      const auto y = softmax(referenceForward<double>(
          *model, params, std::span<const float>(pixels).subspan(s * 784, 784)));
      for (std::size_t j = 0; j < 10; ++j) EXPECT_NEAR(out[s * 10 + j], y[j], 2e-5);
    }
  }
}

// Largest |a - b| relative to the largest |b|: one number that a wrong
// entry anywhere moves.
double relativeError(std::span<const double> a, std::span<const double> b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

TEST_P(ModelMath, GradientsMatchCentralFiniteDifferences) {
  // The engine computes in float: its gradients carry ~1e-6 relative
  // rounding. The finite differences run on the double reference with
  // h = 1e-6 (truncation ~h^2, rounding ~1e-16 / h): accurate to ~1e-9.
  // A tolerance of 1e-4 sits between the two and is checked below to
  // reject a gradient that is off by 0.1% in one entry.
  constexpr double kTolerance = 1e-4;
  constexpr double kStep = 1e-6;
  for (Case& c : cases()) {
    SCOPED_TRACE(c.name);
    constexpr std::size_t n = 3;
    const Batch b = batchFor(c.model, n, 31);
    auto trainer = Trainer::prepare(c.model, {.batchSize = n, .isa = GetParam()});
    ASSERT_TRUE(trainer.ok()) << trainer.error().toString();
    const bool classification = c.model.task() == Task::Classification;
    auto loss = classification ? trainer->computeGradients(b.features, b.labels)
                               : trainer->computeGradientsRegression(b.features, b.targets);
    ASSERT_TRUE(loss.ok()) << loss.error().toString();
    const std::vector<double> analytic = toDouble(trainer->gradients());

    std::vector<double> params = toDouble(c.model.parameters());
    const double reference =
        referenceLoss<double>(c.model, params, b.features, b.labels, b.targets);
    EXPECT_NEAR(*loss, reference, 1e-5 * std::max(1.0, reference));

    std::vector<double> numeric(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const double saved = params[i];
      params[i] = saved + kStep;
      const double up = referenceLoss<double>(c.model, params, b.features, b.labels, b.targets);
      params[i] = saved - kStep;
      const double down = referenceLoss<double>(c.model, params, b.features, b.labels, b.targets);
      params[i] = saved;
      numeric[i] = (up - down) / (2 * kStep);
    }
    // Every tensor must have a gradient worth checking.
    for (std::size_t t = 0; t < c.model.tensorSizes().size(); ++t) {
      double largest = 0;
      for (std::size_t i = 0; i < c.model.tensorSizes()[t]; ++i) {
        largest = std::max(largest, std::abs(numeric[c.model.tensorOffsets()[t] + i]));
      }
      EXPECT_GT(largest, 1e-4) << "tensor " << t << " has a vanishing gradient";
    }
    EXPECT_LT(relativeError(analytic, numeric), kTolerance);

    // The tolerance is tight enough to see a 0.1% error in one entry.
    std::vector<double> wrong = analytic;
    const auto biggest = static_cast<std::size_t>(
        std::max_element(numeric.begin(), numeric.end(),
                         [](double x, double y) { return std::abs(x) < std::abs(y); }) -
        numeric.begin());
    wrong[biggest] *= 1.001;
    EXPECT_GT(relativeError(wrong, numeric), kTolerance);
  }
}

TEST_P(ModelMath, SubsetGradientsEqualTheFullGradientOnTheirTensors) {
  for (Case& c : cases()) {
    if (c.model.task() != Task::Classification) continue;
    SCOPED_TRACE(c.name);
    const Batch b = batchFor(c.model, 4, 41);
    auto full = Trainer::prepare(c.model, {.batchSize = 4, .isa = GetParam()});
    ASSERT_TRUE(full.ok());
    ASSERT_TRUE(full->computeGradients(b.features, b.labels).ok());
    for (TrainableSet set : {TrainableSet::Head, TrainableSet::Bias}) {
      auto subset =
          Trainer::prepare(c.model, {.batchSize = 4, .trainable = set, .isa = GetParam()});
      ASSERT_TRUE(subset.ok());
      ASSERT_TRUE(subset->computeGradients(b.features, b.labels).ok());
      std::size_t selected = 0;
      for (std::size_t t = 0; t < c.model.tensorSizes().size(); ++t) {
        const std::size_t offset = c.model.tensorOffsets()[t];
        for (std::size_t i = 0; i < c.model.tensorSizes()[t]; ++i) {
          const float got = subset->gradients()[offset + i];
          if (subset->trainable(t)) {
            EXPECT_NEAR(got, full->gradients()[offset + i], 1e-6);
          } else {
            EXPECT_EQ(got, 0.0f);
          }
        }
        selected += subset->trainable(t);
      }
      EXPECT_EQ(selected, set == TrainableSet::Head ? 2u : c.model.tensorSizes().size() / 2);
    }
  }
}

TEST_P(ModelMath, KernelBuildsAgreeWithEachOther) {
  if (GetParam() == KernelIsa::Generic) GTEST_SKIP() << "compares against generic";
  Model model = cases()[3].model;
  const Batch b = batchFor(model, 6, 51);
  auto generic = Trainer::prepare(model, {.batchSize = 6, .isa = KernelIsa::Generic});
  auto other = Trainer::prepare(model, {.batchSize = 6, .isa = GetParam()});
  ASSERT_TRUE(generic.ok() && other.ok());
  ASSERT_TRUE(generic->computeGradients(b.features, b.labels).ok());
  ASSERT_TRUE(other->computeGradients(b.features, b.labels).ok());
  EXPECT_LT(relativeError(toDouble(other->gradients()), toDouble(generic->gradients())), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Isa, ModelMath,
                         ::testing::Values(KernelIsa::Generic, KernelIsa::Avx2, KernelIsa::Avx512),
                         isaTestName);

TEST(ModelMathIsa, AutoResolvesToAnAvailableBuild) {
  const KernelIsa resolved = resolveKernelIsa(KernelIsa::Auto);
  EXPECT_NE(resolved, KernelIsa::Auto);
  EXPECT_TRUE(kernelIsaAvailable(resolved));
  EXPECT_TRUE(kernelIsaAvailable(KernelIsa::Generic));
}

TEST(ModelMathIsa, UnavailableBuildIsRejectedAtPrepare) {
  for (KernelIsa isa : {KernelIsa::Avx2, KernelIsa::Avx512}) {
    if (kernelIsaAvailable(isa)) continue;
    auto model = createModel("logreg:4-3");
    auto scorer = Scorer::prepare(*model, {.isa = isa});
    ASSERT_FALSE(scorer.ok());
    EXPECT_EQ(scorer.code(), Code::InvalidArgument);
  }
}

// The vectorized scan finds the first NaN or infinity wherever it lies:
// inside a block, on either side of a block boundary, at the ends.
TEST(FirstNonFinite, FindsTheFirstOffenderAtEveryPosition) {
  EXPECT_EQ(firstNonFinite({}), 0u);
  std::vector<float> v(3000, 1.5f);
  v[7] = std::numeric_limits<float>::denorm_min();  // finite, tiny
  v[8] = -std::numeric_limits<float>::max();        // finite, huge
  EXPECT_EQ(firstNonFinite(v), v.size());
  EXPECT_TRUE(allFinite(v));
  const float bad[] = {
      std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
      -std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::quiet_NaN()};
  for (float b : bad) {
    for (std::size_t at : {std::size_t{0}, std::size_t{1}, std::size_t{1023}, std::size_t{1024},
                           std::size_t{1025}, std::size_t{2047}, std::size_t{2999}}) {
      std::vector<float> w = v;
      w[at] = b;
      if (at + 5 < w.size()) w[at + 5] = b;  // a later one is not reported
      EXPECT_EQ(firstNonFinite(w), at) << "at " << at;
      EXPECT_FALSE(allFinite(w));
    }
  }
}

TEST(ModelMathSoftmax, ExtremeLogitsStayFinite) {
  auto model = createModel("logreg:2-3");
  ASSERT_TRUE(model.ok());
  // Logits of +-1e4: a naive exp overflows.
  auto p = model->parameters();
  std::fill(p.begin(), p.end(), 0.0f);
  p[0] = 1e4f;
  p[3] = -1e4f;
  auto scorer = Scorer::prepare(*model);
  ASSERT_TRUE(scorer.ok());
  std::vector<float> out(3);
  const float x[] = {1.0f, 0.0f};
  scorer->score(x, out);
  EXPECT_FLOAT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(argmax(out), 0u);
  auto trainer = Trainer::prepare(*model, {.batchSize = 1});
  ASSERT_TRUE(trainer.ok());
  const std::int32_t label[] = {1};
  auto loss = trainer->computeGradients(x, label);
  ASSERT_TRUE(loss.ok());
  EXPECT_NEAR(*loss, 1e4f, 1.0f);
  for (float g : trainer->gradients()) EXPECT_TRUE(std::isfinite(g));
}

}  // namespace
}  // namespace edgefl
