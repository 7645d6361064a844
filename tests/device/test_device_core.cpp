// The device core on bytes: real signatures, real SQLite and files, a
// transport that records what the device sends (the interface firmware
// implements over its own MQTT stack; the broker itself is exercised in
// tests/integration/test_device_*.cpp).

#include "edgefl/device/device_core.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <mutex>

#include "device/device_fixture.hpp"
#include "edgefl/shared/selection.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using device::DeviceCore;

struct Sent {
  std::string topic;
  Bytes payload;
  bool retain = false;
};

class RecordingTransport final : public device::Transport {
 public:
  bool publish(const std::string& topic, ByteView payload, bool retain) override {
    std::lock_guard lock(mu_);
    sent_.push_back({topic, Bytes(payload.begin(), payload.end()), retain});
    return true;
  }
  bool connected() const override { return up; }

  std::vector<Sent> on(const std::string& topic) const {
    std::lock_guard lock(mu_);
    std::vector<Sent> out;
    for (const Sent& s : sent_) {
      if (s.topic == topic) out.push_back(s);
    }
    return out;
  }
  std::atomic<bool> up{true};

 private:
  mutable std::mutex mu_;
  std::vector<Sent> sent_;
};

// Flips one bit of an envelope's signature.
void flipSignatureBit(Bytes& envelope) {
  auto parsed = parseEnvelope(envelope);
  ASSERT_TRUE(parsed.ok());
  const auto sig = parsed->root().getSignature();
  const Bytes signature(sig.begin(), sig.end());
  auto at = std::search(envelope.begin(), envelope.end(), signature.begin(), signature.end());
  ASSERT_NE(at, envelope.end());
  *at ^= 0x01;
}

std::vector<float> sampleOf(const Dataset& d, std::size_t i) {
  auto s = d.sample(i);
  return {s.begin(), s.end()};
}

class CoreTest : public ::testing::Test {
 protected:
  test::TempDir tmp;
  test::TestFleet fleet;
  KeyPair deviceKey = KeyPair::generate();
  fs::path rootPub;
  std::int64_t clock = test::unixNow();
  RecordingTransport transport;
  Model model = test::smallModel("mlp:8-16-3", 1, 1);

  void SetUp() override {
    rootPub = tmp.path() / "root.pub";
    fleet.writeRootPublicKey(rootPub);
  }

  DeviceConfig config(const std::string& id = "dev-1") {
    const fs::path keyFile = tmp.path() / (id + ".key");
    if (!fs::exists(keyFile)) {
      EXPECT_TRUE(deviceKey.save(tmp.path() / id).ok() || fs::exists(keyFile));
    }
    DeviceConfig c = test::offlineConfig(tmp.path(), id, keyFile, rootPub);
    c.clock = [this] { return clock; };
    return c;
  }

  std::unique_ptr<DeviceCore> open(const DeviceConfig& c) {
    auto core = DeviceCore::open(c);
    EXPECT_TRUE(core.ok()) << core.error().toString();
    if (!core.ok()) return nullptr;
    core.value()->setTransport(&transport);
    return std::move(core.value());
  }

  Status deploy(DeviceCore& core, const Model& m, test::DeploymentSpec spec = {}) {
    const std::string channel = spec.channel == wire::Channel::CANARY ? "canary" : "stable";
    return core.handleMessage(deployTopic("demo", channel), fleet.deployment(m, spec));
  }

  void observe(DeviceCore& core, std::size_t n, std::uint64_t seed = 7) {
    const Dataset d = test::syntheticData(8, 3, n, seed);
    for (std::size_t i = 0; i < n; ++i) {
      Status st = core.observe(d.sample(i), d.labels[i]);
      ASSERT_TRUE(st.ok()) << st.error().toString();
    }
  }

  Keyring deviceRing(const std::string& id = "dev-1") const {
    Keyring ring;
    ring.add(deviceKey.publicKey(), Role::DEVICE, id);
    return ring;
  }
};

TEST_F(CoreTest, SignedDeploymentIsActivatedAndScores) {
  auto core = open(config());
  std::vector<float> out(3);
  EXPECT_EQ(core->score(std::vector<float>(8, 0.5f), out).code(), Code::NotFound);
  ASSERT_TRUE(deploy(*core, model).ok());
  DeviceStatus s = core->status();
  EXPECT_TRUE(s.modelLoaded);
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.activeChannel, "stable");
  EXPECT_EQ(s.stableSequence, 1u);
  EXPECT_EQ(s.activeDigest, toHex(parameterDigest(model)));
  EXPECT_EQ(s.inputCount, 8u);
  EXPECT_EQ(s.outputCount, 3u);
  EXPECT_TRUE(fs::exists(tmp.path() / "storage-dev-1/models/stable-1.deploy"));

  ASSERT_TRUE(core->score(std::vector<float>(8, 0.5f), out).ok());
  EXPECT_NEAR(out[0] + out[1] + out[2], 1.0f, 1e-5f);
  // A buffer larger than the output count is fine; a smaller one is not.
  std::vector<float> big(5, -1.0f);
  ASSERT_TRUE(core->score(std::vector<float>(8, 0.5f), big).ok());
  EXPECT_EQ(big[3], -1.0f);
  std::vector<float> small(2);
  EXPECT_EQ(core->score(std::vector<float>(8, 0.5f), small).code(), Code::InvalidArgument);
  EXPECT_EQ(core->status().scored, 2u);
}

TEST_F(CoreTest, StaleSequencesAreRefusedAndRepeatsIgnored) {
  auto core = open(config());
  Model v2 = test::smallModel("mlp:8-16-3", 2, 2);
  ASSERT_TRUE(deploy(*core, model, {.sequence = 5}).ok());
  Status stale = deploy(*core, v2, {.sequence = 3});
  EXPECT_EQ(stale.code(), Code::OutOfRange);
  DeviceStatus s = core->status();
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.refused, 1u);
  ASSERT_EQ(s.refusedByReason.size(), 1u);
  EXPECT_EQ(s.refusedByReason[0].reason, "OutOfRange");
  EXPECT_NE(s.lastError.find("not newer than 5"), std::string::npos) << s.lastError;

  // The broker redelivers retained deployments on every subscribe: the same
  // sequence again is not news, and not a refusal either.
  EXPECT_EQ(deploy(*core, model, {.sequence = 5}).code(), Code::Duplicate);
  EXPECT_EQ(core->status().refused, 1u);

  ASSERT_TRUE(deploy(*core, v2, {.sequence = 6}).ok());
  s = core->status();
  EXPECT_EQ(s.activeVersion, 2u);
  EXPECT_EQ(s.stableSequence, 6u);
  // Sequences are per channel: a canary sequence below the stable one is new.
  ASSERT_TRUE(
      deploy(*core, model, {.sequence = 2, .channel = wire::Channel::CANARY, .percent = 0}).ok());
  EXPECT_EQ(core->status().canarySequence, 2u);
}

