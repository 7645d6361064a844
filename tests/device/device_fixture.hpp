#pragma once
// Helpers for the device runtime's tests: a fleet's keys (made in process,
// or read from a directory made by `edgefl fleet init`), the signed
// messages a coordinator sends (deployments, round tasks, acks), small
// models with ranges and reference statistics, and learnable synthetic
// data. Header-only: every .cpp in this folder is a test binary of its own.

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl::test {

inline std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Labels from a fixed random linear function of the features: a small MLP
// learns it quickly, so training measurably lowers the loss.
inline Dataset syntheticData(std::uint32_t features, std::uint32_t classes, std::size_t n,
                             std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::mt19937_64 teacherRng(12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> teacher(static_cast<std::size_t>(features) * classes);
  for (float& w : teacher) w = normal(teacherRng);
  Dataset d;
  d.featureCount = features;
  d.classCount = classes;
  d.features.resize(n * features);
  d.labels.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    float best = -1e30f;
    for (std::uint32_t f = 0; f < features; ++f) d.features[i * features + f] = unit(rng);
    for (std::uint32_t c = 0; c < classes; ++c) {
      float s = 0;
      for (std::uint32_t f = 0; f < features; ++f) {
        s += teacher[c * features + f] * (d.features[i * features + f] - 0.5f);
      }
      if (s > best) {
        best = s;
        d.labels[i] = static_cast<std::int32_t>(c);
      }
    }
  }
  return d;
}

// A classifier whose inputs are valid in [0, 1], with reference statistics
// of data drawn from that range.
inline Model smallModel(const std::string& spec = "mlp:8-16-3", std::uint64_t seed = 1,
                        std::uint64_t version = 1) {
  ModelOptions options;
  options.seed = seed;
  auto model = createModel(spec, options);
  EXPECT_TRUE(model.ok()) << model.error().toString();
  Model m = std::move(model.value());
  m.inputSchema().minValue.assign(m.featureCount(), 0.0f);
  m.inputSchema().maxValue.assign(m.featureCount(), 1.0f);
  const Dataset data = syntheticData(m.featureCount(), m.outputCount(), 400, 99);
  auto stats = computeReferenceStats(m, data, 10);
  EXPECT_TRUE(stats.ok()) << stats.error().toString();
  m.referenceStats() = stats.value();
  m.meta().version = version;
  m.meta().fleet = "demo";
  return m;
}

struct DeploymentSpec {
  std::string fleet = "demo";
  std::uint64_t sequence = 1;
  wire::Channel channel = wire::Channel::STABLE;
  float percent = 100;
  wire::DeployMode mode = wire::DeployMode::ACTIVATE;
  std::uint64_t salt = 7;
  std::uint32_t minRuntimeVersion = 0;
  std::int64_t expiresAt = 0;
  bool isRollback = false;
  // Overrides (0 / empty: derived from the model).
  std::uint64_t parameterCount = 0;
  std::uint64_t modelBytes = 0;
  std::optional<Digest> digest = std::nullopt;
};

struct RoundSpec {
  std::string fleet = "demo";
  std::uint64_t round = 1;
  wire::RoundState state = wire::RoundState::OPEN;
  std::uint64_t baseVersion = 1;
  Digest baseDigest{};
  std::int64_t deadline = 0;  // 0: now + 600
  float fraction = 1.0f;
  std::uint64_t salt = 3;
  std::vector<std::string> devices = {};
  std::uint32_t minSamples = 8;
  std::uint32_t epochs = 2;
  float learningRate = 0.1f;
  wire::DeltaEncoding encoding = wire::DeltaEncoding::FLOAT32;
  float topKFraction = 0.1f;
  float clipNorm = 0;
  wire::RoundMode mode = wire::RoundMode::SYNCHRONOUS;
};

// The coordinator side of a fleet: the root key, a coordinator key and the
// root-signed delegation that authorizes it.
struct TestFleet {
  std::string name = "demo";
  KeyPair root = KeyPair::generate();
  KeyPair coordinator = KeyPair::generate();
  Bytes delegation;

  explicit TestFleet(std::string fleet = "demo") : name(std::move(fleet)) {
    DelegationSpec spec;
    spec.fleet = name;
    spec.subjectKey = coordinator.publicKey();
    spec.role = Role::COORDINATOR;
    spec.issuedAt = unixNow();
    spec.notBefore = spec.issuedAt - 3600;
    spec.notAfter = spec.issuedAt + 365 * 86400;
    delegation = issueDelegation(root, spec);
  }
  // The keys of a directory made by `edgefl fleet init`.
  TestFleet(const std::filesystem::path& fleetDir, std::string fleet)
      : name(std::move(fleet)),
        root(std::move(KeyPair::load(fleetDir / "keys/root.key").value())),
        coordinator(std::move(KeyPair::load(fleetDir / "keys/coordinator.key").value())),
        delegation(
            readFileBytes((fleetDir / "keys/coordinator.delegation").string(), 1 << 16).value()) {}

  void writeRootPublicKey(const std::filesystem::path& file) const {
    ASSERT_TRUE(savePublicKey(file, root.publicKey()).ok());
  }

  Bytes deploymentPayload(const Model& model, const DeploymentSpec& spec) const {
    const Bytes modelBytes = modelToBytes(model);
    capnp::MallocMessageBuilder b(static_cast<unsigned>(modelBytes.size() / 8 + 256));
    auto d = b.initRoot<wire::Deployment>();
    d.setFleet(spec.fleet);
    d.setSequence(spec.sequence);
    d.setChannel(spec.channel);
    d.setPercent(spec.percent);
    d.setMode(spec.mode);
    d.setModelVersion(model.meta().version);
    const Digest digest = spec.digest.value_or(parameterDigest(model));
    d.setModelDigest(kj::arrayPtr(digest.data(), digest.size()));
    d.setModel(kj::arrayPtr(modelBytes.data(), modelBytes.size()));
    d.setParameterCount(spec.parameterCount != 0 ? spec.parameterCount : model.parameterCount());
    d.setModelBytes(spec.modelBytes != 0 ? spec.modelBytes : modelBytes.size());
    d.setMinRuntimeVersion(spec.minRuntimeVersion);
    d.setCreatedAt(unixNow());
    d.setExpiresAt(spec.expiresAt);
    d.setIsRollback(spec.isRollback);
    d.setReason("test");
    d.setRolloutSalt(spec.salt);
    return toBytes(b);
  }
  Bytes deployment(const Model& model, const DeploymentSpec& spec = {}) const {
    return seal(Kind::DEPLOYMENT, deploymentPayload(model, spec), coordinator, delegation);
  }

  Bytes roundTask(const RoundSpec& spec) const {
    capnp::MallocMessageBuilder b;
    auto t = b.initRoot<wire::RoundTask>();
    t.setFleet(spec.fleet);
    t.setRound(spec.round);
    t.setState(spec.state);
    t.setBaseVersion(spec.baseVersion);
    t.setBaseDigest(kj::arrayPtr(spec.baseDigest.data(), spec.baseDigest.size()));
    t.setOpenedAt(unixNow());
    t.setDeadline(spec.deadline != 0 ? spec.deadline : unixNow() + 600);
    t.setFraction(spec.fraction);
    t.setSelectionSalt(spec.salt);
    auto devices = t.initDevices(static_cast<unsigned>(spec.devices.size()));
    for (unsigned i = 0; i < devices.size(); ++i) devices.set(i, spec.devices[i]);
    t.setMinSamples(spec.minSamples);
    t.setMode(spec.mode);
    auto training = t.initTraining();
    training.setEpochs(spec.epochs);
    training.setBatchSize(16);
    training.setLearningRate(spec.learningRate);
    training.setSeed(5);
    DeltaOptions delta;
    delta.encoding = spec.encoding;
    delta.topKFraction = spec.topKFraction;
    delta.clipNorm = spec.clipNorm;
    writeDeltaPolicy(delta, t.initDelta());
    t.setTrigger("manual");
    return seal(Kind::ROUND_TASK, toBytes(b), coordinator, delegation);
  }

  Bytes ack(const std::string& device, std::uint64_t round,
            wire::Verdict verdict = wire::Verdict::ACCEPTED, const std::string& reason = "",
            const std::string& fleetName = "") const {
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<wire::Ack>();
    a.setFleet(fleetName.empty() ? name : fleetName);
    a.setDeviceId(device);
    a.setRound(round);
    a.setVerdict(verdict);
    a.setReason(reason);
    a.setReceivedAt(unixNow());
    return seal(Kind::ACK, toBytes(b), coordinator, delegation);
  }
};

// A device's key pair saved as <dir>/<id>.key and .pub.
inline std::filesystem::path saveDeviceKey(const KeyPair& key, const std::filesystem::path& dir,
                                           const std::string& id) {
  const auto prefix = dir / id;
  EXPECT_TRUE(key.save(prefix).ok());
  return prefix.string() + ".key";
}

// An offline device configuration (no MQTT) under `dir`.
inline DeviceConfig offlineConfig(const std::filesystem::path& dir, const std::string& id,
                                  const std::filesystem::path& keyFile,
                                  const std::filesystem::path& rootPub) {
  DeviceConfig c;
  c.deviceId = id;
  c.fleet = "demo";
  c.storageDir = dir / ("storage-" + id);
  c.deviceKeyFile = keyFile;
  c.rootPublicKeyFile = rootPub;
  c.transport.enabled = false;
  c.logLevel = LogLevel::Warn;
  c.log = [](LogLevel, std::string_view) {};
  return c;
}

// Polls `condition` every 10 ms until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

// The delta carried by a verified Update, decoded for `model`'s layout.
inline std::vector<float> decodeUpdateDelta(wire::Update::Reader update, const Model& model) {
  std::vector<float> out(model.parameterCount());
  Status st = decodeDelta(update.getDelta(), model.tensorSizes(), out);
  EXPECT_TRUE(st.ok()) << st.error().toString();
  return out;
}

}  // namespace edgefl::test
