// Model <-> wire::Model: round trips, the parameter digest, every
// validation error from a crafted bad model, model files.

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <sodium.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/model.hpp"

namespace edgefl {
namespace {

Model richModel() {
  ModelOptions options;
  options.seed = 4;
  options.classNames = {"t-shirt", "trouser", "pullover", "dress", "coat",
                        "sandal",  "shirt",   "sneaker",  "bag",   "boot"};
  Model model = createModel("lenet", options).value();
  InputSchema& schema = model.inputSchema();
  for (std::size_t i = 0; i < schema.featureCount; ++i) {
    schema.names.push_back("px" + std::to_string(i));
  }
  ReferenceStats& stats = model.referenceStats();
  stats.sampleCount = 60000;
  stats.mean.assign(784, 72.5f);
  stats.std.assign(784, 90.25f);
  stats.histogramBins = 4;
  stats.histogram.assign(784 * 4, 0.25f);
  stats.labelCounts.assign(10, 6000);
  ModelMeta& meta = model.meta();
  meta.version = 7;
  meta.parentVersion = 6;
  meta.createdAt = 1700000000;
  meta.fleet = "factory-a";
  meta.round = 12;
  meta.description = "round 12 aggregate";
  meta.metrics.sampleCount = 10000;
  meta.metrics.accuracy = 0.9f;
  meta.metrics.loss = 0.3f;
  meta.metrics.perClassAccuracy.assign(10, 0.9f);
  meta.metrics.perClassCount.assign(10, 1000);
  meta.metrics.dataset = "fashion-mnist:test";
  return model;
}

void expectSameModel(const Model& a, const Model& b) {
  EXPECT_EQ(a.arch(), b.arch());
  EXPECT_EQ(a.task(), b.task());
  EXPECT_EQ(a.layers(), b.layers());
  ASSERT_EQ(a.parameterCount(), b.parameterCount());
  EXPECT_EQ(
      std::memcmp(a.parameters().data(), b.parameters().data(), a.parameterCount() * sizeof(float)),
      0);
  EXPECT_TRUE(std::equal(a.tensorSizes().begin(), a.tensorSizes().end(), b.tensorSizes().begin(),
                         b.tensorSizes().end()));
  EXPECT_EQ(a.inputSchema().featureCount, b.inputSchema().featureCount);
  EXPECT_EQ(a.inputSchema().shape, b.inputSchema().shape);
  EXPECT_EQ(a.inputSchema().names, b.inputSchema().names);
  EXPECT_EQ(a.inputSchema().minValue, b.inputSchema().minValue);
  EXPECT_EQ(a.inputSchema().maxValue, b.inputSchema().maxValue);
  EXPECT_EQ(a.preprocessing().shift, b.preprocessing().shift);
  EXPECT_EQ(a.preprocessing().scale, b.preprocessing().scale);
  EXPECT_EQ(a.referenceStats().sampleCount, b.referenceStats().sampleCount);
  EXPECT_EQ(a.referenceStats().mean, b.referenceStats().mean);
  EXPECT_EQ(a.referenceStats().std, b.referenceStats().std);
  EXPECT_EQ(a.referenceStats().histogramBins, b.referenceStats().histogramBins);
  EXPECT_EQ(a.referenceStats().histogram, b.referenceStats().histogram);
  EXPECT_EQ(a.referenceStats().labelCounts, b.referenceStats().labelCounts);
  EXPECT_EQ(a.classNames(), b.classNames());
  EXPECT_EQ(a.meta().version, b.meta().version);
  EXPECT_EQ(a.meta().parentVersion, b.meta().parentVersion);
  EXPECT_EQ(a.meta().createdAt, b.meta().createdAt);
  EXPECT_EQ(a.meta().fleet, b.meta().fleet);
  EXPECT_EQ(a.meta().round, b.meta().round);
  EXPECT_EQ(a.meta().description, b.meta().description);
  EXPECT_EQ(a.meta().seed, b.meta().seed);
  EXPECT_EQ(a.meta().metrics.sampleCount, b.meta().metrics.sampleCount);
  EXPECT_EQ(a.meta().metrics.accuracy, b.meta().metrics.accuracy);
  EXPECT_EQ(a.meta().metrics.loss, b.meta().metrics.loss);
  EXPECT_EQ(a.meta().metrics.perClassAccuracy, b.meta().metrics.perClassAccuracy);
  EXPECT_EQ(a.meta().metrics.perClassCount, b.meta().metrics.perClassCount);
  EXPECT_EQ(a.meta().metrics.dataset, b.meta().metrics.dataset);
}

TEST(ModelWire, RoundTripKeepsEverythingBitForBit) {
  for (Model model : {richModel(), createModel("mlp:784-128-10").value(),
                      createModel("logreg:3-1", {.task = Task::Regression}).value()}) {
    SCOPED_TRACE(model.arch());
    const Bytes bytes = modelToBytes(model);
    auto back = modelFromBytes(bytes);
    ASSERT_TRUE(back.ok()) << back.error().toString();
    expectSameModel(model, *back);
    EXPECT_EQ(back->meta().digest, parameterDigest(model));
    EXPECT_EQ(modelToBytes(*back), bytes);  // re-encoding is byte-identical
  }
}

TEST(ModelWire, TensorsAreFloat32LittleEndianInWireOrder) {
  Model model = createModel("mlp:3-2-2").value();
  for (std::size_t i = 0; i < model.parameterCount(); ++i) {
    model.parameters()[i] = static_cast<float>(i) + 0.5f;
  }
  const Bytes bytes = modelToBytes(model);
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(bytes.data()),
                                        bytes.size() / sizeof(capnp::word));
  capnp::FlatArrayMessageReader reader(words);
  auto m = reader.getRoot<wire::Model>();
  ASSERT_EQ(m.getLayers().size(), 3u);
  auto w = m.getLayers()[0].getDense().getWeight();
  EXPECT_EQ(w.getShape().size(), 2u);
  EXPECT_EQ(w.getShape()[0], 2u);  // [outputs, inputs]
  EXPECT_EQ(w.getShape()[1], 3u);
  ASSERT_EQ(w.getData().size(), 24u);
  float third;
  std::memcpy(&third, w.getData().begin() + 8, 4);
  EXPECT_EQ(third, 2.5f);
  auto b = m.getLayers()[2].getDense().getBias();
  float last;
  std::memcpy(&last, b.getData().begin() + 4, 4);
  EXPECT_EQ(last, static_cast<float>(model.parameterCount() - 1) + 0.5f);
  EXPECT_EQ(m.getLayers()[1].getRelu(), 2u);
  EXPECT_EQ(m.getOutputCount(), 2u);
  EXPECT_EQ(m.getFormatVersion(), 1u);
}

TEST(ModelWire, DigestIsBlake2bOfArchZeroAndParameters) {
  Model model = createModel("mlp:4-5-3").value();
  std::vector<std::uint8_t> message(model.arch().begin(), model.arch().end());
  message.push_back(0);
  const auto* raw = reinterpret_cast<const std::uint8_t*>(model.parameters().data());
  message.insert(message.end(), raw, raw + model.parameterCount() * sizeof(float));
  Digest expected{};
  crypto_generichash(expected.data(), expected.size(), message.data(), message.size(), nullptr, 0);
  EXPECT_EQ(parameterDigest(model), expected);
  EXPECT_EQ(parameterDigest(model), parameterDigest(model));

  Model changed = model;
  changed.parameters()[7] = std::nextafter(changed.parameters()[7], 1.0f);
  EXPECT_NE(parameterDigest(changed), expected);
  // Metadata is not part of the digest.
  Model renamed = model;
  renamed.meta().description = "other";
  EXPECT_EQ(parameterDigest(renamed), expected);
}

// Copies a valid model into a builder, lets `mutate` break it, and decodes.
Result<Model> decodeMutated(const Model& model,
                            const std::function<void(wire::Model::Builder)>& mutate,
                            const ModelLimits& limits = {}) {
  const Bytes bytes = modelToBytes(model);
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(bytes.data()),
                                        bytes.size() / sizeof(capnp::word));
  capnp::FlatArrayMessageReader reader(words);
  capnp::MallocMessageBuilder builder;
  builder.setRoot(reader.getRoot<wire::Model>());
  mutate(builder.getRoot<wire::Model>());
  return modelFromBytes(toBytes(builder), {}, limits);
}

