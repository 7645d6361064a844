#pragma once
// A device's own thread, used when the application gives it no executor or
// no shared MQTT loop: it runs posted jobs (training) in order and, between
// them, the device's timers every `period`.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace edgefl::device {

class WorkerThread {
 public:
  WorkerThread();
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // Runs `tick` every `period` while idle (and between jobs). Set before or
  // after the thread started; empty stops ticking.
  void setTick(std::function<void()> tick, std::chrono::milliseconds period);
  void post(std::function<void()> job);
  // Finishes the job in progress, drops the queued ones, joins. Idempotent.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::function<void()> tick_;
  std::chrono::milliseconds period_{200};
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace edgefl::device
