#include "edgefl/shared/model.hpp"

#include <sodium.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <optional>

#include "edgefl/shared/arch.hpp"
#include "model_engine.hpp"

namespace edgefl {

static_assert(std::endian::native == std::endian::little,
              "parameters are hashed and sent as their in-memory float32 bytes");

namespace {

// Product of dimensions, or nullopt when it overflows 64 bits.
std::optional<std::uint64_t> product(std::initializer_list<std::uint64_t> factors) {
  std::uint64_t out = 1;
  for (std::uint64_t f : factors) {
    if (__builtin_mul_overflow(out, f, &out)) return std::nullopt;
  }
  return out;
}

std::string str(std::uint64_t v) {
  return std::to_string(v);
}

std::string floatText(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

std::string layerName(std::size_t index, const Layer& layer) {
  return "layer " + str(index) + " (" + std::string(layerKindName(layer.kind)) + ")";
}

struct Shape {
  std::uint64_t size = 0;
  bool spatial = false;  // channels x height x width are known
  std::uint64_t channels = 0, height = 0, width = 0;

  std::string text() const {
    if (!spatial) return str(size);
    return str(channels) + "x" + str(height) + "x" + str(width);
  }
};

Status checkSpatialInput(std::size_t index, const Layer& layer, const Shape& current,
                         std::uint64_t inputSize) {
  if (inputSize != current.size ||
      (current.spatial && (current.channels != layer.channels || current.height != layer.inHeight ||
                           current.width != layer.inWidth))) {
    return makeError(Code::ShapeMismatch, layerName(index, layer) + " expects input " +
                                              str(layer.channels) + "x" + str(layer.inHeight) +
                                              "x" + str(layer.inWidth) +
                                              "; the previous output is " + current.text());
  }
  return {};
}

Status checkFiniteList(std::span<const float> values, std::string_view what) {
  if (const std::size_t i = firstNonFinite(values); i < values.size()) {
    return makeError(Code::NonFinite,
                     std::string(what) + "[" + str(i) + "] = " + floatText(values[i]));
  }
  return {};
}

template <typename T>
Status checkListSize(const std::vector<T>& list, std::uint64_t expected, std::string_view what,
                     bool mayBeEmpty) {
  if ((mayBeEmpty && list.empty()) || list.size() == expected) return {};
  return makeError(Code::ShapeMismatch, std::string(what) + " has " + str(list.size()) +
                                            " entries; expected " + str(expected) +
                                            (mayBeEmpty ? " or none" : ""));
}

Status checkText(const std::string& text, std::string_view what, const ModelLimits& limits) {
  if (text.size() > limits.maxTextBytes) {
    return makeError(Code::BadModel, std::string(what) + " is " + str(text.size()) +
                                         " bytes; limit is " + str(limits.maxTextBytes));
  }
  // Cap'n Proto text may hold NUL bytes, but a model written back stops at
  // the first one, and the parameter digest separates arch from parameters
  // with a NUL: such a model would not survive its own round trip.
  if (const auto nul = text.find('\0'); nul != std::string::npos) {
    return makeError(Code::BadModel, std::string(what) + " has a NUL byte at offset " + str(nul));
  }
  return {};
}

struct TensorLayout {
  std::vector<std::uint32_t> sizes;
  std::vector<std::size_t> offsets;
  std::size_t total = 0;
};

// Only for layers that passed checkLayers (sizes within maxParameters).
TensorLayout layoutOf(const std::vector<Layer>& layers) {
  TensorLayout out;
  for (const Layer& layer : layers) {
    if (!layer.hasParameters()) continue;
    for (std::uint64_t size : {layer.weightSize(), layer.biasSize()}) {
      out.offsets.push_back(out.total);
      out.sizes.push_back(static_cast<std::uint32_t>(size));
      out.total += static_cast<std::size_t>(size);
    }
  }
  return out;
}

}  // namespace

std::string_view taskName(Task task) {
  switch (task) {
    case Task::Classification: return "classification";
    case Task::Regression: return "regression";
  }
  return "unknown";
}

std::string_view layerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::Dense: return "dense";
    case LayerKind::Relu: return "relu";
    case LayerKind::Conv2D: return "conv2d";
    case LayerKind::MaxPool2D: return "maxpool2d";
    case LayerKind::Flatten: return "flatten";
  }
  return "unknown";
}

