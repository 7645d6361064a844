#include "edgefl/device/update_builder.hpp"

#include <capnp/message.h>

#include <chrono>
#include <cmath>

#include "edgefl/shared/selection.hpp"

namespace edgefl::device {
namespace {

// float32 tensors written as they are, without encodeDelta's checks: the
// path a hook that planted NaN or infinity takes (an attacker's update).
DeltaEncodeInfo writeRawFloat32(std::span<const float> delta,
                                std::span<const std::uint32_t> tensorSizes,
                                wire::Delta::Builder out) {
  out.setEncoding(wire::DeltaEncoding::FLOAT32);
  auto tensors = out.initTensors(static_cast<unsigned>(tensorSizes.size()));
  std::size_t offset = 0;
  for (std::size_t t = 0; t < tensorSizes.size(); ++t) {
    const std::size_t n = tensorSizes[t];
    tensors[static_cast<unsigned>(t)].setElementCount(static_cast<std::uint32_t>(n));
    tensors[static_cast<unsigned>(t)].setDense(
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(delta.data() + offset), n * sizeof(float)));
    offset += n;
  }
  DeltaEncodeInfo info;
  info.preClipNorm = l2Norm(delta);
  info.sentNorm = info.preClipNorm;
  info.sentEntries = delta.size();
  info.payloadBytes = delta.size() * sizeof(float);
  out.setL2Norm(static_cast<float>(info.sentNorm));
  return info;
}

}  // namespace

Result<RoundPlan> roundPlanFromWire(wire::RoundTask::Reader task) {
  RoundPlan plan;
  plan.fleet = task.getFleet();
  plan.round = task.getRound();
  if (plan.round == 0) return makeError(Code::BadField, "round task with round 0");
  plan.state = task.getState();
  if (plan.state != wire::RoundState::OPEN && plan.state != wire::RoundState::CLOSED &&
      plan.state != wire::RoundState::CANCELLED) {
    return makeError(Code::BadField,
                     "round state " + std::to_string(static_cast<unsigned>(plan.state)));
  }
  plan.mode = task.getMode();
  if (plan.mode != wire::RoundMode::SYNCHRONOUS && plan.mode != wire::RoundMode::ASYNCHRONOUS) {
    return makeError(Code::BadField,
                     "round mode " + std::to_string(static_cast<unsigned>(plan.mode)));
  }
  plan.baseVersion = task.getBaseVersion();
  auto digest = arrayFromBytes<kDigestBytes>(
      ByteView(task.getBaseDigest().begin(), task.getBaseDigest().size()));
  if (!digest) {
    return makeError(
        Code::BadField,
        "baseDigest has " + std::to_string(task.getBaseDigest().size()) + " bytes; expected 32");
  }
  plan.baseDigest = *digest;
  plan.openedAt = task.getOpenedAt();
  plan.deadline = task.getDeadline();
  plan.fraction = task.getFraction();
  if (!std::isfinite(plan.fraction)) {
    return makeError(Code::BadField, "selection fraction is not finite");
  }
  plan.selectionSalt = task.getSelectionSalt();
  for (auto id : task.getDevices()) plan.devices.emplace_back(id.cStr(), id.size());
  plan.minSamples = task.getMinSamples();
  auto training = trainOptionsFromWire(task.getTraining());
  if (!training.ok()) return training.error();
  plan.training = training.value();
  auto delta = deltaOptionsFromPolicy(task.getDelta());
  if (!delta.ok()) return delta.error();
  plan.delta = delta.value();
  plan.trigger = task.getTrigger();
  return plan;
}

bool selectedFor(const RoundPlan& plan, std::string_view deviceId) {
  if (!plan.devices.empty()) {
    for (const std::string& id : plan.devices) {
      if (id == deviceId) return true;
    }
    return false;
  }
  return selectedByFraction(plan.selectionSalt, plan.round, plan.fraction, deviceId);
}

UpdateBuilder::UpdateBuilder(const KeyPair& key, std::string fleet, std::string deviceId,
                             DeviceHooks hooks)
    : key_(key),
      fleet_(std::move(fleet)),
      deviceId_(std::move(deviceId)),
      hooks_(std::move(hooks)) {}

Result<LocalTraining> UpdateBuilder::train(const Model& base, const Dataset& data,
                                           const RoundPlan& plan) const {
  LocalTraining out{base, {}, {}, 0};
  auto before = evaluate(base, data);
  if (!before.ok()) return before.error();
  out.before = std::move(before.value());
  const auto start = std::chrono::steady_clock::now();
  {
    auto trainer = Trainer::prepare(out.local, plan.training);
    if (!trainer.ok()) return trainer.error();
    auto report = trainer->train(data);
    if (!report.ok()) return report.error();
  }
  out.trainMillis =
      static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::steady_clock::now() - start)
                                     .count());
  auto after = evaluate(out.local, data);
  if (!after.ok()) return after.error();
  out.after = std::move(after.value());
  return out;
}

