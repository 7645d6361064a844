#include "edgefl/sim/attacks.hpp"

#include <capnp/message.h>

#include <limits>
#include <mutex>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl::sim {
namespace {

// Copies a parsed message into a builder, lets `edit` change it, and
// returns the new flat array; nullopt when the bytes do not parse.
template <typename T, typename Edit>
std::optional<Bytes> rewrite(ByteView bytes, Edit edit) {
  auto parsed = parseMessage<T>(bytes);
  if (!parsed.ok()) return std::nullopt;
  capnp::MallocMessageBuilder builder(static_cast<unsigned>(bytes.size() / 8 + 64));
  builder.setRoot(parsed->root());
  edit(builder.getRoot<T>());
  return toBytes(builder);
}

}  // namespace

std::int32_t poisonedLabel(Attack attack, std::int32_t label, std::uint32_t classCount) {
  if (attack != Attack::LabelFlip || classCount == 0) return label;
  return static_cast<std::int32_t>(classCount) - 1 - label;
}

Bytes corruptSignature(ByteView envelope) {
  auto out = rewrite<wire::Signed>(envelope, [](wire::Signed::Builder s) {
    auto sig = s.getSignature();
    if (sig.size() > 0) sig[sig.size() / 2] ^= 0x01;
  });
  return out ? std::move(*out) : Bytes(envelope.begin(), envelope.end());
}

Bytes withDeviceId(ByteView update, const std::string& deviceId) {
  auto out =
      rewrite<wire::Update>(update, [&](wire::Update::Builder u) { u.setDeviceId(deviceId); });
  return out ? std::move(*out) : Bytes(update.begin(), update.end());
}

DeviceHooks attackHooks(Attack attack, const SimConfig::Attackers& options, std::string victim,
                        std::uint64_t seed) {
  DeviceHooks hooks;
  switch (attack) {
    case Attack::LabelFlip: break;  // the data is poisoned, not the messages
    case Attack::SignFlip:
      hooks.delta = [](std::uint64_t, std::span<float> d) {
        for (float& v : d) v = -v;
      };
      break;
    case Attack::Scale:
      hooks.delta = [factor = static_cast<float>(options.scaleFactor)](std::uint64_t,
                                                                       std::span<float> d) {
        for (float& v : d) v *= factor;
      };
      break;
    case Attack::Noise: {
      auto rng = std::make_shared<std::mt19937_64>(seed);
      hooks.delta = [rng, std = static_cast<float>(options.noiseStd)](std::uint64_t,
                                                                      std::span<float> d) {
        std::normal_distribution<float> noise(0.0f, std);
        for (float& v : d) v = noise(*rng);
      };
      break;
    }
    case Attack::NonFinite:
      hooks.delta = [](std::uint64_t, std::span<float> d) {
        for (std::size_t i = 0; i < d.size(); i += 97)
          d[i] = std::numeric_limits<float>::quiet_NaN();
        if (!d.empty()) d.back() = std::numeric_limits<float>::infinity();
      };
      break;
    case Attack::Replay: {
      // The first update it ever sends, resent in place of every later one.
      struct Saved {
        std::mutex mu;
        Bytes envelope;
      };
      auto saved = std::make_shared<Saved>();
      hooks.updateEnvelope = [saved](std::uint64_t, std::vector<std::uint8_t>& envelope) {
        std::lock_guard lock(saved->mu);
        if (saved->envelope.empty()) {
          saved->envelope = envelope;
        } else {
          envelope = saved->envelope;
        }
      };
      break;
    }
    case Attack::ForgedSignature:
      hooks.updateEnvelope = [](std::uint64_t, std::vector<std::uint8_t>& envelope) {
        envelope = corruptSignature(envelope);
      };
      break;
    case Attack::Impersonation:
      hooks.updatePayload = [victim = std::move(victim)](std::uint64_t,
                                                         std::vector<std::uint8_t>& payload) {
        payload = withDeviceId(payload, victim);
      };
      break;
  }
  return hooks;
}

}  // namespace edgefl::sim
