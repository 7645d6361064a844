#include "edgefl/shared/train.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

#include "model_engine.hpp"
#include "model_random.hpp"

namespace edgefl {
namespace {

std::string str(std::uint64_t v) {
  return std::to_string(v);
}

std::string floatText(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  return buf;
}

// Mean cross-entropy of softmax(logits) against the labels; writes
// dLoss/dLogits = (softmax - onehot) / n.
float softmaxCrossEntropy(const float* logits, const std::int32_t* labels, std::size_t n,
                          std::size_t k, float* grad) {
  double total = 0.0;
  const float inverseN = 1.0f / static_cast<float>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float* row = logits + i * k;
    float* g = grad + i * k;
    float top = row[0];
    for (std::size_t j = 1; j < k; ++j) top = std::max(top, row[j]);
    float sum = 0.0f;
    for (std::size_t j = 0; j < k; ++j) {
      g[j] = std::exp(row[j] - top);
      sum += g[j];
    }
    const auto label = static_cast<std::size_t>(labels[i]);
    total += static_cast<double>(top) + std::log(static_cast<double>(sum)) - row[label];
    const float scale = inverseN / sum;
    for (std::size_t j = 0; j < k; ++j) g[j] *= scale;
    g[label] -= inverseN;
  }
  return static_cast<float>(total / static_cast<double>(n));
}

// Mean of (y - t)^2 over `count` values; writes 2 (y - t) / count.
float meanSquaredError(const float* y, const float* targets, std::size_t count, float* grad) {
  double total = 0.0;
  const float scale = 2.0f / static_cast<float>(count);
  for (std::size_t i = 0; i < count; ++i) {
    const float d = y[i] - targets[i];
    total += static_cast<double>(d) * d;
    grad[i] = scale * d;
  }
  return static_cast<float>(total / static_cast<double>(count));
}

Status checkLabels(const Model& model, std::span<const std::int32_t> labels) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || static_cast<std::uint32_t>(labels[i]) >= model.outputCount()) {
      return makeError(Code::OutOfRange, "label " + std::to_string(labels[i]) + " of sample " +
                                             str(i) + " is not a class of the model's " +
                                             str(model.outputCount()));
    }
  }
  return {};
}

// Labels (classification) or targets (regression) for the selected samples.
Status checkSupervision(const Model& model, const Dataset& data,
                        std::span<const std::uint32_t> selection) {
  if (model.task() == Task::Classification) {
    if (data.labels.size() != data.size()) {
      return makeError(Code::ShapeMismatch, "dataset " + data.name + " has " +
                                                str(data.labels.size()) + " labels for " +
                                                str(data.size()) + " samples");
    }
    for (std::uint32_t s : selection) {
      const std::int32_t label = data.labels[s];
      if (label < 0 || static_cast<std::uint32_t>(label) >= model.outputCount()) {
        return makeError(Code::OutOfRange, "dataset " + data.name + " sample " + str(s) +
                                               " has label " + std::to_string(label) +
                                               "; the model has " + str(model.outputCount()) +
                                               " classes");
      }
    }
    return {};
  }
  if (data.targets.size() != data.size() * model.outputCount()) {
    return makeError(Code::ShapeMismatch,
                     "dataset " + data.name + " has " + str(data.targets.size()) + " targets for " +
                         str(data.size()) + " samples of " + str(model.outputCount()) + " outputs");
  }
  return {};
}

std::vector<std::uint32_t> selectionOf(const Dataset& data,
                                       std::span<const std::uint32_t> indices) {
  if (!indices.empty()) return {indices.begin(), indices.end()};
  std::vector<std::uint32_t> all(data.size());
  std::iota(all.begin(), all.end(), 0u);
  return all;
}

void shuffle(std::vector<std::uint32_t>& order, detail::SplitMix64& rng) {
  for (std::size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[rng.below(i)]);
  }
}

}  // namespace

std::string_view optimizerName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::Sgd: return "sgd";
    case OptimizerKind::Adam: return "adam";
  }
  return "unknown";
}

std::string_view trainableName(TrainableSet set) {
  switch (set) {
    case TrainableSet::All: return "all";
    case TrainableSet::Head: return "head";
    case TrainableSet::Bias: return "bias";
  }
  return "unknown";
}