TEST_F(CoreTest, ForgedDeploymentsAreRefused) {
  auto core = open(config());
  const Bytes payload = fleet.deploymentPayload(model, {});
  KeyPair stranger = KeyPair::generate();
  // Signed by a key the root never delegated to, with and without the
  // coordinator's delegation attached.
  EXPECT_EQ(
      core->handleMessage(deployTopic("demo", "stable"), seal(Kind::DEPLOYMENT, payload, stranger))
          .code(),
      Code::UnknownKey);
  EXPECT_FALSE(core->handleMessage(deployTopic("demo", "stable"),
                                   seal(Kind::DEPLOYMENT, payload, stranger, fleet.delegation))
                   .ok());
  // A different fleet root's delegation.
  test::TestFleet other;
  EXPECT_FALSE(core->handleMessage(deployTopic("demo", "stable"), other.deployment(model)).ok());
  // A flipped bit in the signature.
  Bytes tampered = fleet.deployment(model);
  flipSignatureBit(tampered);
  EXPECT_EQ(core->handleMessage(deployTopic("demo", "stable"), tampered).code(),
            Code::BadSignature);
  // A payload signed as a round task never verifies as a deployment.
  EXPECT_EQ(
      core->handleMessage(deployTopic("demo", "stable"),
                          seal(Kind::ROUND_TASK, payload, fleet.coordinator, fleet.delegation))
          .code(),
      Code::WrongKind);
  DeviceStatus s = core->status();
  EXPECT_FALSE(s.modelLoaded);
  EXPECT_EQ(s.refused, 5u);
  EXPECT_EQ(s.stableSequence, 0u);
}

TEST_F(CoreTest, IncompatibleDeploymentsAreRefused) {
  DeviceConfig c = config();
  c.limits.maxModelParameters = 1000;
  auto core = open(c);
  std::uint64_t seq = 1;
  auto refusedWith = [&](const Model& m, test::DeploymentSpec spec, const std::string& topic) {
    spec.sequence = seq++;
    return core->handleMessage(topic, fleet.deployment(m, spec)).code();
  };
  const std::string stable = deployTopic("demo", "stable");
  EXPECT_EQ(refusedWith(model, {.minRuntimeVersion = kRuntimeVersion + 1}, stable),
            Code::Unsupported);
  EXPECT_EQ(refusedWith(test::smallModel("mlp:8-200-3"), {}, stable), Code::TooLarge);
  EXPECT_EQ(refusedWith(model, {.digest = Digest{}}, stable), Code::BadModel);
  EXPECT_EQ(refusedWith(model, {.channel = wire::Channel::CANARY}, stable), Code::BadTopic);
  EXPECT_EQ(refusedWith(model, {.fleet = "other"}, stable), Code::WrongFleet);
  EXPECT_EQ(refusedWith(model, {.expiresAt = clock - 1}, stable), Code::Expired);
  EXPECT_EQ(refusedWith(model, {.percent = 150}, stable), Code::BadField);
  EXPECT_EQ(refusedWith(model, {.parameterCount = 7}, stable), Code::BadField);
  EXPECT_EQ(refusedWith(model, {.modelBytes = 12}, stable), Code::BadField);
  EXPECT_EQ(core->handleMessage(deployTopic("demo", "beta"), fleet.deployment(model)).code(),
            Code::BadTopic);
  EXPECT_EQ(core->status().refused, 10u);
  EXPECT_FALSE(core->status().modelLoaded);
  // A compatible one still goes through afterwards.
  EXPECT_EQ(refusedWith(model, {}, stable), Code::Ok);
}

TEST_F(CoreTest, UnhealthyModelKeepsThePreviousOne) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model, {.sequence = 1}).ok());
  // Finite weights so large that the forward pass overflows: the model
  // decodes and validates, and only the health check can catch it.
  Model broken = test::smallModel("mlp:8-16-3", 3, 2);
  for (float& w : broken.parameters()) w = 3e37f;
  EXPECT_EQ(deploy(*core, broken, {.sequence = 2}).code(), Code::BadModel);
  DeviceStatus s = core->status();
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.healthCheckFailures, 1u);
  EXPECT_EQ(s.stableSequence, 2u);
  EXPECT_NE(s.lastError.find("health check"), std::string::npos) << s.lastError;
  // Seen: a redelivery is not tried again.
  EXPECT_EQ(deploy(*core, broken, {.sequence = 2}).code(), Code::Duplicate);
  EXPECT_EQ(core->status().healthCheckFailures, 1u);
}

// Device ids on either side of a canary split.
std::pair<std::string, std::string> canarySplit(std::uint64_t salt, float percent) {
  std::string member, outsider;
  for (int i = 0; i < 1000 && (member.empty() || outsider.empty()); ++i) {
    const std::string id = "dev-" + std::to_string(i);
    (inCanary(salt, percent, id) ? member : outsider) = id;
  }
  return {member, outsider};
}

TEST_F(CoreTest, CanaryMembersRunTheCanaryAndReturnToStableWhenCleared) {
  const auto [memberId, outsiderId] = canarySplit(7, 50);
  auto member = open(config(memberId));
  auto outsider = open(config(outsiderId));
  Model canaryModel = test::smallModel("mlp:8-16-3", 9, 2);
  for (DeviceCore* core : {member.get(), outsider.get()}) {
    ASSERT_TRUE(deploy(*core, model, {.sequence = 1}).ok());
    ASSERT_TRUE(deploy(*core, canaryModel,
                       {.sequence = 1, .channel = wire::Channel::CANARY, .percent = 50, .salt = 7})
                    .ok());
  }
  DeviceStatus m = member->status();
  EXPECT_TRUE(m.canaryMember);
  EXPECT_EQ(m.activeVersion, 2u);
  EXPECT_EQ(m.activeChannel, "canary");
  DeviceStatus o = outsider->status();
  EXPECT_FALSE(o.canaryMember);
  EXPECT_TRUE(o.canaryPresent);
  EXPECT_EQ(o.activeVersion, 1u);
  EXPECT_EQ(o.canarySequence, 1u);  // seen, though not run

  // Zero-length retained message: no canary; members go back to stable.
  for (DeviceCore* core : {member.get(), outsider.get()}) {
    ASSERT_TRUE(core->handleMessage(deployTopic("demo", "canary"), {}).ok());
  }
  m = member->status();
  EXPECT_FALSE(m.canaryPresent);
  EXPECT_EQ(m.activeVersion, 1u);
  EXPECT_EQ(m.activeChannel, "stable");
  EXPECT_EQ(outsider->status().activeVersion, 1u);

  // And it holds across a restart.
  member.reset();
  member = open(config(memberId));
  EXPECT_EQ(member->status().activeVersion, 1u);
  EXPECT_EQ(member->status().canarySequence, 1u);
  // A rollout to everyone (100%) reaches the former outsider too.
  ASSERT_TRUE(deploy(*outsider, canaryModel,
                     {.sequence = 2, .channel = wire::Channel::CANARY, .percent = 100, .salt = 7})
                  .ok());
  EXPECT_EQ(outsider->status().activeVersion, 2u);
}

