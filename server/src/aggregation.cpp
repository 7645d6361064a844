#include "edgefl/server/aggregation.hpp"

#include "aggregation_stream.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <utility>

namespace edgefl::server {
namespace {

enum class Rule : std::uint8_t { Mean, Median, TrimmedMean, Krum, MultiKrum };
enum class Optimizer : std::uint8_t { Sgd, Momentum, Adam, Yogi };

struct StrategyEntry {
  std::string_view name;
  Rule rule;
  Optimizer optimizer;
};

// The explicit table makeStrategy chooses from; names match
// coordinator_config.cpp's [aggregation] strategy values.
constexpr std::array<StrategyEntry, 8> kStrategies{{
    {"fedavg", Rule::Mean, Optimizer::Sgd},
    {"fedavgm", Rule::Mean, Optimizer::Momentum},
    {"fedadam", Rule::Mean, Optimizer::Adam},
    {"fedyogi", Rule::Mean, Optimizer::Yogi},
    {"median", Rule::Median, Optimizer::Sgd},
    {"trimmed_mean", Rule::TrimmedMean, Optimizer::Sgd},
    {"krum", Rule::Krum, Optimizer::Sgd},
    {"multi_krum", Rule::MultiKrum, Optimizer::Sgd},
}};

constexpr std::array<std::string_view, kStrategies.size()> kStrategyNames = [] {
  std::array<std::string_view, kStrategies.size()> names{};
  for (std::size_t i = 0; i < kStrategies.size(); ++i) names[i] = kStrategies[i].name;
  return names;
}();

std::size_t stateVectors(Optimizer optimizer) {
  switch (optimizer) {
    case Optimizer::Sgd: return 0;
    case Optimizer::Momentum: return 1;
    case Optimizer::Adam:
    case Optimizer::Yogi: return 2;
  }
  return 0;
}

std::string numberText(double value) {
  std::array<char, 32> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  assert(ec == std::errc());
  return std::string(buffer.data(), end);
}

std::string updateName(std::span<const ClientUpdate> updates, std::size_t i) {
  return "update " + std::to_string(i) + " (" + std::string(updates[i].id) + ")";
}

// Checks a [0, 1) decay or momentum.
Status checkUnitInterval(std::string_view name, double value) {
  if (!(value >= 0.0 && value < 1.0)) {
    return makeError(Code::InvalidArgument,
                     std::string(name) + " = " + numberText(value) + "; must be in [0, 1)");
  }
  return {};
}

Status checkOptions(const StrategyEntry& entry, const AggregationOptions& o, std::size_t p) {
  if (p == 0) return makeError(Code::InvalidArgument, "parameterCount = 0; must be > 0");
  auto finiteNonNegative = [](std::string_view name, double value) -> Status {
    if (!(std::isfinite(value) && value >= 0.0)) {
      return makeError(Code::InvalidArgument,
                       std::string(name) + " = " + numberText(value) + "; must be finite and >= 0");
    }
    return {};
  };
  if (!(std::isfinite(o.serverLearningRate) && o.serverLearningRate > 0.0)) {
    return makeError(
        Code::InvalidArgument,
        "serverLearningRate = " + numberText(o.serverLearningRate) + "; must be finite and > 0");
  }
  EDGEFL_TRY(finiteNonNegative("clipNorm", o.clipNorm));
  EDGEFL_TRY(finiteNonNegative("dpNoiseMultiplier", o.dpNoiseMultiplier));
  EDGEFL_TRY(finiteNonNegative("stalenessExponent", o.stalenessExponent));
  if (o.dpNoiseMultiplier > 0.0 && o.clipNorm == 0.0) {
    return makeError(Code::InvalidArgument,
                     "dpNoiseMultiplier = " + numberText(o.dpNoiseMultiplier) +
                         " needs clipNorm > 0: without a clip the noise bounds nothing");
  }
  switch (entry.optimizer) {
    case Optimizer::Sgd: break;
    case Optimizer::Momentum:
      EDGEFL_TRY(checkUnitInterval("serverMomentum", o.serverMomentum));
      break;
    case Optimizer::Adam:
    case Optimizer::Yogi:
      EDGEFL_TRY(checkUnitInterval("beta1", o.beta1));
      EDGEFL_TRY(checkUnitInterval("beta2", o.beta2));
      if (!(std::isfinite(o.tau) && o.tau > 0.0)) {
        return makeError(Code::InvalidArgument,
                         "tau = " + numberText(o.tau) + "; must be finite and > 0");
      }
      break;
  }
  switch (entry.rule) {
    case Rule::TrimmedMean:
      if (!(o.trimFraction >= 0.0 && o.trimFraction < 0.5)) {
        return makeError(Code::InvalidArgument,
                         "trimFraction = " + numberText(o.trimFraction) + "; must be in [0, 0.5)");
      }
      break;
    case Rule::Krum:
    case Rule::MultiKrum:
      if (o.krumByzantine < 0) {
        return makeError(Code::InvalidArgument,
                         "krumByzantine = " + std::to_string(o.krumByzantine) + "; must be >= 0");
      }
      if (o.multiKrumSelect < 0) {
        return makeError(
            Code::InvalidArgument,
            "multiKrumSelect = " + std::to_string(o.multiKrumSelect) + "; must be >= 0");
      }
      break;
    case Rule::Mean:
    case Rule::Median: break;
  }
  return {};
}

// Snapshot layout (little-endian): "EFAG", u32 version, u32 name length,
// name, u64 P, u64 round, u32 vector count, then count * P floats.
constexpr std::array<char, 4> kSnapshotMagic{'E', 'F', 'A', 'G'};
constexpr std::uint32_t kSnapshotVersion = 1;
static_assert(std::endian::native == std::endian::little,
              "snapshots are written in host order, which must be little-endian");

template <typename T>
void put(std::vector<std::byte>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

class SnapshotReader {
 public:
  explicit SnapshotReader(std::span<const std::byte> bytes) : bytes_(bytes) {}

  template <typename T>
  Result<T> get(std::string_view what) {
    if (bytes_.size() - offset_ < sizeof(T)) return truncated(what);
    T value;
    std::memcpy(&value, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }
  Result<std::span<const std::byte>> take(std::size_t n, std::string_view what) {
    if (bytes_.size() - offset_ < n) return truncated(what);
    auto out = bytes_.subspan(offset_, n);
    offset_ += n;
    return out;
  }
  std::size_t remaining() const { return bytes_.size() - offset_; }

 private:
  Error truncated(std::string_view what) const {
    return makeError(Code::Truncated, "aggregation snapshot ends inside " + std::string(what) +
                                          " at byte " + std::to_string(offset_) + " of " +
                                          std::to_string(bytes_.size()));
  }
  std::span<const std::byte> bytes_;
  std::size_t offset_ = 0;
};

class PipelineStrategy final : public Strategy {
 public:
  PipelineStrategy(const StrategyEntry& entry, AggregationOptions options, std::size_t p)
      : entry_(entry),
        options_(std::move(options)),
        p_(p),
        aggregate_(p),
        nextGlobal_(p),
        state_(stateVectors(entry.optimizer) * p),
        nextState_(state_.size()) {
    // v starts at tau^2 (Reddi et al. 2021, Algorithm 2: v_{-1} >= tau^2),
    // so the first step is bounded by eta * |m| / (2 tau) rather than eta.
    if (stateVectors(entry_.optimizer) == 2) {
      std::fill(state_.begin() + static_cast<std::ptrdiff_t>(p_), state_.end(),
                static_cast<float>(options_.tau * options_.tau));
    }
  }

  std::string_view name() const override { return entry_.name; }
  std::size_t parameterCount() const override { return p_; }

  Result<AggregationReport> aggregate(std::span<const ClientUpdate> updates,
                                      std::span<float> global, std::mt19937_64& rng) override;
  std::vector<std::byte> saveState() const override;
  Status restoreState(std::span<const std::byte> snapshot) override;

 private:
  Status validate(std::span<const ClientUpdate> updates, std::span<const float> global,
                  AggregationReport& report);
  Status finishStep(std::span<const ClientUpdate> updates, std::span<const float> global,
                    AggregationReport& report) const;
  Error diagnose(std::span<const ClientUpdate> updates, std::span<const float> global) const;
  void commit(std::span<float> global);
  Status checkRowFinite(std::span<const ClientUpdate> updates, std::size_t i) const;
  Status scan(std::span<const ClientUpdate> updates, AggregationReport& report);
  void applyClip(AggregationReport& report);
  Status combine(std::span<const ClientUpdate> updates, std::span<const float> global,
                 AggregationReport& report);
  Status combineMean(std::span<const ClientUpdate> updates, std::span<const float> global,
                     AggregationReport& report);
  void combineKrum(std::span<const float> global, AggregationReport& report);
  void sumRows(std::span<const float* const> rows, std::span<const float> scales,
               std::span<const float> global);
  bool step(std::span<const float> global);

  StrategyEntry entry_;
  AggregationOptions options_;
  std::size_t p_;
  std::uint64_t round_ = 0;
  // Scratch for P values, allocated once in makeStrategy.
  std::vector<float> aggregate_;   // Delta
  std::vector<float> nextGlobal_;  // candidate model, committed when finite
  // Optimizer state: m, then v; nextState_ holds the candidate for a round.
  std::vector<float> state_, nextState_;
  // Per round, sized by the number of updates.
  std::vector<const float*> rows_;
  std::vector<double> sumSquares_;
  std::vector<float> rowScales_;
  kernels::Scratch scratch_;
  // The step check, when the weighted sum already made it (sumRows).
  std::optional<kernels::StepCheck> fusedCheck_;
};

Status PipelineStrategy::checkRowFinite(std::span<const ClientUpdate> updates,
                                        std::size_t i) const {
  const auto delta = updates[i].delta;
  for (std::size_t j = 0; j < delta.size(); ++j) {
    if (!std::isfinite(delta[j])) {
      return makeError(Code::NonFinite, updateName(updates, i) + " has " + numberText(delta[j]) +
                                            " at index " + std::to_string(j));
    }
  }
  return {};
}

Status PipelineStrategy::validate(std::span<const ClientUpdate> updates,
                                  std::span<const float> global, AggregationReport& report) {
  const std::size_t n = updates.size();
  if (n == 0) return makeError(Code::InvalidArgument, "no updates to aggregate");
  if (global.size() != p_) {
    return makeError(Code::ShapeMismatch, "global model has " + std::to_string(global.size()) +
                                              " values; expected " + std::to_string(p_));
  }
  report.effectiveWeights.resize(n);
  report.stalenessFactors.resize(n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const ClientUpdate& u = updates[i];
    if (u.delta.size() != p_) {
      return makeError(Code::ShapeMismatch, updateName(updates, i) + " has " +
                                                std::to_string(u.delta.size()) +
                                                " values; expected " + std::to_string(p_));
    }
    if (!(std::isfinite(u.weight) && u.weight >= 0.0)) {
      return makeError(Code::InvalidArgument, updateName(updates, i) +
                                                  " weight = " + numberText(u.weight) +
                                                  "; must be finite and >= 0");
    }
    if (!(std::isfinite(u.staleness) && u.staleness >= 0.0)) {
      return makeError(Code::InvalidArgument, updateName(updates, i) +
                                                  " staleness = " + numberText(u.staleness) +
                                                  "; must be finite and >= 0");
    }
    const double factor = options_.stalenessExponent == 0.0
                              ? 1.0
                              : std::pow(1.0 + u.staleness, -options_.stalenessExponent);
    report.stalenessFactors[i] = factor;
    report.effectiveWeights[i] = u.weight * factor;
    total += report.effectiveWeights[i];
  }
  if (!(total > 0.0)) {
    return makeError(Code::InvalidArgument,
                     "total effective weight = " + numberText(total) + "; must be > 0");
  }
  if (entry_.rule == Rule::Krum || entry_.rule == Rule::MultiKrum) {
    const auto f = static_cast<std::uint64_t>(options_.krumByzantine);
    if (n <= 2 * f + 2) {
      return makeError(Code::InvalidArgument, std::string(entry_.name) + " needs n > 2f + 2; n = " +
                                                  std::to_string(n) + ", f = " + std::to_string(f));
    }
    if (entry_.rule == Rule::MultiKrum &&
        static_cast<std::uint64_t>(options_.multiKrumSelect) > n) {
      return makeError(Code::InvalidArgument,
                       "multi_krum selects m = " + std::to_string(options_.multiKrumSelect) +
                           " of n = " + std::to_string(n) + " updates");
    }
  }
  // `global` is checked where the new model is: a NaN or infinity in it
  // makes the new model non-finite, and only then is the cause looked up.
  rows_.resize(n);
  for (std::size_t i = 0; i < n; ++i) rows_[i] = updates[i].delta.data();
  return {};
}

// Norms and the finiteness check in one pass over every delta. A sum of
// squares that is not finite means a NaN or infinity, or squares that
// overflowed float; only then is the row read again to tell which.
Status PipelineStrategy::scan(std::span<const ClientUpdate> updates, AggregationReport& report) {
  const std::size_t n = updates.size();
  sumSquares_.assign(n, 0.0);
  kernels::sumSquares(rows_, p_, sumSquares_);
  report.preClipNorms.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(sumSquares_[i])) {
      EDGEFL_TRY(checkRowFinite(updates, i));
      sumSquares_[i] = kernels::sumSquaresExact(updates[i].delta);
    }
    report.preClipNorms[i] = std::sqrt(sumSquares_[i]);
  }
  return {};
}

// scale_i = min(1, C / ||delta_i||): the clip, applied as the rows are read.
void PipelineStrategy::applyClip(AggregationReport& report) {
  const std::size_t n = report.preClipNorms.size();
  report.clipNorm = options_.clipNorm;
  rowScales_.assign(n, 1.0f);
  if (options_.clipNorm == 0.0) return;
  for (std::size_t i = 0; i < n; ++i) {
    if (report.preClipNorms[i] > options_.clipNorm) {
      rowScales_[i] = static_cast<float>(options_.clipNorm / report.preClipNorms[i]);
      ++report.clipped;
    }
  }
}

// aggregate_ = the weighted sum of the rows. When nothing changes the
// aggregate before the step (SGD, no noise), the same pass also checks the
// new model, so the deltas and the aggregate are read once.
void PipelineStrategy::sumRows(std::span<const float* const> rows, std::span<const float> scales,
                               std::span<const float> global) {
  if (entry_.optimizer == Optimizer::Sgd && options_.dpNoiseMultiplier == 0.0) {
    fusedCheck_ =
        kernels::streamKernels().weightedSumSgd(rows, scales, p_, aggregate_.data(), global.data(),
                                                static_cast<float>(options_.serverLearningRate));
  } else {
    kernels::weightedSum(rows, scales, p_, aggregate_);
  }
}

Status PipelineStrategy::combineMean(std::span<const ClientUpdate> updates,
                                     std::span<const float> global, AggregationReport& report) {
  const std::size_t n = updates.size();
  const double total =
      std::accumulate(report.effectiveWeights.begin(), report.effectiveWeights.end(), 0.0);
  report.used.resize(n);
  std::iota(report.used.begin(), report.used.end(), std::size_t{0});
  if (options_.clipNorm == 0.0) {
    // Nothing depends on the norms, so the deltas are read exactly once, for
    // the weighted sum; a NaN or infinity in any of them makes the aggregate
    // non-finite, which finishStep catches and traces back to the update.
    // (Computing the norms here too would double the arithmetic of a pass
    // that is otherwise as fast as reading the deltas; ingest has already
    // measured every update's norm against max_update_norm.)
    rowScales_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      rowScales_[i] = static_cast<float>(report.effectiveWeights[i] / total);
    }
    sumRows(rows_, rowScales_, global);
    return {};
  }
  EDGEFL_TRY(scan(updates, report));
  applyClip(report);
  for (std::size_t i = 0; i < n; ++i) {
    rowScales_[i] = static_cast<float>(report.effectiveWeights[i] / total * rowScales_[i]);
  }
  sumRows(rows_, rowScales_, global);
  return {};
}

void PipelineStrategy::combineKrum(std::span<const float> global, AggregationReport& report) {
  const std::size_t n = rows_.size();
  const auto f = static_cast<std::size_t>(options_.krumByzantine);
  // Distances are between the deltas as the rule sees them: clipped and
  // discounted for staleness.
  std::vector<float> scales(n);
  for (std::size_t i = 0; i < n; ++i) {
    scales[i] = rowScales_[i] * static_cast<float>(report.stalenessFactors[i]);
  }
  report.krumScores.resize(n);
  kernels::krumScores(rows_, scales, p_, n - f - 2, report.krumScores, scratch_);

  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  // Ties go to the lower index so the choice does not depend on sort internals.
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return report.krumScores[a] < report.krumScores[b];
  });
  std::size_t m = 1;
  if (entry_.rule == Rule::MultiKrum) {
    m = options_.multiKrumSelect == 0 ? n - f : static_cast<std::size_t>(options_.multiKrumSelect);
  }
  report.used.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m));
  std::sort(report.used.begin(), report.used.end());
  for (std::size_t k = m; k < n; ++k) {
    report.excluded.push_back({order[k], {}, Exclusion::KrumOutlier});
  }
  std::sort(report.excluded.begin(), report.excluded.end(),
            [](const ExcludedUpdate& a, const ExcludedUpdate& b) { return a.index < b.index; });

  // Krum (m = 1) is the selected delta itself; multi-Krum the unweighted
  // mean of the selected ones (Blanchard et al. 2017).
  std::vector<const float*> selected(m);
  std::vector<float> selectedScales(m);
  for (std::size_t k = 0; k < m; ++k) {
    selected[k] = rows_[report.used[k]];
    selectedScales[k] = scales[report.used[k]] / static_cast<float>(m);
  }
  sumRows(selected, selectedScales, global);
}