Layer Layer::dense(std::uint32_t inputs, std::uint32_t outputs) {
  Layer l;
  l.kind = LayerKind::Dense;
  l.inputs = inputs;
  l.outputs = outputs;
  return l;
}

Layer Layer::relu(std::uint32_t count) {
  Layer l;
  l.kind = LayerKind::Relu;
  l.inputs = count;
  return l;
}

Layer Layer::conv2d(std::uint32_t inChannels, std::uint32_t outChannels, std::uint32_t kernel,
                    std::uint32_t stride, std::uint32_t padding, std::uint32_t inHeight,
                    std::uint32_t inWidth) {
  Layer l;
  l.kind = LayerKind::Conv2D;
  l.channels = inChannels;
  l.outChannels = outChannels;
  l.kernel = kernel;
  l.stride = stride;
  l.padding = padding;
  l.inHeight = inHeight;
  l.inWidth = inWidth;
  return l;
}

Layer Layer::maxPool2d(std::uint32_t channels, std::uint32_t size, std::uint32_t stride,
                       std::uint32_t inHeight, std::uint32_t inWidth) {
  Layer l;
  l.kind = LayerKind::MaxPool2D;
  l.channels = channels;
  l.kernel = size;
  l.stride = stride;
  l.inHeight = inHeight;
  l.inWidth = inWidth;
  return l;
}

Layer Layer::flatten(std::uint32_t count) {
  Layer l;
  l.kind = LayerKind::Flatten;
  l.inputs = count;
  return l;
}

std::uint64_t Layer::outHeight() const {
  const std::uint64_t padded = std::uint64_t{inHeight} + 2ull * padding;
  if (stride == 0 || padded < kernel) return 0;
  return (padded - kernel) / stride + 1;
}

std::uint64_t Layer::outWidth() const {
  const std::uint64_t padded = std::uint64_t{inWidth} + 2ull * padding;
  if (stride == 0 || padded < kernel) return 0;
  return (padded - kernel) / stride + 1;
}

std::uint64_t Layer::inputSize() const {
  switch (kind) {
    case LayerKind::Dense:
    case LayerKind::Relu:
    case LayerKind::Flatten: return inputs;
    case LayerKind::Conv2D:
    case LayerKind::MaxPool2D: return std::uint64_t{channels} * inHeight * inWidth;
  }
  return 0;
}

std::uint64_t Layer::outputSize() const {
  switch (kind) {
    case LayerKind::Dense: return outputs;
    case LayerKind::Relu:
    case LayerKind::Flatten: return inputs;
    case LayerKind::Conv2D: return std::uint64_t{outChannels} * outHeight() * outWidth();
    case LayerKind::MaxPool2D: return std::uint64_t{channels} * outHeight() * outWidth();
  }
  return 0;
}

std::uint64_t Layer::weightSize() const {
  switch (kind) {
    case LayerKind::Dense: return std::uint64_t{outputs} * inputs;
    case LayerKind::Conv2D: return std::uint64_t{outChannels} * channels * kernel * kernel;
    default: return 0;
  }
}

std::uint64_t Layer::biasSize() const {
  switch (kind) {
    case LayerKind::Dense: return outputs;
    case LayerKind::Conv2D: return outChannels;
    default: return 0;
  }
}