TEST_F(CoreTest, ShadowModelScoresBesideTheActiveOne) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model, {.sequence = 1}).ok());
  // The same weights under another version: outputs agree everywhere.
  Model twin = model;
  twin.meta().version = 2;
  ASSERT_TRUE(deploy(*core, twin, {.sequence = 2, .mode = wire::DeployMode::SHADOW}).ok());
  DeviceStatus s = core->status();
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.shadowVersion, 2u);

  auto reference = Scorer::prepare(model);
  ASSERT_TRUE(reference.ok());
  const Dataset d = test::syntheticData(8, 3, 50, 11);
  for (std::size_t i = 0; i < d.size(); ++i) {
    std::vector<float> out(3), expected(3);
    ASSERT_TRUE(core->score(d.sample(i), out).ok());
    reference->score(d.sample(i), expected);
    EXPECT_EQ(out, expected);  // outputs come from the active model only
  }
  observe(*core, 20);
  s = core->status();
  EXPECT_EQ(s.shadow.samples, 50u);
  EXPECT_FLOAT_EQ(s.shadow.agreement, 1.0f);
  EXPECT_EQ(s.shadow.labelled, 20u);
  EXPECT_FLOAT_EQ(s.shadow.activeAccuracy, s.shadow.candidateAccuracy);

  // A different candidate disagrees somewhere.
  Model other = test::smallModel("mlp:8-16-3", 42, 3);
  ASSERT_TRUE(deploy(*core, other, {.sequence = 3, .mode = wire::DeployMode::SHADOW}).ok());
  for (std::size_t i = 0; i < d.size(); ++i) {
    std::vector<float> out(3);
    ASSERT_TRUE(core->score(d.sample(i), out).ok());
  }
  s = core->status();
  EXPECT_EQ(s.shadowVersion, 3u);
  EXPECT_EQ(s.shadow.samples, 50u);
  EXPECT_LT(s.shadow.agreement, 1.0f);

  // Activating a new model ends the comparison.
  ASSERT_TRUE(deploy(*core, other, {.sequence = 4}).ok());
  s = core->status();
  EXPECT_EQ(s.activeVersion, 3u);
  EXPECT_EQ(s.shadowVersion, 0u);
}

TEST_F(CoreTest, CorruptedActiveModelFallsBackToThePreviousAtOpen) {
  auto core = open(config());
  Model v2 = test::smallModel("mlp:8-16-3", 2, 2);
  ASSERT_TRUE(deploy(*core, model, {.sequence = 1}).ok());
  ASSERT_TRUE(deploy(*core, v2, {.sequence = 2}).ok());
  EXPECT_EQ(core->status().activeVersion, 2u);
  core.reset();

  const fs::path file = tmp.path() / "storage-dev-1/models/stable-2.deploy";
  ASSERT_TRUE(fs::exists(file));
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(file) / 2));
    const char garbage[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    f.write(garbage, sizeof garbage);
  }
  core = open(config());
  DeviceStatus s = core->status();
  EXPECT_TRUE(s.modelLoaded);
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.fallbacks, 1u);
  EXPECT_FALSE(s.lastError.empty());
  // The retained message for sequence 2 is seen again on reconnect: it is
  // not re-installed, the device stays on the model that works.
  EXPECT_EQ(deploy(*core, v2, {.sequence = 2}).code(), Code::Duplicate);
  EXPECT_EQ(core->status().activeVersion, 1u);
  // A later deployment is taken as usual.
  ASSERT_TRUE(deploy(*core, v2, {.sequence = 3}).ok());
  EXPECT_EQ(core->status().activeVersion, 2u);
  core.reset();
  EXPECT_EQ(open(config())->status().fallbacks, 1u);  // counted once, persisted
}

TEST_F(CoreTest, MissingModelFileWithoutPreviousLeavesNoModel) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model, {.sequence = 1}).ok());
  core.reset();
  fs::remove(tmp.path() / "storage-dev-1/models/stable-1.deploy");
  core = open(config());
  DeviceStatus s = core->status();
  EXPECT_FALSE(s.modelLoaded);
  EXPECT_EQ(s.fallbacks, 1u);
  std::vector<float> out(3);
  EXPECT_EQ(core->score(std::vector<float>(8, 0.5f), out).code(), Code::NotFound);
}

TEST_F(CoreTest, InputsAreValidatedAndRejectionsCountedByReason) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  std::vector<float> out(3);
  EXPECT_EQ(core->score(std::vector<float>(7, 0.5f), out).code(), Code::ShapeMismatch);
  std::vector<float> x(8, 0.5f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(core->score(x, out).code(), Code::NonFinite);
  x[3] = 1.5f;
  Status range = core->score(x, out);
  EXPECT_EQ(range.code(), Code::OutOfRange);
  EXPECT_NE(range.error().detail.find("feature 3"), std::string::npos);
  EXPECT_EQ(core->observe(x, 1).code(), Code::OutOfRange);
  EXPECT_EQ(core->observe(std::vector<float>(8, 0.5f), 3).code(), Code::OutOfRange);  // label
  EXPECT_EQ(core->observeTarget(std::vector<float>(8, 0.5f), 1.0f).code(), Code::InvalidArgument);
  // Batches are validated row by row before anything is scored.
  std::vector<float> batch(3 * 8, 0.5f);
  batch[2 * 8 + 1] = -1.0f;
  std::vector<float> outs(9);
  EXPECT_EQ(core->scoreBatch(batch, outs).code(), Code::OutOfRange);

  DeviceStatus s = core->status();
  EXPECT_EQ(s.scored, 0u);
  EXPECT_EQ(s.observed, 0u);
  EXPECT_EQ(s.rejected, 6u);
  std::map<std::string, std::uint64_t> byReason;
  for (const auto& r : s.rejectedByReason) byReason[r.reason] = r.count;
  EXPECT_EQ(byReason["ShapeMismatch"], 1u);
  EXPECT_EQ(byReason["NonFinite"], 1u);
  EXPECT_EQ(byReason["OutOfRange"], 4u);
}

TEST_F(CoreTest, BatchScoringMatchesSingleScoring) {
  DeviceConfig c = config();
  c.limits.maxBatch = 4;  // 10 rows: three steps
  auto core = open(c);
  ASSERT_TRUE(deploy(*core, model).ok());
  const Dataset d = test::syntheticData(8, 3, 10, 5);
  std::vector<float> batch(30);
  ASSERT_TRUE(core->scoreBatch(d.features, batch).ok());
  for (std::size_t i = 0; i < 10; ++i) {
    std::vector<float> one(3);
    ASSERT_TRUE(core->score(d.sample(i), one).ok());
    for (std::size_t k = 0; k < 3; ++k) EXPECT_NEAR(batch[i * 3 + k], one[k], 1e-5f);
  }
  EXPECT_EQ(core->status().scored, 20u);
}

