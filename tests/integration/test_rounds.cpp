// Round selection, deadlines, triggers and the asynchronous buffered mode,
// against a real broker and an in-process coordinator.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <numeric>
#include <thread>

#include "edgefl/server/coordinator.hpp"
#include "edgefl/shared/datasets.hpp"
#include "support/fleet.hpp"

namespace edgefl {
namespace {
using namespace std::chrono_literals;
using server::Coordinator;

const Dataset& trainData() {
  static const Dataset data = [] {
    IdxOptions o;
    o.firstN = 2000;
    return std::move(loadFashionMnist("train", o).value());
  }();
  return data;
}

std::vector<std::uint32_t> slice(std::uint32_t begin, std::uint32_t count) {
  std::vector<std::uint32_t> v(count);
  std::iota(v.begin(), v.end(), begin);
  return v;
}

bool sent(int rc) {
  return rc >= 0 && rc < 0x80;
}

template <typename F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

class RunningCoordinator {
 public:
  explicit RunningCoordinator(test::TestFleet& fleet) {
    auto c = Coordinator::open(
        fleet.config(), std::getenv("EDGEFL_TEST_LOG") ? stderrSink(LogLevel::Debug) : nullSink());
    if (!c.ok()) throw std::runtime_error(c.error().toString());
    coordinator_ = std::move(c.value());
    if (!coordinator_->start().ok()) throw std::runtime_error("start");
    thread_ = std::thread([this] { coordinator_->run(stop_, 20ms); });
  }
  ~RunningCoordinator() {
    stop_ = true;
    thread_.join();
    coordinator_->stop();
  }
  Coordinator* operator->() { return coordinator_.get(); }

