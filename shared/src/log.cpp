#include "edgefl/shared/log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>

namespace edgefl {

std::string_view logLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "info";
}

LogSink stderrSink(LogLevel minimum) {
  auto mu = std::make_shared<std::mutex>();
  return [minimum, mu](LogLevel level, std::string_view line) {
    if (level < minimum) return;
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    std::lock_guard lock(*mu);
    std::fprintf(stderr, "%s %-5s %.*s\n", stamp, logLevelName(level).data(),
                 static_cast<int>(line.size()), line.data());
  };
}

LogSink nullSink() {
  return [](LogLevel, std::string_view) {};
}

}  // namespace edgefl