void writeFloat(capnp::Data::Builder data, std::size_t index, float value) {
  std::memcpy(data.begin() + index * sizeof(float), &value, sizeof(float));
}

struct BadCase {
  const char* name;
  std::function<void(wire::Model::Builder)> mutate;
  Code code;
  const char* detail;  // must appear in the error detail
};

TEST(ModelWire, EveryValidationErrorComesFromACraftedModel) {
  const Model mlp = createModel("mlp:4-8-3").value();
  const Model cnn = createModel("lenet").value();
  const BadCase mlpCases[] = {
      {"format version", [](auto m) { m.setFormatVersion(2); }, Code::Unsupported,
       "formatVersion 2"},
      {"empty arch", [](auto m) { m.setArch(""); }, Code::BadModel, "arch is empty"},
      {"arch of other layers", [](auto m) { m.setArch("mlp:4-9-3"); }, Code::BadModel,
       "do not match arch"},
      {"unknown task", [](auto m) { m.setTask(static_cast<wire::Task>(9)); }, Code::BadModel,
       "task 9"},
      {"no layers", [](auto m) { m.initLayers(0); }, Code::BadModel, "no layers"},
      {"broken chain", [](auto m) { m.getLayers()[2].getDense().setInputs(7); },
       Code::ShapeMismatch, "layer 2 (dense) expects 7 inputs; the previous output has 8"},
      {"zero outputs", [](auto m) { m.getLayers()[0].getDense().setOutputs(0); }, Code::BadModel,
       "outputs=0"},
      {"weight shape",
       [](auto m) {
         auto shape = m.getLayers()[0].getDense().getWeight().initShape(2);
         shape.set(0, 4);
         shape.set(1, 8);
       },
       Code::ShapeMismatch, "layer 0 (dense) weight shape is [4, 8]; expected [8, 4]"},
      {"weight bytes", [](auto m) { m.getLayers()[0].getDense().getWeight().initData(31 * 4); },
       Code::ShapeMismatch, "124 bytes of data; expected 128 (32 float32)"},
      {"bias missing", [](auto m) { m.getLayers()[2].getDense().disownBias(); },
       Code::ShapeMismatch, "layer 2 (dense) bias shape is []; expected [3]"},
      {"nan weight",
       [](auto m) { writeFloat(m.getLayers()[0].getDense().getWeight().getData(), 5, NAN); },
       Code::NonFinite, "layer 0 (dense) weight[5] = nan"},
      {"inf bias",
       [](auto m) { writeFloat(m.getLayers()[2].getDense().getBias().getData(), 1, -INFINITY); },
       Code::NonFinite, "layer 2 (dense) bias[1] = -inf"},
      {"output count", [](auto m) { m.setOutputCount(4); }, Code::ShapeMismatch,
       "outputCount is 4"},
      {"shape product", [](auto m) { m.getInputSchema().initShape(1).set(0, 5); },
       Code::ShapeMismatch, "input shape 5 has 5 elements; featureCount is 4"},
      {"feature count",
       [](auto m) {
         auto s = m.getInputSchema();
         s.setFeatureCount(5);
         s.initShape(1).set(0, 5);
         s.initMinValue(5);
         s.initMaxValue(5);
       },
       Code::ShapeMismatch, "layer 0 (dense) expects 4 inputs; the previous output has 5"},
      {"names count", [](auto m) { m.getInputSchema().initNames(3); }, Code::ShapeMismatch,
       "names has 3 entries; expected 4"},
      {"range count", [](auto m) { m.getInputSchema().initMinValue(3); }, Code::ShapeMismatch,
       "minValue/maxValue have 3/4 entries"},
      {"empty range",
       [](auto m) {
         m.getInputSchema().getMinValue().set(2, 5.0f);
         m.getInputSchema().getMaxValue().set(2, 1.0f);
       },
       Code::BadModel, "feature 2 has an empty range [5, 1]"},
      {"nan range", [](auto m) { m.getInputSchema().getMaxValue().set(0, NAN); }, Code::NonFinite,
       "inputSchema.maxValue[0] = nan"},
      {"shift count", [](auto m) { m.getPreprocessing().initShift(2); }, Code::ShapeMismatch,
       "preprocessing.shift has 2 entries; expected 4 or none"},
      {"inf scale", [](auto m) { m.getPreprocessing().initScale(4).set(3, INFINITY); },
       Code::NonFinite, "preprocessing.scale[3] = inf"},
      {"mean count", [](auto m) { m.getReferenceStats().initMean(1); }, Code::ShapeMismatch,
       "referenceStats.mean has 1 entries"},
      {"negative std", [](auto m) { m.getReferenceStats().initStd(4).set(1, -1.0f); },
       Code::BadModel, "referenceStats.std[1] = -1 < 0"},
      {"histogram size",
       [](auto m) {
         m.getReferenceStats().setHistogramBins(3);
         m.getReferenceStats().initHistogram(11);
       },
       Code::ShapeMismatch, "referenceStats.histogram has 11 entries; expected 12"},
      {"histogram value",
       [](auto m) {
         m.getReferenceStats().setHistogramBins(1);
         m.getReferenceStats().initHistogram(4).set(0, 1.5f);
       },
       Code::BadModel, "referenceStats.histogram[0] = 1.5"},
      {"histogram bins", [](auto m) { m.getReferenceStats().setHistogramBins(300); },
       Code::TooLarge, "histogramBins 300"},
      {"label counts", [](auto m) { m.getReferenceStats().initLabelCounts(2); },
       Code::ShapeMismatch, "labelCounts has 2 entries; expected 3"},
      {"class names", [](auto m) { m.initClassNames(4); }, Code::ShapeMismatch,
       "classNames has 4 entries; expected 3"},
      {"metrics", [](auto m) { m.getMeta().getMetrics().initPerClassCount(9); },
       Code::ShapeMismatch, "perClassCount has 9 entries"},
      {"digest size", [](auto m) { m.getMeta().initDigest(5); }, Code::BadModel,
       "meta.digest is 5 bytes"},
      {"digest mismatch", [](auto m) { m.getMeta().getDigest()[0] ^= 1; }, Code::BadModel,
       "does not match the parameters"},
  };
  for (const BadCase& c : mlpCases) {
    SCOPED_TRACE(c.name);
    auto r = decodeMutated(mlp, c.mutate);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.code(), c.code) << r.error().toString();
    EXPECT_NE(r.error().detail.find(c.detail), std::string::npos) << r.error().detail;
  }

  const BadCase cnnCases[] = {
      {"padding", [](auto m) { m.getLayers()[0].getConv2d().setPadding(5); }, Code::BadModel,
       "layer 0 (conv2d) has padding 5 >= kernel 5"},
      {"kernel larger than input",
       [](auto m) {
         auto c = m.getLayers()[3].getConv2d();
         c.setKernel(13);
       },
       Code::BadModel, "layer 3 (conv2d) window 13 does not fit the input 12x12"},
      {"zero stride", [](auto m) { m.getLayers()[2].getMaxPool2d().setStride(0); }, Code::BadModel,
       "layer 2 (maxpool2d) has a zero dimension"},
      {"pool channels",
       [](auto m) {
         auto p = m.getLayers()[2].getMaxPool2d();
         p.setChannels(3);
         p.setInHeight(48);
       },
       Code::ShapeMismatch,
       "layer 2 (maxpool2d) expects input 3x48x24; the previous output is 6x24x24"},
      {"conv weight shape",
       [](auto m) {
         auto shape = m.getLayers()[3].getConv2d().getWeight().initShape(4);
         shape.set(0, 16);
         shape.set(1, 6);
         shape.set(2, 25);
         shape.set(3, 1);
       },
       Code::ShapeMismatch,
       "layer 3 (conv2d) weight shape is [16, 6, 25, 1]; expected [16, 6, 5, 5]"},
      {"relu count", [](auto m) { m.getLayers()[1].setRelu(3455); }, Code::ShapeMismatch,
       "layer 1 (relu) expects 3455 elements"},
      {"flatten count", [](auto m) { m.getLayers()[6].setFlatten(0); }, Code::BadModel,
       "layer 6 (flatten) has element count 0"},
  };
  for (const BadCase& c : cnnCases) {
    SCOPED_TRACE(c.name);
    auto r = decodeMutated(cnn, c.mutate);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.code(), c.code) << r.error().toString();
    EXPECT_NE(r.error().detail.find(c.detail), std::string::npos) << r.error().detail;
  }
}