Status checkTrainOptions(const TrainOptions& o) {
  auto bad = [](std::string what, float value, std::string_view expected) {
    return makeError(Code::InvalidArgument,
                     what + " = " + floatText(value) + "; expected " + std::string(expected));
  };
  if (o.epochs == 0 || o.epochs > 10000) {
    return makeError(Code::InvalidArgument, "epochs = " + str(o.epochs) + "; expected 1 to 10000");
  }
  if (o.batchSize == 0 || o.batchSize > detail::kMaxBatch) {
    return makeError(Code::InvalidArgument, "batchSize = " + str(o.batchSize) + "; expected 1 to " +
                                                str(detail::kMaxBatch));
  }
  if (!std::isfinite(o.learningRate) || o.learningRate <= 0) {
    return bad("learningRate", o.learningRate, "finite and > 0");
  }
  if (!(o.momentum >= 0 && o.momentum < 1)) return bad("momentum", o.momentum, "in [0, 1)");
  if (!std::isfinite(o.weightDecay) || o.weightDecay < 0) {
    return bad("weightDecay", o.weightDecay, "finite and >= 0");
  }
  if (!std::isfinite(o.proximalMu) || o.proximalMu < 0) {
    return bad("proximalMu", o.proximalMu, "finite and >= 0");
  }
  if (!(o.adamBeta1 >= 0 && o.adamBeta1 < 1)) return bad("adamBeta1", o.adamBeta1, "in [0, 1)");
  if (!(o.adamBeta2 >= 0 && o.adamBeta2 < 1)) return bad("adamBeta2", o.adamBeta2, "in [0, 1)");
  if (!std::isfinite(o.adamEpsilon) || o.adamEpsilon <= 0) {
    return bad("adamEpsilon", o.adamEpsilon, "finite and > 0");
  }
  return {};
}

Result<TrainOptions> trainOptionsFromWire(wire::TrainingConfig::Reader config) {
  TrainOptions o;
  o.epochs = config.getEpochs();
  o.batchSize = config.getBatchSize();
  o.learningRate = config.getLearningRate();
  switch (config.getOptimizer()) {
    case wire::Optimizer::SGD: o.optimizer = OptimizerKind::Sgd; break;
    case wire::Optimizer::ADAM: o.optimizer = OptimizerKind::Adam; break;
    default:
      return makeError(Code::BadField, "training.optimizer " +
                                           str(static_cast<unsigned>(config.getOptimizer())) +
                                           " is not known");
  }
  o.momentum = config.getMomentum();
  o.weightDecay = config.getWeightDecay();
  o.proximalMu = config.getProximalMu();
  switch (config.getTrainable()) {
    case wire::Trainable::ALL: o.trainable = TrainableSet::All; break;
    case wire::Trainable::HEAD: o.trainable = TrainableSet::Head; break;
    case wire::Trainable::BIAS: o.trainable = TrainableSet::Bias; break;
    default:
      return makeError(Code::BadField, "training.trainable " +
                                           str(static_cast<unsigned>(config.getTrainable())) +
                                           " is not known");
  }
  o.maxSamples = config.getMaxSamples();
  o.seed = config.getSeed();
  Status checked = checkTrainOptions(o);
  if (!checked.ok()) return makeError(Code::BadField, "training." + checked.error().detail);
  return o;
}

struct Trainer::State {
  Model* model = nullptr;
  TrainOptions options;
  std::unique_ptr<detail::Engine> engine;
  std::vector<std::uint8_t> trainable;  // per tensor
  struct Range {
    std::size_t offset, count;
  };
  std::vector<Range> ranges;  // trainable tensors
  std::vector<float> grads;
  std::vector<float> reference;  // only with a proximal term (mu > 0)
  std::vector<float> first;      // sgd velocity (momentum > 0) or adam first moment
  std::vector<float> second;     // adam second moment
  std::vector<const float*> rows;
  std::vector<std::int32_t> labels;
  std::vector<float> targets;
  std::uint64_t steps = 0;
  // Epochs run by earlier train() calls: a caller that trains one epoch per
  // call (to report progress or change the learning rate) still gets a new
  // order every epoch.
  std::uint64_t epochsDone = 0;

