#pragma once
// What a deployment must pass before the device stores it: the signature
// chain to the fleet root, the fleet, the channel it arrived on, expiry,
// runtime compatibility, the device's budget, and that the embedded model
// decodes and is the one the deployment names (modelDigest equals its
// parameter digest). The sequence check needs the device's state and is
// the caller's (DeviceCore).

#include <cstdint>
#include <memory>
#include <string>

#include "edgefl/device/device.hpp"
#include "edgefl/device/device_state.hpp"
#include "edgefl/device/model_cache.hpp"
#include "edgefl/shared/envelope.hpp"

namespace edgefl::device {

struct CheckedDeployment {
  Channel channel = Channel::STABLE;
  std::uint64_t sequence = 0;
  DeployMode mode = DeployMode::ACTIVATE;
  float percent = 0;
  std::uint64_t salt = 0;
  std::uint64_t modelVersion = 0;
  Digest digest{};
  bool isRollback = false;
  std::int64_t expiresAt = 0;
  std::string reason;
  std::shared_ptr<const CachedModel> model;
};

struct DeploymentVerifier {
  const Keyring& keyring;  // the fleet root only
  std::string fleet;
  DeviceLimits limits;
  ModelCache& cache;
  // The device's delegations verified before (optional).
  DelegationCache* delegations = nullptr;
};

// `expected`: the channel of the topic it arrived on. `now`: Unix seconds at
// which the delegation must be valid (for a stored file, the time it was
// accepted). `checkExpiry`: refuse a deployment whose expiresAt has passed
// (at intake; a model already running is not withdrawn by its expiry).
// Errors: decodeVerified's (BadSignature, UnknownKey, DelegationInvalid,
// Expired, WrongFleet, ...), WrongFleet, BadTopic (channel differs from the
// topic), BadField (sequence 0, percent outside [0, 100], sizes or version
// that disagree with the model), Unsupported (mode, minRuntimeVersion),
// Expired, TooLarge (over the budget), the model's own errors (BadModel,
// ShapeMismatch, NonFinite, ...), BadModel (digest mismatch).
Result<CheckedDeployment> checkDeployment(ByteView envelope, Channel expected, std::int64_t now,
                                          bool checkExpiry, const DeploymentVerifier& verifier);

}  // namespace edgefl::device
