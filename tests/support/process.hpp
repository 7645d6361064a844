#pragma once
// A child process for tests: started with fork/exec, output to a log file,
// stopped with a signal of the test's choosing.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace edgefl::test {

// Called in a forked child: it gets SIGKILL when the thread that forked it
// ends, so a test that crashes (an assertion abort, a sanitizer report)
// leaves no broker or coordinator running behind it. Fork from a thread
// that outlives the child (the test's own).
void dieWithParent(pid_t parent);

// An environment for execve, built before the fork (the child then only
// execs): this process's, plus each `extra` entry ("NAME=value") whose NAME
// this process does not set. envp() points into it.
class ChildEnvironment {
 public:
  explicit ChildEnvironment(const std::vector<std::string>& extra);
  char* const* envp() { return pointers_.data(); }

 private:
  std::vector<std::string> entries_;
  std::vector<char*> pointers_;
};

class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::filesystem::path log);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Sends `signal` and waits for the exit; returns the wait status.
  int kill(int signal);
  // Waits up to `seconds` for a normal exit; -1 on timeout.
  int wait(double seconds);

 private:
  pid_t pid_ = -1;
};

// Polls `condition` every 25 ms until it holds (true) or `timeout` passes
// (false).
template <typename F>
bool waitUntil(F&& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return true;
}

}  // namespace edgefl::test
