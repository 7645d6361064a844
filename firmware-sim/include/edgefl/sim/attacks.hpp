#pragma once
// Attacking virtual devices. Each attacker is a real edgefl::Device: the
// attack changes what it trains on (label flipping) or what it sends,
// through the runtime's DeviceHooks, and everything else (keys, topics,
// rounds, acks) stays real, so the coordinator sees exactly what a
// compromised device in the field would send.
//
// What the coordinator is expected to do with each:
//   label_flip, sign_flip  well-formed updates: only robust aggregation
//                          (krum / multi_krum exclusion, median, trimmed
//                          mean) limits them
//   scale, noise           NormTooLarge once past [ingest] max_update_norm
//                          (a mild scale passes and is aggregation's job)
//   nonfinite              NonFinite
//   replay                 RoundClosed (an old round's update)
//   forged_signature       BadSignature
//   impersonation          Impersonation

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/sim/config.hpp"

namespace edgefl::sim {

// The label an attacker stores for a sample of class `label`.
std::int32_t poisonedLabel(Attack attack, std::int32_t label, std::uint32_t classCount);

// Hooks that carry out `attack` for one device. `victim` is the id an
// impersonator claims. The hooks own their state (the replayed envelope,
// the noise generator) and may run on any training thread, one call at a
// time per device.
DeviceHooks attackHooks(Attack attack, const SimConfig::Attackers& options, std::string victim,
                        std::uint64_t seed);

// The envelope with one bit of its signature flipped; the envelope as given
// when it does not parse.
Bytes corruptSignature(ByteView envelope);
// The Update message with its deviceId replaced; unchanged when it does not
// parse.
Bytes withDeviceId(ByteView update, const std::string& deviceId);

}  // namespace edgefl::sim
