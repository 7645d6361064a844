#pragma once
// Private to the model engine: a model prepared for a maximum batch, with
// every workspace allocated, running on one kernel build. Scorer, Trainer
// and evaluate() are thin layers over it.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "model_plan.hpp"

namespace edgefl::detail {

// Largest batch an engine is prepared for; beyond it workspaces are
// hundreds of MB for image models.
inline constexpr std::size_t kMaxBatch = 65536;

// The kernel build for `isa` (Auto resolved), or nullptr when it is not
// available on this CPU.
const KernelSet* kernelsFor(KernelIsa isa);

// featureCount, sample indices, non-empty selection. ShapeMismatch,
// OutOfRange, InvalidArgument.
Status checkDataset(const Model& model, const Dataset& data,
                    std::span<const std::uint32_t> indices);

struct EngineOptions {
  std::size_t maxBatch = 1;
  KernelIsa isa = KernelIsa::Auto;
  // Empty: scoring only. Otherwise one flag per parameter tensor (wire
  // order): which gradients backward computes; at least one must be set.
  std::vector<std::uint8_t> trainable;
};

class Engine {
 public:
  // Validates the model (validateModel) and allocates. InvalidArgument for
  // maxBatch 0 or over kMaxBatch, or an unavailable ISA.
  static Result<std::unique_ptr<Engine>> create(const Model& model, const EngineOptions& options);

  const Model& model() const { return *model_; }
  std::size_t maxBatch() const { return maxBatch_; }
  KernelIsa isa() const { return isa_; }
  const KernelSet& kernels() const { return *kernels_; }
  std::size_t workspaceBytes() const;
  std::size_t outputCount() const { return outputCount_; }

  // Preprocessing into the input buffer; n <= maxBatch (asserted).
  void loadRows(const float* const* rows, std::size_t n);
  void loadContiguous(const float* xs, std::size_t n);
  void forward(std::size_t n);
  // n x outputCount logits (classification) or predictions (regression).
  const float* outputs() const { return act_.data() + outputAct_; }
  // Where the caller writes dLoss/dOutputs before backward().
  float* outputGrad() { return grad_.data() + outputAct_; }
  // Writes the gradients of the trainable tensors into paramGrad.
  void backward(std::size_t n, float* paramGrad);

 private:
  Engine() = default;
  Plan plan() const { return Plan{ops_.data(), ops_.size(), backwardStop_}; }
  Buffers buffers();

  const Model* model_ = nullptr;
  const KernelSet* kernels_ = nullptr;
  KernelIsa isa_ = KernelIsa::Generic;
  std::size_t maxBatch_ = 0;
  std::size_t features_ = 0;
  std::size_t outputCount_ = 0;
  std::size_t outputAct_ = 0;
  std::vector<PlanOp> ops_;
  std::size_t backwardStop_ = 0;
  std::vector<float> act_;
  std::vector<float> grad_;
  std::vector<float> col_;
  std::vector<float> colGrad_;
  std::vector<std::int32_t> argmax_;
  std::vector<float> shift_;
  std::vector<float> scale_;
  std::vector<const float*> rows_;
};

}  // namespace edgefl::detail
