#include <gtest/gtest.h>

#include "edgefl/server/rollout.hpp"

namespace edgefl::server {
namespace {

RolloutReport report(const std::string& id, bool canary, std::uint64_t version, double accuracy,
                     std::uint64_t labelled = 100, std::uint64_t failures = 0) {
  RolloutReport r;
  r.deviceId = id;
  r.canary = canary;
  r.activeVersion = version;
  r.accuracy = accuracy;
  r.labelled = labelled;
  r.healthFailures = failures;
  return r;
}

RolloutOptions options() {
  RolloutOptions o;
  o.windowSeconds = 60;
  o.minReports = 2;
  o.maxAccuracyDrop = 0.02;
  return o;
}

TEST(Rollout, WaitsForTheWindowAndEnoughReportsThenPromotes) {
  RolloutController c(options());
  c.begin(5, 4, 1000);
  c.observe(report("a", true, 5, 0.80));
  EXPECT_EQ(c.decide(1010).action, RolloutAction::Wait);  // window open
  EXPECT_EQ(c.decide(1070).action, RolloutAction::Wait);  // 1 of 2 reports
  c.observe(report("b", true, 5, 0.82));
  c.observe(report("s", false, 4, 0.80));
  auto d = c.decide(1070);
  EXPECT_EQ(d.action, RolloutAction::Promote) << d.reason;
}

TEST(Rollout, RollsBackOnWorseAccuracyAndHealthFailures) {
  RolloutController c(options());
  c.begin(5, 4, 1000);
  c.observe(report("a", true, 5, 0.70));
  c.observe(report("b", true, 5, 0.72));
  c.observe(report("s", false, 4, 0.80));
  auto d = c.decide(1100);
  EXPECT_EQ(d.action, RolloutAction::Rollback);
  EXPECT_NE(d.reason.find("canary accuracy 0.7100 < stable 0.8000"), std::string::npos) << d.reason;

  RolloutController h(options());
  h.begin(5, 4, 1000);
  h.observe(report("a", true, 5, 0.9, 100, 2));
  // Health failures roll back at once, window or not.
  EXPECT_EQ(h.decide(1001).action, RolloutAction::Rollback);
}

TEST(Rollout, IgnoresOtherVersionsThinLabelsAndKeepsTheLatestReport) {
  RolloutController c(options());
  c.begin(5, 4, 1000);
  c.observe(report("old", true, 3, 0.1));      // another version
  c.observe(report("thin", true, 5, 0.0, 3));  // too few labels to count
  c.observe(report("a", true, 5, 0.5));
  c.observe(report("a", true, 5, 0.9));  // the latest counts
  c.observe(report("s", false, 4, 0.85));
  EXPECT_EQ(c.canaryReports(), 2u);
  EXPECT_EQ(c.decide(1100).action, RolloutAction::Promote);
  c.end();
  EXPECT_FALSE(c.active());
  EXPECT_EQ(c.decide(1100).action, RolloutAction::Wait);
}

TEST(Rollout, ShadowAgreementBelowTheFloorRollsBack) {
  RolloutController c(options());
  c.begin(5, 4, 1000);
  auto a = report("a", true, 5, 0.9);
  a.shadowSamples = 100;
  a.shadowAgreement = 0.5;
  c.observe(a);
  c.observe(report("b", true, 5, 0.9));
  EXPECT_EQ(c.decide(1100).action, RolloutAction::Rollback);
}

}  // namespace
}  // namespace edgefl::server
