#include "worker_thread.hpp"

namespace edgefl::device {

WorkerThread::WorkerThread() : thread_([this] { run(); }) {}

WorkerThread::~WorkerThread() {
  stop();
}

void WorkerThread::setTick(std::function<void()> tick, std::chrono::milliseconds period) {
  std::lock_guard lock(mu_);
  tick_ = std::move(tick);
  period_ = period;
  cv_.notify_all();
}

void WorkerThread::post(std::function<void()> job) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  jobs_.push_back(std::move(job));
  cv_.notify_all();
}

void WorkerThread::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    jobs_.clear();
    cv_.notify_all();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void WorkerThread::run() {
  auto nextTick = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (!jobs_.empty()) {
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    if (tick_ && now >= nextTick) {
      auto tick = tick_;
      nextTick = now + period_;
      lock.unlock();
      tick();
      lock.lock();
      continue;
    }
    if (tick_) {
      cv_.wait_until(lock, nextTick);
    } else {
      cv_.wait(lock);
    }
  }
}

}  // namespace edgefl::device
