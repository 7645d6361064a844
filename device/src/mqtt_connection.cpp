#include "mqtt_connection.hpp"

#include <mosquitto.h>

#include <algorithm>
#include <mutex>

namespace edgefl::device {
namespace {

std::once_flag libInit;

constexpr int kQos = 1;
constexpr std::string_view kOnline = "online";
constexpr std::string_view kOffline = "offline";

}  // namespace

MqttConnection::MqttConnection(DeviceCore& core, TransportConfig config, std::string password)
    : core_(core),
      config_(std::move(config)),
      password_(std::move(password)),
      stateTopic_(core.topic("state")) {
  std::call_once(libInit, [] { mosquitto_lib_init(); });
  // A persistent session: QoS 1 messages for the device (deployments,
  // round tasks, acks) queue at the broker while it is away.
  mosq_ = mosquitto_new(core_.deviceId().c_str(), /*clean_session=*/false, this);
  if (mosq_ == nullptr) throw std::bad_alloc();
  mosquitto_connect_callback_set(mosq_, &MqttConnection::onConnect);
  mosquitto_disconnect_callback_set(mosq_, &MqttConnection::onDisconnect);
  mosquitto_message_callback_set(mosq_, &MqttConnection::onMessage);
}

MqttConnection::~MqttConnection() {
  stop();
  mosquitto_destroy(mosq_);
}

Status MqttConnection::start() {
  auto failed = [](const char* what, int rc) {
    return makeError(Code::IoError, std::string(what) + ": " + mosquitto_strerror(rc));
  };
  int rc = mosquitto_username_pw_set(mosq_, core_.deviceId().c_str(), password_.c_str());
  if (rc != MOSQ_ERR_SUCCESS) return failed("cannot set credentials", rc);
  rc = mosquitto_will_set(mosq_, stateTopic_.c_str(), static_cast<int>(kOffline.size()),
                          kOffline.data(), kQos, /*retain=*/true);
  if (rc != MOSQ_ERR_SUCCESS) return failed("cannot set the last will", rc);
  rc = mosquitto_reconnect_delay_set(mosq_, static_cast<unsigned>(config_.reconnectMinSeconds),
                                     static_cast<unsigned>(config_.reconnectMaxSeconds), true);
  if (rc != MOSQ_ERR_SUCCESS) return failed("cannot set the reconnect delay", rc);
  started_ = true;
  if (config_.loop) {
    // Another thread (the shared loop) drives the socket; publishes from
    // the device's threads only queue and wake the loop.
    mosquitto_threaded_set(mosq_, true);
    rc = mosquitto_connect_async(mosq_, config_.host.c_str(), config_.port,
                                 config_.keepaliveSeconds);
    if (rc != MOSQ_ERR_SUCCESS) {
      core_.logger().info(std::string("broker not reachable yet: ") + mosquitto_strerror(rc));
      scheduleReconnect(Clock::now());
    }
    config_.loop->impl().add(this);
    return {};
  }
  // libmosquitto's thread, once a first attempt got through (see
  // retryFirstConnect); it reconnects on its own with the backoff above.
  rc = mosquitto_connect_async(mosq_, config_.host.c_str(), config_.port, config_.keepaliveSeconds);
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_loop_start(mosq_);
    if (rc != MOSQ_ERR_SUCCESS) return failed("cannot start the MQTT thread", rc);
    threadStarted_ = true;
    return {};
  }
  if (rc != MOSQ_ERR_ERRNO) return failed("cannot connect", rc);
  core_.logger().info(std::string("broker not reachable yet: ") + mosquitto_strerror(rc));
  scheduleReconnect(Clock::now());
  return {};
}

void MqttConnection::retryFirstConnect() {
  if (config_.loop || threadStarted_ || stopping_) return;
  std::lock_guard lock(startMu_);
  const auto now = Clock::now();
  if (threadStarted_ || stopping_ || now < nextReconnect_) return;
  int rc =
      mosquitto_connect_async(mosq_, config_.host.c_str(), config_.port, config_.keepaliveSeconds);
  if (rc != MOSQ_ERR_SUCCESS) {
    scheduleReconnect(now);
    return;
  }
  if (mosquitto_loop_start(mosq_) == MOSQ_ERR_SUCCESS) threadStarted_ = true;
}