  // Validates a batch given as contiguous features.
  Result<std::size_t> batchSize(std::span<const float> features, std::size_t supervision,
                                std::size_t perSample) const {
    const std::size_t f = model->featureCount();
    const std::size_t n = features.size() / f;
    if (n == 0 || n > options.batchSize || features.size() != n * f) {
      return makeError(Code::ShapeMismatch, str(features.size()) + " feature values are not 1 to " +
                                                str(options.batchSize) + " samples of " + str(f));
    }
    if (supervision != n * perSample) {
      return makeError(Code::ShapeMismatch, str(supervision) + " labels/targets for " + str(n) +
                                                " samples; expected " + str(n * perSample));
    }
    return n;
  }

  // Forward, loss and backward on the n samples already loaded.
  float lossAndGradients(std::size_t n, const std::int32_t* batchLabels,
                         const float* batchTargets) {
    engine->forward(n);
    const std::size_t k = model->outputCount();
    const float loss =
        model->task() == Task::Classification
            ? softmaxCrossEntropy(engine->outputs(), batchLabels, n, k, engine->outputGrad())
            : meanSquaredError(engine->outputs(), batchTargets, n * k, engine->outputGrad());
    engine->backward(n, grads.data());
    return loss;
  }

  // v's data from `offset`, or null where the options need no such buffer.
  static float* at(std::vector<float>& v, std::size_t offset) {
    return v.empty() ? nullptr : v.data() + offset;
  }

  void update() {
    ++steps;
    float* w = model->parameters().data();
    const detail::KernelSet& kernels = engine->kernels();
    if (options.optimizer == OptimizerKind::Sgd) {
      const detail::SgdStep step{options.learningRate, options.momentum, options.weightDecay,
                                 options.proximalMu};
      for (const Range& r : ranges) {
        kernels.sgd(w + r.offset, grads.data() + r.offset, at(first, r.offset),
                    at(reference, r.offset), r.count, step);
      }
    } else {
      const double t = static_cast<double>(steps);
      const detail::AdamStep step{
          options.learningRate,
          options.adamBeta1,
          options.adamBeta2,
          options.adamEpsilon,
          options.weightDecay,
          options.proximalMu,
          static_cast<float>(1.0 - std::pow(static_cast<double>(options.adamBeta1), t)),
          static_cast<float>(1.0 - std::pow(static_cast<double>(options.adamBeta2), t))};
      for (const Range& r : ranges) {
        kernels.adam(w + r.offset, grads.data() + r.offset, at(first, r.offset),
                     at(second, r.offset), at(reference, r.offset), r.count, step);
      }
    }
  }
};

Result<Trainer> Trainer::prepare(Model& model, const TrainOptions& options) {
  EDGEFL_TRY(checkTrainOptions(options));
  auto state = std::make_unique<State>();
  state->model = &model;
  state->options = options;
  const std::size_t tensors = model.tensorSizes().size();
  state->trainable.assign(tensors, 0);
  switch (options.trainable) {
    case TrainableSet::All: std::fill(state->trainable.begin(), state->trainable.end(), 1); break;
    case TrainableSet::Bias:
      for (std::size_t t = 1; t < tensors; t += 2) state->trainable[t] = 1;
      break;
    case TrainableSet::Head: {
      std::size_t tensor = 0;
      std::size_t head = tensors;
      for (const Layer& l : model.layers()) {
        if (l.kind == LayerKind::Dense) head = tensor;
        if (l.hasParameters()) tensor += 2;
      }
      if (head < tensors) state->trainable[head] = state->trainable[head + 1] = 1;
      break;
    }
  }
  if (std::find(state->trainable.begin(), state->trainable.end(), 1) == state->trainable.end()) {
    return makeError(Code::BadModel, "trainable set " +
                                         std::string(trainableName(options.trainable)) +
                                         " selects no parameters of " + model.arch());
  }
  detail::EngineOptions engineOptions;
  engineOptions.maxBatch = options.batchSize;
  engineOptions.isa = options.isa;
  engineOptions.trainable = state->trainable;
  auto engine = detail::Engine::create(model, engineOptions);
  if (!engine.ok()) return engine.error();
  state->engine = std::move(engine.value());
  for (std::size_t t = 0; t < tensors; ++t) {
    if (state->trainable[t]) {
      state->ranges.push_back({model.tensorOffsets()[t], model.tensorSizes()[t]});
    }
  }
  const std::size_t count = model.parameterCount();
  state->grads.assign(count, 0.0f);
  // Buffers the step reads only for its options (1.2 MB of writes for an
  // mlp otherwise, on every round of every device).
  if (options.proximalMu > 0) {
    state->reference.assign(model.parameters().begin(), model.parameters().end());
  }
  const bool adam = options.optimizer == OptimizerKind::Adam;
  if (adam || options.momentum > 0) state->first.assign(count, 0.0f);
  if (adam) state->second.assign(count, 0.0f);
  state->rows.assign(options.batchSize, nullptr);
  state->labels.assign(options.batchSize, 0);
  state->targets.assign(std::size_t{options.batchSize} * model.outputCount(), 0.0f);
  return Trainer(std::move(state));
}