TEST_F(CoreTest, RoundTaskLeadsToASignedUpdate) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 40);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 4, .baseDigest = parameterDigest(model)}))
          .ok());
  const auto updates = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(updates.size(), 1u);
  auto v = decodeVerified<wire::Update>(updates[0].payload, deviceRing());
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_EQ(v->signer.subject, "dev-1");
  auto u = v->root();
  EXPECT_EQ(std::string(u.getFleet()), "demo");
  EXPECT_EQ(std::string(u.getDeviceId()), "dev-1");
  EXPECT_EQ(u.getRound(), 4u);
  EXPECT_EQ(u.getBaseVersion(), 1u);
  EXPECT_EQ(u.getSampleCount(), 40u);
  EXPECT_EQ(std::string(u.getRuntimeVersion()), std::string(kRuntimeVersionString));
  EXPECT_LT(u.getLossAfter(), u.getLossBefore());
  EXPECT_EQ(u.getCreatedAt(), clock);
  const Digest base = parameterDigest(model);
  EXPECT_TRUE(std::equal(base.begin(), base.end(), u.getBaseDigest().begin()));
  const std::vector<float> delta = test::decodeUpdateDelta(u, model);
  EXPECT_GT(l2Norm(delta), 0.0);

  DeviceStatus s = core->status();
  EXPECT_EQ(s.pendingUpdates, 1u);
  EXPECT_EQ(s.lastRound, 4u);
  EXPECT_EQ(s.updatesSent, 1u);
  EXPECT_EQ(s.newSamples, 0u);
  EXPECT_EQ(s.roundState, "sent");
  // The same task again (a retained redelivery) sends nothing new, nor does
  // a restart.
  (void)core->handleMessage(roundTopic("demo"),
                            fleet.roundTask({.round = 4, .baseDigest = parameterDigest(model)}));
  core.reset();
  core = open(config());
  (void)core->handleMessage(roundTopic("demo"),
                            fleet.roundTask({.round = 4, .baseDigest = parameterDigest(model)}));
  EXPECT_EQ(transport.on(deviceTopic("demo", "dev-1", "update")).size(), 1u);
  EXPECT_EQ(core->status().pendingUpdates, 1u);
}

TEST_F(CoreTest, AsynchronousRoundsTrainOnTheActiveModelAndSayWhichItWas) {
  // A buffered asynchronous round accepts updates on older stable models
  // (the coordinator weighs them by staleness), so a device whose model is
  // not the round's base still trains, and its update names its own base.
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 12);
  Digest newer = parameterDigest(model);
  newer[0] ^= 0xff;
  ASSERT_TRUE(core->handleMessage(roundTopic("demo"),
                                  fleet.roundTask({.round = 9,
                                                   .baseVersion = 7,
                                                   .baseDigest = newer,
                                                   .mode = wire::RoundMode::ASYNCHRONOUS}))
                  .ok());
  const auto sent = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent.size(), 1u) << core->status().roundState;
  auto u = decodeVerified<wire::Update>(sent[0].payload, deviceRing());
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->root().getRound(), 9u);
  EXPECT_EQ(u->root().getBaseVersion(), model.meta().version);
  const Digest own = parameterDigest(model);
  EXPECT_TRUE(std::equal(own.begin(), own.end(), u->root().getBaseDigest().begin()));
}

TEST_F(CoreTest, ARoundTaskThatDoesNotSelectTheDeviceIsSetAsideUnverified) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 12);
  const Digest base = parameterDigest(model);
  const std::string updates = deviceTopic("demo", "dev-1", "update");
  auto forged = [&](test::RoundSpec spec) {
    Bytes bytes = fleet.roundTask(spec);
    flipSignatureBit(bytes);
    return bytes;
  };
  // Not selected (by the list, by the fraction): set aside, not refused,
  // even with a broken signature; only the status names the round.
  const std::uint64_t refusedBefore = core->status().refused;
  EXPECT_TRUE(core->handleMessage(roundTopic("demo"),
                                  forged({.round = 3, .baseDigest = base, .devices = {"dev-2"}}))
                  .ok());
  EXPECT_EQ(core->status().roundState, "NotSelected: round 3");
  EXPECT_TRUE(core->handleMessage(roundTopic("demo"), forged({.round = 4, .fraction = 0.0f})).ok());
  EXPECT_EQ(core->status().roundState, "NotSelected: round 4");
  EXPECT_EQ(core->status().refused, refusedBefore);
  // The same broken signature on a task that selects the device is refused.
  EXPECT_EQ(core->handleMessage(roundTopic("demo"),
                                forged({.round = 5, .baseDigest = base, .devices = {"dev-1"}}))
                .code(),
            Code::BadSignature);
  EXPECT_EQ(core->status().refused, refusedBefore + 1);
  // Another fleet's task or a payload that is not a round task takes the
  // full check, as before.
  EXPECT_EQ(core->handleMessage(roundTopic("demo"),
                                fleet.roundTask({.fleet = "other", .round = 5, .fraction = 0.0f}))
                .code(),
            Code::WrongFleet);
  EXPECT_TRUE(transport.on(updates).empty());

  // Nothing set aside stands in the way of a task that selects the device.
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"), fleet.roundTask({.round = 6, .baseDigest = base}))
          .ok());
  ASSERT_EQ(transport.on(updates).size(), 1u);
  EXPECT_EQ(core->status().roundState, "sent");
  // Round 7 leaves it out: still "sent" while round 6 is open, and named
  // once round 6 closes.
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"), fleet.roundTask({.round = 7, .fraction = 0.0f}))
          .ok());
  EXPECT_EQ(core->status().roundState, "sent");
  ASSERT_TRUE(
      core->handleMessage(
              roundTopic("demo"),
              fleet.roundTask({.round = 6, .state = wire::RoundState::CLOSED, .baseDigest = base}))
          .ok());
  EXPECT_EQ(core->status().roundState, "NotSelected: round 7");

  // A device holding an open round it is selected for but has not started
  // (too few samples) checks a newer task that leaves it out: a forged one
  // is refused and the round kept, a genuine one ends the round.
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 8, .baseDigest = base, .minSamples = 40}))
          .ok());
  EXPECT_EQ(core->status().roundState.rfind("not enough samples", 0), 0u)
      << core->status().roundState;
  EXPECT_EQ(core->handleMessage(roundTopic("demo"), forged({.round = 9, .fraction = 0.0f})).code(),
            Code::BadSignature);
  EXPECT_EQ(core->status().roundState.rfind("not enough samples", 0), 0u);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"), fleet.roundTask({.round = 9, .fraction = 0.0f}))
          .ok());
  EXPECT_EQ(core->status().roundState, "NotSelected: round 9");
  observe(*core, 40, 9);
  EXPECT_EQ(transport.on(updates).size(), 1u);
}

