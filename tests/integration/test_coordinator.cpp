// The coordinator against a real broker: a round with several devices
// completes and its model goes canary then stable; every kind of bad update
// is rejected with its reason while the honest round completes; a
// regressing candidate is never deployed; a worse canary is rolled back.

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <numeric>
#include <thread>

#include "edgefl/server/coordinator.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/train.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/fleet.hpp"

namespace edgefl {
namespace {
using namespace std::chrono_literals;
using server::Coordinator;
using server::ModelStage;

const Dataset& trainData() {
  static const Dataset data = [] {
    IdxOptions o;
    o.firstN = 4000;
    auto d = loadFashionMnist("train", o);
    if (!d.ok()) throw std::runtime_error(d.error().toString());
    return std::move(d.value());
  }();
  return data;
}

std::vector<std::uint32_t> slice(std::uint32_t begin, std::uint32_t count) {
  std::vector<std::uint32_t> v(count);
  std::iota(v.begin(), v.end(), begin);
  return v;
}

// Runs a coordinator in this process with its control loop on a thread.
class RunningCoordinator {
 public:
  explicit RunningCoordinator(test::TestFleet& fleet) {
    auto c = Coordinator::open(
        fleet.config(), std::getenv("EDGEFL_TEST_LOG") ? stderrSink(LogLevel::Debug) : nullSink());
    if (!c.ok()) throw std::runtime_error(c.error().toString());
    coordinator_ = std::move(c.value());
    Status st = coordinator_->start();
    if (!st.ok()) throw std::runtime_error(st.error().toString());
    thread_ = std::thread([this] { coordinator_->run(stop_, 20ms); });
  }
  ~RunningCoordinator() {
    stop_ = true;
    thread_.join();
    coordinator_->stop();
  }
  Coordinator& operator*() { return *coordinator_; }
  Coordinator* operator->() { return coordinator_.get(); }

 private:
  std::unique_ptr<Coordinator> coordinator_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A QoS 1 publish the broker took (MQTT 5 reason codes below 0x80).
bool sent(int reasonCode) {
  return reasonCode >= 0 && reasonCode < 0x80;
}

template <typename F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

std::string rejectionReason(const server::Registry& reg, std::uint64_t round,
                            const std::string& id) {
  for (const auto& u : reg.updates(round)) {
    if (u.deviceId == id && !u.accepted) return u.reason;
  }
  return "(none)";
}

TEST(Coordinator, HonestRoundGoesCanaryThenStable) {
  test::TestFleet fleet;
  fleet.config().rounds.maxUpdates = 3;
  RunningCoordinator coordinator(fleet);
  std::vector<std::unique_ptr<test::TestDevice>> devices;
  for (int i = 0; i < 3; ++i) {
    devices.push_back(std::make_unique<test::TestDevice>(fleet, "dev-" + std::to_string(i)));
  }
  ASSERT_TRUE(coordinator->reloadDevices().ok());
  auto round = coordinator->startRound("manual");
  ASSERT_TRUE(round.ok()) << round.error().toString();
  for (std::size_t i = 0; i < devices.size(); ++i) {
    auto& d = *devices[i];
    ASSERT_TRUE(d.fetchModel());
    ASSERT_TRUE(d.waitRound());
    EXPECT_EQ(d.round(), *round);
    Bytes update = d.buildUpdate(trainData(), slice(static_cast<std::uint32_t>(i) * 1000, 1000));
    ASSERT_TRUE(sent(d.send(update)));
    auto ack = d.waitAck();
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  }
  // The round closes at max_updates, the candidate passes the gate and goes
  // to the canary channel.
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 2; }));
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  auto v2 = reg->model(2, false);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->stage, ModelStage::Canary);
  EXPECT_EQ(v2->parent, 1u);
  EXPECT_GT(v2->accuracy, reg->model(1, false)->accuracy + 0.2);
  EXPECT_EQ(reg->lineage(2), (std::vector<std::string>{"dev-0", "dev-1", "dev-2"}));
  // A canary device sees the candidate; its telemetry promotes it.
  ASSERT_TRUE(devices[0]->fetchModel("canary"));
  EXPECT_EQ(devices[0]->modelVersion(), 2u);
  ASSERT_TRUE(sent(devices[0]->sendTelemetry(true, 2, 100, 0.7f)));
  ASSERT_TRUE(sent(devices[1]->sendTelemetry(false, 1, 100, 0.1f)));
  ASSERT_TRUE(eventually([&] { return coordinator->stableVersion() == 2; }));
  EXPECT_EQ(reg->model(2, false)->stage, ModelStage::Stable);
  EXPECT_EQ(reg->model(1, false)->stage, ModelStage::Archived);
  auto deployments = reg->deployments();
  ASSERT_GE(deployments.size(), 3u);
  EXPECT_EQ(deployments[1].channel, "canary");
  EXPECT_EQ(deployments[1].version, 2u);
  EXPECT_EQ(deployments[2].channel, "stable");
  EXPECT_EQ(deployments[2].version, 2u);
  ASSERT_TRUE(devices[2]->fetchModel("stable"));
  EXPECT_EQ(devices[2]->modelVersion(), 2u);
  EXPECT_EQ(reg->integrityCheck(), "ok");
}