TEST(ModelWire, LimitsAreEnforced) {
  const Model model = createModel("mlp:4-8-3").value();
  ModelLimits few;
  few.maxParameters = 50;
  auto r = decodeMutated(
      model, [](auto) {}, few);
  EXPECT_EQ(r.code(), Code::TooLarge);
  EXPECT_NE(r.error().detail.find("exceed the limit 50"), std::string::npos);
  ModelLimits shallow;
  shallow.maxLayers = 2;
  EXPECT_EQ(decodeMutated(
                model, [](auto) {}, shallow)
                .code(),
            Code::TooLarge);
  ModelLimits narrow;
  narrow.maxActivations = 7;
  EXPECT_EQ(decodeMutated(
                model, [](auto) {}, narrow)
                .code(),
            Code::TooLarge);
  // A layer whose dimensions multiply past 64 bits is refused, not wrapped.
  auto huge = decodeMutated(createModel("lenet").value(), [](auto m) {
    auto c = m.getLayers()[0].getConv2d();
    c.setOutChannels(0xFFFFFFFF);
  });
  EXPECT_EQ(huge.code(), Code::TooLarge);
  // Over the decoder's byte limit: refused before parsing.
  DecodeLimits tiny;
  tiny.maxBytes = 256;
  ASSERT_GT(modelToBytes(model).size(), tiny.maxBytes);
  EXPECT_EQ(modelFromBytes(modelToBytes(model), tiny).code(), Code::TooLarge);
}