void MqttConnection::flushAndDisconnect() {
  // "offline" before a clean DISCONNECT: the broker does not publish the
  // will for a clean disconnect.
  if (connected_) {
    mosquitto_publish(mosq_, nullptr, stateTopic_.c_str(), static_cast<int>(kOffline.size()),
                      kOffline.data(), kQos, true);
  }
  mosquitto_disconnect(mosq_);
}

void MqttConnection::stop() {
  if (!started_ || stopping_) return;
  stopping_ = true;
  if (config_.loop) {
    config_.loop->impl().remove(this);
    // The loop no longer drives this socket: write the last packets here.
    flushAndDisconnect();
    const auto deadline = Clock::now() + std::chrono::seconds(1);
    while (Clock::now() < deadline && mosquitto_socket(mosq_) >= 0 && mosquitto_want_write(mosq_)) {
      pollfd fd{mosquitto_socket(mosq_), POLLOUT, 0};
      if (::poll(&fd, 1, 50) > 0) mosquitto_loop_write(mosq_, 1);
    }
  } else {
    std::lock_guard lock(startMu_);
    const bool wasConnected = connected_.load();
    flushAndDisconnect();
    if (threadStarted_) {
      // Give the network thread a moment to send them. Once the DISCONNECT
      // is written it leaves its loop by itself and is joined; cancelling
      // it could land while it holds a libmosquitto mutex, which
      // mosquitto_destroy would then destroy locked. Only a thread that may
      // be asleep in a reconnect delay (not connected) is cancelled.
      const auto deadline = Clock::now() + std::chrono::seconds(2);
      while (connected_ && Clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      mosquitto_loop_stop(mosq_, /*force=*/!wasConnected || connected_.load());
    }
  }
  connected_ = false;
}

bool MqttConnection::publish(const std::string& topic, ByteView payload, bool retain) {
  int rc = mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), kQos, retain);
  if (config_.loop) config_.loop->impl().wantsWrite(this);
  // NO_CONN: libmosquitto keeps QoS 1 messages and sends them on reconnect.
  return rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_NO_CONN;
}

void MqttConnection::scheduleReconnect(Clock::time_point now) {
  backoffSeconds_ = backoffSeconds_ == 0
                        ? std::max(1, config_.reconnectMinSeconds)
                        : std::min(backoffSeconds_ * 2, std::max(1, config_.reconnectMaxSeconds));
  nextReconnect_ = now + std::chrono::seconds(backoffSeconds_);
}

void MqttConnection::service(Clock::time_point now, std::chrono::milliseconds tick) {
  if (!stopping_ && mosquitto_socket(mosq_) < 0 && now >= nextReconnect_) {
    int rc = mosquitto_reconnect_async(mosq_);
    if (rc != MOSQ_ERR_SUCCESS) scheduleReconnect(now);
  }
  if (now >= nextTick_) {
    nextTick_ = now + tick;
    core_.tick();
  }
}

void MqttConnection::onConnect(mosquitto* m, void* obj, int rc) {
  auto* self = static_cast<MqttConnection*>(obj);
  if (rc != 0) {
    self->core_.logger().warn(std::string("broker refused the connection: ") +
                              mosquitto_connack_string(rc));
    return;
  }
  self->backoffSeconds_ = 0;
  mosquitto_publish(m, nullptr, self->stateTopic_.c_str(), static_cast<int>(kOnline.size()),
                    kOnline.data(), kQos, true);
  for (const std::string& topic : self->core_.subscriptions()) {
    mosquitto_subscribe(m, nullptr, topic.c_str(), kQos);
  }
  self->connected_ = true;
  self->core_.logger().info("connected to " + self->config_.host + ":" +
                            std::to_string(self->config_.port));
  self->core_.handleConnected();
}

void MqttConnection::onDisconnect(mosquitto*, void* obj, int rc) {
  auto* self = static_cast<MqttConnection*>(obj);
  const bool was = self->connected_.exchange(false);
  if (self->stopping_) return;
  if (was) {
    self->core_.logger().warn(std::string("disconnected: ") + mosquitto_strerror(rc));
  }
  if (self->config_.loop) self->scheduleReconnect(Clock::now());
}

void MqttConnection::onMessage(mosquitto*, void* obj, const mosquitto_message* message) {
  auto* self = static_cast<MqttConnection*>(obj);
  const auto* p = static_cast<const std::uint8_t*>(message->payload);
  // The core logs and counts refusals; nothing to do with the result here.
  (void)self->core_.handleMessage(
      message->topic,
      ByteView(p, p == nullptr ? 0 : static_cast<std::size_t>(message->payloadlen)));
}

}  // namespace edgefl::device
