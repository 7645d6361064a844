#include "edgefl/device/input_monitor.hpp"

#include <algorithm>
#include <cmath>

namespace edgefl::device {

void InputMonitor::prepare(const Model& model) {
  driftCache_.reset();
  const InputSchema& schema = model.inputSchema();
  const ReferenceStats& stats = model.referenceStats();
  featureCount_ = model.featureCount();
  min_ = schema.minValue;
  max_ = schema.maxValue;
  // validateModel guarantees featureCount entries; a model built by hand
  // without ranges accepts everything.
  min_.resize(featureCount_, -std::numeric_limits<float>::max());
  max_.resize(featureCount_, std::numeric_limits<float>::max());
  const bool hasHistogram =
      stats.histogramBins > 0 &&
      stats.histogram.size() == static_cast<std::size_t>(featureCount_) * stats.histogramBins;
  bins_ = hasHistogram ? stats.histogramBins : 0;
  reference_ = hasHistogram ? stats.histogram : std::vector<float>();
  binLo_.assign(featureCount_, 0.0);
  binScale_.assign(featureCount_, 0.0);
  for (std::size_t f = 0; f < featureCount_; ++f) {
    // The same binning as computeReferenceStats, in double.
    const double lo = min_[f];
    const double width = static_cast<double>(max_[f]) - lo;
    binLo_[f] = lo;
    binScale_[f] = width > 0 && std::isfinite(width) ? bins_ / width : 0.0;
  }
  counts_.assign(static_cast<std::size_t>(featureCount_) * bins_, 0);
  mean_.assign(featureCount_, 0.0);
  m2_.assign(featureCount_, 0.0);
  samples_ = 0;
}

void InputMonitor::reset() {
  std::fill(counts_.begin(), counts_.end(), 0u);
  std::fill(mean_.begin(), mean_.end(), 0.0);
  std::fill(m2_.begin(), m2_.end(), 0.0);
  samples_ = 0;
  driftCache_.reset();
}

SampleCheck InputMonitor::check(std::span<const float> x) const {
  if (x.size() != featureCount_) {
    return SampleCheck{Code::ShapeMismatch, static_cast<std::uint32_t>(x.size()), 0.0f};
  }
  for (std::uint32_t f = 0; f < featureCount_; ++f) {
    const float v = x[f];
    if (!std::isfinite(v)) return SampleCheck{Code::NonFinite, f, v};
    if (v < min_[f] || v > max_[f]) return SampleCheck{Code::OutOfRange, f, v};
  }
  return {};
}

void InputMonitor::add(std::span<const float> x) {
  driftCache_.reset();
  ++samples_;
  const double n = static_cast<double>(samples_);
  for (std::size_t f = 0; f < featureCount_; ++f) {
    const double v = x[f];
    const double delta = v - mean_[f];
    mean_[f] += delta / n;
    m2_[f] += delta * (v - mean_[f]);
    if (bins_ == 0) continue;
    const double position = (v - binLo_[f]) * binScale_[f];
    const std::size_t bin =
        position <= 0 ? 0 : std::min<std::size_t>(bins_ - 1u, static_cast<std::size_t>(position));
    ++counts_[f * bins_ + bin];
  }
}

DriftSummary InputMonitor::drift() const {
  if (driftCache_) return *driftCache_;
  DriftSummary& out = driftCache_.emplace();
  if (bins_ == 0 || samples_ == 0) return out;
  out.samples = samples_;
  double sum = 0;
  double worst = -1;
  for (std::size_t f = 0; f < featureCount_; ++f) {
    double psi = 0;
    for (std::size_t b = 0; b < bins_; ++b) {
      const double p = std::max(kPsiFloor, counts_[f * bins_ + b] / static_cast<double>(samples_));
      const double q = std::max(kPsiFloor, static_cast<double>(reference_[f * bins_ + b]));
      psi += (p - q) * std::log(p / q);
    }
    sum += psi;
    if (psi > worst) {
      worst = psi;
      out.worstFeature = static_cast<std::uint32_t>(f);
    }
  }
  out.psiMax = static_cast<float>(worst);
  out.psiMean = static_cast<float>(sum / featureCount_);
  return out;
}

std::vector<FeatureStatistics> InputMonitor::featureStatistics() const {
  std::vector<FeatureStatistics> out(featureCount_);
  for (std::size_t f = 0; f < featureCount_; ++f) {
    out[f].count = samples_;
    out[f].mean = mean_[f];
    out[f].std = samples_ > 0 ? std::sqrt(m2_[f] / static_cast<double>(samples_)) : 0.0;
  }
  return out;
}

void LatencyHistogram::record(double micros) {
  std::size_t b = 0;
  while (b < kBounds && micros > kBoundsMicros[b]) ++b;
  ++counts_[b];
}

}  // namespace edgefl::device