Trainer::Trainer(std::unique_ptr<State> state) : state_(std::move(state)) {}
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

Status Trainer::setReference(std::span<const float> reference) {
  const std::size_t count = state_->model->parameterCount();
  if (reference.size() != count) {
    return makeError(Code::ShapeMismatch, "reference has " + str(reference.size()) +
                                              " parameters; the model has " + str(count));
  }
  // Without a proximal term nothing reads it.
  if (!state_->reference.empty())
    std::copy(reference.begin(), reference.end(), state_->reference.begin());
  return {};
}

Result<float> Trainer::computeGradients(std::span<const float> features,
                                        std::span<const std::int32_t> labels) {
  State& s = *state_;
  if (s.model->task() != Task::Classification) {
    return makeError(Code::BadModel, "labels given to a regression model");
  }
  auto n = s.batchSize(features, labels.size(), 1);
  if (!n.ok()) return n.error();
  EDGEFL_TRY(checkLabels(*s.model, labels));
  s.engine->loadContiguous(features.data(), *n);
  return s.lossAndGradients(*n, labels.data(), nullptr);
}

Result<float> Trainer::computeGradientsRegression(std::span<const float> features,
                                                  std::span<const float> targets) {
  State& s = *state_;
  if (s.model->task() != Task::Regression) {
    return makeError(Code::BadModel, "targets given to a classification model");
  }
  auto n = s.batchSize(features, targets.size(), s.model->outputCount());
  if (!n.ok()) return n.error();
  s.engine->loadContiguous(features.data(), *n);
  return s.lossAndGradients(*n, nullptr, targets.data());
}

Result<float> Trainer::step(std::span<const float> features, std::span<const std::int32_t> labels) {
  auto loss = computeGradients(features, labels);
  if (loss.ok()) state_->update();
  return loss;
}

Result<float> Trainer::stepRegression(std::span<const float> features,
                                      std::span<const float> targets) {
  auto loss = computeGradientsRegression(features, targets);
  if (loss.ok()) state_->update();
  return loss;
}

Status Trainer::setLearningRate(float learningRate) {
  TrainOptions changed = state_->options;
  changed.learningRate = learningRate;
  EDGEFL_TRY(checkTrainOptions(changed));
  state_->options.learningRate = learningRate;
  return {};
}

std::span<const float> Trainer::gradients() const {
  return state_->grads;
}

Result<TrainReport> Trainer::train(const Dataset& data, std::span<const std::uint32_t> indices) {
  State& s = *state_;
  const Model& model = *s.model;
  EDGEFL_TRY(detail::checkDataset(model, data, indices));
  std::vector<std::uint32_t> order = selectionOf(data, indices);
  EDGEFL_TRY(checkSupervision(model, data, order));
  if (s.options.maxSamples != 0 && s.options.maxSamples < order.size()) {
    detail::SplitMix64 pick(s.options.seed ^ 0x6A09E667F3BCC909ull);
    shuffle(order, pick);
    order.resize(s.options.maxSamples);
  }
  const bool classification = model.task() == Task::Classification;
  const std::size_t k = model.outputCount();
  const std::size_t batch = s.options.batchSize;
  TrainReport report;
  // Every epoch shuffles the same starting order, so an epoch's order
  // depends only on (seed, epoch number), not on how calls were split.
  const std::vector<std::uint32_t> selected = order;
  for (std::uint32_t epoch = 0; epoch < s.options.epochs; ++epoch) {
    detail::SplitMix64 rng(s.options.seed + 0x9E3779B97F4A7C15ull * (s.epochsDone + epoch + 1));
    order = selected;
    shuffle(order, rng);
    double lossSum = 0.0;
    for (std::size_t start = 0; start < order.size(); start += batch) {
      const std::size_t n = std::min(batch, order.size() - start);
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t sample = order[start + i];
        s.rows[i] = data.features.data() + std::size_t{sample} * data.featureCount;
        if (classification) {
          s.labels[i] = data.labels[sample];
        } else {
          std::copy_n(data.targets.begin() + static_cast<std::ptrdiff_t>(sample * k), k,
                      s.targets.begin() + static_cast<std::ptrdiff_t>(i * k));
        }
      }
      s.engine->loadRows(s.rows.data(), n);
      const float loss = s.lossAndGradients(n, s.labels.data(), s.targets.data());
      s.update();
      lossSum += static_cast<double>(loss) * static_cast<double>(n);
      ++report.steps;
    }
    report.samples += order.size();
    report.epochLoss.push_back(static_cast<float>(lossSum / static_cast<double>(order.size())));
  }
  s.epochsDone += s.options.epochs;
  return report;
}

