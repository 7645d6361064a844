#include "edgefl/server/validation_gate.hpp"

#include <cmath>
#include <cstdio>

#include "edgefl/shared/train.hpp"

namespace edgefl::server {
namespace {

std::string fmt3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

bool finiteParameters(const Model& m) {
  for (float v : m.parameters()) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace

ValidationGate::ValidationGate(GateOptions options, const Dataset& holdout)
    : options_(options), holdout_(holdout) {}

Result<GateResult> ValidationGate::judge(const Model& candidate, const Model* stable) const {
  GateResult r;
  if (!finiteParameters(candidate)) {
    r.reason = "NonFinite: the candidate has NaN or infinite parameters";
    return r;
  }
  r.modelBytes = modelToBytes(candidate).size();
  if (candidate.parameterCount() > options_.maxParameters) {
    r.reason = "OverBudget: " + std::to_string(candidate.parameterCount()) + " parameters > " +
               std::to_string(options_.maxParameters);
    return r;
  }
  if (r.modelBytes > options_.maxModelBytes) {
    r.reason = "OverBudget: " + std::to_string(r.modelBytes) + " bytes > " +
               std::to_string(options_.maxModelBytes);
    return r;
  }
  auto metrics = evaluate(candidate, holdout_);
  if (!metrics.ok()) return metrics.error();
  r.candidate = std::move(metrics.value());
  if (!std::isfinite(r.candidate.loss) || !std::isfinite(r.candidate.accuracy)) {
    r.reason = "NonFinite: holdout loss is " + fmt3(r.candidate.loss);
    return r;
  }
  if (stable != nullptr) {
    auto base = evaluate(*stable, holdout_);
    if (!base.ok()) return base.error();
    r.baseline = std::move(base.value());
    if (candidate.task() == Task::Classification) {
      if (r.candidate.accuracy < r.baseline.accuracy - options_.tolerance) {
        r.reason = "Regression: accuracy " + fmt3(r.candidate.accuracy) + " < stable " +
                   fmt3(r.baseline.accuracy) + " - " + fmt3(options_.tolerance);
        return r;
      }
      const std::size_t classes =
          r.baseline.accuracy < options_.sliceMinStableAccuracy
              ? 0
              : std::min(r.candidate.perClassAccuracy.size(), r.baseline.perClassAccuracy.size());
      for (std::size_t c = 0; c < classes; ++c) {
        if (c < r.candidate.perClassCount.size() &&
            r.candidate.perClassCount[c] < options_.minSliceSamples) {
          continue;
        }
        const double drop = r.baseline.perClassAccuracy[c] - r.candidate.perClassAccuracy[c];
        if (drop > options_.sliceTolerance) {
          r.reason = "SliceRegression: class " + std::to_string(c) + " accuracy " +
                     fmt3(r.candidate.perClassAccuracy[c]) + " < stable " +
                     fmt3(r.baseline.perClassAccuracy[c]) + " - " + fmt3(options_.sliceTolerance);
          return r;
        }
      }
    } else if (r.candidate.loss > r.baseline.loss * (1.0 + options_.tolerance)) {
      r.reason = "Regression: loss " + fmt3(r.candidate.loss) + " > stable " +
                 fmt3(r.baseline.loss) + " * (1 + " + fmt3(options_.tolerance) + ")";
      return r;
    }
  }
  r.passed = true;
  return r;
}

}  // namespace edgefl::server
