#include "edgefl/server/coordinator.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "edgefl/server/aggregation.hpp"
#include "edgefl/server/broker_client.hpp"
#include "edgefl/server/rollout.hpp"
#include "edgefl/server/update_verifier.hpp"
#include "edgefl/server/validation_gate.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/model.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/shared/train.hpp"

namespace edgefl::server {
namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kRuntimeVersion = 1;

std::int64_t nowSeconds() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

double millisSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string fmt(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

Result<std::string> readSecretLine(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return makeError(Code::IoError, "cannot read " + path.string());
  std::string line;
  std::getline(in, line);
  if (line.empty()) return makeError(Code::BadConfig, path.string() + " is empty");
  return line;
}

wire::Optimizer optimizerOf(const std::string& name) {
  return name == "adam" ? wire::Optimizer::ADAM : wire::Optimizer::SGD;
}
wire::Trainable trainableOf(const std::string& name) {
  if (name == "head") return wire::Trainable::HEAD;
  if (name == "bias") return wire::Trainable::BIAS;
  return wire::Trainable::ALL;
}
wire::DeltaEncoding encodingOf(const std::string& name) {
  if (name == "int8") return wire::DeltaEncoding::INT8;
  if (name == "topk") return wire::DeltaEncoding::TOP_K;
  return wire::DeltaEncoding::FLOAT32;
}

// A message waiting for verification.
struct Pending {
  IncomingMessage message;
  std::chrono::steady_clock::time_point received;
};

}  // namespace

struct Coordinator::Impl {
  CoordinatorConfig config;
  LogSink log;
  Registry registry;
  KeyPair key;
  Bytes delegation;
  Dataset holdout;
  std::unique_ptr<ValidationGate> gate;
  std::unique_ptr<Strategy> strategy;
  UpdateVerifier verifier;
  RolloutController rollout;
  std::unique_ptr<BrokerClient> broker;
  std::mt19937_64 rng;

  // Guards everything below and every registry call.
  mutable std::mutex mu;
  Model stable;  // the current stable model
  std::uint64_t stableVersionNo = 0;
  // Earlier stable models, newest first: bases an asynchronous round still
  // accepts (staleness = position + 1).
  std::deque<Digest> olderStable;
  Model roundBase;  // the model the open round's updates were trained from
  bool asynchronous = false;
  std::optional<Model> canary;
  std::uint64_t canaryVersionNo = 0;
  bool rolloutPaused = false;
  std::shared_ptr<const RoundContext> round = std::make_shared<RoundContext>();
  // The same pointer for the verification workers, published under its own
  // lock: a worker must not wait for `mu`, which the other worker holds
  // while its batch commits (an fsync), or verifying one batch and
  // committing the other never overlap.
  std::mutex verifyRoundMu;
  std::shared_ptr<const RoundContext> verifyRound = round;
  std::int64_t roundDeadline = 0;
  std::uint64_t roundTarget = 0;  // close early at this many accepted; 0 = max_updates
  // For the round's "collect" phase in milliseconds: when this process
  // opened round `timedRound`, and when it last recorded an accepted update
  // for it (whole seconds from the registry for a round resumed after a
  // restart).
  std::uint64_t timedRound = 0;
  std::chrono::steady_clock::time_point timedOpened{}, timedLastAccepted{};
  std::int64_t lastRoundEnd = 0;
  CoordinatorStats stats;
  // Latest telemetry facts per device, for triggers.
  struct DeviceFacts {
    std::uint64_t newSamples = 0;
    double psiMean = 0;
    std::uint64_t labelled = 0;
    double accuracy = 0;
    std::int64_t at = 0;
    std::string telemetryJson;
    std::uint64_t activeVersion = 0;
    bool dirty = false;
  };
  std::unordered_map<std::string, DeviceFacts> facts;
  std::set<std::string> online;

  // The network thread never waits for `mu`: a worker holds it while a
  // batch of verdicts commits (an fsync), and a network thread blocked
  // behind it leaves the broker's queue for the coordinator to grow until
  // the broker drops messages. What it counts and decides lives under
  // queueMu; the open round's number is mirrored here.
  std::atomic<std::uint64_t> openRoundNo{0};

  // Ingest queue, and what the network thread counts and decides.
  std::mutex queueMu;
  struct IngestCounters {
    std::uint64_t received = 0;
    std::uint64_t overloaded = 0;
    std::uint64_t telemetryDropped = 0;
    std::uint64_t queueDepth = 0;
    std::uint64_t queueHighWater = 0;
  } ingestCounters;
  // Overloaded verdicts decided on the network thread, recorded by the
  // control loop (the network thread never touches the registry).
  std::vector<UpdateRecord> overflowVerdicts;
  std::condition_variable queueCv;
  std::deque<Pending> queue;
  std::deque<IncomingMessage> telemetryQueue;
  bool stopping = false;
  std::vector<std::thread> workers;
  bool started = false;
  // Workers verify their batches in parallel but commit them in the order
  // they took them from the queue (a ticket each, taken under queueMu), so
  // verdicts follow arrival: of two updates from one device, the first
  // received is the one accepted.
  std::uint64_t nextTicket = 0;  // under queueMu
  std::mutex turnMu;
  std::condition_variable turnCv;
  std::uint64_t commitTurn = 0;  // under turnMu

  Impl(CoordinatorConfig c, LogSink l, Registry r, KeyPair k, VerifierOptions v, RolloutOptions ro)
      : config(std::move(c)),
        log(std::move(l)),
        registry(std::move(r)),
        key(std::move(k)),
        verifier(std::move(v)),
        rollout(ro) {}

  void info(const std::string& s) const { log(LogLevel::Info, s); }
  void warn(const std::string& s) const { log(LogLevel::Warn, s); }

  // Opens or closes the round for updates; the caller holds mu.
  void setRound(std::shared_ptr<const RoundContext> ctx) {
    round = std::move(ctx);
    openRoundNo = round->round;
    std::lock_guard lock(verifyRoundMu);
    verifyRound = round;
  }

  Bytes sealCoordinator(Kind kind, const Bytes& payload) const {
    return seal(kind, payload, key, delegation);
  }

  // ---------------------------------------------------------------------
  // Messages from the broker (network thread: enqueue only).

  void onMessage(IncomingMessage&& m) {
    auto where = parseDeviceTopic(config.fleet.name, m.topic);
    if (!where) return;  // not ours: the subscriptions only cover device topics
    if (where->leaf == "update") {
      std::unique_lock lock(queueMu);
      if (queue.size() >= static_cast<std::size_t>(config.ingest.queueCapacity)) {
        lock.unlock();
        refuseOverloaded(where->deviceId, m);
        return;
      }
      queue.push_back(Pending{std::move(m), std::chrono::steady_clock::now()});
      ++ingestCounters.received;
      ingestCounters.queueDepth = queue.size();
      ingestCounters.queueHighWater =
          std::max<std::uint64_t>(ingestCounters.queueHighWater, queue.size());
      lock.unlock();
      queueCv.notify_one();
    } else if (where->leaf == "telemetry") {
      std::lock_guard lock(queueMu);
      // Telemetry is advisory: when the control loop falls behind, the
      // oldest reports go first.
      if (telemetryQueue.size() >= 4096) {
        telemetryQueue.pop_front();
        ++ingestCounters.telemetryDropped;
      }
      telemetryQueue.push_back(std::move(m));
    } else if (where->leaf == "state") {
      std::string state(m.payload.begin(), m.payload.end());
      std::lock_guard s(mu);
      if (state == "online") {
        online.insert(where->deviceId);
      } else {
        online.erase(where->deviceId);
      }
    }
  }