TEST_F(CoreTest, RoundEligibility) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  const Digest base = parameterDigest(model);
  auto send = [&](test::RoundSpec spec) {
    ASSERT_TRUE(core->handleMessage(roundTopic("demo"), fleet.roundTask(spec)).ok());
  };
  send({.round = 1, .baseDigest = base, .devices = {"dev-2", "dev-3"}});
  EXPECT_EQ(core->status().roundState.rfind("NotSelected", 0), 0u) << core->status().roundState;
  send({.round = 2, .baseDigest = base, .fraction = 0.0f});
  EXPECT_EQ(core->status().roundState.rfind("NotSelected", 0), 0u);
  send({.round = 3, .baseDigest = Digest{}});
  EXPECT_EQ(core->status().roundState.rfind("BaseMismatch", 0), 0u);
  EXPECT_TRUE(transport.on(deviceTopic("demo", "dev-1", "update")).empty());
  send({.round = 4, .state = wire::RoundState::CLOSED, .baseDigest = base});
  EXPECT_EQ(core->status().roundState.rfind("RoundClosed", 0), 0u);
  send({.round = 5, .baseDigest = base, .deadline = clock - 1});
  EXPECT_EQ(core->status().roundState.rfind("RoundClosed", 0), 0u);
  // An older round than the current one is refused.
  EXPECT_EQ(core->handleMessage(roundTopic("demo"), fleet.roundTask({.round = 2})).code(),
            Code::RoundClosed);
  // Selected, right base, but too few samples: it waits for them.
  send({.round = 6, .baseDigest = base, .devices = {"dev-1"}, .minSamples = 10});
  EXPECT_EQ(core->status().roundState, "not enough samples: 0 of 10");
  observe(*core, 9);
  EXPECT_TRUE(transport.on(deviceTopic("demo", "dev-1", "update")).empty());
  observe(*core, 1);
  EXPECT_EQ(transport.on(deviceTopic("demo", "dev-1", "update")).size(), 1u);
  EXPECT_EQ(core->status().lastRound, 6u);
  // A task for another fleet, signed by this fleet's coordinator.
  EXPECT_EQ(core->handleMessage(roundTopic("demo"), fleet.roundTask({.fleet = "other", .round = 9}))
                .code(),
            Code::WrongFleet);
}

TEST_F(CoreTest, AckClearsThePendingUpdateWhichIsResentUntilThen) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 1, .baseDigest = parameterDigest(model)}))
          .ok());
  const std::string updateTopic = deviceTopic("demo", "dev-1", "update");
  ASSERT_EQ(transport.on(updateTopic).size(), 1u);
  core->tick();
  EXPECT_EQ(transport.on(updateTopic).size(), 1u);  // not due yet
  clock += 31;
  core->tick();
  ASSERT_EQ(transport.on(updateTopic).size(), 2u);
  EXPECT_EQ(transport.on(updateTopic)[1].payload, transport.on(updateTopic)[0].payload);

  const std::string ackTopic = deviceTopic("demo", "dev-1", "ack");
  // Acks for someone else, or forged, change nothing.
  EXPECT_EQ(core->handleMessage(ackTopic, fleet.ack("dev-2", 1)).code(), Code::Impersonation);
  KeyPair stranger = KeyPair::generate();
  EXPECT_FALSE(core->handleMessage(ackTopic, seal(Kind::ACK, Bytes{1, 2, 3}, stranger)).ok());
  EXPECT_EQ(core->status().pendingUpdates, 1u);
  // Overloaded: try again later.
  ASSERT_TRUE(
      core->handleMessage(ackTopic, fleet.ack("dev-1", 1, wire::Verdict::REJECTED, "Overloaded"))
          .ok());
  EXPECT_EQ(core->status().pendingUpdates, 1u);
  ASSERT_TRUE(core->handleMessage(ackTopic, fleet.ack("dev-1", 1)).ok());
  DeviceStatus s = core->status();
  EXPECT_EQ(s.pendingUpdates, 0u);
  EXPECT_EQ(s.lastAckRound, 1u);
  EXPECT_EQ(s.lastAckVerdict, "accepted");
  clock += 100;
  core->tick();
  EXPECT_EQ(transport.on(updateTopic).size(), 2u);
}

TEST_F(CoreTest, RejectionIsRecordedWithItsReason) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 2, .baseDigest = parameterDigest(model)}))
          .ok());
  ASSERT_TRUE(core->handleMessage(deviceTopic("demo", "dev-1", "ack"),
                                  fleet.ack("dev-1", 2, wire::Verdict::REJECTED, "NormTooLarge"))
                  .ok());
  DeviceStatus s = core->status();
  EXPECT_EQ(s.pendingUpdates, 0u);
  EXPECT_EQ(s.lastAckVerdict, "rejected");
  EXPECT_EQ(s.lastAckReason, "NormTooLarge");
}

TEST_F(CoreTest, PendingUpdatesSurviveARestartAndExpireWithTheirRound) {
  transport.up = false;
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"), fleet.roundTask({.round = 3,
                                                               .baseDigest = parameterDigest(model),
                                                               .deadline = clock + 120}))
          .ok());
  const std::string updateTopic = deviceTopic("demo", "dev-1", "update");
  EXPECT_TRUE(transport.on(updateTopic).empty());  // offline: kept, not sent
  EXPECT_EQ(core->status().pendingUpdates, 1u);
  core.reset();

  core = open(config());
  EXPECT_EQ(core->status().pendingUpdates, 1u);
  transport.up = true;
  core->handleConnected();
  const auto sent = transport.on(updateTopic);
  ASSERT_EQ(sent.size(), 1u);
  auto v = decodeVerified<wire::Update>(sent[0].payload, deviceRing());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->root().getRound(), 3u);
  clock += 121;
  core->tick();
  EXPECT_EQ(core->status().pendingUpdates, 0u);
  core.reset();
  EXPECT_EQ(open(config())->status().pendingUpdates, 0u);
}