TEST(Coordinator, OperatorPromotesByHandAndLateEnrollmentsAreSeen) {
  test::TestFleet fleet;
  fleet.config().rounds.maxUpdates = 2;
  fleet.config().rollout.autoPromote = false;
  RunningCoordinator coordinator(fleet);
  // Enrolled after the coordinator started, without telling it: it notices
  // the devices directory changed.
  test::TestDevice a(fleet, "late-a"), b(fleet, "late-b");
  std::string out;
  ASSERT_EQ(test::runCli("round start --fleet " + fleet.dir().string(), &out), 0) << out;
  for (auto* d : {&a, &b}) {
    ASSERT_TRUE(d->fetchModel());
    ASSERT_TRUE(d->waitRound());
    ASSERT_TRUE(sent(d->send(d->buildUpdate(trainData(), slice(d == &a ? 0 : 1000, 1000)))));
    auto ack = d->waitAck();
    ASSERT_TRUE(ack.has_value());
    EXPECT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  }
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 2; }));
  ASSERT_TRUE(sent(a.sendTelemetry(true, 2, 100, 0.9f)));
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(coordinator->stableVersion(), 1u) << "auto_promote is off";
  ASSERT_EQ(
      test::runCli("rollout promote --fleet " + fleet.dir().string() + " --reason checked", &out),
      0)
      << out;
  EXPECT_NE(out.find("ok: promote done"), std::string::npos) << out;
  EXPECT_EQ(coordinator->stableVersion(), 2u);
  // Nothing left to promote: the command fails with its reason.
  EXPECT_EQ(test::runCli("rollout promote --fleet " + fleet.dir().string(), &out), 1);
  EXPECT_NE(out.find("no canary"), std::string::npos) << out;
  ASSERT_EQ(test::runCli(
                "registry events --db " + (fleet.dir() / "registry.db").string() + " --json", &out),
            0);
  EXPECT_NE(out.find("\"kind\":\"command\""), std::string::npos);
}