  void refuseOverloaded(const std::string& deviceId, const IncomingMessage& m) {
    UpdateRecord r;
    r.deviceId = deviceId;
    r.reason = std::string(codeName(Code::Overloaded));
    r.detail = "ingest queue full (" + std::to_string(config.ingest.queueCapacity) + ")";
    r.digest = blake2b256(m.payload);
    r.receivedAt = nowSeconds();
    r.round = openRoundNo.load();
    {
      std::lock_guard q(queueMu);
      ++ingestCounters.received;
      ++ingestCounters.overloaded;
      // Bounded: beyond this the verdicts are only counted.
      if (overflowVerdicts.size() < 10000) overflowVerdicts.push_back(r);
    }
    publishAck(deviceId, r.round, wire::Verdict::REJECTED, r.reason, r.detail, r.digest);
  }

  void publishAck(const std::string& deviceId, std::uint64_t roundNo, wire::Verdict verdict,
                  const std::string& reason, const std::string& detail, const Digest& digest) {
    capnp::MallocMessageBuilder b;
    auto a = b.initRoot<wire::Ack>();
    a.setFleet(config.fleet.name);
    a.setDeviceId(deviceId);
    a.setRound(roundNo);
    a.setVerdict(verdict);
    a.setReason(reason);
    a.setDetail(detail.substr(0, 512));
    a.setUpdateDigest(kj::arrayPtr(digest.data(), digest.size()));
    a.setReceivedAt(nowSeconds());
    Bytes bytes = sealCoordinator(Kind::ACK, toBytes(b));
    Status st = broker->publish(deviceTopic(config.fleet.name, deviceId, "ack"), bytes);
    if (!st.ok()) warn("ack to " + deviceId + ": " + st.error().toString());
  }

  // ---------------------------------------------------------------------
  // Verification workers.

  // Verifies what is queued, up to kCommitBatch at a time, then records the
  // batch's verdicts in one registry transaction (one fsync instead of one
  // per update) and answers the devices only after it commits. With two or
  // more workers one verifies while another commits.
  static constexpr std::size_t kCommitBatch = 64;
  void workerLoop() {
    std::vector<Verdict> batch;
    for (;;) {
      std::vector<Pending> taken;
      std::uint64_t ticket = 0;
      {
        std::unique_lock lock(queueMu);
        queueCv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (stopping && queue.empty()) return;
        while (!queue.empty() && taken.size() < kCommitBatch) {
          taken.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        ingestCounters.queueDepth = queue.size();
        ticket = nextTicket++;
      }
      std::shared_ptr<const RoundContext> ctx;
      {
        std::lock_guard s(verifyRoundMu);
        ctx = verifyRound;
      }
      batch.clear();
      for (Pending& p : taken) {
        batch.push_back(verifier.verify(p.message.topic, p.message.payload, *ctx));
        p.message.payload = {};  // the verdict holds what is kept
      }
      {
        std::unique_lock turn(turnMu);
        turnCv.wait(turn, [&] { return commitTurn == ticket; });
      }
      std::vector<Answer> answers = commit(batch);
      {
        std::lock_guard turn(turnMu);
        ++commitTurn;
      }
      turnCv.notify_all();
      for (const Answer& a : answers) {
        if (a.deviceId.empty()) continue;  // no device to answer (bad topic)
        publishAck(a.deviceId, a.round, a.verdict, a.reason, a.detail, a.digest);
      }
    }
  }

  struct Answer {
    std::string deviceId;
    std::uint64_t round = 0;
    wire::Verdict verdict = wire::Verdict::REJECTED;
    std::string reason;
    std::string detail;
    Digest digest{};
  };

  // Decides duplicates and round capacity and writes the verdict, inside
  // the caller's transaction when there is one. The delta is lent to the
  // record and handed back whatever happens: a batch whose transaction
  // rolls back is recorded again one by one, deltas included.
  Result<Answer> recordLocked(Verdict& v) {
    if (v.accepted() && v.round != round->round) {
      v.code = Code::RoundClosed;
      v.detail = "round " + std::to_string(v.round) + " closed while the update was verified";
    }
    if (v.accepted()) {
      auto existing = registry.acceptedDigest(v.round, v.deviceId);
      if (!existing && v.claimedRound != v.round) {
        existing = registry.acceptedDigest(v.claimedRound, v.deviceId);
      }
      if (existing) {
        v.code = Code::Duplicate;
        v.detail = *existing == v.digest
                       ? "the same update was already accepted"
                       : "another update from this device was already accepted for this round";
      }
    }
    if (v.accepted()) {
      const std::uint64_t cap =
          roundTarget > 0 ? roundTarget : static_cast<std::uint64_t>(config.rounds.maxUpdates);
      if (registry.acceptedCount(v.round) >= cap) {
        v.code = Code::RoundClosed;
        v.detail =
            "round " + std::to_string(v.round) + " already has " + std::to_string(cap) + " updates";
      }
    }
    UpdateRecord r;
    r.round = v.round;
    r.deviceId = v.deviceId;
    r.accepted = v.accepted();
    r.reason = v.accepted() ? "" : std::string(codeName(v.code));
    r.detail = v.detail;
    r.sampleCount = v.sampleCount;
    r.norm = v.norm;
    r.digest = v.digest;
    r.receivedAt = nowSeconds();
    r.staleness = v.staleness;
    r.delta = std::move(v.delta);
    Status st = registry.recordUpdate(r);
    v.delta = std::move(r.delta);
    if (!st.ok()) return st.error();
    Answer a;
    a.deviceId = v.deviceId;
    // The round the update claims: the device keeps it pending under that
    // number, also when an asynchronous buffer took it into a later one.
    a.round = v.claimedRound != 0 ? v.claimedRound : v.round;
    a.verdict = r.accepted                  ? wire::Verdict::ACCEPTED
                : v.code == Code::Duplicate ? wire::Verdict::DUPLICATE
                                            : wire::Verdict::REJECTED;
    a.reason = r.reason;
    a.detail = v.detail;
    a.digest = v.digest;
    return a;
  }

  // Records the verdicts durably (one transaction for the batch; if it
  // fails, one per verdict, and a verdict that still cannot be stored is
  // answered Overloaded: the registry is the source of truth, the device
  // resends) and returns the answers, which the caller sends only now.
  std::vector<Answer> commit(std::vector<Verdict>& batch) {
    std::vector<Answer> answers;
    {
      std::lock_guard s(mu);
      Status together = registry.transaction([&]() -> Status {
        for (Verdict& v : batch) {
          auto a = recordLocked(v);
          if (!a.ok()) return a.error();
          answers.push_back(std::move(a.value()));
        }
        return {};
      });
      if (!together.ok()) {
        answers.clear();
        for (Verdict& v : batch) {
          auto a = recordLocked(v);
          if (a.ok()) {
            answers.push_back(std::move(a.value()));
            continue;
          }
          warn("recording update from " + v.deviceId + ": " + a.error().toString());
          Answer overloaded;
          overloaded.deviceId = v.deviceId;
          overloaded.round = v.claimedRound != 0 ? v.claimedRound : v.round;
          overloaded.reason = std::string(codeName(Code::Overloaded));
          overloaded.detail = "registry write failed; retry";
          overloaded.digest = v.digest;
          answers.push_back(std::move(overloaded));
        }
      }
      const auto recorded = std::chrono::steady_clock::now();
      for (const Answer& a : answers) {
        if (a.verdict == wire::Verdict::ACCEPTED) {
          ++stats.accepted;
          if (a.round == timedRound) timedLastAccepted = recorded;
        } else {
          ++stats.rejected;
        }
      }
    }
    return answers;
  }

  // ---------------------------------------------------------------------
  // Keys and devices.

  Status loadDevices() {
    auto keys = std::make_shared<DeviceKeys>();
    const fs::path dir = config.resolve(config.keys.devicesDir);
    std::error_code ec;
    std::vector<std::pair<std::string, PublicKey>> enrolled;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() != ".pub") continue;
      const std::string id = entry.path().stem().string();
      if (!validateName("device id", id).ok()) continue;
      auto pub = loadPublicKey(entry.path());
      if (!pub.ok()) {
        warn("skipping " + entry.path().string() + ": " + pub.error().toString());
        continue;
      }
      keys->enrolled.add(*pub, Role::DEVICE, id);
      enrolled.emplace_back(id, *pub);
    }
    for (const auto& entry : fs::directory_iterator(dir / "revoked", ec)) {
      if (entry.path().extension() != ".pub") continue;
      auto pub = loadPublicKey(entry.path());
      if (pub.ok()) keys->revoked.insert(keyIdOf(*pub));
    }
    {
      std::lock_guard s(mu);
      for (const auto& [id, pk] : enrolled) {
        auto existing = registry.device(id);
        if (!existing || existing->key != pk || existing->revokedAt != 0) {
          DeviceRecord d;
          d.id = id;
          d.key = pk;
          (void)registry.upsertDevice(d);
        }
      }
      for (const auto& d : registry.devices()) {
        if (d.revokedAt == 0 && keys->revoked.count(keyIdOf(d.key)) > 0) {
          (void)registry.revokeDevice(d.id, nowSeconds());
        }
      }
    }
    const std::size_t n = keys->enrolled.size(), r = keys->revoked.size();
    verifier.setKeys(std::move(keys));
    info("devices: " + std::to_string(n) + " enrolled, " + std::to_string(r) + " revoked");
    return {};
  }