bool Trainer::trainable(std::size_t tensor) const {
  return tensor < state_->trainable.size() && state_->trainable[tensor] != 0;
}
const TrainOptions& Trainer::options() const {
  return state_->options;
}
std::uint64_t Trainer::stepCount() const {
  return state_->steps;
}

Result<Metrics> evaluate(const Model& model, const Dataset& data,
                         std::span<const std::uint32_t> indices, const EvaluateOptions& options) {
  EDGEFL_TRY(detail::checkDataset(model, data, indices));
  const std::vector<std::uint32_t> order = selectionOf(data, indices);
  EDGEFL_TRY(checkSupervision(model, data, order));
  detail::EngineOptions engineOptions;
  engineOptions.maxBatch = std::max<std::size_t>(1, std::min(options.batchSize, order.size()));
  engineOptions.isa = options.isa;
  auto created = detail::Engine::create(model, engineOptions);
  if (!created.ok()) return created.error();
  detail::Engine& engine = *created.value();
  const bool classification = model.task() == Task::Classification;
  const std::size_t k = model.outputCount();
  const std::size_t batch = engine.maxBatch();
  std::vector<const float*> rows(batch);
  std::vector<std::uint64_t> correct(classification ? k : 0, 0);
  Metrics metrics;
  metrics.dataset = data.name;
  metrics.sampleCount = order.size();
  if (classification) metrics.perClassCount.assign(k, 0);
  double lossSum = 0.0;
  for (std::size_t start = 0; start < order.size(); start += batch) {
    const std::size_t n = std::min(batch, order.size() - start);
    for (std::size_t i = 0; i < n; ++i) {
      rows[i] = data.features.data() + std::size_t{order[start + i]} * data.featureCount;
    }
    engine.loadRows(rows.data(), n);
    engine.forward(n);
    const float* y = engine.outputs();
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t sample = order[start + i];
      const float* row = y + i * k;
      if (classification) {
        const auto label = static_cast<std::size_t>(data.labels[sample]);
        double top = row[0];
        for (std::size_t j = 1; j < k; ++j) top = std::max(top, static_cast<double>(row[j]));
        double sum = 0.0;
        for (std::size_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j]) - top);
        lossSum += top + std::log(sum) - static_cast<double>(row[label]);
        ++metrics.perClassCount[label];
        if (argmax(std::span<const float>(row, k)) == label) ++correct[label];
      } else {
        for (std::size_t j = 0; j < k; ++j) {
          const double d = static_cast<double>(row[j]) - data.targets[std::size_t{sample} * k + j];
          lossSum += d * d / static_cast<double>(k);
        }
      }
    }
  }
  metrics.loss = static_cast<float>(lossSum / static_cast<double>(order.size()));
  if (classification) {
    std::uint64_t total = 0;
    metrics.perClassAccuracy.assign(k, 0.0f);
    for (std::size_t j = 0; j < k; ++j) {
      total += correct[j];
      if (metrics.perClassCount[j] > 0) {
        metrics.perClassAccuracy[j] = static_cast<float>(
            static_cast<double>(correct[j]) / static_cast<double>(metrics.perClassCount[j]));
      }
    }
    metrics.accuracy =
        static_cast<float>(static_cast<double>(total) / static_cast<double>(order.size()));
  }
  return metrics;
}

}  // namespace edgefl
