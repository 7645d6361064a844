#pragma once
// MQTT topic names of a fleet, and the names allowed inside them.

#include <optional>
#include <string>
#include <string_view>

#include "edgefl/shared/result.hpp"

namespace edgefl {

// Fleet names and device ids: 1-64 characters of [A-Za-z0-9_.-], not
// starting with '.' or '-' (they become topic levels, broker user names and
// file names, so no '/', '+', '#' or spaces).
inline constexpr std::size_t kMaxNameLength = 64;
Status validateName(std::string_view what, std::string_view name);

// Broker user names that are not device ids.
inline constexpr std::string_view kCoordinatorUser = "coordinator";
inline constexpr std::string_view kObserverUser = "observer";  // read-only

std::string deployTopic(std::string_view fleet, std::string_view channel);  // stable | canary
std::string roundTopic(std::string_view fleet);
// leaf: update | telemetry | ack | state
std::string deviceTopic(std::string_view fleet, std::string_view deviceId, std::string_view leaf);

struct DeviceTopic {
  std::string deviceId;
  std::string leaf;
};
// Splits "edgefl/<fleet>/device/<id>/<leaf>"; nullopt for any other topic.
std::optional<DeviceTopic> parseDeviceTopic(std::string_view fleet, std::string_view topic);

}  // namespace edgefl
