// The broker's optional TLS listener (`edgefl fleet init --tls`): a real
// mosquitto started from the generated configuration accepts a client that
// trusts the fleet's CA and knows its password, and refuses plain MQTT on
// the TLS port, a client that trusts another CA, and a wrong password.

#include <gtest/gtest.h>
#include <mosquitto.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// What one libmosquitto connection got: the CONNACK and the PUBACK reason
// codes, -1 for none (the connection failed or timed out).
struct Outcome {
  int connectRc = MOSQ_ERR_UNKNOWN;  // mosquitto_connect's return
  int connack = -1;
  int puback = -1;
};

// Connects as `user` to 127.0.0.1:`port`, over TLS trusting `cafile` when
// it is not empty, and publishes one QoS 1 message to `topic` once
// connected. Bounded: gives up after two seconds without progress.
Outcome connectAndPublish(int port, const fs::path& cafile, const std::string& user,
                          const std::string& password, const std::string& topic) {
  Outcome out;
  mosquitto* m = mosquitto_new(user.c_str(), true, &out);
  EXPECT_NE(m, nullptr);
  if (m == nullptr) return out;
  mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  mosquitto_username_pw_set(m, user.c_str(), password.c_str());
  if (!cafile.empty()) {
    EXPECT_EQ(mosquitto_tls_set(m, cafile.c_str(), nullptr, nullptr, nullptr, nullptr),
              MOSQ_ERR_SUCCESS);
  }
  mosquitto_connect_v5_callback_set(
      m, [](mosquitto*, void* self, int rc, int, const mosquitto_property*) {
        static_cast<Outcome*>(self)->connack = rc;
      });
  mosquitto_publish_v5_callback_set(
      m, [](mosquitto*, void* self, int, int rc, const mosquitto_property*) {
        static_cast<Outcome*>(self)->puback = rc;
      });
  out.connectRc = mosquitto_connect(m, "127.0.0.1", port, 30);
  bool published = false;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (out.connectRc == MOSQ_ERR_SUCCESS && out.puback < 0 &&
         std::chrono::steady_clock::now() < deadline) {
    if (mosquitto_loop(m, 50, 1) != MOSQ_ERR_SUCCESS) break;
    if (out.connack > 0) break;  // refused
    if (out.connack == 0 && !published) {
      const std::string payload = "over tls";
      published = mosquitto_publish_v5(m, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                                       payload.data(), 1, false, nullptr) == MOSQ_ERR_SUCCESS;
    }
  }
  mosquitto_disconnect(m);
  mosquitto_destroy(m);
  return out;
}

class BrokerTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { mosquitto_lib_init(); }
  static void TearDownTestSuite() { mosquitto_lib_cleanup(); }

  test::TempDir tmp;
  fs::path dir;
  int port = 0;
  int tlsPort = 0;
  std::unique_ptr<test::Broker> broker;
  KeyPair dev1 = KeyPair::generate();
  std::string password;
  std::string topic;

  void SetUp() override {
    dir = tmp.path() / "fleet";
    port = test::freeLoopbackPort();
    tlsPort = test::freeLoopbackPort();
    ASSERT_NE(tlsPort, port);
    std::string output;
    ASSERT_EQ(
        test::runCli("fleet init " + dir.string() + " --name demo --broker-port " +
                         std::to_string(port) + " --tls --tls-port " + std::to_string(tlsPort),
                     &output),
        0)
        << output;
    auto enrolled = tools::enrollDevice(dir, "dev-1", dev1.publicKey());
    ASSERT_TRUE(enrolled.ok()) << enrolled.error().toString();
    password = test::readPassword(enrolled->passwordFile);
    topic = deviceTopic("demo", "dev-1", "telemetry");
    // Waits for the TLS listener; the plain one opens with it.
    broker = std::make_unique<test::Broker>(dir, tlsPort);
  }

  fs::path ca() const { return dir / "broker" / "tls" / "ca.crt"; }
};

TEST_F(BrokerTlsTest, ConfigurationNamesTheGeneratedFiles) {
  const std::string conf = test::readTextFile(dir / "broker" / "mosquitto.conf");
  EXPECT_NE(conf.find("listener " + std::to_string(tlsPort) + " 127.0.0.1"), std::string::npos);
  EXPECT_NE(conf.find("cafile " + ca().string()), std::string::npos);
  EXPECT_NE(conf.find("require_certificate false"), std::string::npos);
  for (const char* key : {"ca.key", "server.key"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir / "broker" / "tls" / key).c_str(), &st), 0) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
}

TEST_F(BrokerTlsTest, TrustedClientPublishesAndThePlainListenerSeesIt) {
  test::MqttClient coordinator("coordinator", "coordinator",
                               test::readPassword(dir / "keys" / "coordinator.mqtt-password"));
  ASSERT_EQ(coordinator.connect(port), 0);
  ASSERT_LT(coordinator.subscribe(topic), 0x80);

  const Outcome o = connectAndPublish(tlsPort, ca(), "dev-1", password, topic);
  ASSERT_EQ(o.connectRc, MOSQ_ERR_SUCCESS) << mosquitto_strerror(o.connectRc);
  EXPECT_EQ(o.connack, 0);
  EXPECT_EQ(o.puback, 0);
  auto received = coordinator.waitMessage();
  ASSERT_TRUE(received.has_value());
  EXPECT_EQ(received->topic, topic);
  EXPECT_EQ(std::string(received->payload.begin(), received->payload.end()), "over tls");
}

TEST_F(BrokerTlsTest, PasswordsAreCheckedOverTls) {
  const Outcome o = connectAndPublish(tlsPort, ca(), "dev-1", "not-the-password", topic);
  EXPECT_GT(o.connack, 0) << "connect " << mosquitto_strerror(o.connectRc);
  EXPECT_EQ(o.puback, -1);
}

TEST_F(BrokerTlsTest, PlainMqttOnTheTlsPortFails) {
  const Outcome o = connectAndPublish(tlsPort, {}, "dev-1", password, topic);
  EXPECT_EQ(o.connack, -1);
  EXPECT_EQ(o.puback, -1);
}

TEST_F(BrokerTlsTest, ClientTrustingAnotherCaFails) {
  const fs::path other = tmp.path() / "other";
  auto otherTls = tools::generateBrokerTls(other, "other", 30);
  ASSERT_TRUE(otherTls.ok()) << otherTls.error().toString();
  // The handshake fails on certificate verification, so no CONNACK ever
  // arrives (libmosquitto may report it from connect or from the loop).
  const Outcome o = connectAndPublish(tlsPort, otherTls->caCert, "dev-1", password, topic);
  EXPECT_EQ(o.connack, -1);
  EXPECT_EQ(o.puback, -1);
}

TEST_F(BrokerTlsTest, GeneratingTwiceIsRefused) {
  auto again = tools::generateBrokerTls(dir, "demo", 30);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), Code::AlreadyExists);
}

}  // namespace
}  // namespace edgefl
