#include "edgefl/shared/model_scorer.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "model_engine.hpp"

namespace edgefl {
namespace {

// Numerically stable softmax of one row: exp of (x - max).
void softmaxRow(const float* logits, std::size_t k, float* out) {
  float top = logits[0];
  for (std::size_t j = 1; j < k; ++j) top = std::max(top, logits[j]);
  float sum = 0.0f;
  for (std::size_t j = 0; j < k; ++j) {
    out[j] = std::exp(logits[j] - top);
    sum += out[j];
  }
  const float inverse = 1.0f / sum;
  for (std::size_t j = 0; j < k; ++j) out[j] *= inverse;
}

}  // namespace

Result<Scorer> Scorer::prepare(const Model& model, const ScorerOptions& options) {
  detail::EngineOptions engineOptions;
  engineOptions.maxBatch = options.maxBatch;
  engineOptions.isa = options.isa;
  auto engine = detail::Engine::create(model, engineOptions);
  if (!engine.ok()) return engine.error();
  return Scorer(std::move(engine.value()));
}

Scorer::Scorer(std::unique_ptr<detail::Engine> engine) : engine_(std::move(engine)) {}
Scorer::Scorer(Scorer&&) noexcept = default;
Scorer& Scorer::operator=(Scorer&&) noexcept = default;
Scorer::~Scorer() = default;

void Scorer::score(std::span<const float> x, std::span<float> out) {
  assert(x.size() == engine_->model().featureCount());
  scoreBatch(x, out);
}

void Scorer::scoreBatch(std::span<const float> xs, std::span<float> out) {
  const std::size_t features = engine_->model().featureCount();
  const std::size_t k = engine_->outputCount();
  const std::size_t n = xs.size() / features;
  assert(n >= 1 && n <= engine_->maxBatch() && xs.size() == n * features);
  assert(out.size() == n * k);
  engine_->loadContiguous(xs.data(), n);
  engine_->forward(n);
  const float* y = engine_->outputs();
  if (engine_->model().task() == Task::Classification) {
    for (std::size_t i = 0; i < n; ++i) softmaxRow(y + i * k, k, out.data() + i * k);
  } else {
    for (std::size_t i = 0; i < n * k; ++i) out[i] = y[i];
  }
}

std::size_t Scorer::maxBatch() const {
  return engine_->maxBatch();
}
KernelIsa Scorer::isa() const {
  return engine_->isa();
}
std::size_t Scorer::workspaceBytes() const {
  return engine_->workspaceBytes();
}

std::size_t argmax(std::span<const float> values) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

}  // namespace edgefl