Status checkLayers(std::span<const Layer> layers, std::uint32_t featureCount,
                   std::span<const std::uint32_t> shape, const ModelLimits& limits) {
  if (layers.empty()) return makeError(Code::BadModel, "model has no layers");
  if (layers.size() > limits.maxLayers) {
    return makeError(Code::TooLarge, "model has " + str(layers.size()) + " layers; limit is " +
                                         str(limits.maxLayers));
  }
  if (featureCount == 0) return makeError(Code::BadModel, "featureCount is 0");
  if (featureCount > limits.maxFeatures) {
    return makeError(Code::TooLarge, "featureCount " + str(featureCount) + " is over the limit " +
                                         str(limits.maxFeatures));
  }
  Shape current;
  current.size = featureCount;
  if (shape.size() == 3) {
    current.spatial = true;
    current.channels = shape[0];
    current.height = shape[1];
    current.width = shape[2];
  }
  std::uint64_t parameters = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    const std::string name = layerName(i, l);
    Shape next;
    switch (l.kind) {
      case LayerKind::Dense:
        if (l.inputs == 0 || l.outputs == 0) {
          return makeError(Code::BadModel, name + " has inputs=" + str(l.inputs) +
                                               " outputs=" + str(l.outputs) + "; both must be > 0");
        }
        if (l.inputs != current.size) {
          return makeError(Code::ShapeMismatch, name + " expects " + str(l.inputs) +
                                                    " inputs; the previous output has " +
                                                    str(current.size));
        }
        next.size = l.outputs;
        break;
      case LayerKind::Relu:
      case LayerKind::Flatten:
        if (l.inputs == 0) return makeError(Code::BadModel, name + " has element count 0");
        if (l.inputs != current.size) {
          return makeError(Code::ShapeMismatch, name + " expects " + str(l.inputs) +
                                                    " elements; the previous output has " +
                                                    str(current.size));
        }
        next = current;
        if (l.kind == LayerKind::Flatten) next.spatial = false;
        break;
      case LayerKind::Conv2D:
      case LayerKind::MaxPool2D: {
        const bool conv = l.kind == LayerKind::Conv2D;
        if (l.channels == 0 || l.kernel == 0 || l.stride == 0 || l.inHeight == 0 ||
            l.inWidth == 0 || (conv && l.outChannels == 0)) {
          return makeError(Code::BadModel,
                           name + " has a zero dimension: channels=" + str(l.channels) +
                               (conv ? " outChannels=" + str(l.outChannels) : "") +
                               " kernel=" + str(l.kernel) + " stride=" + str(l.stride) +
                               " inHeight=" + str(l.inHeight) + " inWidth=" + str(l.inWidth));
        }
        if (conv && l.padding >= l.kernel) {
          return makeError(Code::BadModel,
                           name + " has padding " + str(l.padding) + " >= kernel " + str(l.kernel));
        }
        if (!conv && l.padding != 0) {
          return makeError(Code::BadModel, name + " has padding " + str(l.padding));
        }
        if (l.outHeight() == 0 || l.outWidth() == 0) {
          return makeError(Code::BadModel, name + " window " + str(l.kernel) +
                                               " does not fit the input " + str(l.inHeight) + "x" +
                                               str(l.inWidth) + " with padding " + str(l.padding));
        }
        const auto inputSize = product({l.channels, l.inHeight, l.inWidth});
        EDGEFL_TRY(checkSpatialInput(i, l, current, inputSize.value_or(0)));
        next.spatial = true;
        next.channels = conv ? l.outChannels : l.channels;
        next.height = l.outHeight();
        next.width = l.outWidth();
        next.size = product({next.channels, next.height, next.width}).value_or(UINT64_MAX);
        if (conv) {
          const auto im2col = product({l.channels, l.kernel, l.kernel, next.height, next.width});
          if (!im2col || *im2col > limits.maxActivations) {
            return makeError(Code::TooLarge, name + " needs an im2col buffer of " +
                                                 (im2col ? str(*im2col) : "> 2^64") +
                                                 " floats; limit is " + str(limits.maxActivations));
          }
        }
        break;
      }
      default:
        return makeError(Code::BadModel,
                         "layer " + str(i) + " has unknown kind " + str(static_cast<int>(l.kind)));
    }
    if (next.size > limits.maxActivations) {
      return makeError(Code::TooLarge, name + " outputs " + str(next.size) +
                                           " elements per sample; limit is " +
                                           str(limits.maxActivations));
    }
    if (l.hasParameters()) {
      const auto weights = l.kind == LayerKind::Dense
                               ? product({l.outputs, l.inputs})
                               : product({l.outChannels, l.channels, l.kernel, l.kernel});
      if (!weights || *weights > limits.maxParameters ||
          (parameters += *weights + l.biasSize()) > limits.maxParameters) {
        return makeError(Code::TooLarge, "parameters through " + name + " exceed the limit " +
                                             str(limits.maxParameters));
      }
    }
    current = next;
  }
  return {};
}

Result<Model> Model::fromLayers(std::string arch, Task task, std::vector<Layer> layers,
                                InputSchema schema, const ModelLimits& limits) {
  if (schema.shape.empty()) schema.shape = {schema.featureCount};
  if (schema.minValue.empty() && schema.maxValue.empty()) {
    schema.minValue.assign(schema.featureCount, -FLT_MAX);
    schema.maxValue.assign(schema.featureCount, FLT_MAX);
  }
  EDGEFL_TRY(checkLayers(layers, schema.featureCount, schema.shape, limits));
  Model model;
  TensorLayout layout = layoutOf(layers);
  model.arch_ = std::move(arch);
  model.task_ = task;
  model.outputCount_ = static_cast<std::uint32_t>(layers.back().outputSize());
  model.layers_ = std::move(layers);
  model.parameters_.assign(layout.total, 0.0f);
  model.tensorSizes_ = std::move(layout.sizes);
  model.tensorOffsets_ = std::move(layout.offsets);
  model.schema_ = std::move(schema);
  EDGEFL_TRY(validateModel(model, limits));
  return model;
}

