#include "edgefl/device/logger.hpp"

#include <type_traits>

namespace edgefl::device {

// The installed device.hpp repeats LogLevel and LogSink from
// edgefl/shared/log.hpp for consumers without the shared headers: the same
// enumerators with the same values, and the same sink signature.
static_assert(static_cast<int>(LogLevel::Debug) == 0 && static_cast<int>(LogLevel::Info) == 1 &&
              static_cast<int>(LogLevel::Warn) == 2 && static_cast<int>(LogLevel::Error) == 3);
static_assert(std::is_same_v<std::underlying_type_t<LogLevel>, int>);
static_assert(std::is_same_v<LogSink, std::function<void(LogLevel, std::string_view)>>);

Logger::Logger(LogSink sink, LogLevel minimum, std::string deviceId)
    : sink_(std::move(sink)), minimum_(minimum) {
  // Appended piecewise: GCC 12 warns (-Wrestrict, a false positive) on
  // "[" + std::move(id).
  prefix_.reserve(deviceId.size() + 3);
  prefix_.append("[").append(deviceId).append("] ");
  // Without an application sink only what needs attention reaches stderr
  // (never stdout: that belongs to the application).
  if (!sink_) sink_ = stderrSink(LogLevel::Warn);
}

void Logger::log(LogLevel level, std::string_view message) const {
  if (!enabled(level) || !sink_) return;
  std::string line;
  line.reserve(prefix_.size() + message.size());
  line.append(prefix_).append(message);
  sink_(level, line);
}

}  // namespace edgefl::device