Status PipelineStrategy::combine(std::span<const ClientUpdate> updates,
                                 std::span<const float> global, AggregationReport& report) {
  const std::size_t n = updates.size();
  if (entry_.rule == Rule::Mean) return combineMean(updates, global, report);

  EDGEFL_TRY(scan(updates, report));
  applyClip(report);
  switch (entry_.rule) {
    case Rule::Mean: break;
    case Rule::Median:
    case Rule::TrimmedMean: {
      std::size_t trim = 0;
      if (entry_.rule == Rule::TrimmedMean) {
        trim = static_cast<std::size_t>(std::floor(options_.trimFraction * static_cast<double>(n)));
        report.trimmedPerEnd = trim;
        report.trimmedValues = 2 * static_cast<std::uint64_t>(trim) * p_;
      }
      for (std::size_t i = 0; i < n; ++i) {
        rowScales_[i] *= static_cast<float>(report.stalenessFactors[i]);
      }
      report.used.resize(n);
      std::iota(report.used.begin(), report.used.end(), std::size_t{0});
      if (entry_.rule == Rule::Median) {
        kernels::coordinateMedian(rows_, rowScales_, p_, aggregate_, scratch_);
      } else {
        kernels::trimmedMean(rows_, rowScales_, p_, trim, aggregate_, scratch_);
      }
      break;
    }
    case Rule::Krum:
    case Rule::MultiKrum: combineKrum(global, report); break;
  }
  return {};
}

