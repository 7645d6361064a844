#pragma once
// The rollout controller: after a validated candidate goes to the canary
// channel, telemetry from canary and stable devices over a window decides
// promotion to stable or automatic rollback. Pure decision logic: the
// coordinator feeds it reports and carries out what it decides.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace edgefl::server {

struct RolloutOptions {
  std::int64_t windowSeconds = 60;
  std::uint64_t minReports = 3;   // canary reports needed to decide
  double maxAccuracyDrop = 0.02;  // canary vs stable labelled accuracy
  double minShadowAgreement = 0.9;
  std::uint64_t maxHealthFailures = 0;  // over all canary devices
  // A device's labelled accuracy counts only with this many labelled
  // samples behind it; fewer is noise.
  std::uint64_t minLabelled = 10;
};

// What one telemetry message says about the rollout.
struct RolloutReport {
  std::string deviceId;
  bool canary = false;  // runs the canary model
  std::uint64_t activeVersion = 0;
  std::uint64_t healthFailures = 0;
  std::uint64_t labelled = 0;
  double accuracy = 0;
  std::uint64_t shadowSamples = 0;
  double shadowAgreement = 0;
};

enum class RolloutAction { Wait, Promote, Rollback };

struct RolloutDecision {
  RolloutAction action = RolloutAction::Wait;
  std::string reason;
};

class RolloutController {
 public:
  explicit RolloutController(RolloutOptions options);

  // Starts watching a canary of `canaryVersion` (replacing any earlier one)
  // against `stableVersion`, at Unix time `now`.
  void begin(std::uint64_t canaryVersion, std::uint64_t stableVersion, std::int64_t now);
  void end();
  bool active() const { return canaryVersion_ != 0; }
  std::uint64_t canaryVersion() const { return canaryVersion_; }

  // Reports about other versions are ignored; the latest report of each
  // device counts.
  void observe(const RolloutReport& report);
  // Rollback as soon as health failures exceed the limit; otherwise wait for
  // the window and enough canary reports, then compare.
  RolloutDecision decide(std::int64_t now) const;

  std::size_t canaryReports() const;

 private:
  RolloutOptions options_;
  std::uint64_t canaryVersion_ = 0;
  std::uint64_t stableVersion_ = 0;
  std::int64_t startedAt_ = 0;
  std::map<std::string, RolloutReport> latest_;
};

}  // namespace edgefl::server
