#include "support/fleet.hpp"

#include <fstream>

#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/shared/train.hpp"
#include "edgefl/tools/fleet.hpp"

namespace edgefl::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

TestFleet::TestFleet(const TestFleetOptions& options) {
  dir_ = tmp_.path() / "fleet";
  port_ = freeLoopbackPort();
  tools::FleetInitOptions init;
  init.directory = dir_;
  init.name = options.name;
  init.brokerPort = port_;
  init.arch = options.arch;
  init.holdout = options.holdout;
  Status st = tools::initFleet(init);
  if (!st.ok()) throw std::runtime_error("fleet init: " + st.error().toString());
  auto config = server::loadCoordinatorConfig(dir_ / "coordinator.toml");
  if (!config.ok()) throw std::runtime_error(config.error().toString());
  config_ = std::move(config.value());
  // Fast test settings: every device selected, short deadline and window.
  config_.rounds.fraction = 1.0;
  config_.rounds.minUpdates = 2;
  config_.rounds.deadlineSeconds = 30;
  config_.rollout.canaryPercent = 50;
  config_.rollout.windowSeconds = 1;
  config_.rollout.minReports = 1;
  config_.training.learningRate = 0.05;
  config_.training.momentum = 0.0;
  saveConfig();
  broker_ = std::make_unique<Broker>(dir_, port_);
}

TestFleet::~TestFleet() = default;

void TestFleet::saveConfig() const {
  std::ofstream(dir_ / "coordinator.toml") << server::renderCoordinatorConfig(config_);
}

TestDevice::TestDevice(TestFleet& fleet, const std::string& id)
    : fleet_(fleet), id_(id), key_(KeyPair::generate()) {
  auto enrolled = tools::enrollDevice(fleet.dir(), id, key_.publicKey());
  if (!enrolled.ok()) throw std::runtime_error(enrolled.error().toString());
  rootRing_.add(*loadPublicKey(fleet.dir() / "keys/root.pub"), Role::ROOT);
  mqtt_ = std::make_unique<MqttClient>(id, id, readPassword(enrolled->passwordFile));
  // Enrollment signals the broker to reload its password file; retry until
  // it has.
  int rc = -1;
  for (int i = 0; i < 100 && rc != 0; ++i) {
    if (i > 0) {
      std::this_thread::sleep_for(50ms);
      mqtt_ = std::make_unique<MqttClient>(id, id, readPassword(enrolled->passwordFile));
    }
    rc = mqtt_->connect(fleet.port());
  }
  if (rc != 0) throw std::runtime_error("device " + id + " cannot connect: " + std::to_string(rc));
  const std::string f = fleet.name();
  mqtt_->subscribe(deployTopic(f, "stable"));
  mqtt_->subscribe(deployTopic(f, "canary"));
  mqtt_->subscribe(roundTopic(f));
  mqtt_->subscribe(deviceTopic(f, id, "ack"));
}

std::optional<Message> TestDevice::nextOn(const std::string& topic,
                                          std::chrono::milliseconds timeout) {
  for (auto it = backlog_.begin(); it != backlog_.end(); ++it) {
    if (it->topic == topic) {
      Message m = std::move(*it);
      backlog_.erase(it);
      return m;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto m = mqtt_->waitMessage(std::max(left, 1ms));
    if (!m) return std::nullopt;
    if (m->topic == topic) return m;
    backlog_.push_back(std::move(*m));
  }
  return std::nullopt;
}

bool TestDevice::fetchModel(const std::string& channel, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = nextOn(deployTopic(fleet_.name(), channel),
                    std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()));
    // Newer deployments may already be queued behind this one: take the last.
    while (m) {
      auto newer = nextOn(deployTopic(fleet_.name(), channel), 150ms);
      if (!newer) break;
      m = std::move(newer);
    }
    if (!m || m->payload.empty()) continue;
    auto d = decodeVerified<wire::Deployment>(m->payload, rootRing_, vo);
    if (!d.ok()) continue;
    auto bytes = d->root().getModel();
    auto model = modelFromBytes(ByteView(bytes.begin(), bytes.size()));
    if (!model.ok()) continue;
    model_ = std::move(model.value());
    modelVersion_ = d->root().getModelVersion();
    return true;
  }
  return false;
}

bool TestDevice::waitRound(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  while (std::chrono::steady_clock::now() < deadline) {
    auto m =
        nextOn(roundTopic(fleet_.name()), std::chrono::duration_cast<std::chrono::milliseconds>(
                                              deadline - std::chrono::steady_clock::now()));
    while (m) {
      auto newer = nextOn(roundTopic(fleet_.name()), 150ms);
      if (!newer) break;
      m = std::move(newer);
    }
    if (!m || m->payload.empty()) continue;
    auto t = decodeVerified<wire::RoundTask>(m->payload, rootRing_, vo);
    if (!t.ok() || t->root().getState() != wire::RoundState::OPEN) continue;
    round_ = t->root().getRound();
    auto digest = t->root().getBaseDigest();
    std::copy(digest.begin(), digest.end(), baseDigest_.begin());
    roundTask_ = m->payload;
    return true;
  }
  return false;
}