// Computes the candidate model and optimizer state into scratch; nothing
// the caller sees changes here. Returns false when a state value is not
// finite (a non-finite input, or |g| past ~1.8e19 overflowing v), which is
// refused rather than persisted.
bool PipelineStrategy::step(std::span<const float> global) {
  const double eta = options_.serverLearningRate;
  const float* delta = aggregate_.data();
  float* next = nextGlobal_.data();
  bool stateFinite = true;
  switch (entry_.optimizer) {
    case Optimizer::Sgd: break;  // computed by finishStep and commit
    case Optimizer::Momentum: {
      // m = mu*m + g, x -= eta*m with g = -Delta (Hsu et al. 2019).
      const double mu = options_.serverMomentum;
      const float* m = state_.data();
      float* nm = nextState_.data();
      for (std::size_t j = 0; j < p_; ++j) {
        const double g = -static_cast<double>(delta[j]);
        const double mj = mu * m[j] + g;
        nm[j] = static_cast<float>(mj);
        next[j] = static_cast<float>(global[j] - eta * mj);
        stateFinite = stateFinite && std::isfinite(nm[j]);
      }
      break;
    }
    case Optimizer::Adam:
    case Optimizer::Yogi: {
      const double b1 = options_.beta1, b2 = options_.beta2, tau = options_.tau;
      const bool yogi = entry_.optimizer == Optimizer::Yogi;
      const float* m = state_.data();
      const float* v = state_.data() + p_;
      float* nm = nextState_.data();
      float* nv = nextState_.data() + p_;
      for (std::size_t j = 0; j < p_; ++j) {
        const double g = -static_cast<double>(delta[j]);
        const double g2 = g * g;
        const double mj = b1 * m[j] + (1.0 - b1) * g;
        double vj;
        if (yogi) {
          const double d = static_cast<double>(v[j]) - g2;
          const double sign = d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : 0.0);
          vj = v[j] - (1.0 - b2) * g2 * sign;
        } else {
          vj = b2 * v[j] + (1.0 - b2) * g2;
        }
        nm[j] = static_cast<float>(mj);
        nv[j] = static_cast<float>(vj);
        next[j] = static_cast<float>(global[j] - eta * mj / (std::sqrt(vj) + tau));
        stateFinite = stateFinite && std::isfinite(nm[j]) && std::isfinite(nv[j]);
      }
      break;
    }
  }
  return stateFinite;
}