std::size_t firstNonFinite(std::span<const float> values) {
  // NaN and infinity are the floats whose exponent bits are all ones.
  constexpr std::uint32_t kExponent = 0x7f800000u;
  constexpr std::size_t kBlock = 1024;
  for (std::size_t start = 0; start < values.size(); start += kBlock) {
    const std::size_t end = std::min(values.size(), start + kBlock);
    std::uint32_t bad = 0;
    for (std::size_t i = start; i < end; ++i) {
      bad |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(values[i]) & kExponent) ==
                                        kExponent);
    }
    if (bad == 0) continue;
    for (std::size_t i = start; i < end; ++i) {
      if (!std::isfinite(values[i])) return i;
    }
  }
  return values.size();
}

Status validateModel(const Model& model, const ModelLimits& limits) {
  const InputSchema& schema = model.inputSchema();
  if (model.arch().empty()) return makeError(Code::BadModel, "arch is empty");
  EDGEFL_TRY(checkText(model.arch(), "arch", limits));
  if (model.task() != Task::Classification && model.task() != Task::Regression) {
    return makeError(Code::BadModel,
                     "task " + str(static_cast<unsigned>(model.task())) + " is not known");
  }
  if (schema.shape.empty() || schema.shape.size() > 3) {
    return makeError(Code::ShapeMismatch, "input shape has " + str(schema.shape.size()) +
                                              " dimensions; expected 1 to 3");
  }
  std::optional<std::uint64_t> elements = 1;
  std::string shapeText;
  for (std::uint32_t d : schema.shape) {
    if (elements) elements = product({*elements, d});
    if (!shapeText.empty()) shapeText += 'x';
    shapeText += str(d);
  }
  if (elements != schema.featureCount) {
    return makeError(Code::ShapeMismatch,
                     "input shape " + shapeText + " has " + (elements ? str(*elements) : "> 2^64") +
                         " elements; featureCount is " + str(schema.featureCount));
  }
  EDGEFL_TRY(checkLayers(model.layers(), schema.featureCount, schema.shape, limits));
  // The arch string is hashed into the digest and shown to operators, so a
  // known spec must describe the layers it names.
  if (auto arch = parseArch(model.arch()); arch.ok() && arch->layers != model.layers()) {
    return makeError(Code::BadModel, "the layers do not match arch \"" + model.arch() + "\"");
  }
  assert(model.parameterCount() == layoutOf(model.layers()).total);
  const std::uint32_t outputs = model.outputCount();
  if (model.task() == Task::Classification && outputs < 2) {
    return makeError(Code::BadModel,
                     "a classification model needs >= 2 outputs; it has " + str(outputs));
  }

  const std::uint32_t features = schema.featureCount;
  EDGEFL_TRY(checkListSize(schema.names, features, "inputSchema.names", true));
  for (const std::string& name : schema.names)
    EDGEFL_TRY(checkText(name, "a feature name", limits));
  EDGEFL_TRY(checkListSize(schema.minValue, features, "inputSchema.minValue", false));
  EDGEFL_TRY(checkListSize(schema.maxValue, features, "inputSchema.maxValue", false));
  EDGEFL_TRY(checkFiniteList(schema.minValue, "inputSchema.minValue"));
  EDGEFL_TRY(checkFiniteList(schema.maxValue, "inputSchema.maxValue"));
  for (std::size_t i = 0; i < features; ++i) {
    if (schema.minValue[i] > schema.maxValue[i]) {
      return makeError(Code::BadModel, "feature " + str(i) + " has an empty range [" +
                                           floatText(schema.minValue[i]) + ", " +
                                           floatText(schema.maxValue[i]) + "]");
    }
  }

  const Preprocessing& pre = model.preprocessing();
  EDGEFL_TRY(checkListSize(pre.shift, features, "preprocessing.shift", true));
  EDGEFL_TRY(checkListSize(pre.scale, features, "preprocessing.scale", true));
  EDGEFL_TRY(checkFiniteList(pre.shift, "preprocessing.shift"));
  EDGEFL_TRY(checkFiniteList(pre.scale, "preprocessing.scale"));

  const ReferenceStats& stats = model.referenceStats();
  EDGEFL_TRY(checkListSize(stats.mean, features, "referenceStats.mean", true));
  EDGEFL_TRY(checkListSize(stats.std, features, "referenceStats.std", true));
  EDGEFL_TRY(checkFiniteList(stats.mean, "referenceStats.mean"));
  EDGEFL_TRY(checkFiniteList(stats.std, "referenceStats.std"));
  for (std::size_t i = 0; i < stats.std.size(); ++i) {
    if (stats.std[i] < 0) {
      return makeError(Code::BadModel,
                       "referenceStats.std[" + str(i) + "] = " + floatText(stats.std[i]) + " < 0");
    }
  }
  if (stats.histogramBins > limits.maxHistogramBins) {
    return makeError(Code::TooLarge, "referenceStats.histogramBins " + str(stats.histogramBins) +
                                         " is over the limit " + str(limits.maxHistogramBins));
  }
  EDGEFL_TRY(checkListSize(stats.histogram, std::uint64_t{features} * stats.histogramBins,
                           "referenceStats.histogram", true));
  EDGEFL_TRY(checkFiniteList(stats.histogram, "referenceStats.histogram"));
  for (std::size_t i = 0; i < stats.histogram.size(); ++i) {
    if (stats.histogram[i] < 0 || stats.histogram[i] > 1) {
      return makeError(Code::BadModel, "referenceStats.histogram[" + str(i) +
                                           "] = " + floatText(stats.histogram[i]) +
                                           " is not a proportion in [0, 1]");
    }
  }
  EDGEFL_TRY(checkListSize(stats.labelCounts, model.task() == Task::Classification ? outputs : 0,
                           "referenceStats.labelCounts", true));

  EDGEFL_TRY(checkListSize(model.classNames(), model.task() == Task::Classification ? outputs : 0,
                           "classNames", true));
  for (const std::string& name : model.classNames()) {
    EDGEFL_TRY(checkText(name, "a class name", limits));
  }
  const ModelMeta& meta = model.meta();
  EDGEFL_TRY(checkText(meta.fleet, "meta.fleet", limits));
  EDGEFL_TRY(checkText(meta.description, "meta.description", limits));
  EDGEFL_TRY(checkText(meta.metrics.dataset, "meta.metrics.dataset", limits));
  EDGEFL_TRY(
      checkListSize(meta.metrics.perClassAccuracy, outputs, "meta.metrics.perClassAccuracy", true));
  EDGEFL_TRY(
      checkListSize(meta.metrics.perClassCount, outputs, "meta.metrics.perClassCount", true));

  const std::span<const float> params = model.parameters();
  if (const std::size_t i = firstNonFinite(params); i < params.size()) {
    // Name the tensor: the detail is what an operator reads in a rejection.
    std::size_t tensor = 0;
    const auto offsets = model.tensorOffsets();
    while (tensor + 1 < offsets.size() && offsets[tensor + 1] <= i) ++tensor;
    std::size_t layer = 0;
    for (std::size_t seen = 0; layer < model.layers().size(); ++layer) {
      if (!model.layers()[layer].hasParameters()) continue;
      if (seen + 2 > tensor) break;
      seen += 2;
    }
    return makeError(Code::NonFinite, layerName(layer, model.layers()[layer]) + " " +
                                          (tensor % 2 == 0 ? "weight" : "bias") + "[" +
                                          str(i - offsets[tensor]) + "] = " + floatText(params[i]));
  }
  return {};
}