  // ---------------------------------------------------------------------
  // Deployments.

  // Records and publishes a signed deployment of `model` (meta.version set).
  Status deploy(const Model& model, const std::string& channel, double percent, bool isRollback,
                const std::string& reason) {
    const std::uint64_t sequence = registry.nextDeploymentSequence();
    Bytes modelBytes = modelToBytes(model);
    capnp::MallocMessageBuilder b(static_cast<unsigned>(modelBytes.size() / 8 + 256));
    auto d = b.initRoot<wire::Deployment>();
    d.setFleet(config.fleet.name);
    d.setSequence(sequence);
    d.setChannel(channel == "canary" ? wire::Channel::CANARY : wire::Channel::STABLE);
    d.setPercent(static_cast<float>(percent));
    d.setMode(wire::DeployMode::ACTIVATE);
    d.setModelVersion(model.meta().version);
    Digest digest = parameterDigest(model);
    d.setModelDigest(kj::arrayPtr(digest.data(), digest.size()));
    d.setModel(kj::arrayPtr(modelBytes.data(), modelBytes.size()));
    d.setParameterCount(model.parameterCount());
    d.setModelBytes(modelBytes.size());
    d.setMinRuntimeVersion(kRuntimeVersion);
    d.setCreatedAt(nowSeconds());
    d.setIsRollback(isRollback);
    d.setReason(reason);
    // One salt per fleet keeps the same devices in every canary: a device
    // that took the last canary well is the first to take the next.
    d.setRolloutSalt(static_cast<std::uint64_t>(std::hash<std::string>{}(config.fleet.name)));
    Bytes signedBytes = sealCoordinator(Kind::DEPLOYMENT, toBytes(b));
    DeploymentRecord rec;
    rec.sequence = sequence;
    rec.version = model.meta().version;
    rec.channel = channel;
    rec.percent = percent;
    rec.reason = reason;
    rec.signedBytes = signedBytes;
    EDGEFL_TRY(registry.addDeployment(rec));
    EDGEFL_TRY(broker->publish(deployTopic(config.fleet.name, channel), signedBytes, true));
    info("deployed v" + std::to_string(rec.version) + " to " + channel + " (" + fmt(percent, 0) +
         "%, sequence " + std::to_string(sequence) + "): " + reason);
    return {};
  }

  Status clearCanaryChannel() {
    return broker->publish(deployTopic(config.fleet.name, "canary"), {}, true);
  }

  Result<Model> modelOf(std::uint64_t version) {
    auto rec = registry.model(version);
    if (!rec.ok()) return rec.error();
    return modelFromBytes(rec->bytes);
  }

  // ---------------------------------------------------------------------
  // Rounds.

  std::shared_ptr<RoundContext> contextFor(const RoundRecord& r, const std::string& selectedCsv) {
    auto ctx = std::make_shared<RoundContext>();
    ctx->round = r.round;
    ctx->baseVersion = r.baseVersion;
    ctx->baseDigest = parameterDigest(roundBase);
    ctx->tensorSizes.assign(roundBase.tensorSizes().begin(), roundBase.tensorSizes().end());
    if (asynchronous) {
      ctx->olderBases.assign(olderStable.begin(), olderStable.end());
      ctx->asynchronous = true;
      // Tasks of the last few buffers are still being trained on.
      ctx->firstRound = r.round > static_cast<std::uint64_t>(config.rounds.maxStaleness)
                            ? r.round - static_cast<std::uint64_t>(config.rounds.maxStaleness)
                            : 1;
    }
    ctx->fraction = static_cast<float>(config.rounds.fraction);
    // The round number is hashed in by the selection itself; a per-fleet salt
    // keeps different fleets from selecting the same ids.
    ctx->selectionSalt = static_cast<std::uint64_t>(std::hash<std::string>{}(config.fleet.name));
    std::size_t start = 0;
    while (start < selectedCsv.size()) {
      std::size_t comma = selectedCsv.find(',', start);
      if (comma == std::string::npos) comma = selectedCsv.size();
      if (comma > start) ctx->selected.insert(selectedCsv.substr(start, comma - start));
      start = comma + 1;
    }
    return ctx;
  }