TEST(ModelWire, GarbageAndDamageNeverCrash) {
  const Bytes good = modelToBytes(createModel("mlp:6-5-3").value());
  EXPECT_EQ(modelFromBytes({}).code(), Code::Empty);
  for (std::size_t cut = 1; cut < good.size(); cut += 7) {
    auto r = modelFromBytes(ByteView(good.data(), cut));
    EXPECT_FALSE(r.ok()) << "prefix " << cut;
  }
  std::mt19937 rng(1);
  std::size_t accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    Bytes damaged = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      damaged[rng() % damaged.size()] ^= std::uint8_t(1u << (rng() % 8));
    auto r = modelFromBytes(damaged);
    if (r.ok()) {
      ++accepted;
      // Whatever is accepted is a valid model whose digest matches.
      EXPECT_TRUE(validateModel(*r).ok());
      EXPECT_EQ(r->meta().digest, parameterDigest(*r));
    }
  }
  // Flips inside the parameters change the digest, so little gets through.
  EXPECT_LT(accepted, 300u);
}

TEST(ModelWire, ModelFilesAreWrittenAtomically) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("edgefl-model-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.bin";
  const Model first = richModel();
  ASSERT_TRUE(saveModel(first, path).ok());
  Model second = createModel("mlp:784-16-10").value();
  ASSERT_TRUE(saveModel(second, path).ok());  // replaces the file
  auto loaded = loadModel(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().toString();
  expectSameModel(second, *loaded);
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1u);  // no temporary left behind

  // The file is exactly the flat-array bytes.
  std::ifstream in(path, std::ios::binary);
  const Bytes onDisk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(onDisk, modelToBytes(second));

  EXPECT_EQ(saveModel(first, dir / "missing" / "model.bin").code(), Code::IoError);
  EXPECT_EQ(loadModel(dir / "absent.bin").code(), Code::IoError);
  DecodeLimits tiny;
  tiny.maxBytes = 100;
  EXPECT_EQ(loadModel(path, tiny).code(), Code::TooLarge);
  std::ofstream(dir / "junk.bin") << "not a model at all, just text....";
  EXPECT_FALSE(loadModel(dir / "junk.bin").ok());
  std::filesystem::remove_all(dir);
}

