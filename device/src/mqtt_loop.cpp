#include <mosquitto.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "mqtt_connection.hpp"

namespace edgefl {

MqttLoop::MqttLoop() : MqttLoop(Options{}) {}
MqttLoop::MqttLoop(Options options) : impl_(std::make_unique<Impl>(options)) {}
MqttLoop::~MqttLoop() = default;
void MqttLoop::start() {
  impl_->start();
}
void MqttLoop::stop() {
  impl_->stop();
}
void MqttLoop::runOnce(std::chrono::milliseconds timeout) {
  impl_->runOnce(timeout);
}
std::size_t MqttLoop::connectionCount() const {
  return impl_->size();
}

MqttLoop::Impl::Impl(MqttLoop::Options options)
    : options_(options), wakeFd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (wakeFd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

MqttLoop::Impl::~Impl() {
  stop();
  ::close(wakeFd_);
}

void MqttLoop::Impl::add(device::MqttConnection* connection) {
  {
    std::lock_guard lock(mu_);
    connections_.push_back(connection);
  }
  wake();
}

void MqttLoop::Impl::remove(device::MqttConnection* connection) {
  wake();
  std::lock_guard lock(mu_);
  connections_.erase(std::remove(connections_.begin(), connections_.end(), connection),
                     connections_.end());
}

void MqttLoop::Impl::wake() {
  const std::uint64_t one = 1;
  // A full counter still wakes the loop; nothing to handle on failure.
  [[maybe_unused]] auto n = ::write(wakeFd_, &one, sizeof one);
}

std::size_t MqttLoop::Impl::size() const {
  std::lock_guard lock(mu_);
  return connections_.size();
}

void MqttLoop::Impl::runOnce(std::chrono::milliseconds timeout) {
  // Build the poll set from the current connections.
  fds_.clear();
  polled_.clear();
  fds_.push_back(pollfd{wakeFd_, POLLIN, 0});
  {
    std::lock_guard lock(mu_);
    for (device::MqttConnection* c : connections_) {
      const int sock = mosquitto_socket(c->handle());
      if (sock < 0) continue;
      short events = POLLIN;
      if (mosquitto_want_write(c->handle())) events |= POLLOUT;
      fds_.push_back(pollfd{sock, events, 0});
      polled_.push_back(c);
    }
  }
  const int ready = ::poll(fds_.data(), fds_.size(), static_cast<int>(timeout.count()));
  if (ready > 0 && (fds_[0].revents & POLLIN) != 0) {
    std::uint64_t drained = 0;
    [[maybe_unused]] auto n = ::read(wakeFd_, &drained, sizeof drained);
  }

  std::lock_guard lock(mu_);
  // Serve only connections still registered: one removed during poll() is
  // being closed by its device.
  auto registered = [&](device::MqttConnection* c) {
    return std::find(connections_.begin(), connections_.end(), c) != connections_.end();
  };
  if (ready > 0) {
    for (std::size_t i = 1; i < fds_.size(); ++i) {
      device::MqttConnection* c = polled_[i - 1];
      const short revents = fds_[i].revents;
      if (revents == 0 || !registered(c)) continue;
      mosquitto* m = c->handle();
      if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0) mosquitto_loop_read(m, 1);
      if ((revents & POLLOUT) != 0 && mosquitto_socket(m) >= 0) mosquitto_loop_write(m, 1);
    }
  }
  const auto now = device::MqttConnection::Clock::now();
  for (device::MqttConnection* c : connections_) {
    mosquitto* m = c->handle();
    if (mosquitto_socket(m) >= 0) {
      // Keepalive pings and the check that the broker answers them.
      mosquitto_loop_misc(m);
      // Publishes queued by other threads since the poll set was built.
      if (mosquitto_socket(m) >= 0 && mosquitto_want_write(m)) mosquitto_loop_write(m, 1);
    }
    c->service(now, options_.tick);
  }
}

void MqttLoop::Impl::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] {
    while (running_) runOnce(options_.tick);
  });
}

void MqttLoop::Impl::stop() {
  if (!running_.exchange(false)) return;
  wake();
  if (thread_.joinable()) thread_.join();
}

}  // namespace edgefl
