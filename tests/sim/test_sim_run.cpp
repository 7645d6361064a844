// A short edgefl-sim run through the real fleet path: a fleet from `edgefl
// fleet init`, a real mosquitto, edgefl-coordinator as its own process, and
// virtual devices that are real edgefl::Devices with enrolled keys. One
// attacker of every kind. Accuracy rises, every attacker is rejected (or,
// for well-formed poisoned updates, excluded by robust aggregation) with
// its reason, a model is promoted from canary to stable, and the reports
// are written.

#include <gtest/gtest.h>
#include <signal.h>

#include "edgefl/server/registry.hpp"
#include "edgefl/sim/simulator.hpp"
#include "support/fleet.hpp"
#include "support/process.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

TEST(SimRun, AttackersAreRejectedAccuracyRisesAndAModelReachesStable) {
  test::TestFleet fleet({.name = "simfleet", .arch = "mlp:784-32-10"});
  auto& c = fleet.config();
  c.rounds.fraction = 1.0;
  c.rounds.minUpdates = 3;
  c.rounds.maxUpdates = 1000;  // every round runs to its deadline: all updates are judged
  c.rounds.deadlineSeconds = 6;
  c.training.epochs = 1;
  c.training.learningRate = 0.05;
  c.training.momentum = 0.5;
  c.aggregation.strategy = "multi_krum";
  c.aggregation.krumByzantine = 2;
  c.ingest.maxUpdateNorm = 20.0;
  c.validation.tolerance = 0.05;
  c.validation.sliceMinStableAccuracy = 0.95;  // a 3-round model is judged overall only
  c.rollout.canaryPercent = 50;
  c.rollout.windowSeconds = 2;
  c.rollout.minReports = 2;
  c.rollout.maxAccuracyDrop = 0.2;
  fleet.saveConfig();
  test::ChildProcess coordinator(
      {EDGEFL_COORDINATOR, "--config", (fleet.dir() / "coordinator.toml").string()},
      fleet.dir() / "coordinator.log");

  sim::SimConfig config;
  config.fleet = fleet.dir();
  config.summaryJson = fleet.dir() / "out" / "summary.json";
  config.devices = 14;
  config.rounds = 3;
  config.partition = "iid";
  config.trainSamples = 6000;
  config.seed = 3;
  config.telemetrySeconds = 1;
  config.streamPerSecond = 10;
  config.roundTimeoutSeconds = 90;
  config.setupTimeoutSeconds = 60;
  config.attackers.fraction = 8.0 / 14.0;  // one of each kind
  config.attackers.scaleFactor = 1000;
  config.stragglers.fraction = 0.1;
  config.stragglers.delay = sim::parseDelay("fixed:0.5").value();
  sim::RunHooks hooks;
  if (std::getenv("EDGEFL_TEST_LOG")) hooks.log = stderrSink(LogLevel::Debug);
  // Each round is announced before it starts and reported after it ends.
  std::vector<std::string> calls;
  hooks.beforeRound = [&](std::uint32_t done) {
    calls.push_back("before " + std::to_string(done));
  };
  hooks.row = [&](const sim::RoundRow& row) {
    calls.push_back("row " + std::to_string(row.round));
  };
  auto run = sim::runSimulation(config, hooks);
  ASSERT_TRUE(run.ok()) << run.error().toString() << "\n"
                        << test::readTextFile(fleet.dir() / "coordinator.log");
  const sim::SimSummary& s = *run;
  ASSERT_TRUE(s.stopReason.empty()) << s.stopReason;
  ASSERT_EQ(s.rounds.size(), 3u);
  EXPECT_EQ(calls, (std::vector<std::string>{"before 0", "row 1", "before 1", "row 2", "before 2",
                                             "row 3"}));
  EXPECT_EQ(s.devices, 14u);
  EXPECT_EQ(s.attackers, 8u);
  for (const auto& r : s.rounds) {
    EXPECT_EQ(r.state, "closed") << "round " << r.round << ": " << r.outcome;
    EXPECT_EQ(r.selected, 14u) << "fraction 1.0 selects every device";
    EXPECT_GT(r.bytesUp, 0u);
  }

  // Accuracy rises from the initial model.
  ASSERT_TRUE(s.initialAccuracy.has_value());
  ASSERT_TRUE(s.stableAccuracy.has_value());
  EXPECT_GT(*s.stableAccuracy, *s.initialAccuracy + 0.3)
      << "initial " << *s.initialAccuracy << ", final " << *s.stableAccuracy;

  // Every kind of attacker is rejected with its reason.
  const std::map<std::string, std::string> expected{{"forged_signature", "BadSignature"},
                                                    {"impersonation", "Impersonation"},
                                                    {"nonfinite", "NonFinite"},
                                                    {"noise", "NormTooLarge"},
                                                    {"scale", "NormTooLarge"},
                                                    {"replay", "RoundClosed"},
                                                    {"sign_flip", "excluded by aggregation"}};
  ASSERT_EQ(s.attacks.size(), 8u);
  for (const auto& [kind, reason] : expected) {
    auto it = s.attacks.find(kind);
    ASSERT_NE(it, s.attacks.end()) << kind;
    EXPECT_EQ(it->second.devices, 1u) << kind;
    EXPECT_GE(
        it->second.rejectedByReason.count(reason) ? it->second.rejectedByReason.at(reason) : 0, 2u)
        << kind << " should be rejected as " << reason;
  }
  // A forged, impersonating, non-finite or oversized update never passes.
  for (const char* kind : {"forged_signature", "impersonation", "nonfinite", "noise", "scale"}) {
    EXPECT_EQ(s.attacks.at(kind).accepted, 0u) << kind;
  }
  // Label flipping yields well-formed updates; robust aggregation keeps it
  // out of most aggregates (Krum scores, not a hard guarantee per round).
  const auto& flip = s.attacks.at("label_flip");
  EXPECT_GE(flip.updates, 2u);
  EXPECT_GE(flip.excluded * 2, flip.accepted) << "label flips mostly excluded";

  // A deployment reached stable through the canary.
  EXPECT_GE(s.promotions, 1u);
  EXPECT_GT(s.stableVersion, 1u);
  ASSERT_GE(s.lineage.size(), 2u);
  EXPECT_NE(s.lineage.back().find("initial"), std::string::npos);
  {
    auto reg = server::Registry::open(fleet.dir() / "registry.db");
    ASSERT_TRUE(reg.ok());
    auto stable = reg->activeDeployment("stable");
    ASSERT_TRUE(stable.has_value());
    EXPECT_EQ(stable->version, s.stableVersion);
  }

  // Reports, with the field names external tooling relies on.
  ASSERT_TRUE(sim::writeReports(s).ok());
  const std::string json = test::readTextFile(config.summaryJson);
  for (const char* field : {"\"rounds\":[", "\"round\":1", "\"selected\":", "\"accepted\":",
                            "\"rejected_by_reason\":{", "\"accuracy\":", "\"BadSignature\":"}) {
    EXPECT_NE(json.find(field), std::string::npos) << field;
  }
  const std::string csv = test::readTextFile(fleet.dir() / "out" / "summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  EXPECT_EQ(csv.rfind("round,state,", 0), 0u);
  const std::string svg = test::readTextFile(fleet.dir() / "out" / "summary.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);

  EXPECT_TRUE(coordinator.running());
  EXPECT_EQ(coordinator.kill(SIGTERM), 0);
}

TEST(SimRun, StopSetBeforeARoundEndsTheRunBeforeIt) {
  test::TestFleet fleet({.name = "simstop"});
  test::ChildProcess coordinator(
      {EDGEFL_COORDINATOR, "--config", (fleet.dir() / "coordinator.toml").string()},
      fleet.dir() / "coordinator.log");
  sim::SimConfig config;
  config.fleet = fleet.dir();
  config.summaryJson = fleet.dir() / "out" / "summary.json";
  config.devices = 2;
  config.rounds = 3;
  config.trainSamples = 200;
  config.setupTimeoutSeconds = 60;
  std::atomic<bool> stop{false};
  std::vector<std::uint32_t> calls;
  sim::RunHooks hooks;
  hooks.stop = &stop;
  hooks.beforeRound = [&](std::uint32_t done) {
    calls.push_back(done);
    stop = true;
  };
  auto run = sim::runSimulation(config, hooks);
  ASSERT_TRUE(run.ok()) << run.error().toString() << "\n"
                        << test::readTextFile(fleet.dir() / "coordinator.log");
  EXPECT_EQ(calls, std::vector<std::uint32_t>{0});
  EXPECT_TRUE(run->rounds.empty());
  EXPECT_EQ(run->stopReason, "interrupted");
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(reg->lastRound(), 0u) << "no round was started";
  EXPECT_EQ(coordinator.kill(SIGTERM), 0);
}

TEST(SimRun, RefusesAFleetWithoutACoordinatorConfig) {
  test::TempDir tmp;
  sim::SimConfig config;
  config.fleet = tmp.path();
  config.summaryJson = tmp.path() / "s.json";
  auto run = sim::runSimulation(config, {});
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.code(), Code::NotFound);
  EXPECT_NE(run.error().detail.find("fleet init"), std::string::npos);
}

}  // namespace
}  // namespace edgefl