TEST(ModelWire, ValidateModelChecksEditedMetadata) {
  Model model = createModel("mlp:4-8-3").value();
  EXPECT_TRUE(validateModel(model).ok());
  model.classNames() = {"a", "b"};
  EXPECT_EQ(validateModel(model).code(), Code::ShapeMismatch);
  model.classNames().clear();
  model.parameters()[3] = NAN;
  const Status s = validateModel(model);
  EXPECT_EQ(s.code(), Code::NonFinite);
  EXPECT_NE(s.error().detail.find("layer 0 (dense) weight[3] = nan"), std::string::npos);
  model.parameters()[3] = 0;
  model.meta().fleet.assign(5000, 'x');
  EXPECT_EQ(validateModel(model).code(), Code::BadModel);
}

TEST(ModelWire, ReferenceStatsAndStandardizationFromData) {
  Model model = createModel("logreg:2-2").value();
  model.inputSchema().minValue = {0.0f, -1.0f};
  model.inputSchema().maxValue = {4.0f, 1.0f};
  Dataset data;
  data.featureCount = 2;
  data.name = "tiny";
  data.features = {0, -1, 1, 1, 2, 0.5f, 3, 0.5f, 9, 0};  // 9 is outside [0, 4]
  data.labels = {0, 1, 1, 1, 0};
  auto stats = computeReferenceStats(model, data, 4);
  ASSERT_TRUE(stats.ok()) << stats.error().toString();
  EXPECT_EQ(stats->sampleCount, 5u);
  EXPECT_FLOAT_EQ(stats->mean[0], 3.0f);
  EXPECT_FLOAT_EQ(stats->std[0], std::sqrt(10.0f));  // values 0,1,2,3,9
  EXPECT_EQ(stats->histogramBins, 4);
  // Feature 0, bins of width 1 over [0, 4]: 0 | 1 | 2 | 3 and 9 (clamped).
  EXPECT_EQ(std::vector<float>(stats->histogram.begin(), stats->histogram.begin() + 4),
            (std::vector<float>{0.2f, 0.2f, 0.2f, 0.4f}));
  // Feature 1, bins of width 0.5 over [-1, 1]: -1 | - | 0, 0 | 0.5, 0.5, 1.
  EXPECT_EQ(std::vector<float>(stats->histogram.begin() + 4, stats->histogram.end()),
            (std::vector<float>{0.2f, 0.0f, 0.2f, 0.6f}));
  EXPECT_EQ(stats->labelCounts, (std::vector<std::uint64_t>{2, 3}));
  model.referenceStats() = *stats;
  EXPECT_TRUE(validateModel(model).ok());
  auto back = modelFromBytes(modelToBytes(model));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->referenceStats().histogram, stats->histogram);

  ASSERT_TRUE(fitStandardization(model, data).ok());
  EXPECT_FLOAT_EQ(model.preprocessing().shift[0], 3.0f);
  EXPECT_FLOAT_EQ(model.preprocessing().scale[0], 1.0f / std::sqrt(10.0f));

  EXPECT_EQ(computeReferenceStats(model, data, 0).code(), Code::InvalidArgument);
  data.features[3] = NAN;
  EXPECT_EQ(computeReferenceStats(model, data).code(), Code::NonFinite);
  data.features[3] = 0;
  data.labels[1] = 5;
  EXPECT_EQ(computeReferenceStats(model, data).code(), Code::OutOfRange);
  data.featureCount = 1;
  EXPECT_EQ(computeReferenceStats(model, data).code(), Code::ShapeMismatch);
}

}  // namespace
}  // namespace edgefl
