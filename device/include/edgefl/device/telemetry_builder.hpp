#pragma once
// The Telemetry message of a device, built from its status snapshot.

#include <cstdint>
#include <span>
#include <string>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl::device {

struct TelemetryContext {
  std::string fleet;
  std::string deviceId;
  std::uint64_t sequence = 0;  // per-device counter, persisted
  std::int64_t timestamp = 0;
  Digest activeDigest{};
  bool hasActiveDigest = false;
  std::span<const float> latencyBoundsMicros;
  std::span<const std::uint64_t> latencyCounts;  // bounds + 1 buckets
};

// The Telemetry payload (unsigned Cap'n Proto flat array). Counters are
// cumulative since the device opened; the coordinator differences
// consecutive sequences for rates.
Bytes telemetryPayload(const TelemetryContext& context, const DeviceStatus& status);

}  // namespace edgefl::device
