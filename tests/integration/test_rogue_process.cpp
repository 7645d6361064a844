// Rogue devices against edgefl-coordinator running as its own process
// behind a real mosquitto: every kind of bad update is rejected with its
// reason recorded in the registry, a flood from one device is answered and
// recorded message by message while the coordinator's memory stays bounded,
// and the honest devices' round completes and deploys its model.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "edgefl/server/registry.hpp"
#include "edgefl/shared/datasets.hpp"
#include "support/fleet.hpp"
#include "support/process.hpp"

namespace edgefl {
namespace {
using namespace std::chrono_literals;

template <typename F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return condition();
}

// A QoS 1 publish the broker took (MQTT 5 reason codes below 0x80).
bool sent(int reasonCode) {
  return reasonCode >= 0 && reasonCode < 0x80;
}

constexpr int kNotAuthorized = 0x87;

// A field of /proc/<pid>/status in kB (VmRSS, VmHWM); -1 when absent.
long statusKb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// reason -> count over the recorded updates of `device` in `round` (every
// round when empty; "accepted" for accepted ones).
std::map<std::string, std::uint64_t> recordedReasons(const server::Registry& reg,
                                                     std::optional<std::uint64_t> round,
                                                     const std::string& device) {
  std::map<std::string, std::uint64_t> out;
  for (const auto& u : reg.updates(round)) {
    if (u.deviceId == device) ++out[u.accepted ? "accepted" : u.reason];
  }
  return out;
}

std::uint64_t total(const std::map<std::string, std::uint64_t>& counts) {
  std::uint64_t n = 0;
  for (const auto& [reason, count] : counts) n += count;
  return n;
}

// The round closed and its model went out on the canary channel, where an
// honest device fetches and verifies it.
void expectRoundDeployedV2(const server::Registry& reg, test::TestDevice& honest) {
  auto r = reg.round(1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, server::RoundState::Closed) << r->outcome;
  EXPECT_EQ(r->resultVersion, 2u) << r->outcome;
  bool deployed = false;
  for (const auto& d : reg.deployments()) deployed = deployed || d.version == 2;
  EXPECT_TRUE(deployed) << r->outcome;
  ASSERT_TRUE(honest.fetchModel("canary", 30s));
  EXPECT_EQ(honest.modelVersion(), 2u);
  EXPECT_EQ(reg.integrityCheck(), "ok");
}

// Each test sets up a fleet and its devices, then starts edgefl-coordinator
// as its own process and opens round 1 through the CLI, as an operator would.
class RogueProcess : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    IdxOptions o;
    o.firstN = 3000;
    auto d = loadFashionMnist("train", o);
    ASSERT_TRUE(d.ok()) << d.error().toString();
    data_ = std::make_unique<Dataset>(std::move(d.value()));
  }
  static void TearDownTestSuite() { data_.reset(); }

  // Training examples [begin, begin + count).
  static std::vector<std::uint32_t> examples(std::uint32_t begin, std::uint32_t count) {
    std::vector<std::uint32_t> v(count);
    std::iota(v.begin(), v.end(), begin);
    return v;
  }
  static Bytes trainedUpdate(test::TestDevice& device, std::uint32_t begin, std::uint32_t count) {
    return device.buildUpdate(*data_, examples(begin, count));
  }

  // The round closes at `updates` accepted updates; its deadline is far
  // beyond any wait of the test.
  void closeRoundAt(std::int64_t updates) {
    fleet_.config().rounds.minUpdates = updates;
    fleet_.config().rounds.maxUpdates = updates;
    fleet_.config().rounds.deadlineSeconds = 300;
  }

  void startCoordinatorAndRound() {
    fleet_.saveConfig();
    coordinator_ = std::make_unique<test::ChildProcess>(
        std::vector<std::string>{EDGEFL_COORDINATOR, "--config",
                                 (fleet_.dir() / "coordinator.toml").string()},
        fleet_.dir() / "coordinator.log");
    std::string out;
    ASSERT_EQ(test::runCli("round start --fleet " + fleet_.dir().string() + " --wait 60", &out), 0)
        << out;
    ASSERT_NE(out.find("round 1 opened"), std::string::npos) << out;
  }

  server::Registry openRegistry() {
    auto reg = server::Registry::open(fleet_.dir() / "registry.db");
    if (!reg.ok()) throw std::runtime_error(reg.error().toString());
    return std::move(reg.value());
  }

  bool roundClosed(const server::Registry& reg) {
    return eventually([&] {
      auto r = reg.round(1);
      return r.ok() && r->state == server::RoundState::Closed;
    });
  }

  static std::unique_ptr<Dataset> data_;
  test::TestFleet fleet_;
  std::unique_ptr<test::ChildProcess> coordinator_;
};

