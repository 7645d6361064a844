// Model <-> wire::Model, bytes and model files.

#include <capnp/message.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>

#include "edgefl/shared/model.hpp"

namespace edgefl {
namespace {

std::string str(std::uint64_t v) {
  return std::to_string(v);
}

std::string shapeText(std::span<const std::uint64_t> dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + str(dims[i]);
  return out + "]";
}

template <typename List>
std::string shapeText(List list) {
  std::string out = "[";
  for (unsigned i = 0; i < list.size(); ++i) out += (i ? ", " : "") + str(list[i]);
  return out + "]";
}

void writeFloats(capnp::List<float>::Builder out, std::span<const float> values) {
  for (std::size_t i = 0; i < values.size(); ++i) out.set(static_cast<unsigned>(i), values[i]);
}

std::vector<float> readFloats(capnp::List<float>::Reader in) {
  std::vector<float> out(in.size());
  for (unsigned i = 0; i < in.size(); ++i) out[i] = in[i];
  return out;
}

void writeTensor(wire::Tensor::Builder out, std::initializer_list<std::uint32_t> shape,
                 const float* data, std::size_t count) {
  auto dims = out.initShape(static_cast<unsigned>(shape.size()));
  unsigned i = 0;
  for (std::uint32_t d : shape) dims.set(i++, d);
  auto bytes = out.initData(static_cast<unsigned>(count * sizeof(float)));
  std::memcpy(bytes.begin(), data, count * sizeof(float));
}

// Checks a tensor against the shape its layer implies and copies its data.
Status readTensor(wire::Tensor::Reader in, std::span<const std::uint64_t> expected, float* dst,
                  const std::string& what) {
  auto dims = in.getShape();
  bool same = dims.size() == expected.size();
  for (unsigned i = 0; same && i < dims.size(); ++i) same = dims[i] == expected[i];
  if (!same) {
    return makeError(Code::ShapeMismatch,
                     what + " shape is " + shapeText(dims) + "; expected " + shapeText(expected));
  }
  std::uint64_t count = 1;
  for (std::uint64_t d : expected) count *= d;  // bounded by checkLayers
  auto data = in.getData();
  if (data.size() != count * sizeof(float)) {
    return makeError(Code::ShapeMismatch,
                     what + " has " + str(data.size()) + " bytes of data; expected " +
                         str(count * sizeof(float)) + " (" + str(count) + " float32)");
  }
  std::memcpy(dst, data.begin(), data.size());
  return {};
}

wire::Task taskToWire(Task task) {
  return task == Task::Regression ? wire::Task::REGRESSION : wire::Task::CLASSIFICATION;
}

void metricsToWire(const Metrics& m, wire::Metrics::Builder out) {
  out.setSampleCount(m.sampleCount);
  out.setAccuracy(m.accuracy);
  out.setLoss(m.loss);
  writeFloats(out.initPerClassAccuracy(static_cast<unsigned>(m.perClassAccuracy.size())),
              m.perClassAccuracy);
  auto counts = out.initPerClassCount(static_cast<unsigned>(m.perClassCount.size()));
  for (unsigned i = 0; i < counts.size(); ++i) counts.set(i, m.perClassCount[i]);
  out.setDataset(m.dataset);
}

Metrics metricsFromWire(wire::Metrics::Reader in) {
  Metrics m;
  m.sampleCount = in.getSampleCount();
  m.accuracy = in.getAccuracy();
  m.loss = in.getLoss();
  m.perClassAccuracy = readFloats(in.getPerClassAccuracy());
  for (std::uint64_t c : in.getPerClassCount()) m.perClassCount.push_back(c);
  m.dataset = in.getDataset();
  return m;
}

// Words for a builder whose first segment holds the whole model: parameters
// plus per-feature lists plus slack for names and small fields.
unsigned builderWords(const Model& model) {
  std::size_t bytes = model.parameterCount() * sizeof(float);
  const std::size_t features = model.featureCount();
  bytes += features * sizeof(float) * (6 + model.referenceStats().histogramBins);
  for (const std::string& name : model.inputSchema().names) bytes += name.size() + 16;
  for (const std::string& name : model.classNames()) bytes += name.size() + 16;
  bytes += model.layers().size() * 128 + 4096;
  return static_cast<unsigned>(bytes / sizeof(capnp::word) + 1);
}

}  // namespace

void modelToWire(const Model& model, wire::Model::Builder out) {
  out.setFormatVersion(kModelFormatVersion);
  out.setArch(model.arch());
  out.setTask(taskToWire(model.task()));
  out.setOutputCount(model.outputCount());

  const InputSchema& schema = model.inputSchema();
  auto s = out.initInputSchema();
  s.setFeatureCount(schema.featureCount);
  auto shape = s.initShape(static_cast<unsigned>(schema.shape.size()));
  for (unsigned i = 0; i < shape.size(); ++i) shape.set(i, schema.shape[i]);
  if (!schema.names.empty()) {
    auto names = s.initNames(static_cast<unsigned>(schema.names.size()));
    for (unsigned i = 0; i < names.size(); ++i) names.set(i, schema.names[i]);
  }
  writeFloats(s.initMinValue(static_cast<unsigned>(schema.minValue.size())), schema.minValue);
  writeFloats(s.initMaxValue(static_cast<unsigned>(schema.maxValue.size())), schema.maxValue);

  const Preprocessing& pre = model.preprocessing();
  auto p = out.initPreprocessing();
  writeFloats(p.initShift(static_cast<unsigned>(pre.shift.size())), pre.shift);
  writeFloats(p.initScale(static_cast<unsigned>(pre.scale.size())), pre.scale);

  const float* params = model.parameters().data();
  const auto offsets = model.tensorOffsets();
  auto layers = out.initLayers(static_cast<unsigned>(model.layers().size()));
  std::size_t tensor = 0;
  for (unsigned i = 0; i < layers.size(); ++i) {
    const Layer& l = model.layers()[i];
    auto w = layers[i];
    switch (l.kind) {
      case LayerKind::Dense: {
        auto d = w.initDense();
        d.setInputs(l.inputs);
        d.setOutputs(l.outputs);
        writeTensor(d.initWeight(), {l.outputs, l.inputs}, params + offsets[tensor],
                    l.weightSize());
        writeTensor(d.initBias(), {l.outputs}, params + offsets[tensor + 1], l.biasSize());
        tensor += 2;
        break;
      }
      case LayerKind::Relu: w.setRelu(l.inputs); break;
      case LayerKind::Conv2D: {
        auto c = w.initConv2d();
        c.setInChannels(l.channels);
        c.setOutChannels(l.outChannels);
        c.setKernel(l.kernel);
        c.setStride(l.stride);
        c.setPadding(l.padding);
        c.setInHeight(l.inHeight);
        c.setInWidth(l.inWidth);
        writeTensor(c.initWeight(), {l.outChannels, l.channels, l.kernel, l.kernel},
                    params + offsets[tensor], l.weightSize());
        writeTensor(c.initBias(), {l.outChannels}, params + offsets[tensor + 1], l.biasSize());
        tensor += 2;
        break;
      }
      case LayerKind::MaxPool2D: {
        auto m = w.initMaxPool2d();
        m.setChannels(l.channels);
        m.setSize(l.kernel);
        m.setStride(l.stride);
        m.setInHeight(l.inHeight);
        m.setInWidth(l.inWidth);
        break;
      }
      case LayerKind::Flatten: w.setFlatten(l.inputs); break;
    }
  }

  const ReferenceStats& stats = model.referenceStats();
  auto r = out.initReferenceStats();
  r.setSampleCount(stats.sampleCount);
  writeFloats(r.initMean(static_cast<unsigned>(stats.mean.size())), stats.mean);
  writeFloats(r.initStd(static_cast<unsigned>(stats.std.size())), stats.std);
  r.setHistogramBins(stats.histogramBins);
  writeFloats(r.initHistogram(static_cast<unsigned>(stats.histogram.size())), stats.histogram);
  auto labels = r.initLabelCounts(static_cast<unsigned>(stats.labelCounts.size()));
  for (unsigned i = 0; i < labels.size(); ++i) labels.set(i, stats.labelCounts[i]);

  const ModelMeta& meta = model.meta();
  auto m = out.initMeta();
  m.setVersion(meta.version);
  m.setParentVersion(meta.parentVersion);
  const Digest digest = parameterDigest(model);
  m.setDigest(kj::arrayPtr(digest.data(), digest.size()));
  m.setCreatedAt(meta.createdAt);
  m.setFleet(meta.fleet);
  m.setRound(meta.round);
  metricsToWire(meta.metrics, m.initMetrics());
  m.setDescription(meta.description);
  m.setSeed(meta.seed);

  if (!model.classNames().empty()) {
    auto names = out.initClassNames(static_cast<unsigned>(model.classNames().size()));
    for (unsigned i = 0; i < names.size(); ++i) names.set(i, model.classNames()[i]);
  }
}

Result<Model> modelFromWire(wire::Model::Reader in, const ModelLimits& limits) {
  if (in.getFormatVersion() != kModelFormatVersion) {
    return makeError(Code::Unsupported, "model formatVersion " + str(in.getFormatVersion()) +
                                            "; this build reads " + str(kModelFormatVersion));
  }
  const auto arch = in.getArch();
  if (arch.size() == 0) return makeError(Code::BadModel, "arch is empty");
  if (arch.size() > limits.maxTextBytes) {
    return makeError(Code::BadModel, "arch is " + str(arch.size()) + " bytes; limit is " +
                                         str(limits.maxTextBytes));
  }
  Task task;
  switch (in.getTask()) {
    case wire::Task::CLASSIFICATION: task = Task::Classification; break;
    case wire::Task::REGRESSION: task = Task::Regression; break;
    default:
      return makeError(Code::BadModel,
                       "task " + str(static_cast<unsigned>(in.getTask())) + " is not known");
  }

  const auto s = in.getInputSchema();
  InputSchema schema;
  schema.featureCount = s.getFeatureCount();
  if (s.getShape().size() == 0 || s.getShape().size() > 3) {
    return makeError(Code::ShapeMismatch, "input shape has " + str(s.getShape().size()) +
                                              " dimensions; expected 1 to 3");
  }
  for (std::uint32_t d : s.getShape()) schema.shape.push_back(d);
  if (s.getMinValue().size() != schema.featureCount ||
      s.getMaxValue().size() != schema.featureCount) {
    return makeError(Code::ShapeMismatch,
                     "inputSchema.minValue/maxValue have " + str(s.getMinValue().size()) + "/" +
                         str(s.getMaxValue().size()) + " entries; expected featureCount " +
                         str(schema.featureCount));
  }
  schema.minValue = readFloats(s.getMinValue());
  schema.maxValue = readFloats(s.getMaxValue());
  const auto names = s.getNames();
  if (names.size() != 0 && names.size() != schema.featureCount) {
    return makeError(Code::ShapeMismatch, "inputSchema.names has " + str(names.size()) +
                                              " entries; expected " + str(schema.featureCount) +
                                              " or none");
  }
  for (auto name : names) {
    if (name.size() > limits.maxTextBytes) {
      return makeError(Code::BadModel, "a feature name is " + str(name.size()) +
                                           " bytes; limit is " + str(limits.maxTextBytes));
    }
    schema.names.emplace_back(name.cStr(), name.size());
  }

  const auto wireLayers = in.getLayers();
  if (wireLayers.size() > limits.maxLayers) {
    return makeError(Code::TooLarge, "model has " + str(wireLayers.size()) + " layers; limit is " +
                                         str(limits.maxLayers));
  }
  std::vector<Layer> layers;
  layers.reserve(wireLayers.size());
  for (unsigned i = 0; i < wireLayers.size(); ++i) {
    const auto w = wireLayers[i];
    switch (w.which()) {
      case wire::Layer::DENSE: {
        const auto d = w.getDense();
        layers.push_back(Layer::dense(d.getInputs(), d.getOutputs()));
        break;
      }
      case wire::Layer::RELU: layers.push_back(Layer::relu(w.getRelu())); break;
      case wire::Layer::CONV2D: {
        const auto c = w.getConv2d();
        layers.push_back(Layer::conv2d(c.getInChannels(), c.getOutChannels(), c.getKernel(),
                                       c.getStride(), c.getPadding(), c.getInHeight(),
                                       c.getInWidth()));
        break;
      }
      case wire::Layer::MAX_POOL2D: {
        const auto m = w.getMaxPool2d();
        layers.push_back(Layer::maxPool2d(m.getChannels(), m.getSize(), m.getStride(),
                                          m.getInHeight(), m.getInWidth()));
        break;
      }
      case wire::Layer::FLATTEN: layers.push_back(Layer::flatten(w.getFlatten())); break;
      default:
        return makeError(Code::BadModel, "layer " + str(i) + " has unknown kind " +
                                             str(static_cast<unsigned>(w.which())));
    }
  }

  auto built = Model::fromLayers(std::string(arch.cStr(), arch.size()), task, std::move(layers),
                                 std::move(schema), limits);
  if (!built.ok()) return built.error();
  Model model = std::move(built.value());
  if (in.getOutputCount() != model.outputCount()) {
    return makeError(Code::ShapeMismatch, "outputCount is " + str(in.getOutputCount()) +
                                              "; the last layer outputs " +
                                              str(model.outputCount()));
  }

  float* params = model.parameters().data();
  const auto offsets = model.tensorOffsets();
  std::size_t tensor = 0;
  for (unsigned i = 0; i < wireLayers.size(); ++i) {
    const Layer& l = model.layers()[i];
    const std::string name = "layer " + str(i) + " (" + std::string(layerKindName(l.kind)) + ")";
    if (l.kind == LayerKind::Dense) {
      const auto d = wireLayers[i].getDense();
      const std::uint64_t weightShape[] = {l.outputs, l.inputs};
      const std::uint64_t biasShape[] = {l.outputs};
      EDGEFL_TRY(
          readTensor(d.getWeight(), weightShape, params + offsets[tensor], name + " weight"));
      EDGEFL_TRY(readTensor(d.getBias(), biasShape, params + offsets[tensor + 1], name + " bias"));
      tensor += 2;
    } else if (l.kind == LayerKind::Conv2D) {
      const auto c = wireLayers[i].getConv2d();
      const std::uint64_t weightShape[] = {l.outChannels, l.channels, l.kernel, l.kernel};
      const std::uint64_t biasShape[] = {l.outChannels};
      EDGEFL_TRY(
          readTensor(c.getWeight(), weightShape, params + offsets[tensor], name + " weight"));
      EDGEFL_TRY(readTensor(c.getBias(), biasShape, params + offsets[tensor + 1], name + " bias"));
      tensor += 2;
    }
  }

  const auto p = in.getPreprocessing();
  model.preprocessing().shift = readFloats(p.getShift());
  model.preprocessing().scale = readFloats(p.getScale());

  const auto r = in.getReferenceStats();
  ReferenceStats& stats = model.referenceStats();
  stats.sampleCount = r.getSampleCount();
  stats.mean = readFloats(r.getMean());
  stats.std = readFloats(r.getStd());
  stats.histogramBins = r.getHistogramBins();
  stats.histogram = readFloats(r.getHistogram());
  for (std::uint64_t c : r.getLabelCounts()) stats.labelCounts.push_back(c);

  const auto classNames = in.getClassNames();
  for (auto name : classNames) model.classNames().emplace_back(name.cStr(), name.size());

  const auto m = in.getMeta();
  ModelMeta& meta = model.meta();
  meta.version = m.getVersion();
  meta.parentVersion = m.getParentVersion();
  meta.createdAt = m.getCreatedAt();
  meta.fleet = m.getFleet();
  meta.round = m.getRound();
  meta.metrics = metricsFromWire(m.getMetrics());
  meta.description = m.getDescription();
  meta.seed = m.getSeed();

  EDGEFL_TRY(validateModel(model, limits));

  const Digest computed = parameterDigest(model);
  const auto digest = m.getDigest();
  if (digest.size() != 0 && digest.size() != kDigestBytes) {
    return makeError(Code::BadModel,
                     "meta.digest is " + str(digest.size()) + " bytes; expected 32 or none");
  }
  if (digest.size() == kDigestBytes &&
      std::memcmp(digest.begin(), computed.data(), kDigestBytes) != 0) {
    return makeError(Code::BadModel,
                     "meta.digest " + toHex(ByteView(digest.begin(), digest.size())) +
                         " does not match the parameters, which hash to " + toHex(computed));
  }
  meta.digest = computed;
  return model;
}

Bytes modelToBytes(const Model& model) {
  capnp::MallocMessageBuilder builder(builderWords(model));
  modelToWire(model, builder.initRoot<wire::Model>());
  return toBytes(builder);
}

Result<Model> modelFromBytes(ByteView bytes, const DecodeLimits& decode,
                             const ModelLimits& limits) {
  auto parsed = parseMessage<wire::Model>(bytes, decode);
  if (!parsed.ok()) return parsed.error();
  std::optional<Result<Model>> model;
  Status walked =
      detail::guardedWalk([&] { model.emplace(modelFromWire(parsed->root(), limits)); });
  if (!walked.ok()) return walked.error();
  return std::move(*model);
}

namespace {

std::string errnoText(std::string_view what, const std::filesystem::path& path) {
  return std::string(what) + " " + path.string() + ": " + std::strerror(errno);
}

Status writeAll(int fd, const std::uint8_t* data, std::size_t size,
                const std::filesystem::path& path) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return makeError(Code::IoError, errnoText("cannot write", path));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

Status saveModel(const Model& model, const std::filesystem::path& path) {
  const Bytes bytes = modelToBytes(model);
  std::filesystem::path temp = path;
  temp += ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return makeError(Code::IoError, errnoText("cannot create", temp));
  Status written = writeAll(fd, bytes.data(), bytes.size(), temp);
  if (written.ok() && ::fsync(fd) != 0) {
    written = makeError(Code::IoError, errnoText("cannot sync", temp));
  }
  if (::close(fd) != 0 && written.ok()) {
    written = makeError(Code::IoError, errnoText("cannot close", temp));
  }
  if (written.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    written = makeError(Code::IoError, errnoText("cannot rename into", path));
  }
  if (!written.ok()) {
    ::unlink(temp.c_str());
    return written;
  }
  // The rename is durable only once the directory entry is.
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0) return makeError(Code::IoError, errnoText("cannot open directory", dir));
  const bool synced = ::fsync(dirFd) == 0;
  ::close(dirFd);
  if (!synced) return makeError(Code::IoError, errnoText("cannot sync directory", dir));
  return {};
}

Result<Model> loadModel(const std::filesystem::path& path, const DecodeLimits& decode,
                        const ModelLimits& limits) {
  auto bytes = readFileBytes(path.string(), decode.maxBytes);
  if (!bytes.ok()) return bytes.error();
  return modelFromBytes(bytes.value(), decode, limits);
}

}  // namespace edgefl
