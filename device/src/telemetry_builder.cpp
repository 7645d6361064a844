#include "edgefl/device/telemetry_builder.hpp"

#include <capnp/message.h>

namespace edgefl::device {

Bytes telemetryPayload(const TelemetryContext& context, const DeviceStatus& status) {
  capnp::MallocMessageBuilder message(512);
  auto t = message.initRoot<wire::Telemetry>();
  t.setFleet(context.fleet);
  t.setDeviceId(context.deviceId);
  t.setSequence(context.sequence);
  t.setTimestamp(context.timestamp);
  t.setRuntimeVersion(std::string(kRuntimeVersionString));
  t.setActiveVersion(status.activeVersion);
  if (context.hasActiveDigest) {
    t.setActiveDigest(kj::arrayPtr(context.activeDigest.data(), context.activeDigest.size()));
  }
  t.setDeploymentSequence(status.activeSequence);
  t.setChannel(status.activeChannel == "canary" ? wire::Channel::CANARY : wire::Channel::STABLE);
  auto health = t.getHealth();
  health.setModelLoaded(status.modelLoaded);
  health.setHealthCheckFailures(status.healthCheckFailures);
  health.setFallbacks(status.fallbacks);
  health.setLastError(status.lastError);
  t.setScored(status.scored);
  t.setObserved(status.observed);
  auto rejected = t.initRejected(static_cast<unsigned>(status.rejectedByReason.size()));
  for (unsigned i = 0; i < rejected.size(); ++i) {
    rejected[i].setReason(status.rejectedByReason[i].reason);
    rejected[i].setCount(status.rejectedByReason[i].count);
  }
  auto bounds =
      t.initLatencyBoundsMicros(static_cast<unsigned>(context.latencyBoundsMicros.size()));
  for (unsigned i = 0; i < bounds.size(); ++i) bounds.set(i, context.latencyBoundsMicros[i]);
  auto counts = t.initLatencyCounts(static_cast<unsigned>(context.latencyCounts.size()));
  for (unsigned i = 0; i < counts.size(); ++i) counts.set(i, context.latencyCounts[i]);
  auto drift = t.getDrift();
  drift.setSamples(status.drift.samples);
  drift.setPsiMax(status.drift.psiMax);
  drift.setPsiMean(status.drift.psiMean);
  drift.setWorstFeature(status.drift.worstFeature);
  auto local = t.getLocal();
  local.setLabelled(status.local.labelled);
  local.setAccuracy(status.local.accuracy);
  local.setLoss(status.local.loss);
  auto shadow = t.getShadow();
  shadow.setCandidateVersion(status.shadowVersion);
  shadow.setSamples(status.shadow.samples);
  shadow.setAgreement(status.shadow.agreement);
  shadow.setLabelled(status.shadow.labelled);
  shadow.setActiveAccuracy(status.shadow.activeAccuracy);
  shadow.setCandidateAccuracy(status.shadow.candidateAccuracy);
  auto storage = t.getStorage();
  storage.setSamplesStored(status.samplesStored);
  storage.setBytesUsed(status.storageBytes);
  storage.setNewSamples(status.newSamples);
  t.setPendingUpdates(status.pendingUpdates);
  t.setLastRound(status.lastRound);
  return toBytes(message);
}

}  // namespace edgefl::device