Bytes TestDevice::updatePayload(std::uint64_t round, const Digest& base,
                                std::span<const float> delta,
                                std::span<const std::uint32_t> tensorSizes, std::uint32_t samples,
                                const std::string& claimedId) {
  capnp::MallocMessageBuilder b;
  auto u = b.initRoot<wire::Update>();
  u.setFleet(fleet_.name());
  u.setDeviceId(claimedId.empty() ? id_ : claimedId);
  u.setRound(round);
  u.setBaseVersion(modelVersion_);
  u.setBaseDigest(kj::arrayPtr(base.data(), base.size()));
  u.setSampleCount(samples);
  std::vector<float> scratch(delta.begin(), delta.end());
  std::mt19937_64 rng(1);
  DeltaOptions options;  // float32
  auto encoded = encodeDelta(scratch, tensorSizes, options, {}, rng, u.initDelta());
  if (!encoded.ok()) {
    // Crafted deltas (NaN) cannot pass the encoder: write them raw.
    auto d = u.initDelta();
    d.setEncoding(wire::DeltaEncoding::FLOAT32);
    auto tensors = d.initTensors(static_cast<unsigned>(tensorSizes.size()));
    std::size_t offset = 0;
    for (std::size_t i = 0; i < tensorSizes.size(); ++i) {
      tensors[static_cast<unsigned>(i)].setElementCount(tensorSizes[i]);
      tensors[static_cast<unsigned>(i)].setDense(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(delta.data() + offset),
                       tensorSizes[i] * sizeof(float)));
      offset += tensorSizes[i];
    }
  }
  u.setCreatedAt(static_cast<std::int64_t>(std::time(nullptr)));
  u.setRuntimeVersion("test");
  return toBytes(b);
}

Bytes TestDevice::buildUpdate(const Dataset& data, std::span<const std::uint32_t> indices,
                              const std::function<void(std::span<float>)>& tamper,
                              std::uint32_t sampleCount) {
  Model local = *model_;
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  auto task = decodeVerified<wire::RoundTask>(roundTask_, rootRing_, vo);
  if (!task.ok()) throw std::runtime_error("round task: " + task.error().toString());
  auto options = trainOptionsFromWire(task->root().getTraining());
  if (!options.ok()) throw std::runtime_error(options.error().toString());
  auto trainer = Trainer::prepare(local, *options);
  if (!trainer.ok()) throw std::runtime_error(trainer.error().toString());
  auto report = trainer->train(data, indices);
  if (!report.ok()) throw std::runtime_error(report.error().toString());
  std::vector<float> delta(local.parameterCount());
  (void)computeDelta(local.parameters(), model_->parameters(), delta);
  if (tamper) tamper(delta);
  const std::uint32_t n =
      sampleCount != 0 ? sampleCount : static_cast<std::uint32_t>(indices.size());
  return sign(updatePayload(round_, baseDigest_, delta, model_->tensorSizes(), n));
}

int TestDevice::send(const Bytes& bytes, const std::string& topicDevice) {
  return mqtt_->publish(
      deviceTopic(fleet_.name(), topicDevice.empty() ? id_ : topicDevice, "update"), bytes);
}

std::optional<ReceivedAck> TestDevice::waitAck(std::chrono::milliseconds timeout) {
  auto m = nextOn(deviceTopic(fleet_.name(), id_, "ack"), timeout);
  if (!m) return std::nullopt;
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  auto a = decodeVerified<wire::Ack>(m->payload, rootRing_, vo);
  if (!a.ok()) return std::nullopt;
  auto digest = a->root().getUpdateDigest();
  return ReceivedAck{a->root().getRound(), a->root().getVerdict(), a->root().getReason(),
                     Bytes(digest.begin(), digest.end())};
}

std::vector<std::string> TestDevice::selectedDevices() const {
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  auto t = decodeVerified<wire::RoundTask>(roundTask_, rootRing_, vo);
  std::vector<std::string> out;
  if (t.ok()) {
    for (auto id : t->root().getDevices()) out.emplace_back(id.cStr());
  }
  return out;
}

wire::RoundMode TestDevice::roundMode() const {
  VerifyOptions vo;
  vo.fleet = fleet_.name();
  auto t = decodeVerified<wire::RoundTask>(roundTask_, rootRing_, vo);
  return t.ok() ? t->root().getMode() : wire::RoundMode::SYNCHRONOUS;
}

int TestDevice::sendTelemetry(bool canary, std::uint64_t activeVersion, std::uint64_t labelled,
                              float accuracy, std::uint32_t healthFailures,
                              std::uint64_t newSamples, float psiMean) {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::Telemetry>();
  t.setFleet(fleet_.name());
  t.setDeviceId(id_);
  t.setSequence(++telemetrySeq_);
  t.setTimestamp(static_cast<std::int64_t>(std::time(nullptr)));
  t.setActiveVersion(activeVersion);
  t.setChannel(canary ? wire::Channel::CANARY : wire::Channel::STABLE);
  t.getHealth().setModelLoaded(true);
  t.getHealth().setHealthCheckFailures(healthFailures);
  t.getLocal().setLabelled(labelled);
  t.getLocal().setAccuracy(accuracy);
  t.getStorage().setNewSamples(newSamples);
  t.getDrift().setPsiMean(psiMean);
  return mqtt_->publish(deviceTopic(fleet_.name(), id_, "telemetry"),
                        seal(Kind::TELEMETRY, toBytes(b), key_));
}

}  // namespace edgefl::test
