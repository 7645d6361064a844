#include "support/messages.hpp"

#include <vector>

namespace edgefl::test {

Bytes sampleRoundTask(const std::string& fleet, std::uint64_t round) {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::RoundTask>();
  t.setFleet(fleet);
  t.setRound(round);
  t.setState(wire::RoundState::OPEN);
  t.setBaseVersion(3);
  std::vector<std::uint8_t> digest(32, 0xab);
  t.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  t.setOpenedAt(1'700'000'000);
  t.setDeadline(1'700'000'120);
  t.setFraction(0.25f);
  t.setSelectionSalt(42);
  t.setMinSamples(16);
  auto training = t.initTraining();
  training.setEpochs(2);
  training.setBatchSize(32);
  training.setLearningRate(0.05f);
  training.setMomentum(0.9f);
  auto delta = t.initDelta();
  delta.setEncoding(wire::DeltaEncoding::INT8);
  delta.setClipNorm(5.0f);
  t.setTrigger("manual");
  return toBytes(b);
}

Bytes sampleUpdate(const std::string& fleet, const std::string& device, std::uint64_t round) {
  capnp::MallocMessageBuilder b;
  auto u = b.initRoot<wire::Update>();
  u.setFleet(fleet);
  u.setDeviceId(device);
  u.setRound(round);
  u.setBaseVersion(3);
  std::vector<std::uint8_t> digest(32, 0xab);
  u.setBaseDigest(kj::arrayPtr(digest.data(), digest.size()));
  u.setSampleCount(120);
  auto d = u.initDelta();
  d.setEncoding(wire::DeltaEncoding::FLOAT32);
  auto tensors = d.initTensors(2);
  const float w[4] = {0.5f, -0.25f, 0.125f, 1.0f};
  tensors[0].setElementCount(4);
  tensors[0].setDense(kj::arrayPtr(reinterpret_cast<const kj::byte*>(w), sizeof w));
  const float bias[2] = {0.01f, -0.02f};
  tensors[1].setElementCount(2);
  tensors[1].setDense(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bias), sizeof bias));
  d.setL2Norm(1.1875f);
  u.setLossBefore(1.5f);
  u.setLossAfter(0.75f);
  u.setAccuracyBefore(0.5f);
  u.setAccuracyAfter(0.8f);
  u.setCreatedAt(1'700'000'050);
  u.setRuntimeVersion("0.1.0");
  return toBytes(b);
}

Bytes sampleAck(const std::string& fleet, const std::string& device, std::uint64_t round) {
  capnp::MallocMessageBuilder b;
  auto a = b.initRoot<wire::Ack>();
  a.setFleet(fleet);
  a.setDeviceId(device);
  a.setRound(round);
  a.setVerdict(wire::Verdict::REJECTED);
  a.setReason("BadSignature");
  a.setDetail("update signature does not verify");
  a.setReceivedAt(1'700'000'060);
  return toBytes(b);
}

Bytes sampleTelemetry(const std::string& fleet, const std::string& device) {
  capnp::MallocMessageBuilder b;
  auto t = b.initRoot<wire::Telemetry>();
  t.setFleet(fleet);
  t.setDeviceId(device);
  t.setSequence(7);
  t.setTimestamp(1'700'000'070);
  t.setActiveVersion(3);
  t.setScored(1000);
  t.setObserved(50);
  auto rejected = t.initRejected(1);
  rejected[0].setReason("OutOfRange");
  rejected[0].setCount(2);
  t.getHealth().setModelLoaded(true);
  t.getDrift().setPsiMax(0.12f);
  t.getShadow().setAgreement(0.97f);
  return toBytes(b);
}

Bytes sampleDeployment(const std::string& fleet, std::uint64_t sequence) {
  capnp::MallocMessageBuilder b;
  auto d = b.initRoot<wire::Deployment>();
  d.setFleet(fleet);
  d.setSequence(sequence);
  d.setChannel(wire::Channel::CANARY);
  d.setPercent(10.0f);
  d.setModelVersion(4);
  std::vector<std::uint8_t> digest(32, 0xcd);
  d.setModelDigest(kj::arrayPtr(digest.data(), digest.size()));
  d.setCreatedAt(1'700'000'080);
  d.setReason("round 3 candidate");
  return toBytes(b);
}

}  // namespace edgefl::test
