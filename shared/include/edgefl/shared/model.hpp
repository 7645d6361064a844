#pragma once
// A model: a stack of layers, its float32 parameters in one contiguous
// buffer, the input schema and preprocessing, reference statistics of the
// training data, and metadata; its wire form (wire::Model) and model files.
//
// Parameter layout (the "wire order" that deltas and digests rely on): for
// each Dense or Conv2D layer in stack order, its weight tensor then its bias
// tensor, packed with no gaps. Dense weight is [outputs, inputs] row-major;
// Conv2D weight is [outChannels, inChannels, kernel, kernel] row-major.
// Activations are per-sample CHW (channel, row, column), so Flatten reads
// CHW order, as in PyTorch.
//
// Architectures from spec strings and initialization: arch.hpp. Scoring:
// model_scorer.hpp. Training and evaluation: train.hpp.

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl {

inline constexpr std::uint16_t kModelFormatVersion = 1;

enum class Task : std::uint8_t {
  Classification,  // softmax + cross-entropy over outputCount classes
  Regression,      // linear outputs + mean squared error
};
std::string_view taskName(Task task);

enum class LayerKind : std::uint8_t { Dense, Relu, Conv2D, MaxPool2D, Flatten };
std::string_view layerKindName(LayerKind kind);

// One layer. Fields a kind does not use stay zero.
struct Layer {
  LayerKind kind = LayerKind::Dense;
  std::uint32_t inputs = 0;       // Dense inputs; element count of Relu and Flatten
  std::uint32_t outputs = 0;      // Dense outputs
  std::uint32_t channels = 0;     // Conv2D input channels; MaxPool2D channels
  std::uint32_t outChannels = 0;  // Conv2D
  std::uint32_t kernel = 0;       // Conv2D kernel side; MaxPool2D window side
  std::uint32_t stride = 0;       // Conv2D, MaxPool2D
  std::uint32_t padding = 0;      // Conv2D (zero padding on every side)
  std::uint32_t inHeight = 0;     // Conv2D, MaxPool2D
  std::uint32_t inWidth = 0;      // Conv2D, MaxPool2D

  static Layer dense(std::uint32_t inputs, std::uint32_t outputs);
  static Layer relu(std::uint32_t count);
  static Layer conv2d(std::uint32_t inChannels, std::uint32_t outChannels, std::uint32_t kernel,
                      std::uint32_t stride, std::uint32_t padding, std::uint32_t inHeight,
                      std::uint32_t inWidth);
  static Layer maxPool2d(std::uint32_t channels, std::uint32_t size, std::uint32_t stride,
                         std::uint32_t inHeight, std::uint32_t inWidth);
  static Layer flatten(std::uint32_t count);

  // Derived sizes, in 64 bits so that no combination of uint32 fields wraps
  // before validation has bounded them. Only meaningful for a layer that
  // passed validation (checkLayers); output sides are 0 when the window does
  // not fit.
  std::uint64_t outHeight() const;
  std::uint64_t outWidth() const;
  std::uint64_t inputSize() const;   // elements per sample
  std::uint64_t outputSize() const;  // elements per sample
  std::uint64_t weightSize() const;  // 0 for layers without parameters
  std::uint64_t biasSize() const;
  bool hasParameters() const { return kind == LayerKind::Dense || kind == LayerKind::Conv2D; }

  bool operator==(const Layer&) const = default;
};

// Limits on what a model may ask of the process that prepares it. Defaults:
// DecodeLimits::maxBytes (16 MiB) holds a 4M-parameter model; our models
// have 10^4-10^6 parameters.
struct ModelLimits {
  std::uint64_t maxParameters = 4'000'000;
  std::uint32_t maxLayers = 64;  // lenet has 12
  // 2^20 features is a 1024x1024 image; a wider row is a wrong file.
  std::uint32_t maxFeatures = 1u << 20;
  std::uint32_t maxOutputs = 1u << 16;
  // Largest activation of one layer for one sample (floats). Workspaces are
  // maxBatch times this; 2^22 floats is 16 MiB per sample.
  std::uint64_t maxActivations = 1u << 22;
  std::uint16_t maxHistogramBins = 256;
  std::size_t maxTextBytes = 4096;  // arch, names, fleet, description
};

struct InputSchema {
  std::uint32_t featureCount = 0;
  std::vector<std::uint32_t> shape{};  // [featureCount] tabular; [C, H, W] images
  std::vector<std::string> names{};    // empty or featureCount entries
  std::vector<float> minValue{};       // featureCount entries: valid range, inclusive
  std::vector<float> maxValue{};
};

// x' = (x - shift) * scale per feature, in training and in scoring alike.
// An empty list means identity (shift 0, scale 1).
struct Preprocessing {
  std::vector<float> shift;
  std::vector<float> scale;
};

// Statistics of the raw training features (before preprocessing), for
// drift detection on devices.
struct ReferenceStats {
  std::uint64_t sampleCount = 0;
  std::vector<float> mean;  // empty or featureCount entries
  std::vector<float> std;   // population standard deviation
  // Per feature, histogramBins equal-width bins over [minValue, maxValue]
  // of the input schema; values outside the range count in the edge bins.
  // Entries are proportions of sampleCount, feature-major.
  std::uint16_t histogramBins = 0;
  std::vector<float> histogram;
  std::vector<std::uint64_t> labelCounts;  // classification: outputCount entries
};

struct Metrics {
  std::uint64_t sampleCount = 0;
  float accuracy = 0;                        // classification only
  float loss = 0;                            // mean cross-entropy or mean squared error
  std::vector<float> perClassAccuracy;       // classification: outputCount entries
  std::vector<std::uint64_t> perClassCount;  // samples per true class
  std::string dataset;
};

struct ModelMeta {
  std::uint64_t version = 0;
  std::uint64_t parentVersion = 0;
  Digest digest{};  // parameterDigest(); modelToWire writes the current one
  std::int64_t createdAt = 0;
  std::string fleet;
  std::uint64_t round = 0;
  Metrics metrics;
  std::string description;
  std::uint64_t seed = 0;
};

class Model {
 public:
  Model() = default;

  // A model with the given layer stack and zeroed parameters. The schema's
  // featureCount must equal the first layer's input size and its shape
  // product must equal featureCount; when the schema has no ranges they
  // become [-FLT_MAX, FLT_MAX]. Errors: BadModel / ShapeMismatch (the layer
  // chain, see checkLayers), TooLarge (over `limits`).
  static Result<Model> fromLayers(std::string arch, Task task, std::vector<Layer> layers,
                                  InputSchema schema, const ModelLimits& limits = {});

  const std::string& arch() const { return arch_; }
  Task task() const { return task_; }
  const std::vector<Layer>& layers() const { return layers_; }
  std::uint32_t featureCount() const { return schema_.featureCount; }
  std::uint32_t outputCount() const { return outputCount_; }

  // All parameters, wire order. The size never changes after construction,
  // so spans and pointers into it stay valid while the model lives (moving
  // the model keeps the buffer).
  std::span<float> parameters() { return parameters_; }
  std::span<const float> parameters() const { return parameters_; }
  std::size_t parameterCount() const { return parameters_.size(); }
  // Element count of each parameter tensor in wire order (weight, bias per
  // Dense/Conv2D layer); they sum to parameterCount().
  std::span<const std::uint32_t> tensorSizes() const { return tensorSizes_; }
  // Offset of each tensor in parameters(), same order.
  std::span<const std::size_t> tensorOffsets() const { return tensorOffsets_; }

  // Editable description; validateModel checks it against the layers.
  InputSchema& inputSchema() { return schema_; }
  const InputSchema& inputSchema() const { return schema_; }
  Preprocessing& preprocessing() { return preprocessing_; }
  const Preprocessing& preprocessing() const { return preprocessing_; }
  ReferenceStats& referenceStats() { return stats_; }
  const ReferenceStats& referenceStats() const { return stats_; }
  std::vector<std::string>& classNames() { return classNames_; }
  const std::vector<std::string>& classNames() const { return classNames_; }
  ModelMeta& meta() { return meta_; }
  const ModelMeta& meta() const { return meta_; }

 private:
  std::string arch_;
  Task task_ = Task::Classification;
  std::vector<Layer> layers_;
  std::uint32_t outputCount_ = 0;
  std::vector<float> parameters_;
  std::vector<std::uint32_t> tensorSizes_;
  std::vector<std::size_t> tensorOffsets_;
  InputSchema schema_;
  Preprocessing preprocessing_;
  ReferenceStats stats_;
  std::vector<std::string> classNames_;
  ModelMeta meta_;
};

// Checks that a layer stack chains from `featureCount` inputs (with the
// input `shape`, [C,H,W] or flat): every dimension non-zero, windows fit,
// each layer's input equals the previous output (CHW exactly between
// spatial layers), sizes within `limits`. Errors: BadModel for a layer that
// cannot exist (zero dimension, padding >= kernel, window larger than the
// input), ShapeMismatch for a broken chain, TooLarge over a limit.
Status checkLayers(std::span<const Layer> layers, std::uint32_t featureCount,
                   std::span<const std::uint32_t> shape, const ModelLimits& limits = {});

// Everything a prepared model relies on: checkLayers, list sizes against
// featureCount and outputCount (ShapeMismatch), finite parameters,
// preprocessing and statistics (NonFinite), ranges min <= max, histogram
// proportions in [0, 1], text sizes (BadModel), limits (TooLarge).
Status validateModel(const Model& model, const ModelLimits& limits = {});

// Index of the first NaN or infinity in `values`, or values.size(). The
// all-finite case, by far the common one, runs as a branch-free vectorized
// scan; only a block that fails is searched element by element.
std::size_t firstNonFinite(std::span<const float> values);
inline bool allFinite(std::span<const float> values) {
  return firstNonFinite(values) == values.size();
}

// BLAKE2b-256 over the arch string, one zero byte, then the parameters as
// float32 little-endian bytes. Identifies the exact weights a device runs
// and an update was computed against.
Digest parameterDigest(const Model& model);

// Fills `out`; meta.digest is set to parameterDigest(model). Tensors are
// written with one bulk copy each. The model should pass validateModel:
// modelFromWire rejects what it rejects.
void modelToWire(const Model& model, wire::Model::Builder out);
// Reads and validates (validateModel) a wire model. A meta.digest that is
// present must equal the parameter digest (BadModel). May throw
// kj::Exception on a reader that was not walked (parseMessage walks it);
// modelFromBytes never throws.
Result<Model> modelFromWire(wire::Model::Reader in, const ModelLimits& limits = {});

// The flat-array bytes of a wire::Model: the content of a model file and of
// Deployment.model.
Bytes modelToBytes(const Model& model);
// Never throws or crashes on any input. Errors: those of parseMessage
// (Empty, Truncated, TooLarge, NotCapnp, TooDeep, TraversalLimit), then
// Unsupported (formatVersion), BadModel, ShapeMismatch, NonFinite, TooLarge;
// the detail names the layer, tensor or list and the offending values.
Result<Model> modelFromBytes(ByteView bytes, const DecodeLimits& decode = {},
                             const ModelLimits& limits = {});

// Writes modelToBytes(model) to `path` atomically: a temporary file beside
// it, fsync, rename, fsync of the directory. IoError on failure (the
// previous file, if any, is left intact).
Status saveModel(const Model& model, const std::filesystem::path& path);
// IoError, TooLarge (file over decode.maxBytes), or modelFromBytes' errors.
Result<Model> loadModel(const std::filesystem::path& path, const DecodeLimits& decode = {},
                        const ModelLimits& limits = {});

// Reference statistics of `data` (or of the samples listed in `indices`)
// for `model`'s schema: mean, population std, histograms with `bins` bins
// per feature over the schema's [min, max], label counts (classification).
// Errors: ShapeMismatch (featureCount), NonFinite (a feature value),
// OutOfRange (a label or an index), InvalidArgument (bins 0 or over
// ModelLimits::maxHistogramBins, no samples).
Result<ReferenceStats> computeReferenceStats(const Model& model, const Dataset& data,
                                             std::uint16_t bins = 10,
                                             std::span<const std::uint32_t> indices = {});

// Sets tabular preprocessing to standardization from `data`: shift = mean,
// scale = 1 / std (1 for constant features). Same errors as
// computeReferenceStats.
Status fitStandardization(Model& model, const Dataset& data,
                          std::span<const std::uint32_t> indices = {});

}  // namespace edgefl
