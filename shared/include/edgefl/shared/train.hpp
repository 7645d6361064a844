#pragma once
// Training and evaluation with the model math that scoring uses, so a
// device's local training and the coordinator's validation gate compute the
// same functions.
//
// Loss: mean softmax cross-entropy over the batch (classification) or mean
// squared error over the batch and outputs (regression). The optimizer sees
//   g = dLoss/dw + weightDecay * w + proximalMu * (w - w_ref)
// where w_ref are the reference parameters (FedProx: the round's base
// model), and updates only the trainable tensors:
//   sgd:  v = momentum * v + g;  w -= lr * v          (v = g when momentum 0)
//   adam: m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) g^2;
//         w -= lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"

namespace edgefl {

enum class OptimizerKind : std::uint8_t { Sgd, Adam };
enum class TrainableSet : std::uint8_t {
  All,
  Head,  // the last Dense layer's weight and bias
  Bias,  // every bias tensor
};
std::string_view optimizerName(OptimizerKind kind);
std::string_view trainableName(TrainableSet set);

struct TrainOptions {
  std::uint32_t epochs = 1;
  std::uint32_t batchSize = 32;  // also the largest batch step() accepts
  float learningRate = 0.01f;
  OptimizerKind optimizer = OptimizerKind::Sgd;
  float momentum = 0;  // sgd, in [0, 1)
  float weightDecay = 0;
  float proximalMu = 0;  // FedProx; 0 disables
  TrainableSet trainable = TrainableSet::All;
  std::uint32_t maxSamples = 0;  // train(): use at most this many samples; 0 = all
  std::uint64_t seed = 0;        // shuffling and the maxSamples subset
  float adamBeta1 = 0.9f;
  float adamBeta2 = 0.999f;
  float adamEpsilon = 1e-8f;
  KernelIsa isa = KernelIsa::Auto;
};

// InvalidArgument naming the option and value: epochs 0 or over 10000,
// batchSize 0 or over 65536, a learning rate that is not finite and > 0,
// momentum outside [0, 1), negative or non-finite decay or mu, Adam betas
// outside [0, 1), epsilon not > 0.
Status checkTrainOptions(const TrainOptions& options);
// A RoundTask's TrainingConfig as options (Adam constants and ISA at their
// defaults). BadField for an unknown optimizer or trainable value, then
// checkTrainOptions' errors as BadField.
Result<TrainOptions> trainOptionsFromWire(wire::TrainingConfig::Reader config);

struct TrainReport {
  std::uint64_t samples = 0;  // sample visits, over all epochs
  std::uint64_t steps = 0;
  std::vector<float> epochLoss;  // mean training loss of each epoch
};

class Trainer {
 public:
  // Validates the model and options and allocates every workspace and the
  // optimizer state. The reference parameters start as a copy of the
  // model's current parameters. `model` must outlive the Trainer and stay at
  // the same address; its parameters are updated in place. Errors:
  // validateModel's, checkTrainOptions', InvalidArgument (ISA not
  // available), BadModel (TrainableSet::Head or Bias on a model without a
  // Dense layer or biases).
  static Result<Trainer> prepare(Model& model, const TrainOptions& options);

  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  // FedProx reference parameters. ShapeMismatch unless parameterCount long.
  Status setReference(std::span<const float> reference);

  // One optimizer step on a batch of n raw samples (features n *
  // featureCount, row-major; 1 <= n <= batchSize) with class labels.
  // Returns the batch's mean loss before the update. Does not allocate on
  // success. Errors (parameters untouched): ShapeMismatch for sizes,
  // OutOfRange for a label outside [0, outputCount), BadModel when the model
  // is a regression model.
  Result<float> step(std::span<const float> features, std::span<const std::int32_t> labels);
  // The same with targets (n * outputCount values) for regression models.
  Result<float> stepRegression(std::span<const float> features, std::span<const float> targets);

  // Loss and gradients (gradients()) of a batch, without updating anything.
  // Gradients of tensors outside the trainable set are left zero. Same
  // errors as step().
  Result<float> computeGradients(std::span<const float> features,
                                 std::span<const std::int32_t> labels);
  Result<float> computeGradientsRegression(std::span<const float> features,
                                           std::span<const float> targets);
  // dLoss/dw of the last computeGradients or step, wire order (without the
  // decay and proximal terms).
  std::span<const float> gradients() const;

  // options.epochs passes over `data` (or the samples listed in `indices`),
  // shuffled per epoch by (seed, epochs run so far by this trainer); at most maxSamples samples,
  // chosen by seed once. Errors before any update: ShapeMismatch (featureCount, missing targets),
  // OutOfRange (a label or index), InvalidArgument (no samples).
  Result<TrainReport> train(const Dataset& data, std::span<const std::uint32_t> indices = {});

  // Learning rate of the following steps, for schedules (decay, warm-up).
  // Optimizer state is kept. InvalidArgument unless finite and > 0.
  Status setLearningRate(float learningRate);

  // Whether the optimizer updates tensor `tensor` (wire order).
  bool trainable(std::size_t tensor) const;
  const TrainOptions& options() const;
  std::uint64_t stepCount() const;

 private:
  struct State;
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

struct EvaluateOptions {
  std::size_t batchSize = 256;
  KernelIsa isa = KernelIsa::Auto;
};

// Accuracy, mean loss, and per-class accuracy and counts of `model` on
// `data` (or the listed samples); Metrics::dataset = data.name. Regression
// models report loss only. Errors: validateModel's, ShapeMismatch
// (featureCount, missing targets), OutOfRange (label or index),
// InvalidArgument (no samples).
Result<Metrics> evaluate(const Model& model, const Dataset& data,
                         std::span<const std::uint32_t> indices = {},
                         const EvaluateOptions& options = {});

}  // namespace edgefl
