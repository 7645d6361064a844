// A real mosquitto with the configuration `edgefl fleet init` generates:
// signed messages cross it and verify on the other side, and its ACLs and
// authentication refuse what a device must not do.

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"
#include "support/messages.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kNotAuthorized = 0x87;

// MQTT 5 reason codes below 0x80 are successes (0x10: no subscribers yet).
bool accepted(int reasonCode) {
  return reasonCode >= 0 && reasonCode < 0x80;
}

class BrokerTest : public ::testing::Test {
 protected:
  test::TempDir tmp;
  fs::path dir;
  int port = 0;
  std::unique_ptr<test::Broker> broker;
  KeyPair dev1 = KeyPair::generate();
  KeyPair dev2 = KeyPair::generate();

  void SetUp() override {
    dir = tmp.path() / "fleet";
    port = test::freeLoopbackPort();
    ASSERT_EQ(test::runCli("fleet init " + dir.string() + " --name demo --broker-port " +
                           std::to_string(port)),
              0);
    ASSERT_TRUE(tools::enrollDevice(dir, "dev-1", dev1.publicKey()).ok());
    ASSERT_TRUE(tools::enrollDevice(dir, "dev-2", dev2.publicKey()).ok());
    broker = std::make_unique<test::Broker>(dir, port);
  }

  std::unique_ptr<test::MqttClient> connect(const std::string& user, const std::string& pwFile,
                                            int* connack = nullptr) {
    auto c = std::make_unique<test::MqttClient>(user, user, test::readPassword(pwFile));
    int rc = c->connect(port);
    if (connack != nullptr) *connack = rc;
    return c;
  }
  std::unique_ptr<test::MqttClient> coordinator() {
    return connect("coordinator", dir / "keys/coordinator.mqtt-password");
  }
  std::unique_ptr<test::MqttClient> device(const std::string& id, int* connack = nullptr) {
    return connect(id, dir / "devices" / (id + ".mqtt-password"), connack);
  }
};

TEST_F(BrokerTest, SignedRoundTaskReachesDeviceAndVerifiesAgainstRootOnly) {
  auto coordinatorKey = KeyPair::load(dir / "keys/coordinator.key");
  auto delegation = readFileBytes(dir / "keys/coordinator.delegation", 1 << 16);
  ASSERT_TRUE(coordinatorKey.ok() && delegation.ok());
  auto c = coordinator();
  Bytes task =
      seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 11), *coordinatorKey, *delegation);
  ASSERT_TRUE(accepted(c->publish(roundTopic("demo"), task, 1, /*retain=*/true)));

  int connack = -1;
  auto d = device("dev-1", &connack);
  ASSERT_EQ(connack, 0);
  ASSERT_LT(d->subscribe(roundTopic("demo")), 0x80);
  auto msg = d->waitMessage();
  ASSERT_TRUE(msg.has_value());
  EXPECT_TRUE(msg->retained);
  Keyring deviceRing;
  deviceRing.add(*loadPublicKey(dir / "keys/root.pub"), Role::ROOT);
  VerifyOptions options;
  options.fleet = "demo";
  auto v = decodeVerified<wire::RoundTask>(msg->payload, deviceRing, options);
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_EQ(v->root().getRound(), 11u);
  EXPECT_TRUE(v->signer.delegated);
}

TEST_F(BrokerTest, SignedUpdateReachesCoordinatorAndForgeryIsDetected) {
  auto c = coordinator();
  ASSERT_LT(c->subscribe("edgefl/demo/device/+/update"), 0x80);
  auto d = device("dev-1");
  Bytes update = seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 3), dev1);
  ASSERT_TRUE(accepted(d->publish(deviceTopic("demo", "dev-1", "update"), update)));
  // Forged: signed by a key that was never enrolled.
  KeyPair stranger = KeyPair::generate();
  Bytes forged = seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 3), stranger);
  ASSERT_TRUE(accepted(d->publish(deviceTopic("demo", "dev-1", "update"), forged)));

  Keyring ring;
  ring.add(dev1.publicKey(), Role::DEVICE, "dev-1");
  ring.add(dev2.publicKey(), Role::DEVICE, "dev-2");
  auto first = c->waitMessage();
  ASSERT_TRUE(first.has_value());
  auto topic = parseDeviceTopic("demo", first->topic);
  ASSERT_TRUE(topic.has_value());
  auto v = decodeVerified<wire::Update>(first->payload, ring);
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_EQ(v->signer.subject, topic->deviceId);
  EXPECT_EQ(v->root().getRound(), 3u);

  auto second = c->waitMessage();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(decodeVerified<wire::Update>(second->payload, ring).code(), Code::UnknownKey);
}

