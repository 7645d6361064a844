#pragma once
// A fleet made by `edgefl fleet init`, enrolled devices, a real mosquitto
// started from the generated configuration, and a test client acting as
// the coordinator (its broker user, its signing key and delegation).

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "device/device_fixture.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"

namespace edgefl::test {

// MQTT 5 reason codes below 0x80 are successes (0x10: no subscribers yet).
inline bool accepted(int reasonCode) {
  return reasonCode >= 0 && reasonCode < 0x80;
}

class BrokerFixture : public ::testing::Test {
 protected:
  TempDir tmp;
  std::filesystem::path dir;
  int port = 0;
  std::unique_ptr<Broker> broker;
  std::unique_ptr<TestFleet> fleet;
  std::map<std::string, std::unique_ptr<KeyPair>> keys;

  void SetUp() override {
    dir = tmp.path() / "fleet";
    port = freeLoopbackPort();
    ASSERT_EQ(
        runCli("fleet init " + dir.string() + " --name demo --broker-port " + std::to_string(port)),
        0);
    fleet = std::make_unique<TestFleet>(dir, "demo");
    broker = std::make_unique<Broker>(dir, port);
  }

  // Generates, saves and enrolls a device key; returns the key file.
  std::filesystem::path enroll(const std::string& id) {
    auto key = std::make_unique<KeyPair>(KeyPair::generate());
    const auto file = saveDeviceKey(*key, tmp.path(), id);
    auto enrolled = tools::enrollDevice(dir, id, key->publicKey());
    EXPECT_TRUE(enrolled.ok()) << enrolled.error().toString();
    keys[id] = std::move(key);
    return file;
  }

  DeviceConfig deviceConfig(const std::string& id) {
    DeviceConfig c;
    c.deviceId = id;
    c.fleet = "demo";
    c.storageDir = tmp.path() / ("storage-" + id);
    c.deviceKeyFile = tmp.path() / (id + ".key");
    c.rootPublicKeyFile = dir / "keys/root.pub";
    c.transport.port = port;
    c.transport.passwordFile = dir / "devices" / (id + ".mqtt-password");
    c.transport.keepaliveSeconds = 5;
    c.transport.reconnectMinSeconds = 1;
    c.transport.reconnectMaxSeconds = 1;
    c.log = [](LogLevel, std::string_view) {};
    return c;
  }

  std::unique_ptr<MqttClient> coordinator() {
    auto c = std::make_unique<MqttClient>("coordinator", "coordinator",
                                          readPassword(dir / "keys/coordinator.mqtt-password"));
    EXPECT_EQ(c->connect(port), 0);
    return c;
  }

  // The enrolled public keys, as the coordinator verifies with.
  Keyring enrolledKeys() const {
    Keyring ring;
    for (const auto& [id, key] : keys) ring.add(key->publicKey(), Role::DEVICE, id);
    return ring;
  }

  static std::unique_ptr<Device> open(DeviceConfig config) {
    auto device = Device::open(std::move(config));
    EXPECT_TRUE(device.ok()) << device.error().toString();
    return device.ok() ? std::move(device.value()) : nullptr;
  }

  // Waits for a message on `topic` (others are skipped).
  static std::optional<Message> waitFor(
      MqttClient& client, const std::string& topic,
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto m = client.waitMessage(left);
      if (!m) return std::nullopt;
      if (m->topic == topic) return m;
    }
    return std::nullopt;
  }
};

}  // namespace edgefl::test
