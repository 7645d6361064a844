#include <fcntl.h>
#include <mosquitto.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <system_error>

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
    : options_(options),
      wakeFd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      epollFd_(::epoll_create1(EPOLL_CLOEXEC)) {
  if (wakeFd_ < 0 || epollFd_ < 0) {
    const int error = errno;
    if (wakeFd_ >= 0) ::close(wakeFd_);
    if (epollFd_ >= 0) ::close(epollFd_);
    throw std::system_error(error, std::generic_category(), "eventfd or epoll_create1");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up counter
  if (::epoll_ctl(epollFd_, EPOLL_CTL_ADD, wakeFd_, &ev) != 0) {
    const int error = errno;
    ::close(wakeFd_);
    ::close(epollFd_);
    throw std::system_error(error, std::generic_category(), "epoll_ctl");
  }
}

MqttLoop::Impl::~Impl() {
  stop();
  ::close(epollFd_);
  ::close(wakeFd_);
}

void MqttLoop::Impl::add(device::MqttConnection* connection) {
  {
    std::lock_guard lock(mu_);
    connections_.push_back(connection);
    // Its socket (connect_async made one) is watched from now on.
    rewatch(connection, watches_[connection]);
  }
  wake();
}

void MqttLoop::Impl::remove(device::MqttConnection* connection) {
  wake();
  std::lock_guard lock(mu_);
  auto it = watches_.find(connection);
  if (it != watches_.end()) {
    // The socket stays open (its owner writes its last packets), so it
    // leaves the set explicitly; a socket libmosquitto closed left it then.
    if (it->second.fd >= 0 && mosquitto_socket(connection->handle()) == it->second.fd) {
      ::epoll_ctl(epollFd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
    }
    watches_.erase(it);
  }
  connections_.erase(std::remove(connections_.begin(), connections_.end(), connection),
                     connections_.end());
}

void MqttLoop::Impl::wake() {
  const std::uint64_t one = 1;
  // A full counter still wakes the loop; nothing to handle on failure.
  [[maybe_unused]] auto n = ::write(wakeFd_, &one, sizeof one);
}

void MqttLoop::Impl::wantsWrite(device::MqttConnection* connection) {
  {
    std::lock_guard lock(wantMu_);
    wantWrite_.push_back(connection);
  }
  wake();
}

std::size_t MqttLoop::Impl::size() const {
  std::lock_guard lock(mu_);
  return connections_.size();
}

std::size_t MqttLoop::Impl::watchedSockets() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& [c, w] : watches_) n += w.fd >= 0 ? 1 : 0;
  return n;
}

void MqttLoop::Impl::rewatch(device::MqttConnection* c, Watch& w) {
  mosquitto* m = c->handle();
  const int sock = mosquitto_socket(m);
  const bool out = sock >= 0 && mosquitto_want_write(m);
  // One-shot: a registration reports once and is then re-armed here. A
  // socket libmosquitto closed leaves the set only when no other process
  // holds it (a child forked meanwhile may): its registration, which can
  // no longer be reached, then reports at most once instead of on every
  // wait.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT | (out ? EPOLLOUT : 0u);
  ev.data.ptr = c;
  if (sock != w.fd) {
    // libmosquitto closed the old socket before it opened this one; every
    // call that can do so is followed by this check, with the lock held.
    w.fd = -1;
    if (sock >= 0 && ::epoll_ctl(epollFd_, EPOLL_CTL_ADD, sock, &ev) == 0) {
      // Not inherited by programs the application starts.
      ::fcntl(sock, F_SETFD, ::fcntl(sock, F_GETFD) | FD_CLOEXEC);
      w.fd = sock;
      w.out = out;
      w.armed = true;
    }
    // A failed ADD (out of memory, the user's epoll watch limit) is tried
    // again at the next pass.
  } else if (sock >= 0 && (!w.armed || out != w.out)) {
    if (::epoll_ctl(epollFd_, EPOLL_CTL_MOD, sock, &ev) == 0) {
      w.out = out;
      w.armed = true;
    }
  }
}

void MqttLoop::Impl::settle(device::MqttConnection* c, Watch& w) {
  mosquitto* m = c->handle();
  // Packets queued by the callbacks just run (acks, subscriptions) or by
  // another thread go out now; what the socket does not take waits for
  // EPOLLOUT.
  if (mosquitto_socket(m) >= 0 && mosquitto_want_write(m)) mosquitto_loop_write(m, 1);
  rewatch(c, w);
}

void MqttLoop::Impl::runOnce(std::chrono::milliseconds timeout) {
  using Clock = device::MqttConnection::Clock;
  const auto before = Clock::now();
  // Wait no longer than the next pass over all connections.
  auto wait = timeout;
  if (nextPass_ <= before) {
    wait = std::chrono::milliseconds(0);
  } else {
    wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(nextPass_ - before));
  }
  std::array<epoll_event, 256> events;
  const int ready = ::epoll_wait(epollFd_, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(wait.count()));
  // The counter is emptied before the connections that asked for a write
  // are taken: one that asks after this wakes the next wait.
  for (int i = 0; i < ready; ++i) {
    if (events[i].data.ptr == nullptr) {
      std::uint64_t drained = 0;
      [[maybe_unused]] auto n = ::read(wakeFd_, &drained, sizeof drained);
    }
  }
  writing_.clear();
  {
    std::lock_guard lock(wantMu_);
    writing_.swap(wantWrite_);
  }

  std::lock_guard lock(mu_);
  for (int i = 0; i < ready; ++i) {
    auto* c = static_cast<device::MqttConnection*>(events[i].data.ptr);
    if (c == nullptr) continue;
    // Only connections still registered: one removed during the wait is
    // being closed by its device.
    auto it = watches_.find(c);
    if (it == watches_.end()) continue;
    it->second.armed = false;  // reported: one-shot until re-armed
    mosquitto* m = c->handle();
    const std::uint32_t revents = events[i].events;
    if ((revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) mosquitto_loop_read(m, 1);
    if ((revents & EPOLLOUT) != 0 && mosquitto_socket(m) >= 0) mosquitto_loop_write(m, 1);
    settle(c, it->second);
  }
  for (device::MqttConnection* c : writing_) {
    auto it = watches_.find(c);
    if (it != watches_.end()) settle(c, it->second);
  }
  const auto now = Clock::now();
  if (now < nextPass_) return;
  nextPass_ = now + options_.tick;
  for (device::MqttConnection* c : connections_) {
    mosquitto* m = c->handle();
    // Keepalive pings and the check that the broker answers them.
    if (mosquitto_socket(m) >= 0) mosquitto_loop_misc(m);
    // Reconnects when due, and the device's timers.
    c->service(now, options_.tick);
    settle(c, watches_[c]);
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