// Names the first value that is not finite, in the order a reader would
// look for the cause: the model, the updates, the aggregate, the new model.
Error PipelineStrategy::diagnose(std::span<const ClientUpdate> updates,
                                 std::span<const float> global) const {
  for (std::size_t j = 0; j < p_; ++j) {
    if (!std::isfinite(global[j])) {
      return makeError(Code::NonFinite, "global model has " + numberText(global[j]) + " at index " +
                                            std::to_string(j));
    }
  }
  for (std::size_t i = 0; i < updates.size(); ++i) {
    Status row = checkRowFinite(updates, i);
    if (!row.ok()) return row.error();
  }
  const bool sgd = entry_.optimizer == Optimizer::Sgd;
  const auto lr = static_cast<float>(options_.serverLearningRate);
  for (std::size_t j = 0; j < p_; ++j) {
    if (!std::isfinite(aggregate_[j])) {
      return makeError(Code::NonFinite, "aggregate overflowed to " + numberText(aggregate_[j]) +
                                            " at index " + std::to_string(j));
    }
    const float next = sgd ? global[j] + lr * aggregate_[j] : nextGlobal_[j];
    if (!std::isfinite(next)) {
      return makeError(Code::NonFinite, "new model overflowed to " + numberText(next) +
                                            " at index " + std::to_string(j));
    }
  }
  for (std::size_t j = 0; j < nextState_.size(); ++j) {
    if (!std::isfinite(nextState_[j])) {
      return makeError(Code::NonFinite, "optimizer state overflowed to " +
                                            numberText(nextState_[j]) + " at index " +
                                            std::to_string(j % p_));
    }
  }
  return makeError(Code::NonFinite, "a value is not finite but none was found");
}

