#pragma once
// Test support: temporary directories, free loopback ports, a real mosquitto
// started from a fleet's generated configuration, and a small synchronous
// MQTT 5 client (libmosquitto) to talk to it.

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct mosquitto;

namespace edgefl::test {

// A fresh directory under $TMPDIR (or /tmp), removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "edgefl-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The whole file as text; empty when it cannot be read.
std::string readTextFile(const std::filesystem::path& path);

// A loopback TCP port that was free a moment ago.
int freeLoopbackPort();
// True when something accepts TCP connections on the loopback `port`.
bool portAccepts(int port);

// Runs `edgefl` (the CLI under test) with `args`; returns exit status and
// captures stdout+stderr into `output` when given.
int runCli(const std::string& args, std::string* output = nullptr);

// A real mosquitto process using <fleetDir>/broker/mosquitto.conf.
class Broker {
 public:
  // Starts mosquitto and waits until it accepts connections on `port`.
  Broker(std::filesystem::path fleetDir, int port);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  void stop();
  void start();
  // Asks the broker to re-read password and ACL files.
  void reload();

 private:
  std::filesystem::path fleetDir_;
  int port_;
  pid_t pid_ = -1;
};

struct Message {
  std::string topic;
  std::vector<std::uint8_t> payload;
  bool retained = false;
};

// Synchronous MQTT 5 client for tests, with its own network thread.
class MqttClient {
 public:
  MqttClient(const std::string& clientId, const std::string& user, const std::string& password);
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  // CONNACK reason code (0 = accepted), or -1 on timeout / network error.
  int connect(int port, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // SUBACK granted QoS (>= 0x80 = refused), or -1 on timeout.
  int subscribe(const std::string& topic, int qos = 1,
                std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // For QoS 1: the PUBACK reason code (0 = accepted, 0x87 = not authorized),
  // or -1 on timeout. For QoS 0: 0 once sent.
  int publish(const std::string& topic, const std::vector<std::uint8_t>& payload, int qos = 1,
              bool retain = false, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // QoS 1 publish that does not wait for its PUBACK: the message id, or -1
  // when libmosquitto refuses it. pubacks() counts the PUBACKs so far.
  int publishNoWait(const std::string& topic, const std::vector<std::uint8_t>& payload);
  struct PubackCount {
    std::uint64_t accepted = 0;  // reason < 0x80
    std::uint64_t refused = 0;   // reason >= 0x80, e.g. 0x87 not authorized
  };
  PubackCount pubacks() const;
  std::optional<Message> waitMessage(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Drops the messages received so far (a long run that never reads them).
  void discardMessages();
  void disconnect();

 private:
  struct State;
  mosquitto* mosq_ = nullptr;
  std::shared_ptr<State> state_;
};

// The password stored for a broker user in a fleet directory.
std::string readPassword(const std::filesystem::path& file);

}  // namespace edgefl::test