std::unique_ptr<Dataset> RogueProcess::data_;

TEST_F(RogueProcess, EveryBadUpdateIsRejectedWithItsReasonAndTheHonestRoundCompletes) {
  constexpr std::int64_t kMaxMessageBytes = 64 << 10;  // an honest update is ~51 KB
  fleet_.config().broker.maxMessageBytes = kMaxMessageBytes;
  fleet_.config().ingest.maxUpdateNorm = 50;
  // honest-a, honest-b and mallory's own honest update close the round.
  closeRoundAt(3);
  test::TestDevice honestA(fleet_, "honest-a"), honestB(fleet_, "honest-b"),
      mallory(fleet_, "mallory"), victim(fleet_, "victim"), revoked(fleet_, "revoked");
  // Revoked at the coordinator while the broker still lets the device in.
  std::filesystem::rename(fleet_.dir() / "devices/revoked.pub",
                          fleet_.dir() / "devices/revoked/revoked.pub");
  ASSERT_NO_FATAL_FAILURE(startCoordinatorAndRound());
  for (auto* d : {&honestA, &honestB, &mallory, &revoked}) {
    ASSERT_TRUE(d->fetchModel("stable", 30s)) << d->id();
    ASSERT_TRUE(d->waitRound(30s)) << d->id();
    ASSERT_EQ(d->round(), 1u);
  }
  const std::uint64_t round = mallory.round();
  const auto sizes = mallory.model().tensorSizes();
  const std::vector<float> small(mallory.model().parameterCount(), 0.01f);
  auto payload = [&](const std::vector<float>& delta) {
    return mallory.updatePayload(round, mallory.baseDigest(), delta, sizes, 10);
  };

  std::map<std::string, std::uint64_t> expected;  // reason -> rejections sent by mallory
  auto expectRejected = [&](const Bytes& bytes, const std::string& reason) {
    ASSERT_TRUE(sent(mallory.send(bytes))) << reason;
    auto ack = mallory.waitAck(30s);
    ASSERT_TRUE(ack.has_value()) << reason;
    EXPECT_EQ(ack->verdict, wire::Verdict::REJECTED) << reason;
    EXPECT_EQ(ack->reason, reason);
    ++expected[reason];
  };

  Bytes good = trainedUpdate(mallory, 0, 600);
  ASSERT_LT(good.size(), static_cast<std::size_t>(kMaxMessageBytes));
  // Garbage, truncation, and a well-formed signed update over the
  // coordinator's limit (the broker's own limit is 16 MB: it passes there).
  expectRejected(Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, "NotCapnp");
  expectRejected(Bytes(good.begin(), good.begin() + static_cast<long>(good.size() / 2)),
                 "Truncated");
  {
    const std::vector<float> big(24'000, 0.01f);
    const std::vector<std::uint32_t> bigSizes{24'000};
    Bytes oversized =
        mallory.sign(mallory.updatePayload(round, mallory.baseDigest(), big, bigSizes, 10));
    ASSERT_GT(oversized.size(), static_cast<std::size_t>(kMaxMessageBytes));
    expectRejected(oversized, "TooLarge");
  }
  // Wrong topic for the key: on mallory's own topic, an update signed with
  // another enrolled device's key (as that device would send it); and
  // mallory's key claiming to be the victim.
  expectRejected(
      seal(Kind::UPDATE, victim.updatePayload(round, mallory.baseDigest(), small, sizes, 10),
           victim.key()),
      "Impersonation");
  expectRejected(
      mallory.sign(mallory.updatePayload(round, mallory.baseDigest(), small, sizes, 10, "victim")),
      "Impersonation");
  // The broker itself refuses mallory on the victim's topic: nothing reaches
  // the coordinator under the victim's name.
  EXPECT_EQ(mallory.send(mallory.sign(payload(small)), "victim"), kNotAuthorized);
  // A key nobody enrolled, and a forged signature.
  expectRejected(seal(Kind::UPDATE, payload(small), KeyPair::generate()), "UnknownKey");
  {
    auto env = parseEnvelope(mallory.sign(payload(small)));
    ASSERT_TRUE(env.ok());
    capnp::MallocMessageBuilder b;
    b.setRoot(env->root());
    auto forged = b.getRoot<wire::Signed>();
    std::vector<std::uint8_t> sig(forged.getSignature().begin(), forged.getSignature().end());
    sig[7] ^= 0x20;
    forged.setSignature(kj::arrayPtr(sig.data(), sig.size()));
    expectRejected(toBytes(b), "BadSignature");
  }
  // A round that is not open, a wrong base, non-finite values, wrong
  // shapes, a norm bomb.
  expectRejected(
      mallory.sign(mallory.updatePayload(round + 5, mallory.baseDigest(), small, sizes, 10)),
      "RoundClosed");
  Digest wrongBase = mallory.baseDigest();
  wrongBase[3] ^= 1;
  expectRejected(mallory.sign(mallory.updatePayload(round, wrongBase, small, sizes, 10)),
                 "BaseMismatch");
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    std::vector<float> delta = small;
    delta[11] = bad;
    expectRejected(mallory.sign(payload(delta)), "NonFinite");
  }
  {
    std::vector<std::uint32_t> shortSizes(sizes.begin(), sizes.end() - 1);
    std::vector<float> shortDelta(small.begin(), small.end() - sizes.back());
    expectRejected(mallory.sign(mallory.updatePayload(round, mallory.baseDigest(), shortDelta,
                                                      shortSizes, 10)),
                   "ShapeMismatch");
    std::vector<std::uint32_t> swapped(sizes.begin(), sizes.end());
    std::swap(swapped.front(), swapped.back());
    expectRejected(
        mallory.sign(mallory.updatePayload(round, mallory.baseDigest(), small, swapped, 10)),
        "ShapeMismatch");
  }
  expectRejected(mallory.sign(payload(std::vector<float>(small.size(), 10.0f))), "NormTooLarge");
  // A revoked device's well-formed update.
  ASSERT_TRUE(sent(revoked.send(trainedUpdate(revoked, 600, 300))));
  auto revokedAck = revoked.waitAck(30s);
  ASSERT_TRUE(revokedAck.has_value());
  EXPECT_EQ(revokedAck->verdict, wire::Verdict::REJECTED);
  EXPECT_EQ(revokedAck->reason, "Revoked");

  // Mallory's honest update is accepted once; its replay is a duplicate.
  ASSERT_TRUE(sent(mallory.send(good)));
  auto ack = mallory.waitAck(30s);
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  ASSERT_TRUE(sent(mallory.send(good)));
  ack = mallory.waitAck(30s);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->verdict, wire::Verdict::DUPLICATE);
  EXPECT_EQ(ack->reason, "Duplicate");

  // The honest devices complete the round.
  for (auto* d : {&honestA, &honestB}) {
    const std::uint32_t begin = d == &honestA ? 1000 : 2000;
    ASSERT_TRUE(sent(d->send(trainedUpdate(*d, begin, 1000))));
    auto a = d->waitAck(30s);
    ASSERT_TRUE(a.has_value()) << d->id();
    EXPECT_EQ(a->verdict, wire::Verdict::ACCEPTED) << d->id() << ": " << a->reason;
  }
  server::Registry reg = openRegistry();
  ASSERT_TRUE(roundClosed(reg)) << "coordinator log in " << (fleet_.dir() / "coordinator.log");
  // A replay into the closed round.
  ASSERT_TRUE(sent(mallory.send(good)));
  ack = mallory.waitAck(30s);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->verdict, wire::Verdict::REJECTED);
  EXPECT_EQ(ack->reason, "RoundClosed");
  ++expected["RoundClosed"];

  ASSERT_NO_FATAL_FAILURE(expectRoundDeployedV2(reg, honestA));
  // Every rejection is in the registry with the reason its ack gave (the
  // update claiming a later round under that round's number).
  auto recorded = recordedReasons(reg, std::nullopt, "mallory");
  for (const auto& [reason, count] : expected) {
    EXPECT_EQ(recorded[reason], count) << reason;
  }
  EXPECT_EQ(recorded["accepted"], 1u);
  EXPECT_EQ(recorded["Duplicate"], 1u);
  EXPECT_EQ(total(recorded), total(expected) + 2);
  EXPECT_EQ(recordedReasons(reg, round, "revoked"),
            (std::map<std::string, std::uint64_t>{{"Revoked", 1}}));
  EXPECT_TRUE(recordedReasons(reg, round, "victim").empty());
  EXPECT_EQ(reg.acceptedCount(round), 3u);
  auto r = reg.round(round);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->verdicts["accepted"], 3u);
  for (const auto& [reason, count] : expected) EXPECT_GE(r->verdicts[reason], 1u) << reason;
  EXPECT_EQ(recordedReasons(reg, round + 5, "mallory"),
            (std::map<std::string, std::uint64_t>{{"RoundClosed", 1}}));
  EXPECT_EQ(reg.lineage(2).size(), 3u);

  // One bad message never took the process down.
  ASSERT_TRUE(coordinator_->running());
  int status = coordinator_->kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(RogueProcess, FloodFromOneDeviceIsRecordedAndMemoryStaysBounded) {
  // A short queue, so the flood overflows it and Overloaded answers are
  // exercised as well as verification.
  fleet_.config().ingest.queueCapacity = 32;
  closeRoundAt(2);
  test::TestDevice honestA(fleet_, "honest-a"), honestB(fleet_, "honest-b"),
      flooder(fleet_, "flooder");
  ASSERT_NO_FATAL_FAILURE(startCoordinatorAndRound());
  for (auto* d : {&honestA, &honestB}) {
    ASSERT_TRUE(d->fetchModel("stable", 30s)) << d->id();
    ASSERT_TRUE(d->waitRound(30s)) << d->id();
  }
  // One honest update before the flood, one after.
  ASSERT_TRUE(sent(honestA.send(trainedUpdate(honestA, 0, 1200))));
  auto ack = honestA.waitAck(30s);
  ASSERT_TRUE(ack.has_value());
  ASSERT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;

  const pid_t pid = coordinator_->pid();
  const long rssBefore = statusKb(pid, "VmRSS");
  ASSERT_GT(rssBefore, 0);
  // Distinct garbage of 16 bytes to 64 KB, ~160 MB in all, as fast as the
  // broker takes it: a coordinator that buffered the flood would grow far
  // beyond the bound asserted below.
  constexpr int kFlood = 5000;
  std::mt19937 rng(7);
  std::uint64_t floodBytes = 0;
  const auto floodStart = std::chrono::steady_clock::now();
  for (int i = 0; i < kFlood; ++i) {
    Bytes junk(16 + static_cast<std::size_t>(rng() % (64 << 10)));
    floodBytes += junk.size();
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    ASSERT_TRUE(sent(flooder.send(junk))) << "message " << i;
  }
  const double floodSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - floodStart).count();

  // Every flood message gets an answer, and the registry has a row for each
  // with the reason its answer gave.
  std::map<std::string, std::uint64_t> answered;
  for (int i = 0; i < kFlood; ++i) {
    auto a = flooder.waitAck(60s);
    ASSERT_TRUE(a.has_value()) << "ack " << i << " of " << kFlood;
    EXPECT_EQ(a->verdict, wire::Verdict::REJECTED);
    ++answered[a->reason];
  }
  server::Registry reg = openRegistry();
  std::map<std::string, std::uint64_t> recorded;
  ASSERT_TRUE(eventually([&] {
    recorded = recordedReasons(reg, 1, "flooder");
    return total(recorded) >= kFlood;
  })) << total(recorded)
      << " of " << kFlood << " recorded";
  // Per reason, Overloaded (queue full) included when the queue overflowed.
  EXPECT_EQ(recorded, answered);
  EXPECT_EQ(total(recorded), static_cast<std::uint64_t>(kFlood));
  EXPECT_EQ(recorded.count("accepted"), 0u);
  const long rssAfter = statusKb(pid, "VmRSS");
  const long peak = statusKb(pid, "VmHWM");  // the largest resident set so far
  std::ostringstream summary;
  summary << kFlood << " garbage messages (" << floodBytes / (1 << 20) << " MB) in " << floodSeconds
          << " s; VmRSS " << rssBefore << " kB before, " << rssAfter << " kB after, " << peak
          << " kB at the peak (VmHWM); answers:";
  for (const auto& [reason, count] : answered) summary << " " << reason << "=" << count;
  std::cout << "[ flood    ] " << summary.str() << "\n";
  RecordProperty("flood", summary.str());
  // Bounded: the queue holds at most queue_capacity messages and overflow
  // verdicts are capped, so a flood must not grow the process by more than
  // a small fixed amount.
  // Under AddressSanitizer freed blocks wait in its quarantine (256 MB by
  // default) instead of going back, so the bound is checked only without it.
#if !defined(__SANITIZE_ADDRESS__)
  constexpr long kBoundKb = 64 * 1024;
  EXPECT_LT(rssAfter - rssBefore, kBoundKb);
  EXPECT_LT(peak - rssBefore, kBoundKb);
#endif

  // The coordinator still serves the honest device: the round completes.
  ASSERT_TRUE(sent(honestB.send(trainedUpdate(honestB, 1200, 1200))));
  ack = honestB.waitAck(30s);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  ASSERT_TRUE(roundClosed(reg)) << "coordinator log in " << (fleet_.dir() / "coordinator.log");
  ASSERT_NO_FATAL_FAILURE(expectRoundDeployedV2(reg, honestA));
  ASSERT_TRUE(coordinator_->running());
}

}  // namespace
}  // namespace edgefl