Status PipelineStrategy::finishStep(std::span<const ClientUpdate> updates,
                                    std::span<const float> global,
                                    AggregationReport& report) const {
  const float* delta = aggregate_.data();
  const float* old = global.data();
  const bool sgd = entry_.optimizer == Optimizer::Sgd;
  const auto lr = static_cast<float>(options_.serverLearningRate);
  auto next = [&](std::size_t j) { return sgd ? old[j] + lr * delta[j] : nextGlobal_[j]; };
  // One pass over the aggregate, the old and the new model: the norms for
  // the report and whether anything is not finite. For sgd the new model is
  // computed here and again on commit (the same float expression, so the
  // same values) instead of being stored and copied.
  // A fused check with finite sums is conclusive; anything else is decided
  // by the check's own pass.
  kernels::StepCheck check = fusedCheck_ && fusedCheck_->finite
                                 ? *fusedCheck_
                                 : kernels::streamKernels().checkStep(
                                       delta, old, sgd ? nullptr : nextGlobal_.data(), lr, p_);
  if (!check.finite) return diagnose(updates, global);
  // Float squares overflow above ~1.8e19 although the values are finite.
  if (!std::isfinite(check.aggregateSquares)) {
    check.aggregateSquares = kernels::sumSquaresExact(aggregate_);
  }
  if (!std::isfinite(check.stepSquares)) {
    check.stepSquares = 0.0;
    for (std::size_t j = 0; j < p_; ++j) {
      const double d = static_cast<double>(next(j)) - old[j];
      check.stepSquares += d * d;
    }
  }
  report.aggregateNorm = std::sqrt(check.aggregateSquares);
  report.stepNorm = std::sqrt(check.stepSquares);
  return {};
}