  Bytes roundTaskBytes(const RoundContext& ctx, wire::RoundState state, std::int64_t openedAt,
                       std::int64_t deadline, const std::string& trigger) const {
    capnp::MallocMessageBuilder b;
    auto t = b.initRoot<wire::RoundTask>();
    t.setFleet(config.fleet.name);
    t.setRound(ctx.round);
    t.setState(state);
    t.setMode(asynchronous ? wire::RoundMode::ASYNCHRONOUS : wire::RoundMode::SYNCHRONOUS);
    t.setBaseVersion(ctx.baseVersion);
    t.setBaseDigest(kj::arrayPtr(ctx.baseDigest.data(), ctx.baseDigest.size()));
    t.setOpenedAt(openedAt);
    t.setDeadline(deadline);
    t.setFraction(ctx.selected.empty() ? ctx.fraction : 0.0f);
    t.setSelectionSalt(ctx.selectionSalt);
    auto devices = t.initDevices(static_cast<unsigned>(ctx.selected.size()));
    unsigned i = 0;
    for (const auto& id : std::set<std::string>(ctx.selected.begin(), ctx.selected.end())) {
      devices.set(i++, id);
    }
    t.setMinSamples(static_cast<std::uint32_t>(config.rounds.minSamples));
    auto tr = t.initTraining();
    tr.setEpochs(static_cast<std::uint32_t>(config.training.epochs));
    tr.setBatchSize(static_cast<std::uint32_t>(config.training.batchSize));
    tr.setLearningRate(static_cast<float>(config.training.learningRate));
    tr.setOptimizer(optimizerOf(config.training.optimizer));
    tr.setMomentum(static_cast<float>(config.training.momentum));
    tr.setWeightDecay(static_cast<float>(config.training.weightDecay));
    tr.setProximalMu(static_cast<float>(config.training.proximalMu));
    tr.setTrainable(trainableOf(config.training.trainable));
    tr.setSeed(ctx.round);
    auto dp = t.initDelta();
    dp.setEncoding(encodingOf(config.delta.encoding));
    dp.setClipNorm(static_cast<float>(config.delta.clipNorm));
    dp.setNoiseStd(static_cast<float>(config.delta.noiseStd));
    dp.setTopKFraction(static_cast<float>(config.delta.topKFraction));
    dp.setRounding(config.delta.rounding == "stochastic" ? wire::Rounding::STOCHASTIC
                                                         : wire::Rounding::NEAREST);
    t.setTrigger(trigger);
    return sealCoordinator(Kind::ROUND_TASK, toBytes(b));
  }

  // Chooses devices for a round by target count with over-selection,
  // preferring devices that are online; empty = select by fraction.
  std::vector<std::string> chooseDevices(std::uint64_t roundNo) {
    if (config.rounds.targetUpdates <= 0) return {};
    const auto want = static_cast<std::size_t>(
        std::ceil(static_cast<double>(config.rounds.targetUpdates) * config.rounds.overSelection));
    std::vector<std::string> on, off;
    for (const auto& d : registry.devices()) {
      if (d.revokedAt != 0) continue;
      (online.count(d.id) ? on : off).push_back(d.id);
    }
    std::mt19937_64 pick(roundNo);
    std::shuffle(on.begin(), on.end(), pick);
    std::shuffle(off.begin(), off.end(), pick);
    on.insert(on.end(), off.begin(), off.end());
    if (on.size() > want) on.resize(want);
    return on;
  }