TEST(Coordinator, RejectsEveryBadUpdateWithItsReason) {
  test::TestFleet fleet;
  fleet.config().rounds.maxUpdates = 2;
  fleet.config().ingest.maxUpdateNorm = 50;
  RunningCoordinator coordinator(fleet);
  test::TestDevice honestA(fleet, "honest-a"), honestB(fleet, "honest-b"),
      attacker(fleet, "mallory"), victim(fleet, "victim"), revoked(fleet, "revoked");
  // Revoked at the coordinator while the broker still lets the device in
  // (`edgefl device revoke` also removes the broker user; the coordinator
  // must not depend on that having happened).
  std::filesystem::rename(fleet.dir() / "devices/revoked.pub",
                          fleet.dir() / "devices/revoked/revoked.pub");
  ASSERT_TRUE(coordinator->reloadDevices().ok());
  auto round = coordinator->startRound("manual");
  ASSERT_TRUE(round.ok());
  for (auto* d : {&honestA, &attacker, &revoked}) {
    ASSERT_TRUE(d->fetchModel());
    ASSERT_TRUE(d->waitRound());
  }
  const Model& base = attacker.model();
  const auto sizes = base.tensorSizes();
  std::vector<float> zero(base.parameterCount(), 0.01f);
  auto expectRejected = [&](const Bytes& bytes, const std::string& reason) {
    ASSERT_TRUE(sent(attacker.send(bytes)));
    auto ack = attacker.waitAck();
    ASSERT_TRUE(ack.has_value()) << reason;
    EXPECT_EQ(ack->verdict, wire::Verdict::REJECTED) << reason;
    EXPECT_EQ(ack->reason, reason);
  };
  // Garbage and truncation.
  expectRejected(Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, "NotCapnp");
  Bytes good = attacker.buildUpdate(trainData(), slice(0, 200));
  expectRejected(Bytes(good.begin(), good.begin() + static_cast<long>(good.size() / 2)),
                 "Truncated");
  // Forged: the signature bytes are not the device's.
  {
    Bytes signedBytes =
        attacker.sign(attacker.updatePayload(*round, attacker.baseDigest(), zero, sizes, 10));
    auto env = parseEnvelope(signedBytes);
    ASSERT_TRUE(env.ok());
    capnp::MallocMessageBuilder b;
    b.setRoot(env->root());
    auto forged = b.getRoot<wire::Signed>();
    std::vector<std::uint8_t> sig(forged.getSignature().begin(), forged.getSignature().end());
    sig[5] ^= 0x40;
    forged.setSignature(kj::arrayPtr(sig.data(), sig.size()));
    expectRejected(toBytes(b), "BadSignature");
  }
  // A key nobody enrolled.
  KeyPair stranger = KeyPair::generate();
  expectRejected(
      seal(Kind::UPDATE, attacker.updatePayload(*round, attacker.baseDigest(), zero, sizes, 10),
           stranger),
      "UnknownKey");
  // Impersonation: a valid signature by mallory, claiming to be the victim.
  expectRejected(attacker.sign(attacker.updatePayload(*round, attacker.baseDigest(), zero, sizes,
                                                      10, "victim")),
                 "Impersonation");
  // Not the open round, a wrong base, non-finite, mis-shaped, norm bomb.
  expectRejected(
      attacker.sign(attacker.updatePayload(*round + 5, attacker.baseDigest(), zero, sizes, 10)),
      "RoundClosed");
  Digest wrongBase = attacker.baseDigest();
  wrongBase[0] ^= 1;
  expectRejected(attacker.sign(attacker.updatePayload(*round, wrongBase, zero, sizes, 10)),
                 "BaseMismatch");
  std::vector<float> nan = zero;
  nan[3] = std::nanf("");
  expectRejected(
      attacker.sign(attacker.updatePayload(*round, attacker.baseDigest(), nan, sizes, 10)),
      "NonFinite");
  std::vector<std::uint32_t> shortSizes(sizes.begin(), sizes.end() - 1);
  std::vector<float> shortDelta(zero.begin(), zero.end() - sizes.back());
  expectRejected(attacker.sign(attacker.updatePayload(*round, attacker.baseDigest(), shortDelta,
                                                      shortSizes, 10)),
                 "ShapeMismatch");
  std::vector<float> bomb(base.parameterCount(), 10.0f);
  expectRejected(
      attacker.sign(attacker.updatePayload(*round, attacker.baseDigest(), bomb, sizes, 10)),
      "NormTooLarge");
  // A revoked device's update.
  ASSERT_EQ(revoked.send(revoked.buildUpdate(trainData(), slice(0, 100))), 0);
  auto revokedAck = revoked.waitAck();
  ASSERT_TRUE(revokedAck.has_value());
  EXPECT_EQ(revokedAck->reason, "Revoked");

  // Mallory's own honest update is accepted once; its replay is a duplicate.
  ASSERT_TRUE(sent(attacker.send(good)));
  auto ack = attacker.waitAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  ASSERT_TRUE(sent(attacker.send(good)));
  ack = attacker.waitAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->verdict, wire::Verdict::DUPLICATE);
  EXPECT_EQ(ack->reason, "Duplicate");

  // The honest device completes the round (max_updates = 2).
  ASSERT_TRUE(sent(honestA.send(honestA.buildUpdate(trainData(), slice(1000, 1000)))));
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 2; }));
  // A replay into the closed round.
  ASSERT_TRUE(sent(attacker.send(good)));
  ack = attacker.waitAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->reason, "RoundClosed");

  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(rejectionReason(*reg, *round, "revoked"), "Revoked");
  EXPECT_EQ(reg->acceptedCount(*round), 2u);
  auto r = reg->round(*round);
  ASSERT_TRUE(r.ok());
  for (const char* reason :
       {"NotCapnp", "Truncated", "BadSignature", "UnknownKey", "Impersonation", "RoundClosed",
        "BaseMismatch", "NonFinite", "ShapeMismatch", "NormTooLarge", "Revoked", "Duplicate"}) {
    EXPECT_GE(r->verdicts[reason], 1u) << reason;
  }
  EXPECT_EQ(r->verdicts["accepted"], 2u);
}