// Writes the checked model into `global`.
void PipelineStrategy::commit(std::span<float> global) {
  if (entry_.optimizer == Optimizer::Sgd) {
    const auto lr = static_cast<float>(options_.serverLearningRate);
    kernels::streamKernels().applySgd(global.data(), aggregate_.data(), lr, p_);
  } else {
    std::copy(nextGlobal_.begin(), nextGlobal_.end(), global.begin());
    state_.swap(nextState_);
  }
}

Result<AggregationReport> PipelineStrategy::aggregate(std::span<const ClientUpdate> updates,
                                                      std::span<float> global,
                                                      std::mt19937_64& rng) {
  AggregationReport report;
  report.strategy = std::string(entry_.name);
  report.inputs = updates.size();
  EDGEFL_TRY(validate(updates, global, report));
  fusedCheck_.reset();
  EDGEFL_TRY(combine(updates, global, report));
  for (ExcludedUpdate& e : report.excluded) e.id = std::string(updates[e.index].id);

  report.noiseMultiplier = options_.dpNoiseMultiplier;
  if (options_.dpNoiseMultiplier > 0.0) {
    // Sensitivity of a mean of n deltas each clipped to C is C / n.
    report.noiseStd =
        options_.dpNoiseMultiplier * options_.clipNorm / static_cast<double>(report.used.size());
    std::normal_distribution<double> noise(0.0, report.noiseStd);
    for (float& value : aggregate_) value = static_cast<float>(value + noise(rng));
  }
  if (!step(global)) return diagnose(updates, global);
  EDGEFL_TRY(finishStep(updates, global, report));
  // Everything succeeded: commit the model and the optimizer state together.
  commit(global);
  report.round = ++round_;
  return report;
}

