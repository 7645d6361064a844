#pragma once
// The libmosquitto transport of a Device, and the loop that drives many of
// them from one thread (MqttLoop::Impl).
//
// A connection is a persistent session (clean_session false, client id =
// user name = device id) with a retained last will "offline" on its state
// topic and a retained "online" on every connect; it subscribes with QoS 1
// to both deploy channels, the round topic and its own ack topic on every
// connect (the broker then also resends the retained deployments and round
// task), and publishes with QoS 1.
//
// Two ways to drive it: libmosquitto's own thread (mosquitto_loop_start,
// which also reconnects), or a shared MqttLoop, which waits on every
// registered socket with epoll and calls mosquitto_loop_read / _write /
// _misc itself and reconnects with its own backoff.

#include <poll.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "edgefl/device/device.hpp"
#include "edgefl/device/device_core.hpp"

struct mosquitto;
struct mosquitto_message;

namespace edgefl::device {

class MqttConnection final : public Transport {
 public:
  using Clock = std::chrono::steady_clock;

  // `core` must outlive the connection. `password` is the broker password.
  MqttConnection(DeviceCore& core, TransportConfig config, std::string password);
  ~MqttConnection() override;
  MqttConnection(const MqttConnection&) = delete;
  MqttConnection& operator=(const MqttConnection&) = delete;

  // Starts connecting in the background (an unreachable broker is retried
  // with backoff). IoError when libmosquitto refuses the settings.
  Status start();
  // Publishes "offline" (retained), disconnects and stops driving the
  // connection. Idempotent.
  void stop();

  bool publish(const std::string& topic, ByteView payload, bool retain) override;
  bool connected() const override { return connected_.load(); }

  // libmosquitto's own thread (no shared loop) reconnects after a lost
  // connection but not after a failed first attempt (2.0.11): until the
  // first attempt gets through, the device's ticker calls this to retry
  // with backoff, and it starts the network thread once it does.
  void retryFirstConnect();

  // For the shared loop, which calls these with its lock held.
  mosquitto* handle() const { return mosq_; }
  // Reconnects when due and runs the core's timers every `tick`.
  void service(Clock::time_point now, std::chrono::milliseconds tick);

 private:
  static void onConnect(mosquitto* m, void* self, int rc);
  static void onDisconnect(mosquitto* m, void* self, int rc);
  static void onMessage(mosquitto* m, void* self, const mosquitto_message* message);
  void scheduleReconnect(Clock::time_point now);
  void flushAndDisconnect();

  DeviceCore& core_;
  TransportConfig config_;
  std::string password_;
  std::string stateTopic_;
  mosquitto* mosq_ = nullptr;
  std::atomic<bool> connected_{false};
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> threadStarted_{false};
  std::mutex startMu_;  // retryFirstConnect against stop
  // Shared-loop mode only (touched by the loop thread).
  Clock::time_point nextReconnect_{};
  Clock::time_point nextTick_{};
  int backoffSeconds_ = 0;
};

}  // namespace edgefl::device

namespace edgefl {

// The work of a wake-up is proportional to the connections that have
// something to do, not to the connections registered: sockets stay in an
// epoll set (with EPOLLOUT only while libmosquitto has bytes to write),
// publishes from other threads name their connection, and keepalives,
// reconnects and the devices' timers run in one pass over all connections
// per `tick`.
class EDGEFL_DEVICE_HIDDEN MqttLoop::Impl {
 public:
  explicit Impl(MqttLoop::Options options);
  ~Impl();

  void add(device::MqttConnection* connection);
  // After this returns the loop no longer touches `connection`.
  void remove(device::MqttConnection* connection);
  // Makes a wait in progress return.
  void wake();
  // The same, for a publish queued on `connection` by any thread: the loop
  // writes it on this wake-up rather than at its next pass.
  void wantsWrite(device::MqttConnection* connection);
  void runOnce(std::chrono::milliseconds timeout);
  void start();
  void stop();
  std::size_t size() const;
  // The sockets in the epoll set (for tests).
  std::size_t watchedSockets() const;

 private:
  // What the epoll set holds for one connection.
  struct Watch {
    int fd = -1;         // the registered socket, -1 when none
    bool out = false;    // registered with EPOLLOUT
    bool armed = false;  // one-shot registration not yet reported
  };
  // After any call into libmosquitto for `c`: writes what it has queued and
  // brings its registration in line with its socket and want_write.
  void settle(device::MqttConnection* c, Watch& w);
  void rewatch(device::MqttConnection* c, Watch& w);

  MqttLoop::Options options_;
  int wakeFd_ = -1;
  int epollFd_ = -1;
  // Guards the connections, their watches and every call into libmosquitto
  // or a device made by the loop; not held during epoll_wait().
  mutable std::mutex mu_;
  std::vector<device::MqttConnection*> connections_;  // in the order added
  std::unordered_map<device::MqttConnection*, Watch> watches_;
  // Connections with a publish queued since the last wake-up.
  std::mutex wantMu_;
  std::vector<device::MqttConnection*> wantWrite_;
  std::vector<device::MqttConnection*> writing_;      // loop thread only
  std::chrono::steady_clock::time_point nextPass_{};  // loop thread only
  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace edgefl
