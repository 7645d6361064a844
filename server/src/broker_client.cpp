#include "edgefl/server/broker_client.hpp"

#include <mosquitto.h>

#include <chrono>
#include <mutex>
#include <thread>

namespace edgefl::server {
namespace {
std::once_flag libInit;
}

BrokerClient::BrokerClient(BrokerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {
  std::call_once(libInit, [] { mosquitto_lib_init(); });
  mosq_ = mosquitto_new(options_.clientId.c_str(), /*clean_session=*/false, this);
  if (mosq_ == nullptr) throw std::bad_alloc();
  mosquitto_username_pw_set(mosq_, options_.username.c_str(),
                            options_.password.empty() ? nullptr : options_.password.c_str());
  mosquitto_reconnect_delay_set(mosq_, static_cast<unsigned>(options_.reconnectMinSeconds),
                                static_cast<unsigned>(options_.reconnectMaxSeconds), true);
  // Large rounds burst updates; let more QoS 1 messages be in flight than
  // the default 20 so the broker's queue for us drains quickly.
  mosquitto_int_option(mosq_, MOSQ_OPT_RECEIVE_MAXIMUM, 1000);
  mosquitto_max_inflight_messages_set(mosq_, 1000);
  mosquitto_connect_callback_set(mosq_, &BrokerClient::onConnect);
  mosquitto_disconnect_callback_set(mosq_, &BrokerClient::onDisconnect);
  mosquitto_message_callback_set(mosq_, &BrokerClient::onMessage);
  mosquitto_publish_callback_set(mosq_, &BrokerClient::onPublish);
}

BrokerClient::~BrokerClient() {
  stop();
  mosquitto_destroy(mosq_);
}

Status BrokerClient::start(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(mu_);
    lastConnack_ = -1;
  }
  // connect_async + loop_start: the network thread owns the socket, and if
  // the broker is not up yet it keeps retrying with backoff.
  int rc = mosquitto_connect_async(mosq_, options_.host.c_str(), options_.port,
                                   options_.keepaliveSeconds);
  if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_ERRNO) {
    return makeError(Code::IoError,
                     std::string("cannot connect to broker: ") + mosquitto_strerror(rc));
  }
  rc = mosquitto_loop_start(mosq_);
  if (rc != MOSQ_ERR_SUCCESS) {
    return makeError(Code::IoError,
                     std::string("cannot start MQTT loop: ") + mosquitto_strerror(rc));
  }
  started_ = true;
  std::unique_lock lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return lastConnack_ >= 0; })) {
    return makeError(Code::IoError, "no CONNACK from " + options_.host + ":" +
                                        std::to_string(options_.port) + " within " +
                                        std::to_string(timeout.count()) + " ms");
  }
  if (lastConnack_ != 0) {
    return makeError(Code::IoError, std::string("broker refused the connection: ") +
                                        mosquitto_connack_string(lastConnack_));
  }
  return {};
}

void BrokerClient::stop() {
  if (!started_) return;
  // Once its DISCONNECT is written, a connected client's network thread
  // leaves its loop by itself, so it is joined (force = false). Cancelling
  // it (force = true) can land while it holds one of libmosquitto's
  // mutexes, which mosquitto_destroy then destroys still locked. Only a
  // thread that may be asleep in a reconnect delay (broker unreachable; the
  // sleep cannot be interrupted and lasts up to reconnectMaxSeconds) is
  // cancelled.
  const bool wasConnected = connected_.load();
  mosquitto_disconnect(mosq_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (wasConnected && connected_.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  mosquitto_loop_stop(mosq_, /*force=*/!wasConnected || connected_.load());
  started_ = false;
  connected_ = false;
}

Status BrokerClient::publish(const std::string& topic, std::span<const std::uint8_t> payload,
                             bool retain, int qos) {
  int mid = 0;
  int rc = mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), qos, retain);
  if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
    return makeError(Code::IoError, "publish to " + topic + " failed: " + mosquitto_strerror(rc));
  }
  if (qos > 0) {
    std::lock_guard lock(mu_);
    ++inflight_;
  }
  return {};
}

bool BrokerClient::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return inflight_ == 0; });
}

void BrokerClient::onConnect(mosquitto* m, void* obj, int rc) {
  auto* self = static_cast<BrokerClient*>(obj);
  if (rc == 0) {
    for (const auto& topic : self->options_.subscriptions) {
      mosquitto_subscribe(m, nullptr, topic.c_str(), 1);
    }
    self->connected_ = true;
    ++self->connects_;
  }
  std::lock_guard lock(self->mu_);
  self->lastConnack_ = rc;
  self->cv_.notify_all();
}

void BrokerClient::onDisconnect(mosquitto*, void* obj, int) {
  static_cast<BrokerClient*>(obj)->connected_ = false;
}

void BrokerClient::onMessage(mosquitto*, void* obj, const mosquitto_message* m) {
  auto* self = static_cast<BrokerClient*>(obj);
  IncomingMessage msg;
  msg.topic = m->topic;
  const auto* p = static_cast<const std::uint8_t*>(m->payload);
  msg.payload.assign(p, p + m->payloadlen);
  msg.retained = m->retain;
  self->handler_(std::move(msg));
}

void BrokerClient::onPublish(mosquitto*, void* obj, int) {
  auto* self = static_cast<BrokerClient*>(obj);
  std::lock_guard lock(self->mu_);
  if (self->inflight_ > 0) --self->inflight_;
  self->cv_.notify_all();
}

}  // namespace edgefl::server