Digest parameterDigest(const Model& model) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, kDigestBytes);
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(model.arch().data()),
                            model.arch().size());
  const unsigned char zero = 0;
  crypto_generichash_update(&state, &zero, 1);
  const auto params = model.parameters();
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(params.data()),
                            params.size_bytes());
  Digest out{};
  crypto_generichash_final(&state, out.data(), out.size());
  return out;
}

namespace detail {

Status checkDataset(const Model& model, const Dataset& data,
                    std::span<const std::uint32_t> indices) {
  if (data.featureCount != model.featureCount()) {
    return makeError(Code::ShapeMismatch,
                     "dataset " + data.name + " has " + str(data.featureCount) +
                         " features; the model expects " + str(model.featureCount()));
  }
  const std::size_t n = data.size();
  if (data.features.size() != n * data.featureCount) {
    return makeError(Code::ShapeMismatch,
                     "dataset " + data.name + " has " + str(data.features.size()) +
                         " feature values, not a multiple of " + str(data.featureCount));
  }
  for (std::uint32_t i : indices) {
    if (i >= n) {
      return makeError(Code::OutOfRange, "sample index " + str(i) + " is beyond the " + str(n) +
                                             " samples of " + data.name);
    }
  }
  if ((indices.empty() ? n : indices.size()) == 0) {
    return makeError(Code::InvalidArgument, "dataset " + data.name + " has no samples");
  }
  return {};
}

}  // namespace detail

