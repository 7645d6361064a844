#pragma once
// The coordinator's connection to the fleet broker (libmosquitto): a
// persistent session (clean_session false), QoS 1 subscriptions re-made on
// every reconnect, automatic reconnect with backoff, and thread-safe
// publishing. Incoming messages are handed to a callback on the network
// thread, which must return quickly (the coordinator only enqueues them).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "edgefl/shared/result.hpp"

struct mosquitto;
struct mosquitto_message;

namespace edgefl::server {

struct BrokerOptions {
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string clientId = "coordinator";
  std::string username = "coordinator";
  std::string password;
  int keepaliveSeconds = 30;
  // Reconnect backoff: doubles from min to max (libmosquitto's exponential
  // backoff), so a restarting broker is not hammered.
  int reconnectMinSeconds = 1;
  int reconnectMaxSeconds = 30;
  std::vector<std::string> subscriptions;  // QoS 1, re-subscribed on reconnect
};

struct IncomingMessage {
  std::string topic;
  std::vector<std::uint8_t> payload;
  bool retained = false;
};

class BrokerClient {
 public:
  using Handler = std::function<void(IncomingMessage&&)>;

  BrokerClient(BrokerOptions options, Handler handler);
  ~BrokerClient();
  BrokerClient(const BrokerClient&) = delete;
  BrokerClient& operator=(const BrokerClient&) = delete;

  // Connects and starts the network thread; waits up to `timeout` for the
  // first CONNACK. Later disconnects reconnect on their own.
  Status start(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void stop();
  bool connected() const { return connected_.load(); }
  std::uint64_t reconnects() const { return connects_.load() > 0 ? connects_.load() - 1 : 0; }

  // QoS 1 publish; queued by libmosquitto while disconnected.
  Status publish(const std::string& topic, std::span<const std::uint8_t> payload,
                 bool retain = false, int qos = 1);
  // Waits until every QoS 1 publish so far has been acknowledged by the
  // broker (or the timeout passes); false on timeout.
  bool flush(std::chrono::milliseconds timeout);

 private:
  static void onConnect(mosquitto*, void* self, int rc);
  static void onDisconnect(mosquitto*, void* self, int rc);
  static void onMessage(mosquitto*, void* self, const mosquitto_message* m);
  static void onPublish(mosquitto*, void* self, int mid);

  BrokerOptions options_;
  Handler handler_;
  mosquitto* mosq_ = nullptr;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> connects_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  int lastConnack_ = -1;
  std::uint64_t inflight_ = 0;
  bool started_ = false;
};

}  // namespace edgefl::server