  Result<std::uint64_t> openRoundLocked(const std::string& trigger) {
    if (round->round != 0) {
      return makeError(Code::AlreadyExists, "round " + std::to_string(round->round) + " is open");
    }
    RoundRecord r;
    r.round = registry.lastRound() + 1;
    r.trigger = trigger;
    r.baseVersion = stableVersionNo;
    r.openedAt = nowSeconds();
    r.deadline = r.openedAt + config.rounds.deadlineSeconds;
    r.strategy = config.aggregation.strategy;
    r.noiseMultiplier = config.aggregation.dpNoiseMultiplier;
    roundBase = stable;
    std::vector<std::string> chosen = chooseDevices(r.round);
    std::string csv;
    for (const auto& id : chosen) csv += (csv.empty() ? "" : ",") + id;
    r.configJson = csv;  // the explicit selection, if any
    r.selected = chosen.size();
    EDGEFL_TRY(registry.openRound(r));
    auto ctx = contextFor(r, csv);
    roundDeadline = r.deadline;
    roundTarget =
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, config.rounds.targetUpdates));
    setRound(ctx);
    timedRound = r.round;
    timedOpened = timedLastAccepted = std::chrono::steady_clock::now();
    Bytes task = roundTaskBytes(*ctx, wire::RoundState::OPEN, r.openedAt, r.deadline, trigger);
    EDGEFL_TRY(broker->publish(roundTopic(config.fleet.name), task, true));
    info("round " + std::to_string(r.round) + " open (" + trigger + ") on v" +
         std::to_string(r.baseVersion) +
         (chosen.empty() ? ", fraction " + fmt(config.rounds.fraction, 2)
                         : ", " + std::to_string(chosen.size()) + " devices selected"));
    return r.round;
  }

  // Resumes a round found open in the registry at start.
  void resumeRoundLocked(const RoundRecord& r) {
    auto base = modelOf(r.baseVersion);
    roundBase = base.ok() ? std::move(base.value()) : stable;
    auto ctx = contextFor(r, r.configJson);
    setRound(ctx);
    roundDeadline = r.deadline;
    roundTarget =
        static_cast<std::uint64_t>(std::max<std::int64_t>(0, config.rounds.targetUpdates));
    Bytes task = roundTaskBytes(*ctx, wire::RoundState::OPEN, r.openedAt, r.deadline, r.trigger);
    (void)broker->publish(roundTopic(config.fleet.name), task, true);
    info("round " + std::to_string(r.round) + " resumed with " +
         std::to_string(registry.acceptedCount(r.round)) + " accepted updates");
  }

  // Closes the open round: aggregate the accepted updates (read back from the
  // registry, the durable record), validate, register and deploy.
  void closeRoundLocked(const std::string& why) {
    auto ctx = round;
    if (ctx->round == 0) return;
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t closeStarted = nowSeconds();
    auto rec = registry.round(ctx->round);
    if (!rec.ok()) return;
    RoundRecord r = std::move(rec.value());
    setRound(std::make_shared<RoundContext>());  // no more updates for it
    Bytes closed =
        roundTaskBytes(*ctx, wire::RoundState::CLOSED, r.openedAt, r.deadline, r.trigger);
    (void)broker->publish(roundTopic(config.fleet.name), closed, true);

    auto finish = [&](RoundState state, std::string outcome) {
      r.state = state;
      r.closedAt = nowSeconds();
      r.outcome = std::move(outcome);
      r.phaseMillis["total_close"] = millisSince(t0);
      // Open until the last accepted update was recorded: what the devices,
      // the broker and the verification took, without the wait for the
      // tick that closes the round (until the close began if none was).
      const auto collected = timedLastAccepted > timedOpened ? timedLastAccepted : t0;
      r.phaseMillis["collect"] =
          r.round == timedRound
              ? std::chrono::duration<double, std::milli>(collected - timedOpened).count()
              : static_cast<double>(closeStarted - r.openedAt) * 1000.0;
      (void)registry.updateRound(r);
      lastRoundEnd = r.closedAt;
      ++stats.roundsClosed;
      info("round " + std::to_string(r.round) + " " + std::string(roundStateName(state)) + ": " +
           r.outcome);
    };

    std::vector<UpdateRecord> accepted;
    for (auto& u : registry.updates(r.round, true)) {
      if (u.accepted) accepted.push_back(std::move(u));
    }
    if (accepted.size() < static_cast<std::size_t>(config.rounds.minUpdates)) {
      finish(RoundState::Failed, "too few updates: " + std::to_string(accepted.size()) + " < " +
                                     std::to_string(config.rounds.minUpdates) + " (" + why + ")");
      return;
    }
    r.state = RoundState::Aggregating;
    (void)registry.updateRound(r);

    const auto tAgg = std::chrono::steady_clock::now();
    std::vector<ClientUpdate> inputs;
    std::vector<std::string> contributors;
    // Synchronous: every delta is against the round's base. Asynchronous
    // (buffered, as FedBuff): stale deltas are applied to the current
    // stable model with their staleness discount.
    Model candidate = asynchronous ? stable : roundBase;
    const std::uint64_t parent = asynchronous ? stableVersionNo : r.baseVersion;
    for (const auto& u : accepted) {
      if (u.delta.size() != candidate.parameterCount()) continue;
      inputs.push_back(ClientUpdate{u.delta, static_cast<double>(u.sampleCount), u.deviceId,
                                    static_cast<double>(u.staleness)});
      contributors.push_back(u.deviceId);
    }
    std::vector<float> params(candidate.parameters().begin(), candidate.parameters().end());
    auto report = strategy->aggregate(inputs, params, rng);
    r.phaseMillis["aggregate"] = millisSince(tAgg);
    if (!report.ok()) {
      finish(RoundState::Failed, "aggregation failed: " + report.error().toString());
      return;
    }
    std::copy(params.begin(), params.end(), candidate.parameters().begin());
    std::vector<std::string> used;
    for (std::size_t i : report->used) used.push_back(contributors[i]);
    for (const auto& ex : report->excluded) {
      (void)registry.logEvent("exclusion", std::to_string(r.round),
                              ex.id + " excluded: " + std::string(exclusionName(ex.reason)));
    }

    const auto tVal = std::chrono::steady_clock::now();
    r.state = RoundState::Validating;
    (void)registry.updateRound(r);
    auto verdict = gate->judge(candidate, &stable);
    r.phaseMillis["validate"] = millisSince(tVal);
    if (!verdict.ok()) {
      finish(RoundState::Failed, "validation could not run: " + verdict.error().toString());
      return;
    }

    ModelRecord m;
    m.parent = parent;
    m.arch = candidate.arch();
    m.parameterCount = candidate.parameterCount();
    m.round = r.round;
    m.accuracy = verdict->candidate.accuracy;
    m.loss = verdict->candidate.loss;
    for (float a : verdict->candidate.perClassAccuracy) m.perClassAccuracy.push_back(a);
    m.stage = verdict->passed ? ModelStage::Candidate : ModelStage::Rejected;
    m.reason = verdict->reason;
    std::uint64_t version = 0;
    Status stored = registry.transaction([&]() -> Status {
      // The version is known only inside the transaction; the model bytes
      // carry it, so register, then rewrite with the final meta.
      candidate.meta().version =
          registry.models().empty() ? 1 : registry.models().back().version + 1;
      candidate.meta().parentVersion = parent;
      candidate.meta().round = r.round;
      candidate.meta().createdAt = nowSeconds();
      candidate.meta().fleet = config.fleet.name;
      candidate.meta().metrics = verdict->candidate;
      m.version = candidate.meta().version;
      m.bytes = modelToBytes(candidate);
      m.digest = parameterDigest(candidate);
      m.sizeBytes = m.bytes.size();
      auto v = registry.addModel(m);
      if (!v.ok()) return v.error();
      version = *v;
      EDGEFL_TRY(registry.addLineage(version, r.round, used));
      auto snapshot = strategy->saveState();
      std::vector<std::uint8_t> state(snapshot.size());
      std::memcpy(state.data(), snapshot.data(), snapshot.size());
      EDGEFL_TRY(registry.putState("strategy:" + std::string(strategy->name()), state));
      r.resultVersion = version;
      r.noiseMultiplier = report->noiseMultiplier;
      return {};
    });
    if (!stored.ok()) {
      finish(RoundState::Failed, "registry: " + stored.error().toString());
      return;
    }
    const std::string summary =
        "v" + std::to_string(version) + " from " + std::to_string(used.size()) + " updates, " +
        std::string(strategy->name()) + ", holdout accuracy " + fmt(verdict->candidate.accuracy) +
        " (stable " + fmt(verdict->baseline.accuracy) + ")";
    if (!verdict->passed) {
      finish(RoundState::Closed, summary + "; rejected by the gate: " + verdict->reason);
      return;
    }
    const auto tDeploy = std::chrono::steady_clock::now();
    Status rolled = beginRolloutLocked(candidate, version, summary);
    r.phaseMillis["deploy"] = millisSince(tDeploy);
    finish(RoundState::Closed,
           summary + (rolled.ok() ? "" : "; deploy failed: " + rolled.error().toString()));
  }

  Status beginRolloutLocked(const Model& candidate, std::uint64_t version, const std::string& why) {
    if (config.rollout.canaryPercent <= 0) {
      // No canary configured: the gate is the only check.
      EDGEFL_TRY(promoteLocked(candidate, version, "gate passed; no canary configured"));
      return {};
    }
    EDGEFL_TRY(registry.setModelStage(version, ModelStage::Canary));
    EDGEFL_TRY(deploy(candidate, "canary", config.rollout.canaryPercent, false, why));
    canary = candidate;
    canaryVersionNo = version;
    rollout.begin(version, stableVersionNo, nowSeconds());
    return {};
  }

  Status promoteLocked(const Model& model, std::uint64_t version, const std::string& reason) {
    const std::uint64_t previous = stableVersionNo;
    EDGEFL_TRY(registry.transaction([&]() -> Status {
      EDGEFL_TRY(registry.setModelStage(version, ModelStage::Stable, reason));
      if (previous != 0 && previous != version) {
        EDGEFL_TRY(registry.setModelStage(previous, ModelStage::Archived,
                                          "superseded by v" + std::to_string(version)));
      }
      if (auto c = registry.activeDeployment("canary")) {
        EDGEFL_TRY(registry.setDeploymentState(c->sequence, DeploymentState::Promoted));
      }
      return {};
    }));
    EDGEFL_TRY(deploy(model, "stable", 100.0, false, "promoted: " + reason));
    (void)clearCanaryChannel();
    if (previous != 0 && previous != version) {
      olderStable.push_front(parameterDigest(stable));
      while (olderStable.size() > static_cast<std::size_t>(config.rounds.maxStaleness)) {
        olderStable.pop_back();
      }
    }
    stable = model;
    stableVersionNo = version;
    if (asynchronous && round->round != 0) {
      // The open buffer moves to the new model; updates on the previous
      // ones still count, discounted by their staleness.
      auto rec = registry.round(round->round);
      if (rec.ok()) {
        rec->baseVersion = version;
        roundBase = stable;
        auto ctx = contextFor(*rec, rec->configJson);
        ctx->selected = round->selected;
        setRound(ctx);
        (void)broker->publish(roundTopic(config.fleet.name),
                              roundTaskBytes(*ctx, wire::RoundState::OPEN, rec->openedAt,
                                             rec->deadline, rec->trigger),
                              true);
      }
    }
    canary.reset();
    canaryVersionNo = 0;
    rollout.end();
    return {};
  }

  Status rollbackLocked(const std::string& reason) {
    if (!canary) return makeError(Code::NotFound, "no canary to roll back");
    const std::uint64_t version = canaryVersionNo;
    EDGEFL_TRY(registry.transaction([&]() -> Status {
      EDGEFL_TRY(registry.setModelStage(version, ModelStage::Rejected, "rolled back: " + reason));
      if (auto c = registry.activeDeployment("canary")) {
        EDGEFL_TRY(registry.setDeploymentState(c->sequence, DeploymentState::RolledBack));
      }
      return {};
    }));
    // A rollback is a new deployment of the previous model with a newer
    // sequence: canary devices install it like any other.
    EDGEFL_TRY(deploy(stable, "canary", config.rollout.canaryPercent, true,
                      "rollback of v" + std::to_string(version) + ": " + reason));
    canary.reset();
    canaryVersionNo = 0;
    rollout.end();
    warn("rolled back v" + std::to_string(version) + ": " + reason);
    return {};
  }

  // ---------------------------------------------------------------------
  // Telemetry and triggers (control loop).

  void processTelemetry() {
    std::deque<IncomingMessage> batch;
    {
      std::lock_guard lock(queueMu);
      batch.swap(telemetryQueue);
    }
    if (batch.empty()) return;
    auto keys = verifier.keys();
    VerifyOptions vo;
    vo.fleet = config.fleet.name;
    std::lock_guard s(mu);
    for (auto& m : batch) {
      auto where = parseDeviceTopic(config.fleet.name, m.topic);
      if (!where) continue;
      auto v = decodeVerified<wire::Telemetry>(m.payload, keys->enrolled, vo);
      if (!v.ok() || v->signer.subject != where->deviceId ||
          std::string_view(v->root().getDeviceId().cStr()) != where->deviceId) {
        ++stats.telemetryDropped;
        continue;
      }
      ++stats.telemetry;
      auto t = v->root();
      auto& f = facts[where->deviceId];
      f.newSamples = t.getStorage().getNewSamples();
      f.psiMean = t.getDrift().getPsiMean();
      f.labelled = t.getLocal().getLabelled();
      f.accuracy = t.getLocal().getAccuracy();
      f.activeVersion = t.getActiveVersion();
      f.at = nowSeconds();
      f.telemetryJson =
          "{\"version\":" + std::to_string(f.activeVersion) + ",\"psiMean\":" + fmt(f.psiMean) +
          ",\"labelled\":" + std::to_string(f.labelled) + ",\"accuracy\":" + fmt(f.accuracy) +
          ",\"healthFailures\":" + std::to_string(t.getHealth().getHealthCheckFailures()) + "}";
      f.dirty = true;
      RolloutReport rep;
      rep.deviceId = where->deviceId;
      rep.canary = t.getChannel() == wire::Channel::CANARY;
      rep.activeVersion = t.getActiveVersion();
      rep.healthFailures = t.getHealth().getHealthCheckFailures();
      rep.labelled = t.getLocal().getLabelled();
      rep.accuracy = t.getLocal().getAccuracy();
      rep.shadowSamples = t.getShadow().getSamples();
      rep.shadowAgreement = t.getShadow().getAgreement();
      rollout.observe(rep);
    }
  }

  void flushFacts() {
    std::vector<UpdateRecord> overflow;
    {
      std::lock_guard q(queueMu);
      overflow.swap(overflowVerdicts);
    }
    std::lock_guard s(mu);
    (void)registry.transaction([&]() -> Status {
      for (auto& [id, f] : facts) {
        if (!f.dirty) continue;
        f.dirty = false;
        (void)registry.touchDevice(id, f.at, f.activeVersion, f.telemetryJson);
      }
      for (const auto& r : overflow) (void)registry.recordUpdate(r);
      return {};
    });
  }

  std::string triggerDue(std::int64_t now) {
    const auto& t = config.triggers;
    if (t.scheduleSeconds > 0 && now - lastRoundEnd >= t.scheduleSeconds) return "schedule";
    std::uint64_t newSamples = 0, labelled = 0;
    double psi = 0, correct = 0;
    std::size_t reporting = 0;
    for (const auto& [id, f] : facts) {
      if (f.at < lastRoundEnd) continue;  // reports from before the last round
      newSamples += f.newSamples;
      psi += f.psiMean;
      ++reporting;
      labelled += f.labelled;
      correct += f.accuracy * static_cast<double>(f.labelled);
    }
    if (t.newDataSamples > 0 && newSamples >= static_cast<std::uint64_t>(t.newDataSamples)) {
      return "data";
    }
    if (t.driftPsi > 0 && reporting > 0 && psi / static_cast<double>(reporting) > t.driftPsi) {
      return "drift";
    }
    if (t.degradationDrop > 0 && labelled > 0) {
      auto rec = registry.model(stableVersionNo, false);
      if (rec.ok() && correct / static_cast<double>(labelled) < rec->accuracy - t.degradationDrop) {
        return "degradation";
      }
    }
    return {};
  }

  void processCommands() {
    std::vector<CommandRecord> pending;
    {
      std::lock_guard s(mu);
      pending = registry.pendingCommands();
    }
    for (const auto& c : pending) {
      std::string result;
      if (c.kind == "round-start") {
        std::lock_guard s(mu);
        auto r = openRoundLocked(c.args.empty() ? "manual" : c.args);
        result = r.ok() ? "ok: round " + std::to_string(*r) + " opened"
                        : "error: " + r.error().toString();
      } else if (c.kind == "promote" || c.kind == "rollback" || c.kind == "pause" ||
                 c.kind == "resume") {
        std::lock_guard s(mu);
        Status st;
        const std::string reason = c.args.empty() ? "by operator" : c.args;
        if (c.kind == "promote") {
          st = canary ? promoteLocked(*canary, canaryVersionNo, reason)
                      : Status(makeError(Code::NotFound, "no canary to promote"));
        } else if (c.kind == "rollback") {
          st = rollbackLocked(reason);
        } else if (c.kind == "pause") {
          rolloutPaused = true;
        } else {
          rolloutPaused = false;
        }
        result = st.ok() ? "ok: " + c.kind + " done" : "error: " + st.error().toString();
      } else if (c.kind == "reload-devices") {
        Status st = loadDevices();
        result = st.ok() ? "ok: devices reloaded" : "error: " + st.error().toString();
      } else {
        result = "error: unknown command '" + c.kind + "'";
      }
      std::lock_guard s(mu);
      (void)registry.completeCommand(c.id, result);
      (void)registry.logEvent("command", c.kind, result);
    }
  }

  // Enrollment and revocation write files under devices/; reload when
  // either directory changes (a stat per tick, no polling of the files).
  std::filesystem::file_time_type devicesStamp{};
  void reloadDevicesIfChanged() {
    const fs::path dir = config.resolve(config.keys.devicesDir);
    std::error_code ec;
    auto stamp = std::max(fs::last_write_time(dir, ec), fs::last_write_time(dir / "revoked", ec));
    if (ec || stamp == devicesStamp) return;
    devicesStamp = stamp;
    (void)loadDevices();
  }

  void tickOnce() {
    reloadDevicesIfChanged();
    processCommands();
    processTelemetry();
    flushFacts();
    std::lock_guard s(mu);
    const std::int64_t now = nowSeconds();
    if (rollout.active() && !rolloutPaused) {
      RolloutDecision d = rollout.decide(now);
      if (d.action == RolloutAction::Promote && config.rollout.autoPromote && canary) {
        Status st = promoteLocked(*canary, canaryVersionNo, d.reason);
        if (!st.ok()) warn("promotion failed: " + st.error().toString());
      } else if (d.action == RolloutAction::Rollback && config.rollout.autoRollback) {
        Status st = rollbackLocked(d.reason);
        if (!st.ok()) warn("rollback failed: " + st.error().toString());
      }
    }
    if (round->round != 0) {
      const std::uint64_t accepted = registry.acceptedCount(round->round);
      const std::uint64_t cap = asynchronous ? static_cast<std::uint64_t>(config.rounds.asyncBuffer)
                                : roundTarget > 0
                                    ? roundTarget
                                    : static_cast<std::uint64_t>(config.rounds.maxUpdates);
      // An asynchronous buffer that fills while a canary decides keeps
      // filling: closing it would start a canary that replaces the one
      // being judged, so with buffers faster than the window nothing would
      // ever be promoted. It closes after the decision, on the new stable
      // model, with every update it took.
      const bool holdForCanary = asynchronous && rollout.active();
      if (accepted >= cap && !holdForCanary) {
        closeRoundLocked("reached " + std::to_string(cap) + " updates");
      } else if (now >= roundDeadline) {
        if (asynchronous &&
            (holdForCanary || accepted < static_cast<std::uint64_t>(config.rounds.minUpdates))) {
          // A buffer waits for its updates; the deadline only bounds how
          // long a partial buffer may sit once it has the minimum.
          roundDeadline = now + config.rounds.deadlineSeconds;
        } else {
          closeRoundLocked("deadline");
        }
      }
      if (asynchronous && round->round == 0 && !rolloutPaused) {
        auto r = openRoundLocked("async");
        if (!r.ok()) warn("cannot open the next buffer: " + r.error().toString());
      }
      return;
    }
    // Synchronous rounds train on the stable model: none opens while a
    // canary is deciding what stable will be.
    if (rollout.active() && !asynchronous) return;
    std::string trigger = triggerDue(now);
    if (!trigger.empty()) {
      auto r = openRoundLocked(trigger);
      if (!r.ok()) warn("cannot open round: " + r.error().toString());
    }
  }
};

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() {
  stop();
}