Result<ReferenceStats> computeReferenceStats(const Model& model, const Dataset& data,
                                             std::uint16_t bins,
                                             std::span<const std::uint32_t> indices) {
  const ModelLimits limits;
  if (bins == 0 || bins > limits.maxHistogramBins) {
    return makeError(Code::InvalidArgument, "histogram bins " + str(bins) + " not in [1, " +
                                                str(limits.maxHistogramBins) + "]");
  }
  EDGEFL_TRY(detail::checkDataset(model, data, indices));
  const std::size_t features = data.featureCount;
  const std::size_t count = indices.empty() ? data.size() : indices.size();
  const bool classification = model.task() == Task::Classification;
  if (classification && data.labels.size() != data.size()) {
    return makeError(Code::ShapeMismatch, "dataset " + data.name + " has " +
                                              str(data.labels.size()) + " labels for " +
                                              str(data.size()) + " samples");
  }
  const InputSchema& schema = model.inputSchema();
  std::vector<double> sum(features, 0.0), sumSq(features, 0.0);
  std::vector<std::uint64_t> hist(features * bins, 0);
  ReferenceStats out;
  out.sampleCount = count;
  out.histogramBins = bins;
  if (classification) out.labelCounts.assign(model.outputCount(), 0);
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t s = indices.empty() ? k : indices[k];
    const auto row = data.sample(s);
    for (std::size_t f = 0; f < features; ++f) {
      const double v = row[f];
      if (!std::isfinite(v)) {
        return makeError(Code::NonFinite, "dataset " + data.name + " sample " + str(s) +
                                              " feature " + str(f) + " = " + floatText(row[f]));
      }
      sum[f] += v;
      sumSq[f] += v * v;
      const double lo = schema.minValue[f];
      const double width = static_cast<double>(schema.maxValue[f]) - lo;
      const double position = width > 0 ? (v - lo) / width * bins : 0.0;
      const std::size_t bin =
          position <= 0 ? 0 : std::min<std::size_t>(bins - 1, static_cast<std::size_t>(position));
      ++hist[f * bins + bin];
    }
    if (classification) {
      const std::int32_t label = data.labels[s];
      if (label < 0 || static_cast<std::uint32_t>(label) >= model.outputCount()) {
        return makeError(Code::OutOfRange, "dataset " + data.name + " sample " + str(s) +
                                               " has label " + std::to_string(label) +
                                               "; the model has " + str(model.outputCount()) +
                                               " classes");
      }
      ++out.labelCounts[static_cast<std::size_t>(label)];
    }
  }
  out.mean.resize(features);
  out.std.resize(features);
  for (std::size_t f = 0; f < features; ++f) {
    const double mean = sum[f] / static_cast<double>(count);
    const double var = std::max(0.0, sumSq[f] / static_cast<double>(count) - mean * mean);
    out.mean[f] = static_cast<float>(mean);
    out.std[f] = static_cast<float>(std::sqrt(var));
  }
  out.histogram.resize(hist.size());
  for (std::size_t i = 0; i < hist.size(); ++i) {
    out.histogram[i] =
        static_cast<float>(static_cast<double>(hist[i]) / static_cast<double>(count));
  }
  return out;
}

Status fitStandardization(Model& model, const Dataset& data,
                          std::span<const std::uint32_t> indices) {
  auto stats = computeReferenceStats(model, data, 1, indices);
  if (!stats.ok()) return stats.error();
  Preprocessing& pre = model.preprocessing();
  pre.shift = stats->mean;
  pre.scale.resize(stats->std.size());
  for (std::size_t f = 0; f < stats->std.size(); ++f) {
    // A constant (or nearly constant) feature carries no information;
    // scale 1 keeps it finite.
    const float inverse = stats->std[f] > 0 ? 1.0f / stats->std[f] : 1.0f;
    pre.scale[f] = std::isfinite(inverse) ? inverse : 1.0f;
  }
  return {};
}

}  // namespace edgefl