// The envelope of a pending update is a file of its own, the bytes that are
// published; the row names it, and the ack removes both.
TEST_F(CoreTest, PendingEnvelopesAreFilesRemovedWithTheirRow) {
  transport.up = false;
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 3, .baseDigest = parameterDigest(model)}))
          .ok());
  const fs::path storage = config().storageDir;
  const fs::path file = storage / "pending" / device::DeviceState::pendingFileName(3);
  ASSERT_TRUE(fs::exists(file));
  const std::uint64_t statusBytes = core->status().storageBytes;
  EXPECT_GE(statusBytes, fs::file_size(file));
  transport.up = true;
  core->handleConnected();
  const auto sent = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent.size(), 1u);
  auto stored = readFileBytes(file.string(), 1 << 24);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored.value(), sent[0].payload);
  {
    // The row holds the file's name and size, not the bytes.
    auto db = device::DeviceDb::open(storage / "device.db", true);
    ASSERT_TRUE(db.ok());
    device::Statement st(*db.value(), "SELECT length(envelope), file, envelope_bytes FROM pending");
    ASSERT_TRUE(st.step().value());
    EXPECT_EQ(st.integer(0), 0);
    EXPECT_EQ(st.text(1), device::DeviceState::pendingFileName(3));
    EXPECT_EQ(st.integer(2), static_cast<std::int64_t>(sent[0].payload.size()));
  }
  const auto inode = [](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
  };
  const auto inodeOfRound3 = inode(file);
  ASSERT_TRUE(core->handleMessage(deviceTopic("demo", "dev-1", "ack"), fleet.ack("dev-1", 3)).ok());
  EXPECT_EQ(core->status().pendingUpdates, 0u);
  EXPECT_FALSE(fs::exists(file));
  // The file stays as the directory's spare, and the next update is
  // written over it: the same inode, exactly the new bytes.
  const fs::path spare = storage / "pending" / std::string(device::ModelFiles::kSpareName);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(storage / "pending")) {
    left.push_back(e.path().filename().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{spare.filename().string()});
  EXPECT_EQ(inode(spare), inodeOfRound3);
  ASSERT_TRUE(
      core->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 4, .baseDigest = parameterDigest(model)}))
          .ok());
  const fs::path file4 = storage / "pending" / device::DeviceState::pendingFileName(4);
  EXPECT_FALSE(fs::exists(spare));
  EXPECT_EQ(inode(file4), inodeOfRound3);
  const auto sent4 = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent4.size(), 2u);
  EXPECT_EQ(readFileBytes(file4.string(), 1 << 24).value(), sent4[1].payload);
  EXPECT_EQ(decodeVerified<wire::Update>(sent4[1].payload, deviceRing())->root().getRound(), 4u);
}

// A device's models directory keeps the file a deployment dropped as its
// spare, and the next deployment is written over it.
TEST_F(CoreTest, ADeploymentIsWrittenOverTheModelFileTheLastOneDropped) {
  auto core = open(config());
  const fs::path models = config().storageDir / "models";
  const fs::path spare = models / std::string(device::ModelFiles::kSpareName);
  const auto inode = [](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
  };
  std::uint64_t sequence = 1;
  while (!fs::exists(spare) && sequence < 10) {
    ASSERT_TRUE(deploy(*core, model, {.sequence = sequence++}).ok());
  }
  ASSERT_TRUE(fs::exists(spare)) << "no deployment dropped a file";
  const auto spareInode = inode(spare);
  const Bytes next = fleet.deployment(model, {.sequence = sequence});
  ASSERT_TRUE(core->handleMessage(deployTopic("demo", "stable"), next).ok());
  const fs::path file = models / ("stable-" + std::to_string(sequence) + ".deploy");
  EXPECT_EQ(inode(file), spareInode);
  EXPECT_EQ(readFileBytes(file.string(), 1 << 24).value(), next);
  // The spare outlives the deployment's own sweep, and each later drop
  // refills it: never more than one.
  EXPECT_TRUE(fs::exists(spare));
  EXPECT_EQ(core->status().activeSequence, sequence);
  // Reopened, the device runs the file written over the spare.
  core.reset();
  core = open(config());
  EXPECT_TRUE(core->status().modelLoaded) << core->status().lastError;
  EXPECT_EQ(core->status().activeSequence, sequence);
  EXPECT_EQ(core->status().fallbacks, 0u);
}

// A pending file cut short or gone cannot be resent: the open reports it
// and drops its row, resends the rest, and removes files no row names.
TEST_F(CoreTest, APendingFileThatCannotBeReadIsReportedAndDropped) {
  transport.up = false;
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  for (std::uint64_t r : {3, 4, 5, 6}) {
    ASSERT_TRUE(
        core->handleMessage(roundTopic("demo"),
                            fleet.roundTask({.round = r, .baseDigest = parameterDigest(model)}))
            .ok());
  }
  ASSERT_EQ(core->status().pendingUpdates, 4u);
  core.reset();
  const fs::path dir = config().storageDir / "pending";
  fs::resize_file(dir / device::DeviceState::pendingFileName(3), 100);
  fs::remove(dir / device::DeviceState::pendingFileName(5));
  {
    // A row naming a file other than its own: reported, and that file is
    // neither read nor removed.
    auto db = device::DeviceDb::open(config().storageDir / "device.db", true);
    ASSERT_TRUE(db.ok());
    device::Statement st(*db.value(), "UPDATE pending SET file = '../device.db' WHERE round = 6");
    ASSERT_TRUE(st.run().ok());
  }
  std::ofstream(dir / device::DeviceState::pendingFileName(99)) << "no row names this";
  std::ofstream(dir / "round-6.update.tmp") << "a write cut short";

  core = open(config());
  DeviceStatus s = core->status();
  EXPECT_EQ(s.pendingUpdates, 1u);
  EXPECT_NE(s.lastError.find("3 pending update(s) lost"), std::string::npos) << s.lastError;
  EXPECT_NE(
      s.lastError.find("round 3: " + device::DeviceState::pendingFileName(3) + " holds 100 bytes"),
      std::string::npos)
      << s.lastError;
  EXPECT_NE(s.lastError.find("round 5: "), std::string::npos) << s.lastError;
  EXPECT_NE(s.lastError.find("round 6: corrupt pending row: names file '../device.db'"),
            std::string::npos)
      << s.lastError;
  EXPECT_TRUE(fs::exists(config().storageDir / "device.db"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  // A dropped round's file is kept as the spare for the next update.
  EXPECT_EQ(left, (std::vector<std::string>{device::DeviceState::pendingFileName(4),
                                            std::string(device::ModelFiles::kSpareName)}));
  transport.up = true;
  core->handleConnected();
  const auto sent = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(decodeVerified<wire::Update>(sent[0].payload, deviceRing())->root().getRound(), 4u);
  // The lost rows are gone: the next open finds nothing to report.
  core.reset();
  core = open(config());
  EXPECT_EQ(core->status().pendingUpdates, 1u);
  EXPECT_EQ(core->status().lastError, "");
}

TEST_F(CoreTest, PendingUpdatesAreBounded) {
  DeviceConfig c = config();
  c.limits.maxPendingUpdates = 2;
  transport.up = false;
  auto core = open(c);
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 20);
  for (std::uint64_t r = 1; r <= 4; ++r) {
    ASSERT_TRUE(
        core->handleMessage(roundTopic("demo"),
                            fleet.roundTask({.round = r, .baseDigest = parameterDigest(model)}))
            .ok());
  }
  EXPECT_EQ(core->status().updatesSent, 4u);
  EXPECT_EQ(core->status().pendingUpdates, 2u);
  transport.up = true;
  core->handleConnected();
  const auto sent = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent.size(), 2u);  // the newest two
  EXPECT_EQ(decodeVerified<wire::Update>(sent[0].payload, deviceRing())->root().getRound(), 3u);
  EXPECT_EQ(decodeVerified<wire::Update>(sent[1].payload, deviceRing())->root().getRound(), 4u);
  // The files of the rounds dropped went with their rows.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(config().storageDir / "pending")) {
    files.push_back(e.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  // Round 1's file was written over by round 4's; round 2's is the spare.
  EXPECT_EQ(files, (std::vector<std::string>{device::DeviceState::pendingFileName(3),
                                             device::DeviceState::pendingFileName(4),
                                             std::string(device::ModelFiles::kSpareName)}));
}

TEST_F(CoreTest, TopKResidualIsKeptDurably) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  observe(*core, 40);
  ASSERT_TRUE(core->handleMessage(roundTopic("demo"),
                                  fleet.roundTask({.round = 1,
                                                   .baseDigest = parameterDigest(model),
                                                   .encoding = wire::DeltaEncoding::TOP_K,
                                                   .topKFraction = 0.05f}))
                  .ok());
  const auto sent = transport.on(deviceTopic("demo", "dev-1", "update"));
  ASSERT_EQ(sent.size(), 1u);
  auto v = decodeVerified<wire::Update>(sent[0].payload, deviceRing());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->root().getDelta().getEncoding(), wire::DeltaEncoding::TOP_K);
  const std::vector<float> delta = test::decodeUpdateDelta(v->root(), model);
  std::size_t nonZero = 0;
  for (float x : delta) nonZero += x != 0.0f ? 1 : 0;
  EXPECT_LE(nonZero, static_cast<std::size_t>(std::ceil(0.05 * model.parameterCount())));
  core.reset();

  // What was held back is in the database, for the next round.
  auto db = device::DeviceDb::open(tmp.path() / "storage-dev-1/device.db", true);
  ASSERT_TRUE(db.ok());
  device::DeviceState state(*db.value());
  auto residual = state.residual(model.arch());
  ASSERT_TRUE(residual.ok());
  ASSERT_TRUE(residual->has_value());
  EXPECT_EQ(residual->value().values.size(), model.parameterCount());
  EXPECT_GT(l2Norm(residual->value().values), 0.0);
}

