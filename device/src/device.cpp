#include "edgefl/device/device.hpp"

#include <atomic>
#include <fstream>
#include <mutex>

#include "edgefl/device/device_core.hpp"
#include "mqtt_connection.hpp"
#include "worker_thread.hpp"

namespace edgefl {
namespace {

DeviceError toDeviceError(const Status& status) {
  if (status.ok()) return {};
  return DeviceError{static_cast<edgefl_status>(status.code()), status.error().detail};
}

// Messages go out through the application's function (firmware with its
// own MQTT stack); the application reports the connection state.
class CallbackTransport final : public device::Transport {
 public:
  explicit CallbackTransport(decltype(TransportConfig::publish) publish)
      : publish_(std::move(publish)) {}
  bool publish(const std::string& topic, ByteView payload, bool retain) override {
    return publish_(topic, payload, retain);
  }
  bool connected() const override { return connected_.load(); }
  void setConnected(bool connected) { connected_ = connected; }

 private:
  decltype(TransportConfig::publish) publish_;
  std::atomic<bool> connected_{true};
};

Result<std::string> readPassword(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return makeError(Code::BadConfig, "cannot read the broker password from " + file.string());
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.empty()) return makeError(Code::BadConfig, file.string() + " holds an empty password");
  return line;
}

// Timers run at least this often on a device's own thread.
constexpr std::chrono::milliseconds kTickPeriod{200};

}  // namespace

class EDGEFL_DEVICE_HIDDEN Device::Impl {
 public:
  DeviceConfig config;
  std::unique_ptr<device::WorkerThread> worker;
  std::unique_ptr<device::DeviceCore> core;
  std::unique_ptr<device::MqttConnection> mqtt;
  std::unique_ptr<CallbackTransport> callback;
  std::mutex closeMu;
  bool closed = false;

  void close() {
    std::lock_guard lock(closeMu);
    if (closed) return;
    closed = true;
    // No new jobs or messages; wait for training in progress.
    core->shutdown();
    if (worker) worker->stop();
    if (mqtt) mqtt->stop();
    core->setTransport(nullptr);
    mqtt.reset();
    callback.reset();
  }
};

Device::Device(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Device::~Device() {
  if (impl_) impl_->close();
}

DeviceResult<std::unique_ptr<Device>> Device::open(DeviceConfig config) {
  auto impl = std::make_unique<Impl>();
  std::string password;
  const TransportConfig& transport = config.transport;
  if (transport.enabled) {
    if (transport.host.empty() || transport.port <= 0 || transport.port > 65535) {
      return DeviceError{EDGEFL_STATUS_BAD_CONFIG,
                         "broker " + transport.host + ":" + std::to_string(transport.port)};
    }
    if (transport.keepaliveSeconds < 5) {
      return DeviceError{EDGEFL_STATUS_BAD_CONFIG, "keepaliveSeconds under 5"};
    }
    if (transport.reconnectMinSeconds < 1 ||
        transport.reconnectMaxSeconds < transport.reconnectMinSeconds) {
      return DeviceError{EDGEFL_STATUS_BAD_CONFIG, "reconnect backoff must be 1 <= min <= max"};
    }
    auto read = readPassword(transport.passwordFile);
    if (!read.ok()) return toDeviceError(read.error());
    password = std::move(read.value());
  }
  // A thread of its own when nothing else drives the device: for training
  // jobs without an executor, for timers without a shared loop.
  const bool needsTicker = !(transport.enabled && transport.loop);
  const bool needsJobs = !config.executor;
  if (needsTicker || needsJobs) {
    impl->worker = std::make_unique<device::WorkerThread>();
    if (needsJobs) {
      device::WorkerThread* worker = impl->worker.get();
      config.executor = [worker](std::function<void()> job) { worker->post(std::move(job)); };
    }
  }
  auto core = device::DeviceCore::open(config);
  if (!core.ok()) {
    if (impl->worker) impl->worker->stop();
    return toDeviceError(core.error());
  }
  impl->core = std::move(core.value());
  if (transport.enabled) {
    impl->mqtt = std::make_unique<device::MqttConnection>(*impl->core, transport, password);
    impl->core->setTransport(impl->mqtt.get());
    Status started = impl->mqtt->start();
    if (!started.ok()) {
      impl->close();
      return toDeviceError(started);
    }
  } else if (transport.publish) {
    impl->callback = std::make_unique<CallbackTransport>(transport.publish);
    impl->core->setTransport(impl->callback.get());
  }
  if (needsTicker) {
    device::DeviceCore* c = impl->core.get();
    device::MqttConnection* m = impl->mqtt.get();
    impl->worker->setTick(
        [c, m] {
          if (m != nullptr) m->retryFirstConnect();
          c->tick();
        },
        kTickPeriod);
  }
  impl->config = std::move(config);
  return std::unique_ptr<Device>(new Device(std::move(impl)));
}

DeviceError Device::score(std::span<const float> x, std::span<float> out) {
  return toDeviceError(impl_->core->score(x, out));
}

DeviceError Device::scoreBatch(std::span<const float> xs, std::span<float> out) {
  return toDeviceError(impl_->core->scoreBatch(xs, out));
}

DeviceError Device::observe(std::span<const float> x, std::int32_t label) {
  return toDeviceError(impl_->core->observe(x, label));
}

DeviceError Device::observeTarget(std::span<const float> x, float target) {
  return toDeviceError(impl_->core->observeTarget(x, target));
}

DeviceStatus Device::status() const {
  return impl_->core->status();
}
std::uint32_t Device::inputCount() const {
  return impl_->core->inputCount();
}
std::uint32_t Device::outputCount() const {
  return impl_->core->outputCount();
}

std::vector<FeatureStatistics> Device::featureStatistics() const {
  return impl_->core->featureStatistics();
}

const std::string& Device::id() const {
  return impl_->core->deviceId();
}

DeviceError Device::sendTelemetry() {
  return toDeviceError(impl_->core->sendTelemetry());
}

DeviceError Device::publishUpdate(std::span<const std::uint8_t> bytes) {
  return toDeviceError(impl_->core->publishUpdate(bytes));
}

DeviceError Device::handleMessage(std::string_view topic, std::span<const std::uint8_t> payload) {
  return toDeviceError(impl_->core->handleMessage(topic, payload));
}

void Device::setConnected(bool connected) {
  if (!impl_->callback) return;
  impl_->callback->setConnected(connected);
  if (connected) impl_->core->handleConnected();
}

void Device::close() {
  impl_->close();
}

}  // namespace edgefl
