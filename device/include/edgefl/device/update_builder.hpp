#pragma once
// From a round task to signed update bytes: train a copy of the base model
// on local data, take the delta, let a hook see it, encode it with the
// round's delta policy (clip, noise, int8 or top-k with error feedback),
// build the Update message and sign it with the device key. Each step is a
// function of its own so a simulator can run them one by one, change what
// passes between them, or build updates for attacks.

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl::device {

// A RoundTask, validated and copied out of its message.
struct RoundPlan {
  std::string fleet;
  std::uint64_t round = 0;
  wire::RoundState state = wire::RoundState::OPEN;
  wire::RoundMode mode = wire::RoundMode::SYNCHRONOUS;
  std::uint64_t baseVersion = 0;
  Digest baseDigest{};
  std::int64_t openedAt = 0;
  std::int64_t deadline = 0;  // 0 = none
  float fraction = 0;
  std::uint64_t selectionSalt = 0;
  std::vector<std::string> devices;
  std::uint32_t minSamples = 0;
  TrainOptions training;
  DeltaOptions delta;
  std::string trigger;
};

// BadField (round 0, baseDigest not 32 bytes, fraction not finite, an
// unknown state or mode), then trainOptionsFromWire's and
// deltaOptionsFromPolicy's errors.
Result<RoundPlan> roundPlanFromWire(wire::RoundTask::Reader task);
// Listed in `devices`, or selectedByFraction when the list is empty.
bool selectedFor(const RoundPlan& plan, std::string_view deviceId);

struct LocalTraining {
  Model local;
  Metrics before;  // the base model on the local data
  Metrics after;   // the trained model on the same data
  std::uint32_t trainMillis = 0;
};

struct BuiltUpdate {
  std::uint64_t round = 0;
  Bytes payload;           // the Update message, as signed
  Bytes envelope;          // Signed(update)
  Digest payloadDigest{};  // updateDigest(payload): what the signature covers and Acks name
  std::uint32_t sampleCount = 0;
  Metrics before;
  Metrics after;
  std::uint32_t trainMillis = 0;
  DeltaEncodeInfo encoding;
};

class UpdateBuilder {
 public:
  // `key` must outlive the builder.
  UpdateBuilder(const KeyPair& key, std::string fleet, std::string deviceId,
                DeviceHooks hooks = {});

  // Trains a copy of `base` on `data` with the plan's options; the FedProx
  // reference is the base. Errors: Trainer's and evaluate's (ShapeMismatch,
  // OutOfRange labels, InvalidArgument for no samples, ...).
  Result<LocalTraining> train(const Model& base, const Dataset& data, const RoundPlan& plan) const;
  // local - base in the model's parameter order, then the delta hook.
  // NonFinite when training itself produced a non-finite parameter.
  Result<std::vector<float>> delta(const Model& base, const Model& local,
                                   std::uint64_t round) const;
  // The Update message for `delta` (scratch: clipped, noised and the
  // residual added in place). `residual` is used for top-k only (empty or
  // parameterCount long; error feedback). Then the payload hook.
  // `baseDigest` is the base's parameterDigest when the caller keeps it (a
  // cached model), saving a pass over the parameters; null computes it.
  Result<Bytes> encode(const Model& base, std::span<float> delta, const RoundPlan& plan,
                       const LocalTraining& training, std::uint32_t sampleCount,
                       std::span<float> residual, std::mt19937_64& rng, std::int64_t now,
                       DeltaEncodeInfo* info, const Digest* baseDigest = nullptr) const;
  // Signed(update) with the device key, then the envelope hook. `digest`
  // is updateDigest(payload), when the caller already has it.
  Bytes seal(ByteView payload, std::uint64_t round) const {
    return seal(payload, round, updateDigest(payload));
  }
  Bytes seal(ByteView payload, std::uint64_t round, const Digest& digest) const;

  // All of the above.
  Result<BuiltUpdate> build(const Model& base, const Dataset& data, const RoundPlan& plan,
                            std::span<float> residual, std::mt19937_64& rng, std::int64_t now,
                            const Digest* baseDigest = nullptr) const;

 private:
  const KeyPair& key_;
  std::string fleet_;
  std::string deviceId_;
  DeviceHooks hooks_;
};

}  // namespace edgefl::device
