#include "edgefl/server/rollout.hpp"

#include <cstdio>

namespace edgefl::server {
namespace {
std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}
}  // namespace

RolloutController::RolloutController(RolloutOptions options) : options_(options) {}

void RolloutController::begin(std::uint64_t canaryVersion, std::uint64_t stableVersion,
                              std::int64_t now) {
  canaryVersion_ = canaryVersion;
  stableVersion_ = stableVersion;
  startedAt_ = now;
  latest_.clear();
}

void RolloutController::end() {
  canaryVersion_ = 0;
  latest_.clear();
}

void RolloutController::observe(const RolloutReport& report) {
  if (!active()) return;
  const bool onCanary = report.canary && report.activeVersion == canaryVersion_;
  const bool onStable = !report.canary && report.activeVersion == stableVersion_;
  if (!onCanary && !onStable) return;
  latest_[report.deviceId] = report;
  latest_[report.deviceId].canary = onCanary;
}

std::size_t RolloutController::canaryReports() const {
  std::size_t n = 0;
  for (const auto& [id, r] : latest_) n += r.canary;
  return n;
}

RolloutDecision RolloutController::decide(std::int64_t now) const {
  if (!active()) return {};
  std::uint64_t failures = 0, canaryLabelled = 0, stableLabelled = 0, shadowSamples = 0;
  double canaryCorrect = 0, stableCorrect = 0, agreement = 0;
  std::size_t canaryDevices = 0;
  for (const auto& [id, r] : latest_) {
    if (r.canary) {
      ++canaryDevices;
      failures += r.healthFailures;
      if (r.labelled >= options_.minLabelled) {
        canaryLabelled += r.labelled;
        canaryCorrect += r.accuracy * static_cast<double>(r.labelled);
      }
      shadowSamples += r.shadowSamples;
      agreement += r.shadowAgreement * static_cast<double>(r.shadowSamples);
    } else if (r.labelled >= options_.minLabelled) {
      stableLabelled += r.labelled;
      stableCorrect += r.accuracy * static_cast<double>(r.labelled);
    }
  }
  if (failures > options_.maxHealthFailures) {
    return {RolloutAction::Rollback, "canary devices report " + std::to_string(failures) +
                                         " health-check failures (limit " +
                                         std::to_string(options_.maxHealthFailures) + ")"};
  }
  if (now - startedAt_ < options_.windowSeconds) {
    return {RolloutAction::Wait, "window open"};
  }
  if (canaryDevices < options_.minReports) {
    return {RolloutAction::Wait, std::to_string(canaryDevices) + " of " +
                                     std::to_string(options_.minReports) + " canary reports"};
  }
  if (shadowSamples > 0) {
    const double a = agreement / static_cast<double>(shadowSamples);
    if (a < options_.minShadowAgreement) {
      return {RolloutAction::Rollback,
              "shadow agreement " + fmt(a) + " < " + fmt(options_.minShadowAgreement)};
    }
  }
  if (canaryLabelled > 0 && stableLabelled > 0) {
    const double canaryAcc = canaryCorrect / static_cast<double>(canaryLabelled);
    const double stableAcc = stableCorrect / static_cast<double>(stableLabelled);
    if (canaryAcc < stableAcc - options_.maxAccuracyDrop) {
      return {RolloutAction::Rollback, "canary accuracy " + fmt(canaryAcc) + " < stable " +
                                           fmt(stableAcc) + " - " + fmt(options_.maxAccuracyDrop)};
    }
    return {RolloutAction::Promote, "canary accuracy " + fmt(canaryAcc) + " vs stable " +
                                        fmt(stableAcc) + " over " + std::to_string(canaryDevices) +
                                        " canary devices"};
  }
  return {RolloutAction::Promote, std::to_string(canaryDevices) +
                                      " canary devices healthy; no labelled accuracy to compare"};
}

}  // namespace edgefl::server