TEST_F(CoreTest, HooksSeeAndChangeWhatIsSent) {
  // Two devices with the same samples train to the same delta; one flips
  // its sign (a sign-flip attacker).
  DeviceConfig honest = config("dev-1");
  DeviceConfig flipper = config("dev-2");
  int flips = 0;
  flipper.hooks.delta = [&flips](std::uint64_t, std::span<float> d) {
    ++flips;
    for (float& x : d) x = -x;
  };
  // Verified messages read the bytes in place: keep them alive.
  auto sentBy = [&](const std::string& id) {
    return transport.on(deviceTopic("demo", id, "update")).at(0).payload;
  };
  auto a = open(honest);
  auto b = open(flipper);
  const auto task = fleet.roundTask({.round = 1, .baseDigest = parameterDigest(model)});
  for (DeviceCore* core : {a.get(), b.get()}) {
    ASSERT_TRUE(deploy(*core, model).ok());
    observe(*core, 30);
    ASSERT_TRUE(core->handleMessage(roundTopic("demo"), task).ok());
  }
  const Bytes bytesA = sentBy("dev-1"), bytesB = sentBy("dev-2");
  auto ua = decodeVerified<wire::Update>(bytesA, deviceRing("dev-1"));
  auto ub = decodeVerified<wire::Update>(bytesB, deviceRing("dev-2"));
  ASSERT_TRUE(ua.ok() && ub.ok());
  const auto da = test::decodeUpdateDelta(ua->root(), model);
  const auto db = test::decodeUpdateDelta(ub->root(), model);
  EXPECT_EQ(flips, 1);
  for (std::size_t i = 0; i < da.size(); ++i) ASSERT_EQ(db[i], -da[i]) << i;

  // NaN planted by a hook is sent as it is: the coordinator must catch it.
  DeviceConfig poisoner = config("dev-3");
  poisoner.hooks.delta = [](std::uint64_t, std::span<float> d) {
    d[0] = std::numeric_limits<float>::quiet_NaN();
  };
  // Another device id in the message (signed with this device's key), and a
  // broken signature.
  DeviceConfig impostor = config("dev-4");
  impostor.hooks.updatePayload = [](std::uint64_t, Bytes& payload) {
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(payload.data()),
                     payload.size() / sizeof(capnp::word)));
    capnp::MallocMessageBuilder copy;
    copy.setRoot(reader.getRoot<wire::Update>());
    copy.getRoot<wire::Update>().setDeviceId("dev-1");
    payload = toBytes(copy);
  };
  DeviceConfig forger = config("dev-5");
  forger.hooks.updateEnvelope = [](std::uint64_t, Bytes& envelope) { flipSignatureBit(envelope); };
  for (auto* c : {&poisoner, &impostor, &forger}) {
    auto core = open(*c);
    ASSERT_TRUE(deploy(*core, model).ok());
    observe(*core, 30);
    ASSERT_TRUE(core->handleMessage(roundTopic("demo"), task).ok());
  }
  const Bytes bytesC = sentBy("dev-3"), bytesD = sentBy("dev-4"), bytesE = sentBy("dev-5");
  auto poisoned = decodeVerified<wire::Update>(bytesC, deviceRing("dev-3"));
  ASSERT_TRUE(poisoned.ok());
  std::vector<float> out(model.parameterCount());
  EXPECT_EQ(decodeDelta(poisoned->root().getDelta(), model.tensorSizes(), out).code(),
            Code::NonFinite);
  auto impersonating = decodeVerified<wire::Update>(bytesD, deviceRing("dev-4"));
  ASSERT_TRUE(impersonating.ok());
  EXPECT_EQ(std::string(impersonating->root().getDeviceId()), "dev-1");
  EXPECT_EQ(impersonating->signer.subject, "dev-4");
  EXPECT_EQ(decodeVerified<wire::Update>(bytesE, deviceRing("dev-5")).code(), Code::BadSignature);
}

TEST_F(CoreTest, PublishUpdateSendsArbitraryBytes) {
  auto core = open(config());
  const Bytes junk{1, 2, 3};
  ASSERT_TRUE(core->publishUpdate(junk).ok());
  EXPECT_EQ(transport.on(deviceTopic("demo", "dev-1", "update")).at(0).payload, junk);
  transport.up = false;
  EXPECT_EQ(core->publishUpdate(junk).code(), Code::NotFound);
}