TEST(Coordinator, RegressingCandidateIsRejectedAndNeverDeployed) {
  test::TestFleet fleet;
  // Start from a trained model so that a poisoned round can regress it.
  {
    auto m = loadModel(fleet.dir() / "models/initial.model");
    ASSERT_TRUE(m.ok());
    TrainOptions o;
    o.learningRate = 0.05f;
    o.epochs = 2;
    auto t = Trainer::prepare(*m, o);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(t->train(trainData()).ok());
    ASSERT_TRUE(saveModel(*m, fleet.dir() / "models/initial.model").ok());
  }
  fleet.config().rounds.maxUpdates = 2;
  RunningCoordinator coordinator(fleet);
  test::TestDevice a(fleet, "a"), b(fleet, "b");
  ASSERT_TRUE(coordinator->reloadDevices().ok());
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  for (auto* d : {&a, &b}) {
    ASSERT_TRUE(d->fetchModel());
    ASSERT_TRUE(d->waitRound());
    // Sign-flipped and amplified: a valid, in-bound but harmful update.
    Bytes u = d->buildUpdate(trainData(), slice(0, 500), [](std::span<float> delta) {
      for (float& v : delta) v *= -8.0f;
    });
    ASSERT_TRUE(sent(d->send(u)));
    auto ack = d->waitAck();
    ASSERT_TRUE(ack.has_value());
    ASSERT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  }
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE(eventually([&] { return reg->models().size() == 2; }));
  auto v2 = reg->model(2, false);
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->stage, ModelStage::Rejected);
  EXPECT_NE(v2->reason.find("Regression"), std::string::npos) << v2->reason;
  std::this_thread::sleep_for(200ms);
  for (const auto& d : reg->deployments()) EXPECT_EQ(d.version, 1u);
  EXPECT_EQ(coordinator->stableVersion(), 1u);
  EXPECT_EQ(coordinator->canaryVersion(), 0u);
}

TEST(Coordinator, WorseCanaryIsRolledBack) {
  test::TestFleet fleet;
  fleet.config().rounds.maxUpdates = 2;
  fleet.config().rollout.minReports = 2;
  RunningCoordinator coordinator(fleet);
  test::TestDevice a(fleet, "a"), b(fleet, "b"), c(fleet, "c");
  ASSERT_TRUE(coordinator->reloadDevices().ok());
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  for (auto* d : {&a, &b}) {
    ASSERT_TRUE(d->fetchModel());
    ASSERT_TRUE(d->waitRound());
    ASSERT_TRUE(sent(d->send(d->buildUpdate(trainData(), slice(0, 800)))));
    ASSERT_TRUE(d->waitAck().has_value());
  }
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 2; }));
  // Canary devices report far worse labelled accuracy than stable ones.
  ASSERT_TRUE(sent(a.sendTelemetry(true, 2, 200, 0.30f)));
  ASSERT_TRUE(sent(b.sendTelemetry(true, 2, 200, 0.35f)));
  ASSERT_TRUE(sent(c.sendTelemetry(false, 1, 200, 0.80f)));
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 0; }));
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  auto v2 = reg->model(2, false);
  EXPECT_EQ(v2->stage, ModelStage::Rejected);
  EXPECT_NE(v2->reason.find("rolled back"), std::string::npos) << v2->reason;
  EXPECT_EQ(coordinator->stableVersion(), 1u);
  // The rollback is a new canary deployment of v1 with a newer sequence.
  auto deployments = reg->deployments();
  ASSERT_GE(deployments.size(), 3u);
  EXPECT_EQ(deployments.back().channel, "canary");
  EXPECT_EQ(deployments.back().version, 1u);
  EXPECT_GT(deployments.back().sequence, deployments[1].sequence);
  // A device connecting now sees the newest canary deployment: the previous
  // model again.
  test::TestDevice late(fleet, "late");
  ASSERT_TRUE(late.fetchModel("canary"));
  EXPECT_EQ(late.modelVersion(), 1u);
}

}  // namespace
}  // namespace edgefl
