#include "edgefl/shared/arch.hpp"

#include <cmath>
#include <optional>

#include "model_random.hpp"

namespace edgefl {
namespace {

constexpr std::uint32_t kMaxArchSize = 1u << 20;

Error badArch(std::string_view spec, const std::string& why) {
  return makeError(Code::BadArch, "arch \"" + std::string(spec) + "\": " + why);
}

// Decimal in [1, kMaxArchSize], no sign, no leading zero.
std::optional<std::uint32_t> parseSize(std::string_view text) {
  if (text.empty() || text.size() > 7 || text[0] == '0') return std::nullopt;
  std::uint32_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (v > kMaxArchSize) return std::nullopt;
  return v;
}

Result<std::vector<std::uint32_t>> parseSizes(std::string_view spec, std::string_view list) {
  std::vector<std::uint32_t> sizes;
  std::size_t start = 0;
  while (true) {
    const std::size_t dash = list.find('-', start);
    const std::string_view item =
        list.substr(start, dash == std::string_view::npos ? std::string_view::npos : dash - start);
    const auto size = parseSize(item);
    if (!size) {
      return badArch(
          spec, "size \"" + std::string(item) + "\" is not a decimal integer from 1 to 1048576");
    }
    sizes.push_back(*size);
    if (sizes.size() > 32) return badArch(spec, "more than 32 sizes");
    if (dash == std::string_view::npos) break;
    start = dash + 1;
  }
  return sizes;
}

}  // namespace

Result<Architecture> parseArch(std::string_view spec) {
  Architecture arch;
  arch.spec = std::string(spec);
  if (spec == "lenet") {
    arch.inputShape = {1, 28, 28};
    arch.outputCount = 10;
    arch.layers = {
        Layer::conv2d(1, 6, 5, 1, 0, 28, 28),
        Layer::relu(6 * 24 * 24),
        Layer::maxPool2d(6, 2, 2, 24, 24),
        Layer::conv2d(6, 16, 5, 1, 0, 12, 12),
        Layer::relu(16 * 8 * 8),
        Layer::maxPool2d(16, 2, 2, 8, 8),
        Layer::flatten(16 * 4 * 4),
        Layer::dense(16 * 4 * 4, 120),
        Layer::relu(120),
        Layer::dense(120, 84),
        Layer::relu(84),
        Layer::dense(84, 10),
    };
    return arch;
  }
  const std::size_t colon = spec.find(':');
  if (colon == std::string_view::npos) {
    return badArch(spec, "expected logreg:IN-OUT, mlp:IN-H1-...-OUT or lenet");
  }
  const std::string_view family = spec.substr(0, colon);
  auto sizes = parseSizes(spec, spec.substr(colon + 1));
  if (!sizes.ok()) return sizes.error();
  const std::vector<std::uint32_t>& n = sizes.value();
  if (family == "logreg") {
    if (n.size() != 2) {
      return badArch(spec,
                     "logreg takes exactly 2 sizes (IN-OUT); got " + std::to_string(n.size()));
    }
  } else if (family == "mlp") {
    if (n.size() < 3) {
      return badArch(spec, "mlp takes IN-H1-...-OUT with at least one hidden layer; got " +
                               std::to_string(n.size()) + " sizes (use logreg:IN-OUT for none)");
    }
  } else {
    return badArch(spec,
                   "unknown family \"" + std::string(family) + "\"; expected logreg, mlp or lenet");
  }
  for (std::size_t i = 0; i + 1 < n.size(); ++i) {
    if (i > 0) arch.layers.push_back(Layer::relu(n[i]));
    arch.layers.push_back(Layer::dense(n[i], n[i + 1]));
  }
  arch.inputShape = {n.front()};
  arch.outputCount = n.back();
  return arch;
}

void initializeParameters(Model& model, std::uint64_t seed) {
  const auto params = model.parameters();
  const auto offsets = model.tensorOffsets();
  const auto sizes = model.tensorSizes();
  std::size_t lastDense = 0;
  for (std::size_t i = 0; i < model.layers().size(); ++i) {
    if (model.layers()[i].kind == LayerKind::Dense) lastDense = i;
  }
  std::size_t tensor = 0;
  for (std::size_t i = 0; i < model.layers().size(); ++i) {
    const Layer& l = model.layers()[i];
    if (!l.hasParameters()) continue;
    const double fanIn =
        l.kind == LayerKind::Dense ? double(l.inputs) : double(l.channels) * l.kernel * l.kernel;
    const double fanOut = l.kind == LayerKind::Dense ? double(l.outputs) : 0.0;
    const bool head = l.kind == LayerKind::Dense && i == lastDense;
    const float bound =
        static_cast<float>(head ? std::sqrt(6.0 / (fanIn + fanOut)) : std::sqrt(6.0 / fanIn));
    // Seeding each tensor from (seed, index) keeps a tensor's values
    // independent of the sizes of the tensors before it.
    detail::SplitMix64 rng(seed ^ (0xD1B54A32D192ED03ull * (tensor + 1)));
    float* w = params.data() + offsets[tensor];
    for (std::size_t k = 0; k < sizes[tensor]; ++k) w[k] = (2.0f * rng.uniform() - 1.0f) * bound;
    float* b = params.data() + offsets[tensor + 1];
    for (std::size_t k = 0; k < sizes[tensor + 1]; ++k) b[k] = 0.0f;
    tensor += 2;
  }
}

Result<Model> createModel(std::string_view spec, const ModelOptions& options) {
  auto parsed = parseArch(spec);
  if (!parsed.ok()) return parsed.error();
  Architecture& arch = parsed.value();
  InputSchema schema;
  schema.featureCount = static_cast<std::uint32_t>(arch.layers.front().inputSize());
  schema.shape = options.inputShape.empty() ? arch.inputShape : options.inputShape;
  std::uint64_t elements = 1;
  for (std::uint32_t d : schema.shape) {
    if (__builtin_mul_overflow(elements, d, &elements)) elements = 0;  // 0 never fits
  }
  if (schema.shape.size() > 3 || elements != schema.featureCount) {
    return badArch(spec, "input shape with " + std::to_string(schema.shape.size()) +
                             " dimensions and " + std::to_string(elements) +
                             " elements does not fit " + std::to_string(schema.featureCount) +
                             " inputs");
  }
  const bool image = schema.shape.size() == 3;
  if (image) {
    schema.minValue.assign(schema.featureCount, 0.0f);
    schema.maxValue.assign(schema.featureCount, 255.0f);
  }
  if (options.task == Task::Classification && arch.outputCount < 2) {
    return badArch(spec, "a classification model needs >= 2 outputs; it has " +
                             std::to_string(arch.outputCount));
  }
  if (!options.classNames.empty() &&
      (options.task != Task::Classification || options.classNames.size() != arch.outputCount)) {
    return badArch(spec, std::to_string(options.classNames.size()) +
                             " class names for a model with " + std::to_string(arch.outputCount) +
                             " " + std::string(taskName(options.task)) + " outputs");
  }
  auto model =
      Model::fromLayers(arch.spec, options.task, std::move(arch.layers), std::move(schema));
  if (!model.ok()) return badArch(spec, model.error().toString());
  if (image) {
    model->preprocessing().shift.assign(model->featureCount(), 0.0f);
    model->preprocessing().scale.assign(model->featureCount(), 1.0f / 255.0f);
  }
  model->classNames() = options.classNames;
  model->meta().seed = options.seed;
  initializeParameters(model.value(), options.seed);
  return model;
}

}  // namespace edgefl
