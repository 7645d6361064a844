#pragma once
// Input checks and statistics for the active model: validation of a sample
// against the input schema, per-feature running statistics, histograms over
// the schema's ranges with the same bins as the model's reference
// statistics, and the population stability index (PSI) between the two.
// prepare() allocates for a model; after that nothing here allocates, so
// it can sit on the scoring hot path. Not thread-safe: the owner locks.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/error.hpp"
#include "edgefl/shared/model.hpp"

namespace edgefl::device {

// Why a sample fails the schema: the code and where.
struct SampleCheck {
  Code code = Code::Ok;
  std::uint32_t feature = 0;
  float value = 0;
  bool ok() const { return code == Code::Ok; }
};

// Proportions below this count as this in PSI, so an empty bin on either
// side gives a large but finite term (the usual smoothing).
inline constexpr double kPsiFloor = 1e-4;

struct DriftSummary {
  std::uint64_t samples = 0;
  float psiMax = 0;
  float psiMean = 0;
  std::uint32_t worstFeature = 0;
};

class InputMonitor {
 public:
  void prepare(const Model& model);
  void reset();

  std::uint32_t featureCount() const { return featureCount_; }
  // Count ShapeMismatch, then per feature NonFinite or OutOfRange (the
  // first failing feature). No allocation.
  SampleCheck check(std::span<const float> x) const;
  // Adds an accepted sample to the running statistics and histograms.
  void add(std::span<const float> x);

  // PSI of each feature between the histogram of the samples added and the
  // reference histogram; samples = 0 (and no PSI) until something was added
  // or when the model carries no reference histogram. Computed once per
  // change (a log per feature and bin): telemetry and status ask often.
  DriftSummary drift() const;
  std::vector<FeatureStatistics> featureStatistics() const;

 private:
  std::uint32_t featureCount_ = 0;
  std::uint16_t bins_ = 0;
  std::vector<float> min_, max_;
  std::vector<double> binLo_, binScale_;  // position = (x - lo) * scale
  std::vector<float> reference_;          // featureCount * bins proportions
  std::vector<std::uint32_t> counts_;     // featureCount * bins
  std::vector<double> mean_, m2_;         // Welford
  std::uint64_t samples_ = 0;
  mutable std::optional<DriftSummary> driftCache_;
};

// Latency of score() in a fixed histogram (no allocation to record).
class LatencyHistogram {
 public:
  // Upper bounds in microseconds; one more bucket counts everything above.
  static constexpr std::size_t kBounds = 10;
  static constexpr float kBoundsMicros[kBounds] = {2, 5, 10, 20, 50, 100, 200, 500, 1000, 10000};

  void record(double micros);
  std::span<const std::uint64_t> counts() const { return counts_; }

 private:
  std::uint64_t counts_[kBounds + 1] = {};
};

}  // namespace edgefl::device
