#pragma once
// A whole test fleet: `edgefl fleet init` in a temp dir, a real mosquitto on
// a free loopback port, settings tuned for fast tests, and protocol-level
// test devices that train with the shared model math, sign with their own
// enrolled keys and talk to the coordinator over the real broker.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/model.hpp"
#include "support/broker.hpp"

namespace edgefl::test {

struct TestFleetOptions {
  std::string name = "demo";
  std::string arch = "mlp:784-16-10";
  std::string holdout = "fashion-mnist:test:1000";
};

class TestFleet {
 public:
  explicit TestFleet(const TestFleetOptions& options = {});
  ~TestFleet();

  const std::filesystem::path& dir() const { return dir_; }
  int port() const { return port_; }
  Broker& broker() { return *broker_; }
  server::CoordinatorConfig& config() { return config_; }
  // Writes config() back to coordinator.toml (for the coordinator process).
  void saveConfig() const;
  std::string name() const { return config_.fleet.name; }

 private:
  TempDir tmp_;
  std::filesystem::path dir_;
  int port_ = 0;
  server::CoordinatorConfig config_;
  std::unique_ptr<Broker> broker_;
};

struct ReceivedAck {
  std::uint64_t round = 0;
  wire::Verdict verdict = wire::Verdict::REJECTED;
  std::string reason;
  Bytes updateDigest;  // updateDigest() of the Update payload the ack is about
};

// A device speaking the protocol: enrolled key, own broker user, verifies
// what the coordinator sends against the fleet root only.
class TestDevice {
 public:
  TestDevice(TestFleet& fleet, const std::string& id);

  const std::string& id() const { return id_; }
  const KeyPair& key() const { return key_; }
  MqttClient& mqtt() { return *mqtt_; }

  // Waits for a verified deployment on `channel` and loads its model.
  bool fetchModel(const std::string& channel = "stable",
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits for a verified open RoundTask (retained or new).
  bool waitRound(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  const Model& model() const { return *model_; }
  std::uint64_t modelVersion() const { return modelVersion_; }
  std::uint64_t round() const { return round_; }
  const Digest& baseDigest() const { return baseDigest_; }

  // Trains a copy of model() on `data[indices]` as the round asks and
  // returns the signed Update bytes. `tamper` may change the delta before
  // encoding (attacks); `sampleCount` 0 means indices.size().
  Bytes buildUpdate(const Dataset& data, std::span<const std::uint32_t> indices,
                    const std::function<void(std::span<float>)>& tamper = {},
                    std::uint32_t sampleCount = 0);
  // The same Update message (unsigned payload) with every field under the
  // caller's control, for crafted attacks.
  Bytes updatePayload(std::uint64_t round, const Digest& base, std::span<const float> delta,
                      std::span<const std::uint32_t> tensorSizes, std::uint32_t samples,
                      const std::string& claimedId = {});
  Bytes sign(const Bytes& payload) const { return seal(Kind::UPDATE, payload, key_); }

  int send(const Bytes& bytes, const std::string& topicDevice = {});
  // Next verified Ack for this device.
  std::optional<ReceivedAck> waitAck(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  int sendTelemetry(bool canary, std::uint64_t activeVersion, std::uint64_t labelled,
                    float accuracy, std::uint32_t healthFailures = 0, std::uint64_t newSamples = 0,
                    float psiMean = 0);
  // The last RoundTask received (verified).
  std::vector<std::string> selectedDevices() const;
  wire::RoundMode roundMode() const;

 private:
  std::optional<Message> nextOn(const std::string& topic, std::chrono::milliseconds timeout);

  TestFleet& fleet_;
  std::string id_;
  KeyPair key_;
  std::unique_ptr<MqttClient> mqtt_;
  Keyring rootRing_;
  std::optional<Model> model_;
  std::uint64_t modelVersion_ = 0;
  std::uint64_t round_ = 0;
  Digest baseDigest_{};
  Bytes roundTask_;
  std::vector<Message> backlog_;
  std::uint64_t telemetrySeq_ = 0;
};

}  // namespace edgefl::test