Result<std::unique_ptr<Coordinator>> Coordinator::open(const CoordinatorConfig& config,
                                                       LogSink log) {
  auto key = KeyPair::load(config.resolve(config.keys.coordinatorKey));
  if (!key.ok()) return key.error();
  auto registry = Registry::open(config.resolve(config.registry.path));
  if (!registry.ok()) return registry.error();
  // A batch commits holding the coordinator's lock: it pays for its own
  // writes and fsync, and the WAL is copied into the file beside it.
  EDGEFL_TRY(registry->startBackgroundCheckpoints({}));
  VerifierOptions vo;
  vo.fleet = config.fleet.name;
  vo.limits.maxBytes = static_cast<std::size_t>(config.broker.maxMessageBytes);
  vo.maxUpdateNorm = config.ingest.maxUpdateNorm;
  vo.enforceSelection = true;
  RolloutOptions ro;
  ro.windowSeconds = config.rollout.windowSeconds;
  ro.minReports = static_cast<std::uint64_t>(config.rollout.minReports);
  ro.maxAccuracyDrop = config.rollout.maxAccuracyDrop;
  ro.minShadowAgreement = config.rollout.minShadowAgreement;
  ro.maxHealthFailures = static_cast<std::uint64_t>(config.rollout.maxHealthFailures);
  auto impl = std::make_unique<Impl>(config, std::move(log), std::move(registry.value()),
                                     std::move(key.value()), std::move(vo), ro);
  auto delegation =
      readFileBytes(config.resolve(config.keys.coordinatorDelegation).string(), 1 << 16);
  if (!delegation.ok()) return delegation.error();
  impl->delegation = std::move(delegation.value());
  {
    // The coordinator's own messages must verify on devices: check the
    // chain now rather than have every device refuse them.
    auto root = loadPublicKey(config.resolve(config.keys.rootPublic));
    if (!root.ok()) return root.error();
    Keyring ring;
    ring.add(*root, Role::ROOT);
    VerifyOptions chain;
    chain.fleet = config.fleet.name;
    auto subject = verifyDelegation(impl->delegation, ring, chain);
    if (!subject.ok()) {
      return makeError(Code::DelegationInvalid,
                       "coordinator delegation: " + subject.error().toString());
    }
    if (subject->key != impl->key.publicKey()) {
      return makeError(Code::KeyIdMismatch, "the delegation authorizes " + toHex(subject->keyId) +
                                                ", not the coordinator key " +
                                                toHex(impl->key.keyId()));
    }
  }

  impl->rng.seed(std::hash<std::string>{}(config.fleet.name) ^
                 static_cast<std::uint64_t>(nowSeconds()));

  auto holdout = loadDataset(config.validation.holdout);
  if (!holdout.ok()) {
    return makeError(holdout.code(), "validation.holdout: " + holdout.error().toString());
  }
  impl->holdout = std::move(holdout.value());
  GateOptions go;
  go.tolerance = config.validation.tolerance;
  go.sliceTolerance = config.validation.sliceTolerance;
  go.sliceMinStableAccuracy = config.validation.sliceMinStableAccuracy;
  go.maxParameters = static_cast<std::uint64_t>(config.validation.maxParameters);
  go.maxModelBytes = static_cast<std::uint64_t>(config.validation.maxModelBytes);
  impl->gate = std::make_unique<ValidationGate>(go, impl->holdout);

  Registry& reg = impl->registry;
  if (reg.models().empty()) {
    auto initial = loadModel(config.resolve(config.model.initial));
    if (!initial.ok()) {
      return makeError(initial.code(), "model.initial: " + initial.error().toString());
    }
    Model m = std::move(initial.value());
    m.meta().version = 1;
    m.meta().parentVersion = 0;
    m.meta().fleet = config.fleet.name;
    m.meta().createdAt = nowSeconds();
    auto metrics = evaluate(m, impl->holdout);
    if (!metrics.ok())
      return makeError(metrics.code(), "initial model on holdout: " + metrics.error().toString());
    m.meta().metrics = *metrics;
    ModelRecord rec;
    rec.version = 1;
    rec.arch = m.arch();
    rec.parameterCount = m.parameterCount();
    rec.stage = ModelStage::Stable;
    rec.accuracy = metrics->accuracy;
    rec.loss = metrics->loss;
    for (float a : metrics->perClassAccuracy) rec.perClassAccuracy.push_back(a);
    rec.bytes = modelToBytes(m);
    rec.sizeBytes = rec.bytes.size();
    rec.digest = parameterDigest(m);
    rec.reason = "initial model from " + config.model.initial;
    auto v = reg.addModel(rec);
    if (!v.ok()) return v.error();
  }
  auto stable = reg.latestInStage(ModelStage::Stable);
  if (!stable) return makeError(Code::NotFound, "the registry has no stable model");
  auto model = modelFromBytes(stable->bytes);
  if (!model.ok())
    return makeError(model.code(), "stable model v" + std::to_string(stable->version) + ": " +
                                       model.error().toString());
  impl->stable = std::move(model.value());
  impl->stableVersionNo = stable->version;
  if (auto c = reg.latestInStage(ModelStage::Canary)) {
    auto cm = modelFromBytes(c->bytes);
    if (cm.ok()) {
      impl->canary = std::move(cm.value());
      impl->canaryVersionNo = c->version;
    }
  }
  auto strategy = makeStrategy(aggregationOptionsFromConfig(config), impl->stable.parameterCount());
  if (!strategy.ok())
    return makeError(Code::BadConfig, "aggregation: " + strategy.error().toString());
  impl->strategy = std::move(strategy.value());
  if (auto state = reg.state("strategy:" + std::string(impl->strategy->name()))) {
    std::vector<std::byte> snapshot(state->size());
    std::memcpy(snapshot.data(), state->data(), state->size());
    Status restored = impl->strategy->restoreState(snapshot);
    if (!restored.ok()) impl->warn("strategy state not restored: " + restored.error().toString());
  }
  impl->lastRoundEnd = nowSeconds();
  impl->asynchronous = config.rounds.mode == "asynchronous";
  impl->roundBase = impl->stable;
  {
    // Earlier stable models, for asynchronous staleness.
    auto models = reg.models();
    for (auto it = models.rbegin(); it != models.rend(); ++it) {
      if (it->version == impl->stableVersionNo) continue;
      if (it->stage != ModelStage::Archived) continue;
      if (impl->olderStable.size() >= static_cast<std::size_t>(config.rounds.maxStaleness)) break;
      impl->olderStable.push_back(it->digest);
    }
  }
  EDGEFL_TRY(impl->loadDevices());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Status Coordinator::start() {
  Impl& s = *impl_;
  auto password = readSecretLine(s.config.resolve(s.config.broker.passwordFile));
  if (!password.ok()) return password.error();
  BrokerOptions bo;
  bo.host = s.config.broker.host;
  bo.port = static_cast<int>(s.config.broker.port);
  bo.clientId = s.config.broker.username;
  bo.username = s.config.broker.username;
  bo.password = *password;
  bo.keepaliveSeconds = static_cast<int>(s.config.broker.keepaliveSeconds);
  const std::string base = "edgefl/" + s.config.fleet.name + "/device/+/";
  bo.subscriptions = {base + "update", base + "telemetry", base + "state"};
  s.broker = std::make_unique<BrokerClient>(
      bo, [this](IncomingMessage&& m) { impl_->onMessage(std::move(m)); });
  EDGEFL_TRY(s.broker->start());
  {
    std::lock_guard lock(s.mu);
    // Republish what devices must see: the active deployments and the round.
    bool haveStable = false;
    for (const auto& channel : {"stable", "canary"}) {
      if (auto d = s.registry.activeDeployment(channel)) {
        (void)s.broker->publish(deployTopic(s.config.fleet.name, channel), d->signedBytes, true);
        haveStable = haveStable || std::string(channel) == "stable";
      }
    }
    if (!haveStable) {
      Model m = s.stable;
      m.meta().version = s.stableVersionNo;
      EDGEFL_TRY(s.deploy(m, "stable", 100.0, false, "initial deployment"));
    }
    if (s.canary && !s.registry.activeDeployment("canary")) {
      EDGEFL_TRY(s.deploy(*s.canary, "canary", s.config.rollout.canaryPercent, false,
                          "resumed canary after restart"));
    }
    if (s.canary) s.rollout.begin(s.canaryVersionNo, s.stableVersionNo, nowSeconds());
    if (auto open = s.registry.openRoundRecord()) {
      if (open->state == RoundState::Open) {
        s.resumeRoundLocked(*open);
      } else {
        // Crashed while aggregating or validating: nothing of that was
        // committed, so do it again from the recorded updates.
        s.resumeRoundLocked(*open);
        s.closeRoundLocked("resumed after restart");
      }
    }
  }
  {
    std::lock_guard lock(s.queueMu);
    s.stopping = false;
  }
  for (std::int64_t i = 0; i < s.config.ingest.verifyThreads; ++i) {
    s.workers.emplace_back([this] { impl_->workerLoop(); });
  }
  s.started = true;
  s.info("coordinator of fleet '" + s.config.fleet.name + "' running: stable v" +
         std::to_string(s.stableVersionNo) + ", strategy " + std::string(s.strategy->name()));
  return {};
}

void Coordinator::stop() {
  Impl& s = *impl_;
  if (!s.started) return;
  {
    std::lock_guard lock(s.queueMu);
    s.stopping = true;
  }
  s.queueCv.notify_all();
  for (auto& t : s.workers) t.join();
  s.workers.clear();
  s.flushFacts();
  if (s.broker) {
    s.broker->flush(std::chrono::seconds(2));
    s.broker->stop();
  }
  s.started = false;
}

void Coordinator::run(const std::atomic<bool>& stop, std::chrono::milliseconds period) {
  while (!stop.load()) {
    tick();
    std::this_thread::sleep_for(period);
  }
}

void Coordinator::tick() {
  impl_->tickOnce();
}

Result<std::uint64_t> Coordinator::startRound(const std::string& trigger) {
  std::lock_guard lock(impl_->mu);
  return impl_->openRoundLocked(trigger);
}

Status Coordinator::promote(const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  if (!impl_->canary) return makeError(Code::NotFound, "no canary to promote");
  return impl_->promoteLocked(*impl_->canary, impl_->canaryVersionNo, reason);
}

Status Coordinator::rollback(const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  return impl_->rollbackLocked(reason);
}

Status Coordinator::pauseRollout(const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  impl_->rolloutPaused = true;
  return impl_->registry.logEvent("rollout", "pause", reason);
}

Status Coordinator::resumeRollout() {
  std::lock_guard lock(impl_->mu);
  impl_->rolloutPaused = false;
  return impl_->registry.logEvent("rollout", "resume", "");
}

Status Coordinator::reloadDevices() {
  return impl_->loadDevices();
}

CoordinatorStats Coordinator::stats() const {
  CoordinatorStats out;
  {
    std::lock_guard lock(impl_->mu);
    out = impl_->stats;
    const Registry::CheckpointStats checkpoints = impl_->registry.checkpointStats();
    out.checkpoints = checkpoints.background;
    out.checkpointsInCommit = checkpoints.inCommit;
    out.checkpointsFailed = checkpoints.failed;
    out.lastCheckpointError = checkpoints.lastError;
  }
  std::lock_guard q(impl_->queueMu);
  const auto& c = impl_->ingestCounters;
  out.received = c.received;
  out.overloaded = c.overloaded;
  out.rejected += c.overloaded;
  out.telemetryDropped += c.telemetryDropped;
  out.queueDepth = c.queueDepth;
  out.queueHighWater = c.queueHighWater;
  return out;
}

std::uint64_t Coordinator::openRound() const {
  std::lock_guard lock(impl_->mu);
  return impl_->round->round;
}

std::uint64_t Coordinator::stableVersion() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stableVersionNo;
}

std::uint64_t Coordinator::canaryVersion() const {
  std::lock_guard lock(impl_->mu);
  return impl_->canaryVersionNo;
}

const CoordinatorConfig& Coordinator::config() const {
  return impl_->config;
}

}  // namespace edgefl::server