std::vector<std::byte> PipelineStrategy::saveState() const {
  std::vector<std::byte> out;
  out.reserve(64 + entry_.name.size() + state_.size() * sizeof(float));
  put(out, kSnapshotMagic);
  put(out, kSnapshotVersion);
  put(out, static_cast<std::uint32_t>(entry_.name.size()));
  const auto* name = reinterpret_cast<const std::byte*>(entry_.name.data());
  out.insert(out.end(), name, name + entry_.name.size());
  put(out, static_cast<std::uint64_t>(p_));
  put(out, round_);
  put(out, static_cast<std::uint32_t>(stateVectors(entry_.optimizer)));
  const auto* values = reinterpret_cast<const std::byte*>(state_.data());
  out.insert(out.end(), values, values + state_.size() * sizeof(float));
  return out;
}

Status PipelineStrategy::restoreState(std::span<const std::byte> snapshot) {
  SnapshotReader in(snapshot);
  auto magic = in.get<std::array<char, 4>>("the magic");
  if (!magic.ok()) return magic.error();
  if (*magic != kSnapshotMagic) {
    return makeError(Code::BadField, "not an aggregation snapshot (bad magic)");
  }
  auto version = in.get<std::uint32_t>("the version");
  if (!version.ok()) return version.error();
  if (*version != kSnapshotVersion) {
    return makeError(Code::BadField, "aggregation snapshot version " + std::to_string(*version) +
                                         "; this build reads version " +
                                         std::to_string(kSnapshotVersion));
  }
  auto nameLength = in.get<std::uint32_t>("the name length");
  if (!nameLength.ok()) return nameLength.error();
  auto nameBytes = in.take(*nameLength, "the strategy name");
  if (!nameBytes.ok()) return nameBytes.error();
  const std::string_view name(reinterpret_cast<const char*>(nameBytes->data()), nameBytes->size());
  if (name != entry_.name) {
    return makeError(Code::WrongKind, "snapshot of strategy '" + std::string(name) +
                                          "' restored into '" + std::string(entry_.name) + "'");
  }
  auto p = in.get<std::uint64_t>("the parameter count");
  if (!p.ok()) return p.error();
  if (*p != p_) {
    return makeError(Code::ShapeMismatch, "snapshot for " + std::to_string(*p) +
                                              " parameters; this strategy has " +
                                              std::to_string(p_));
  }
  auto round = in.get<std::uint64_t>("the round count");
  if (!round.ok()) return round.error();
  auto vectors = in.get<std::uint32_t>("the vector count");
  if (!vectors.ok()) return vectors.error();
  if (*vectors != stateVectors(entry_.optimizer)) {
    return makeError(Code::BadField, "snapshot has " + std::to_string(*vectors) +
                                         " state vectors; " + std::string(entry_.name) + " keeps " +
                                         std::to_string(stateVectors(entry_.optimizer)));
  }
  auto values = in.take(state_.size() * sizeof(float), "the state vectors");
  if (!values.ok()) return values.error();
  if (in.remaining() != 0) {
    return makeError(Code::BadField, "aggregation snapshot has " + std::to_string(in.remaining()) +
                                         " trailing bytes");
  }
  std::vector<float> restored(state_.size());
  if (!restored.empty()) std::memcpy(restored.data(), values->data(), values->size());
  for (std::size_t j = 0; j < restored.size(); ++j) {
    if (!std::isfinite(restored[j])) {
      return makeError(Code::NonFinite, "snapshot state value " + std::to_string(j) + " is " +
                                            numberText(restored[j]));
    }
    if (j >= p_ && restored[j] < 0.0f) {
      return makeError(Code::BadField, "snapshot second moment v[" + std::to_string(j - p_) +
                                           "] = " + numberText(restored[j]) + " < 0");
    }
  }
  state_.swap(restored);
  round_ = *round;
  return {};
}

}  // namespace

