#pragma once
// Scoring a prepared model: validate and allocate once, then score single
// samples or batches without allocating, throwing or checking shapes.
//
// The math runs on one of several kernel builds of the same source
// (model_kernels_impl.hpp): Generic (the project's portable flags) and, on
// x86-64 with GCC, AVX2+FMA and AVX-512 builds chosen at run time from what
// the CPU supports. They differ only in floating-point rounding (FMA,
// summation order within a GEMM); pick Generic where bit-identical results
// across machines matter more than speed.

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "edgefl/shared/model.hpp"

namespace edgefl {

enum class KernelIsa : std::uint8_t { Auto, Generic, Avx2, Avx512 };
std::string_view kernelIsaName(KernelIsa isa);
// Built into this binary and supported by this CPU (Auto and Generic always).
bool kernelIsaAvailable(KernelIsa isa);
// Auto -> the fastest available; any other value unchanged.
KernelIsa resolveKernelIsa(KernelIsa isa);

namespace detail {
class Engine;
}

struct ScorerOptions {
  // Largest batch scoreBatch accepts; workspaces are sized for it.
  std::size_t maxBatch = 1;
  KernelIsa isa = KernelIsa::Auto;
};

// Holds per-call workspaces, so one Scorer serves one thread at a time;
// several Scorers may share a model.
class Scorer {
 public:
  // Validates the model (validateModel) and allocates every workspace.
  // `model` must outlive the Scorer and stay at the same address; its
  // parameters are read at each call, so training in place is seen by the
  // next score. Errors: validateModel's, InvalidArgument (maxBatch 0 or over
  // 65536, or an ISA that is not available).
  static Result<Scorer> prepare(const Model& model, const ScorerOptions& options = {});

  Scorer(Scorer&&) noexcept;
  Scorer& operator=(Scorer&&) noexcept;
  ~Scorer();

  // x: featureCount raw feature values; out: outputCount values, class
  // probabilities (classification) or predictions (regression).
  // Preconditions (asserted): the sizes above.
  void score(std::span<const float> x, std::span<float> out);
  // xs: n * featureCount values, n <= maxBatch, row-major; out: n *
  // outputCount values.
  void scoreBatch(std::span<const float> xs, std::span<float> out);

  std::size_t maxBatch() const;
  KernelIsa isa() const;
  // Bytes of workspace held (activations, scratch).
  std::size_t workspaceBytes() const;

 private:
  explicit Scorer(std::unique_ptr<detail::Engine> engine);
  std::unique_ptr<detail::Engine> engine_;
};

// Index of the largest value (the first one on ties); 0 for an empty span.
std::size_t argmax(std::span<const float> values);

}  // namespace edgefl