TEST_F(CoreTest, TelemetryIsSignedAndDescribesTheDevice) {
  auto core = open(config());
  ASSERT_TRUE(deploy(*core, model).ok());
  const Dataset d = test::syntheticData(8, 3, 30, 1);
  std::vector<float> out(3);
  for (std::size_t i = 0; i < d.size(); ++i) ASSERT_TRUE(core->score(d.sample(i), out).ok());
  (void)core->score(std::vector<float>(8, 2.0f), out);
  observe(*core, 10);

  auto first = core->telemetryEnvelope();
  ASSERT_TRUE(first.ok());
  auto v = decodeVerified<wire::Telemetry>(first.value(), deviceRing());
  ASSERT_TRUE(v.ok()) << v.error().toString();
  auto t = v->root();
  EXPECT_EQ(std::string(t.getDeviceId()), "dev-1");
  EXPECT_EQ(t.getSequence(), 1u);
  EXPECT_EQ(t.getTimestamp(), clock);
  EXPECT_EQ(t.getActiveVersion(), 1u);
  EXPECT_EQ(t.getDeploymentSequence(), 1u);
  EXPECT_EQ(t.getChannel(), wire::Channel::STABLE);
  EXPECT_TRUE(t.getHealth().getModelLoaded());
  EXPECT_EQ(t.getScored(), 30u);
  EXPECT_EQ(t.getObserved(), 10u);
  ASSERT_EQ(t.getRejected().size(), 1u);
  EXPECT_EQ(std::string(t.getRejected()[0].getReason()), "OutOfRange");
  EXPECT_EQ(t.getLatencyCounts().size(), t.getLatencyBoundsMicros().size() + 1);
  std::uint64_t latencies = 0;
  for (auto c : t.getLatencyCounts()) latencies += c;
  EXPECT_EQ(latencies, 30u);
  EXPECT_EQ(t.getDrift().getSamples(), 40u);
  EXPECT_EQ(t.getLocal().getLabelled(), 10u);
  EXPECT_EQ(t.getStorage().getSamplesStored(), 10u);
  EXPECT_EQ(t.getStorage().getNewSamples(), 10u);
  EXPECT_GT(t.getStorage().getBytesUsed(), 0u);
  const Digest digest = parameterDigest(model);
  EXPECT_TRUE(std::equal(digest.begin(), digest.end(), t.getActiveDigest().begin()));

  // Sent periodically when connected, and the sequence survives a restart.
  clock += 1;
  core->tick();
  ASSERT_EQ(transport.on(deviceTopic("demo", "dev-1", "telemetry")).size(), 1u);
  auto sequenceOf = [&](const Bytes& envelope) {
    return decodeVerified<wire::Telemetry>(envelope, deviceRing())->root().getSequence();
  };
  for (std::uint64_t expected = 3; expected <= 10; ++expected) {
    EXPECT_EQ(sequenceOf(core->telemetryEnvelope().value()), expected);
  }
  core.reset();
  {
    // Persisted once per block of sequences, as the bound of those sent.
    auto db = device::DeviceDb::open(config().storageDir / "device.db", true);
    ASSERT_TRUE(db.ok());
    device::Statement st(*db.value(), "SELECT value FROM counters WHERE name = ?1");
    st.bind(1, std::string_view(device::kTelemetrySequence));
    ASSERT_TRUE(st.step().value());
    EXPECT_EQ(st.integer(0), static_cast<std::int64_t>(device::kTelemetrySequenceBlock));
  }
  // After a restart (or a crash) it goes on above that bound, never back.
  core = open(config());
  EXPECT_EQ(sequenceOf(core->telemetryEnvelope().value()), device::kTelemetrySequenceBlock + 1);
  EXPECT_EQ(sequenceOf(core->telemetryEnvelope().value()), device::kTelemetrySequenceBlock + 2);
}

TEST_F(CoreTest, DriftRisesWhenInputsShift) {
  auto calm = open(config("dev-1"));
  auto shifted = open(config("dev-2"));
  // 2,000 samples against a 400-sample reference: the PSI of two samples
  // of one distribution is about (bins - 1) * (1/n + 1/m) = 0.027.
  const Dataset d = test::syntheticData(8, 3, 2000, 21);
  std::vector<float> out(3);
  for (DeviceCore* core : {calm.get(), shifted.get()}) ASSERT_TRUE(deploy(*core, model).ok());
  for (std::size_t i = 0; i < d.size(); ++i) {
    ASSERT_TRUE(calm->score(d.sample(i), out).ok());
    std::vector<float> x = sampleOf(d, i);
    for (float& v : x) v = 0.8f + 0.2f * v;  // squeezed into the top of the range
    ASSERT_TRUE(shifted->score(x, out).ok());
  }
  const DeviceStatus a = calm->status();
  const DeviceStatus b = shifted->status();
  EXPECT_EQ(a.drift.samples, 2000u);
  EXPECT_LT(a.drift.psiMax, 0.1f);
  EXPECT_GT(b.drift.psiMean, 1.0f);
  const auto stats = shifted->featureStatistics();
  ASSERT_EQ(stats.size(), 8u);
  EXPECT_NEAR(stats[0].mean, 0.9, 0.02);
  EXPECT_EQ(stats[0].count, 2000u);
}

TEST_F(CoreTest, OpenChecksTheConfiguration) {
  DeviceConfig c = config();
  c.deviceId = "bad/id";
  EXPECT_EQ(DeviceCore::open(c).code(), Code::BadConfig);
  c = config();
  c.limits.maxBatch = 0;
  EXPECT_EQ(DeviceCore::open(c).code(), Code::BadConfig);
  c = config();
  c.deviceKeyFile = tmp.path() / "missing.key";
  EXPECT_FALSE(DeviceCore::open(c).ok());
  c = config();
  c.rootPublicKeyFile = tmp.path() / "missing.pub";
  EXPECT_FALSE(DeviceCore::open(c).ok());
}

TEST_F(CoreTest, ModelCacheSharesOneCopyBetweenDevices) {
  auto cache = std::make_shared<ModelCache>();
  std::vector<std::unique_ptr<DeviceCore>> devices;
  // One deployment, the same bytes for every device as the broker's retained
  // message is (a deployment built again in another second is another
  // deployment: its createdAt differs).
  const Bytes first = fleet.deployment(model);
  for (int i = 0; i < 5; ++i) {
    DeviceConfig c = config("dev-" + std::to_string(i));
    c.modelCache = cache;
    c.sampleStore = SampleStoreKind::Memory;
    devices.push_back(open(c));
    ASSERT_TRUE(devices.back()->handleMessage(deployTopic("demo", "stable"), first).ok());
  }
  EXPECT_EQ(cache->size(), 1u);
  // Another deployment is another entry, even of the same model; one of
  // another model gets that model, never a cached copy of the first.
  Model other = model;
  for (float& x : other.parameters()) x += 0.25f;
  other.meta().version = 2;
  ASSERT_TRUE(deploy(*devices[3], model, {.sequence = 2}).ok());
  ASSERT_TRUE(deploy(*devices[4], other, {.sequence = 2}).ok());
  EXPECT_EQ(cache->size(), 3u);
  EXPECT_EQ(devices[3]->status().activeDigest, toHex(parameterDigest(model)));
  EXPECT_EQ(devices[4]->status().activeDigest, toHex(parameterDigest(other)));
  EXPECT_EQ(devices[4]->status().activeVersion, 2u);
  EXPECT_EQ(devices[0]->status().activeDigest, toHex(parameterDigest(model)));
  devices.clear();
  EXPECT_EQ(cache->size(), 0u);
}

}  // namespace
}  // namespace edgefl