AggregationOptions aggregationOptionsFromConfig(const CoordinatorConfig& config) {
  const auto& a = config.aggregation;
  AggregationOptions o;
  o.strategy = a.strategy;
  o.serverLearningRate = a.serverLearningRate;
  o.serverMomentum = a.serverMomentum;
  o.beta1 = a.beta1;
  o.beta2 = a.beta2;
  o.tau = a.tau;
  o.trimFraction = a.trimFraction;
  o.krumByzantine = a.krumByzantine;
  o.multiKrumSelect = a.multiKrumSelect;
  o.clipNorm = a.clipNorm;
  o.dpNoiseMultiplier = a.dpNoiseMultiplier;
  o.stalenessExponent = config.rounds.stalenessExponent;
  return o;
}

std::span<const std::string_view> strategyNames() {
  return kStrategyNames;
}

std::string_view exclusionName(Exclusion exclusion) {
  switch (exclusion) {
    case Exclusion::KrumOutlier: return "KrumOutlier";
  }
  return "Unknown";
}

Result<std::unique_ptr<Strategy>> makeStrategy(const AggregationOptions& options,
                                               std::size_t parameterCount) {
  const auto* entry =
      std::find_if(kStrategies.begin(), kStrategies.end(),
                   [&](const StrategyEntry& e) { return e.name == options.strategy; });
  if (entry == kStrategies.end()) {
    std::string known;
    for (std::string_view name : kStrategyNames)
      known += (known.empty() ? "" : ", ") + std::string(name);
    return makeError(Code::InvalidArgument,
                     "unknown aggregation strategy '" + options.strategy + "'; known: " + known);
  }
  EDGEFL_TRY(checkOptions(*entry, options, parameterCount));
  return std::unique_ptr<Strategy>(
      std::make_unique<PipelineStrategy>(*entry, options, parameterCount));
}

}  // namespace edgefl::server
