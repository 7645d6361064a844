#pragma once
// The validation gate: a candidate global model is evaluated on the
// operator's holdout data with the same model math the devices run, overall
// and per class, and rejected with its reason when it is non-finite,
// regresses beyond a tolerance against the stable model, or does not fit
// the device budget. Nothing that fails the gate is ever deployed.

#include <cstdint>
#include <string>

#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/model.hpp"

namespace edgefl::server {

struct GateOptions {
  double tolerance = 0.01;       // largest overall accuracy drop vs stable
  double sliceTolerance = 0.05;  // largest drop of any one class
  // Per-class drops are judged only against a stable model at least this
  // accurate overall: a near-random model's per-class accuracy only says
  // which class it defaults to (one class right 60% of the time at 10%
  // overall), and would block every real improvement.
  double sliceMinStableAccuracy = 0.2;
  std::uint64_t maxParameters = 4'000'000;
  std::uint64_t maxModelBytes = 16u << 20;
  // Classes with fewer holdout samples than this are not judged per slice:
  // their accuracy is too noisy to block a model on.
  std::uint64_t minSliceSamples = 20;
};

struct GateResult {
  bool passed = false;
  std::string reason;  // "" when passed; else e.g. "Regression: accuracy 0.71 < 0.80 - 0.01"
  Metrics candidate;
  Metrics baseline;  // of the stable model (empty when there is none)
  std::uint64_t modelBytes = 0;
};

class ValidationGate {
 public:
  // `holdout` must outlive the gate.
  ValidationGate(GateOptions options, const Dataset& holdout);

  // Evaluates `candidate` (and `stable` when given, else no regression
  // check). Errors only for an evaluation that cannot run (the holdout does
  // not fit the model); a failing candidate is a GateResult with a reason.
  Result<GateResult> judge(const Model& candidate, const Model* stable) const;

  const Dataset& holdout() const { return holdout_; }

 private:
  GateOptions options_;
  const Dataset& holdout_;
};

}  // namespace edgefl::server