Result<std::vector<float>> UpdateBuilder::delta(const Model& base, const Model& local,
                                                std::uint64_t round) const {
  if (!allFinite(local.parameters())) {
    return makeError(Code::NonFinite, "local training produced non-finite parameters");
  }
  std::vector<float> out(base.parameterCount());
  EDGEFL_TRY(computeDelta(local.parameters(), base.parameters(), out));
  if (hooks_.delta) hooks_.delta(round, out);
  return out;
}

Result<Bytes> UpdateBuilder::encode(const Model& base, std::span<float> delta,
                                    const RoundPlan& plan, const LocalTraining& training,
                                    std::uint32_t sampleCount, std::span<float> residual,
                                    std::mt19937_64& rng, std::int64_t now, DeltaEncodeInfo* info,
                                    const Digest* baseDigest) const {
  // One segment large enough for a float32 delta plus the fields.
  const std::size_t words = delta.size() * sizeof(float) / sizeof(capnp::word) + 1024;
  capnp::MallocMessageBuilder message(
      static_cast<unsigned>(std::min<std::size_t>(words, 1u << 28)));
  auto u = message.initRoot<wire::Update>();
  u.setFleet(fleet_);
  u.setDeviceId(deviceId_);
  u.setRound(plan.round);
  // The model it trained on, which in an asynchronous round may be older
  // than the round's base.
  const Digest digest = baseDigest != nullptr       ? *baseDigest
                        : base.parameterCount() > 0 ? parameterDigest(base)
                                                    : plan.baseDigest;
  u.setBaseVersion(base.meta().version != 0 ? base.meta().version : plan.baseVersion);
  u.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  u.setSampleCount(sampleCount);
  DeltaEncodeInfo encoded;
  if (allFinite(delta)) {
    const bool topK = plan.delta.encoding == wire::DeltaEncoding::TOP_K;
    auto result = encodeDelta(delta, base.tensorSizes(), plan.delta,
                              topK ? residual : std::span<float>(), rng, u.initDelta());
    if (!result.ok()) return result.error();
    encoded = result.value();
  } else {
    encoded = writeRawFloat32(delta, base.tensorSizes(), u.initDelta());
  }
  u.setLossBefore(training.before.loss);
  u.setLossAfter(training.after.loss);
  u.setAccuracyBefore(training.before.accuracy);
  u.setAccuracyAfter(training.after.accuracy);
  u.setTrainMillis(training.trainMillis);
  u.setCreatedAt(now);
  u.setRuntimeVersion(std::string(kRuntimeVersionString));
  Bytes payload = toBytes(message);
  if (hooks_.updatePayload) hooks_.updatePayload(plan.round, payload);
  if (info != nullptr) *info = encoded;
  return payload;
}

Bytes UpdateBuilder::seal(ByteView payload, std::uint64_t round, const Digest& digest) const {
  Bytes envelope = edgefl::sealDigest(Kind::UPDATE, payload, digest, key_);
  if (hooks_.updateEnvelope) hooks_.updateEnvelope(round, envelope);
  return envelope;
}

Result<BuiltUpdate> UpdateBuilder::build(const Model& base, const Dataset& data,
                                         const RoundPlan& plan, std::span<float> residual,
                                         std::mt19937_64& rng, std::int64_t now,
                                         const Digest* baseDigest) const {
  auto training = train(base, data, plan);
  if (!training.ok()) return training.error();
  auto d = delta(base, training->local, plan.round);
  if (!d.ok()) return d.error();
  BuiltUpdate out;
  out.round = plan.round;
  // Trainer::train uses at most maxSamples of them.
  const std::size_t used = plan.training.maxSamples > 0
                               ? std::min<std::size_t>(data.size(), plan.training.maxSamples)
                               : data.size();
  out.sampleCount = static_cast<std::uint32_t>(used);
  auto payload = encode(base, d.value(), plan, training.value(), out.sampleCount, residual, rng,
                        now, &out.encoding, baseDigest);
  if (!payload.ok()) return payload.error();
  out.payload = std::move(payload.value());
  out.payloadDigest = updateDigest(out.payload);
  out.envelope = seal(out.payload, plan.round, out.payloadDigest);
  out.before = training->before;
  out.after = training->after;
  out.trainMillis = training->trainMillis;
  return out;
}

}  // namespace edgefl::device