TEST_F(BrokerTest, AclRefusesForeignAndCoordinatorTopics) {
  auto c = coordinator();
  ASSERT_LT(c->subscribe("edgefl/demo/#"), 0x80);
  auto d = device("dev-1");
  Bytes payload = seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-2", 3), dev1);
  EXPECT_EQ(d->publish(deviceTopic("demo", "dev-2", "update"), payload), kNotAuthorized);
  EXPECT_EQ(d->publish(roundTopic("demo"), payload), kNotAuthorized);
  EXPECT_EQ(d->publish(deployTopic("demo", "stable"), payload), kNotAuthorized);
  EXPECT_EQ(d->publish(deviceTopic("demo", "dev-2", "ack"), payload), kNotAuthorized);
  EXPECT_EQ(d->publish("edgefl/other/device/dev-1/update", payload), kNotAuthorized);
  // None of it reached the coordinator; its own topic still works.
  EXPECT_FALSE(c->waitMessage(300ms).has_value());
  EXPECT_TRUE(accepted(d->publish(deviceTopic("demo", "dev-1", "telemetry"), payload)));
  auto got = c->waitMessage();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->topic, deviceTopic("demo", "dev-1", "telemetry"));

  // A device reads its own acks, never another device's.
  auto d2 = device("dev-2");
  ASSERT_LT(d->subscribe(deviceTopic("demo", "dev-1", "ack")), 0x80);
  int foreign = d->subscribe(deviceTopic("demo", "dev-2", "ack"));
  EXPECT_TRUE(foreign == kNotAuthorized || foreign < 0x80);
  ASSERT_TRUE(accepted(c->publish(deviceTopic("demo", "dev-2", "ack"), {1, 2, 3})));
  ASSERT_TRUE(accepted(c->publish(deviceTopic("demo", "dev-1", "ack"), {4, 5, 6})));
  auto ack = d->waitMessage();
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->topic, deviceTopic("demo", "dev-1", "ack"));
  EXPECT_FALSE(d->waitMessage(300ms).has_value());
}

TEST_F(BrokerTest, AuthenticationRefusesAnonymousWrongPasswordAndRevoked) {
  test::MqttClient anonymous("anon", "", "");
  EXPECT_NE(anonymous.connect(port), 0);
  test::MqttClient wrong("dev-1", "dev-1", "not-the-password");
  EXPECT_NE(wrong.connect(port), 0);

  ASSERT_TRUE(tools::revokeDevice(dir, "dev-2").ok());
  broker->reload();
  test::MqttClient revoked("dev-2", "dev-2", "whatever");
  EXPECT_NE(revoked.connect(port), 0);
  int connack = -1;
  auto ok = device("dev-1", &connack);
  EXPECT_EQ(connack, 0);
}

TEST_F(BrokerTest, EnrollmentReloadsARunningBroker) {
  // The generated config writes a pid file; enrollment signals the broker.
  ASSERT_TRUE(fs::exists(dir / "broker/mosquitto.pid"));
  KeyPair dev3 = KeyPair::generate();
  ASSERT_TRUE(tools::enrollDevice(dir, "dev-3", dev3.publicKey()).ok());
  int connack = -1;
  for (int i = 0; i < 50 && connack != 0; ++i) {
    std::this_thread::sleep_for(50ms);
    auto d = device("dev-3", &connack);
  }
  EXPECT_EQ(connack, 0);
}

}  // namespace
}  // namespace edgefl
