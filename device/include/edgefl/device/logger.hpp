#pragma once
// The device's one log sink: every line of the runtime goes through the
// application's LogSink (default: warnings and errors to stderr), prefixed
// with the device id so many devices in one process stay apart.

#include <string>
#include <string_view>

#include "edgefl/device/device.hpp"

namespace edgefl::device {

class Logger {
 public:
  Logger() = default;
  Logger(LogSink sink, LogLevel minimum, std::string deviceId);

  bool enabled(LogLevel level) const { return level >= minimum_; }
  void log(LogLevel level, std::string_view message) const;
  void debug(std::string_view message) const { log(LogLevel::Debug, message); }
  void info(std::string_view message) const { log(LogLevel::Info, message); }
  void warn(std::string_view message) const { log(LogLevel::Warn, message); }
  void error(std::string_view message) const { log(LogLevel::Error, message); }

 private:
  LogSink sink_;
  LogLevel minimum_ = LogLevel::Info;
  std::string prefix_;
};

}  // namespace edgefl::device
