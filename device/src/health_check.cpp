#include "edgefl/device/health_check.hpp"

#include <cmath>
#include <limits>

namespace edgefl::device {
namespace {

// Values beyond this are "unbounded" (the schema default is +-FLT_MAX):
// probing there would only test float overflow, not the model.
constexpr float kUnbounded = 1e30f;

std::uint64_t splitMix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<float> probeInputs(const Model& model, std::size_t count, std::uint64_t seed) {
  const std::size_t n = model.featureCount();
  const InputSchema& schema = model.inputSchema();
  const ReferenceStats& stats = model.referenceStats();
  std::vector<float> lo(n), hi(n), center(n);
  for (std::size_t i = 0; i < n; ++i) {
    const bool hasStats = stats.mean.size() == n && stats.std.size() == n;
    const float mean = hasStats ? stats.mean[i] : 0.0f;
    const float spread = hasStats ? 3.0f * stats.std[i] : 1.0f;
    float a = i < schema.minValue.size() ? schema.minValue[i] : -kUnbounded;
    float b = i < schema.maxValue.size() ? schema.maxValue[i] : kUnbounded;
    if (!(std::fabs(a) < kUnbounded)) a = mean - (spread > 0 ? spread : 1.0f);
    if (!(std::fabs(b) < kUnbounded)) b = mean + (spread > 0 ? spread : 1.0f);
    if (b < a) b = a;
    lo[i] = a;
    hi[i] = b;
    center[i] = hasStats ? std::fmin(std::fmax(mean, a), b) : a + (b - a) / 2;
  }
  std::vector<float> out;
  out.reserve(count * n);
  std::uint64_t state = seed;
  for (std::size_t p = 0; p < count; ++p) {
    for (std::size_t i = 0; i < n; ++i) {
      switch (p) {
        case 0: out.push_back(center[i]); break;
        case 1: out.push_back(lo[i]); break;
        case 2: out.push_back(hi[i]); break;
        default: {
          const double u = static_cast<double>(splitMix(state) >> 11) * 0x1.0p-53;
          out.push_back(static_cast<float>(lo[i] + u * (static_cast<double>(hi[i]) - lo[i])));
        }
      }
    }
  }
  return out;
}

Status healthCheck(const Model& model, Scorer& scorer, std::size_t probes) {
  const std::size_t n = model.featureCount();
  const std::size_t outputs = model.outputCount();
  const std::vector<float> inputs = probeInputs(model, probes);
  std::vector<float> out(outputs);
  for (std::size_t p = 0; p < probes; ++p) {
    scorer.score(std::span<const float>(inputs).subspan(p * n, n), out);
    double sum = 0;
    for (std::size_t k = 0; k < outputs; ++k) {
      if (!std::isfinite(out[k])) {
        return makeError(Code::NonFinite, "health check: probe " + std::to_string(p) +
                                              " gives output " + std::to_string(k) + " = " +
                                              std::to_string(out[k]));
      }
      sum += out[k];
    }
    if (model.task() == Task::Classification && std::fabs(sum - 1.0) > 1e-3) {
      return makeError(Code::BadModel, "health check: probe " + std::to_string(p) +
                                           " gives probabilities summing to " +
                                           std::to_string(sum));
    }
  }
  return {};
}

}  // namespace edgefl::device
