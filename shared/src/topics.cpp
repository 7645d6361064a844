#include "edgefl/shared/topics.hpp"

namespace edgefl {

Status validateName(std::string_view what, std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return makeError(Code::InvalidArgument,
                     std::string(what) + " '" + std::string(name) + "' must be 1-64 characters");
  }
  if (name.front() == '.' || name.front() == '-') {
    return makeError(Code::InvalidArgument, std::string(what) + " '" + std::string(name) +
                                                "' must not start with '.' or '-'");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) {
      return makeError(Code::InvalidArgument,
                       std::string(what) + " '" + std::string(name) +
                           "' may only use letters, digits, '_', '-' and '.'");
    }
  }
  return {};
}

std::string deployTopic(std::string_view fleet, std::string_view channel) {
  return "edgefl/" + std::string(fleet) + "/deploy/" + std::string(channel);
}

std::string roundTopic(std::string_view fleet) {
  return "edgefl/" + std::string(fleet) + "/round";
}

std::string deviceTopic(std::string_view fleet, std::string_view deviceId, std::string_view leaf) {
  return "edgefl/" + std::string(fleet) + "/device/" + std::string(deviceId) + "/" +
         std::string(leaf);
}

std::optional<DeviceTopic> parseDeviceTopic(std::string_view fleet, std::string_view topic) {
  std::string prefix = "edgefl/" + std::string(fleet) + "/device/";
  if (topic.substr(0, prefix.size()) != prefix) return std::nullopt;
  topic.remove_prefix(prefix.size());
  auto slash = topic.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  DeviceTopic out{std::string(topic.substr(0, slash)), std::string(topic.substr(slash + 1))};
  if (out.leaf.empty() || out.leaf.find('/') != std::string::npos) return std::nullopt;
  if (!validateName("device id", out.deviceId).ok()) return std::nullopt;
  return out;
}

}  // namespace edgefl
