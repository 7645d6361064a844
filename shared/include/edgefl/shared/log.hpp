#pragma once
// One logging sink per component, passed in by whoever embeds it: libraries
// never write to stdout, and an application decides where lines go.

#include <functional>
#include <string_view>

namespace edgefl {

enum class LogLevel { Debug, Info, Warn, Error };
std::string_view logLevelName(LogLevel level);

using LogSink = std::function<void(LogLevel, std::string_view)>;

// Timestamped lines on stderr at `minimum` and above.
LogSink stderrSink(LogLevel minimum = LogLevel::Info);
// Discards everything.
LogSink nullSink();

}  // namespace edgefl