 private:
  std::unique_ptr<Coordinator> coordinator_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

server::Registry registryOf(test::TestFleet& fleet) {
  return std::move(server::Registry::open(fleet.dir() / "registry.db").value());
}

TEST(Rounds, TargetCountSelectsWithOverSelection) {
  test::TestFleet fleet;
  fleet.config().rounds.targetUpdates = 2;
  fleet.config().rounds.overSelection = 1.5;
  std::vector<std::unique_ptr<test::TestDevice>> devices;
  for (int i = 0; i < 5; ++i) {
    devices.push_back(std::make_unique<test::TestDevice>(fleet, "d" + std::to_string(i)));
  }
  RunningCoordinator coordinator(fleet);
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  ASSERT_TRUE(devices[0]->waitRound());
  auto selected = devices[0]->selectedDevices();
  ASSERT_EQ(selected.size(), 3u);  // ceil(2 * 1.5)
  std::vector<test::TestDevice*> in, out;
  for (auto& d : devices) {
    bool isIn = std::find(selected.begin(), selected.end(), d->id()) != selected.end();
    (isIn ? in : out).push_back(d.get());
  }
  // A device that was not selected is refused.
  ASSERT_TRUE(out[0]->fetchModel());
  ASSERT_TRUE(out[0]->waitRound());
  ASSERT_TRUE(sent(out[0]->send(out[0]->buildUpdate(trainData(), slice(0, 200)))));
  auto ack = out[0]->waitAck();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->reason, "NotSelected");
  // The round closes at the target, not at max_updates.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(in[static_cast<std::size_t>(i)]->fetchModel());
    if (in[static_cast<std::size_t>(i)]->round() != 1) {
      ASSERT_TRUE(in[static_cast<std::size_t>(i)]->waitRound());
    }
    const Bytes update =
        in[static_cast<std::size_t>(i)]->buildUpdate(trainData(), slice(200 * i, 200));
    ASSERT_TRUE(sent(in[static_cast<std::size_t>(i)]->send(update)));
    auto accepted = in[static_cast<std::size_t>(i)]->waitAck();
    ASSERT_TRUE(accepted.has_value());
    ASSERT_EQ(accepted->verdict, wire::Verdict::ACCEPTED);
    // The ack names the signed Update payload by its signing digest (what
    // the device keeps pending).
    auto envelope = parseEnvelope(update);
    ASSERT_TRUE(envelope.ok());
    auto payload = envelope->root().getPayload();
    const Digest expected = updateDigest(ByteView(payload.begin(), payload.size()));
    EXPECT_EQ(accepted->updateDigest, Bytes(expected.begin(), expected.end()));
  }
  auto reg = registryOf(fleet);
  ASSERT_TRUE(eventually([&] { return reg.round(1)->state == server::RoundState::Closed; }));
  EXPECT_EQ(reg.round(1)->selected, 3u);
  EXPECT_EQ(reg.acceptedCount(1), 2u);
}

TEST(Rounds, DeadlineWithTooFewUpdatesFails) {
  test::TestFleet fleet;
  // Long enough for the device to see the open round and be answered even
  // on a loaded machine (the round then fails at the deadline).
  fleet.config().rounds.deadlineSeconds = 4;
  fleet.config().rounds.minUpdates = 2;
  test::TestDevice d(fleet, "only");
  RunningCoordinator coordinator(fleet);
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  ASSERT_TRUE(d.fetchModel());
  ASSERT_TRUE(d.waitRound());
  ASSERT_TRUE(sent(d.send(d.buildUpdate(trainData(), slice(0, 200)))));
  ASSERT_EQ(d.waitAck()->verdict, wire::Verdict::ACCEPTED);
  const double untilAck =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  auto reg = registryOf(fleet);
  ASSERT_TRUE(eventually([&] { return reg.round(1)->state == server::RoundState::Failed; }, 15s));
  EXPECT_NE(reg.round(1)->outcome.find("too few updates: 1 < 2"), std::string::npos)
      << reg.round(1)->outcome;
  // The collect phase ends with the last accepted update, in milliseconds,
  // not at the deadline the round then waited for.
  const double collect = reg.round(1)->phaseMillis["collect"];
  EXPECT_GT(collect, 0.0);
  EXPECT_LE(collect, untilAck);
  EXPECT_EQ(reg.models().size(), 1u);
  EXPECT_EQ(coordinator->openRound(), 0u);
}

struct TriggerCase {
  std::string name;
  std::function<void(server::CoordinatorConfig&)> configure;
  std::function<void(test::TestDevice&)> report;
};

class Triggers : public ::testing::TestWithParam<TriggerCase> {};

TEST_P(Triggers, OpenARoundByThemselves) {
  const TriggerCase& tc = GetParam();
  test::TestFleet fleet;
  tc.configure(fleet.config());
  test::TestDevice d(fleet, "reporter");
  RunningCoordinator coordinator(fleet);
  ASSERT_TRUE(coordinator->reloadDevices().ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(coordinator->openRound(), 0u) << "no round before the condition";
  tc.report(d);
  ASSERT_TRUE(eventually([&] { return coordinator->openRound() == 1; }, 10s));
  auto reg = registryOf(fleet);
  EXPECT_EQ(reg.round(1)->trigger, tc.name);
}

INSTANTIATE_TEST_SUITE_P(
    Coordinator, Triggers,
    ::testing::Values(TriggerCase{"schedule", [](auto& c) { c.triggers.scheduleSeconds = 2; },
                                  [](test::TestDevice&) {}},
                      TriggerCase{"data", [](auto& c) { c.triggers.newDataSamples = 100; },
                                  [](test::TestDevice& d) {
                                    ASSERT_TRUE(sent(d.sendTelemetry(false, 1, 0, 0, 0, 150)));
                                  }},
                      TriggerCase{"drift", [](auto& c) { c.triggers.driftPsi = 0.2; },
                                  [](test::TestDevice& d) {
                                    ASSERT_TRUE(sent(d.sendTelemetry(false, 1, 0, 0, 0, 0, 0.5f)));
                                  }},
                      TriggerCase{"degradation", [](auto& c) { c.triggers.degradationDrop = 0.05; },
                                  [](test::TestDevice& d) {
                                    ASSERT_TRUE(sent(d.sendTelemetry(false, 1, 500, 0.0f)));
                                  }}),
    [](const auto& param) { return param.param.name; });

TEST(Rounds, AsynchronousBufferTakesStaleUpdatesWithTheirStaleness) {
  test::TestFleet fleet;
  fleet.config().rounds.mode = "asynchronous";
  fleet.config().rounds.asyncBuffer = 2;
  fleet.config().rollout.canaryPercent = 0;  // straight to stable after the gate
  // This test is about buffering; a few hundred samples make noisy models,
  // so the gate here only refuses non-finite ones.
  fleet.config().validation.tolerance = 1.0;
  fleet.config().validation.sliceTolerance = 1.0;
  test::TestDevice a(fleet, "a"), b(fleet, "b"), c(fleet, "c"), d(fleet, "d");
  RunningCoordinator coordinator(fleet);
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  for (auto* dev : {&a, &b, &c}) {
    ASSERT_TRUE(dev->fetchModel());
    ASSERT_TRUE(dev->waitRound());
    EXPECT_EQ(dev->roundMode(), wire::RoundMode::ASYNCHRONOUS);
  }
  // c trains now, on v1, but sends only after v2 exists.
  Bytes stale = c.buildUpdate(trainData(), slice(800, 400));
  ASSERT_TRUE(sent(a.send(a.buildUpdate(trainData(), slice(0, 400)))));
  ASSERT_TRUE(sent(b.send(b.buildUpdate(trainData(), slice(400, 400)))));
  ASSERT_TRUE(eventually([&] { return coordinator->stableVersion() == 2; }));
  // The next buffer opened by itself, on v2.
  ASSERT_TRUE(eventually([&] { return coordinator->openRound() == 2; }));
  ASSERT_TRUE(sent(c.send(stale)));
  // Taken into buffer 2, acknowledged under the round c trained for, the
  // one it keeps the update pending under.
  auto staleAck = c.waitAck();
  ASSERT_TRUE(staleAck.has_value());
  EXPECT_EQ(staleAck->verdict, wire::Verdict::ACCEPTED) << staleAck->reason;
  EXPECT_EQ(staleAck->round, 1u);
  ASSERT_TRUE(d.fetchModel());
  ASSERT_EQ(d.modelVersion(), 2u);
  ASSERT_TRUE(d.waitRound());
  ASSERT_TRUE(sent(d.send(d.buildUpdate(trainData(), slice(1200, 400)))));
  auto reg = registryOf(fleet);
  ASSERT_TRUE(eventually([&] { return coordinator->stableVersion() == 3; })) << [&] {
    std::string all;
    for (const auto& u : reg.updates()) {
      all += std::to_string(u.round) + " " + u.deviceId + " " + u.reason + " " + u.detail + "\n";
    }
    for (const auto& m : reg.models())
      all += "v" + std::to_string(m.version) + " " + m.reason + "\n";
    return all;
  }();
  auto cu = reg.update(2, "c");
  ASSERT_TRUE(cu.has_value());
  EXPECT_TRUE(cu->accepted) << cu->reason << " " << cu->detail;
  EXPECT_EQ(cu->staleness, 1u);
  EXPECT_EQ(reg.update(2, "d")->staleness, 0u);
  EXPECT_EQ(reg.model(3, false)->parent, 2u);
}

TEST(Rounds, AsynchronousBufferWaitsForTheCanaryDecision) {
  // Buffers that fill faster than a canary window must not replace the
  // canary being judged: the next buffer keeps its updates until the
  // decision, then closes on the new stable model.
  test::TestFleet fleet;
  fleet.config().rounds.mode = "asynchronous";
  fleet.config().rounds.asyncBuffer = 2;
  fleet.config().rounds.deadlineSeconds = 1;
  fleet.config().rollout.canaryPercent = 50;
  fleet.config().rollout.windowSeconds = 3600;
  fleet.config().rollout.autoPromote = false;
  fleet.config().validation.tolerance = 1.0;
  fleet.config().validation.sliceTolerance = 1.0;
  test::TestDevice a(fleet, "a"), b(fleet, "b"), c(fleet, "c"), d(fleet, "d");
  RunningCoordinator coordinator(fleet);
  ASSERT_TRUE(coordinator->startRound("manual").ok());
  for (auto* dev : {&a, &b}) {
    ASSERT_TRUE(dev->fetchModel());
    ASSERT_TRUE(dev->waitRound());
  }
  ASSERT_TRUE(sent(a.send(a.buildUpdate(trainData(), slice(0, 400)))));
  ASSERT_TRUE(sent(b.send(b.buildUpdate(trainData(), slice(400, 400)))));
  ASSERT_TRUE(eventually([&] { return coordinator->canaryVersion() == 2; }));
  ASSERT_TRUE(eventually([&] { return coordinator->openRound() == 2; }));
  for (auto* dev : {&c, &d}) {
    ASSERT_TRUE(dev->fetchModel());
    ASSERT_EQ(dev->modelVersion(), 1u);
    ASSERT_TRUE(dev->waitRound());
  }
  ASSERT_TRUE(sent(c.send(c.buildUpdate(trainData(), slice(800, 400)))));
  ASSERT_TRUE(sent(d.send(d.buildUpdate(trainData(), slice(1200, 400)))));
  auto reg = registryOf(fleet);
  ASSERT_TRUE(eventually([&] { return reg.acceptedCount(2) == 2; }));
  // Full, past its deadline, and still open: the canary has not been decided.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(coordinator->openRound(), 2u);
  EXPECT_EQ(coordinator->canaryVersion(), 2u);
  EXPECT_FALSE(reg.model(3, false).ok());
  // The operator promotes; the buffer then closes on v2.
  ASSERT_TRUE(reg.submitCommand("promote").ok());
  ASSERT_TRUE(eventually([&] { return coordinator->stableVersion() == 2; }));
  ASSERT_TRUE(eventually([&] { return reg.model(3, false).ok(); }));
  EXPECT_EQ(reg.model(3, false)->parent, 2u);
  EXPECT_EQ(reg.round(2)->verdicts.at("accepted"), 2u);
}

}  // namespace
}  // namespace edgefl
