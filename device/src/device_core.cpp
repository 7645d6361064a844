#include "edgefl/device/device_core.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <random>

#include "edgefl/device/health_check.hpp"
#include "edgefl/device/telemetry_builder.hpp"
#include "edgefl/shared/selection.hpp"
#include "edgefl/shared/topics.hpp"

namespace edgefl::device {
namespace fs = std::filesystem;
namespace {

std::string str(std::uint64_t v) {
  return std::to_string(v);
}

std::string shortHex(const Digest& d) {
  return toHex(ByteView(d.data(), 4));
}

std::string fileName(Channel channel, std::uint64_t sequence) {
  return std::string(channelName(channel)) + "-" + str(sequence) + ".deploy";
}

std::string_view verdictName(wire::Verdict verdict) {
  switch (verdict) {
    case wire::Verdict::ACCEPTED: return "accepted";
    case wire::Verdict::REJECTED: return "rejected";
    case wire::Verdict::DUPLICATE: return "duplicate";
  }
  return "unknown";
}

std::vector<ReasonCount> reasonCounts(const std::array<std::uint64_t, kCodeCount>& counts) {
  std::vector<ReasonCount> out;
  for (std::size_t i = 1; i < counts.size(); ++i) {
    if (counts[i] > 0) out.push_back({std::string(codeName(static_cast<Code>(i))), counts[i]});
  }
  return out;
}

std::uint64_t total(const std::array<std::uint64_t, kCodeCount>& counts) {
  std::uint64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

Status checkConfig(const DeviceConfig& config) {
  auto bad = [](const std::string& what) { return makeError(Code::BadConfig, what); };
  Status id = validateName("device id", config.deviceId);
  if (!id.ok()) return bad(id.error().detail);
  Status fleet = validateName("fleet name", config.fleet);
  if (!fleet.ok()) return bad(fleet.error().detail);
  if (config.storageDir.empty()) return bad("storageDir is empty");
  if (config.deviceKeyFile.empty()) return bad("deviceKeyFile is empty");
  if (config.rootPublicKeyFile.empty()) return bad("rootPublicKeyFile is empty");
  const DeviceLimits& l = config.limits;
  if (l.maxModelParameters == 0) return bad("limits.maxModelParameters is 0");
  if (l.maxModelBytes == 0 || l.maxModelBytes > l.maxMessageBytes) {
    return bad("limits.maxModelBytes " + str(l.maxModelBytes) + " not in [1, maxMessageBytes " +
               str(l.maxMessageBytes) + "]");
  }
  if (l.maxStoredSamples == 0) return bad("limits.maxStoredSamples is 0");
  if (l.maxPendingUpdates == 0) return bad("limits.maxPendingUpdates is 0");
  if (l.maxBatch == 0 || l.maxBatch > 65536) {
    return bad("limits.maxBatch " + str(l.maxBatch) + " not in [1, 65536]");
  }
  if (l.resendInterval.count() < 1) return bad("limits.resendInterval under 1 s");
  if (l.telemetryInterval.count() < 0) return bad("limits.telemetryInterval is negative");
  return {};
}

}  // namespace

// Jobs on an executor may run after the core is gone (a shared pool drains
// its queue late): they check the gate first and never touch the core once
// it is closed; the core waits only for jobs already running.
struct DeviceCore::JobGate {
  std::mutex mu;
  std::condition_variable cv;
  bool closing = false;
  int running = 0;

  bool enter() {
    std::lock_guard lock(mu);
    if (closing) return false;
    ++running;
    return true;
  }
  void leave() {
    std::lock_guard lock(mu);
    --running;
    cv.notify_all();
  }
  void close() {
    std::unique_lock lock(mu);
    closing = true;
    cv.wait(lock, [&] { return running == 0; });
  }
};

DeviceCore::DeviceCore(const DeviceConfig& config, KeyPair key)
    : config_(config),
      log_(config.log, config.logLevel, config.deviceId),
      key_(std::move(key)),
      gate_(std::make_shared<JobGate>()) {}

DeviceCore::~DeviceCore() {
  shutdown();
  if (state_ != nullptr) {
    std::lock_guard lock(mu_);
    if (newSamples_ != persistedNewSamples_) (void)state_->setCounter(kNewSamples, newSamples_);
  }
}

void DeviceCore::shutdown() {
  closing_ = true;
  gate_->close();
}

std::int64_t DeviceCore::now() const {
  if (config_.clock) return config_.clock();
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string DeviceCore::topic(std::string_view leaf) const {
  return deviceTopic(config_.fleet, config_.deviceId, leaf);
}

std::vector<std::string> DeviceCore::subscriptions() const {
  return {topicStable_, topicCanary_, topicRound_, topicAck_};
}

Result<std::unique_ptr<DeviceCore>> DeviceCore::open(const DeviceConfig& config) {
  EDGEFL_TRY(checkConfig(config));
  auto key = KeyPair::load(config.deviceKeyFile);
  if (!key.ok()) return key.error();
  auto root = loadPublicKey(config.rootPublicKeyFile);
  if (!root.ok()) return root.error();
  std::unique_ptr<DeviceCore> core(new DeviceCore(config, std::move(key.value())));
  core->rootRing_.add(root.value(), Role::ROOT);
  core->cache_ = config.modelCache ? config.modelCache : std::make_shared<ModelCache>();
  core->builder_ =
      std::make_unique<UpdateBuilder>(core->key_, config.fleet, config.deviceId, config.hooks);
  core->topicStable_ = deployTopic(config.fleet, "stable");
  core->topicCanary_ = deployTopic(config.fleet, "canary");
  core->topicRound_ = roundTopic(config.fleet);
  core->topicAck_ = core->topic("ack");
  core->topicUpdate_ = core->topic("update");
  core->topicTelemetry_ = core->topic("telemetry");
  EDGEFL_TRY(core->openStorage());
  return core;
}

Status DeviceCore::openStorage() {
  std::error_code ec;
  fs::create_directories(config_.storageDir, ec);
  if (ec) {
    return makeError(Code::IoError,
                     "cannot create " + config_.storageDir.string() + ": " + ec.message());
  }
  files_ = std::make_unique<ModelFiles>(config_.storageDir / "models", config_.durableWrites,
                                        /*recycle=*/true);
  EDGEFL_TRY(files_->prepare());
  pendingFiles_ =
      std::make_unique<ModelFiles>(config_.storageDir / "pending", config_.durableWrites,
                                   /*recycle=*/true);
  EDGEFL_TRY(pendingFiles_->prepare());
  auto db = DeviceDb::open(config_.storageDir / "device.db", config_.durableWrites);
  if (!db.ok()) return db.error();
  db_ = std::move(db.value());
  state_ = std::make_unique<DeviceState>(*db_, pendingFiles_.get());
  if (config_.sampleStore == SampleStoreKind::Sqlite) {
    auto store = SqliteSampleStore::open(*db_, config_.limits.maxStoredSamples);
    if (!store.ok()) return store.error();
    store_ = std::move(store.value());
  } else {
    store_ = std::make_unique<MemorySampleStore>(config_.limits.maxStoredSamples);
  }

  auto deployments = state_->loadDeployments();
  if (!deployments.ok()) return deployments.error();
  auto counter = [&](const char* name) -> std::uint64_t {
    auto v = state_->counter(name);
    return v.ok() ? v.value() : 0;
  };
  fallbacks_ = counter(kFallbacks);
  healthFailures_ = counter(kHealthCheckFailures);
  telemetrySequence_ = telemetryReserved_ = counter(kTelemetrySequence);
  newSamples_ = persistedNewSamples_ = counter(kNewSamples);
  updatesSent_ = counter(kUpdatesSent);
  lastRound_ = counter(kLastRound);
  {
    auto held = db_->lock();
    Statement st(*db_, "SELECT round FROM rounds");
    for (;;) {
      auto row = st.step();
      if (!row.ok()) return row.error();
      if (!*row) break;
      sentRounds_.insert(static_cast<std::uint64_t>(st.integer(0)));
    }
  }
  std::vector<LostPending> lost;
  auto pending = state_->pendingUpdates(&lost);
  if (!pending.ok()) return pending.error();
  for (auto& p : pending.value()) pending_.push_back(PendingEntry{std::move(p), 0});
  // An update that cannot be read back cannot be resent: say so and drop
  // its row, keep the others.
  if (!lost.empty()) {
    lastError_ = str(lost.size()) + " pending update(s) lost:";
    for (const LostPending& l : lost) {
      lastError_ += " round " + str(l.round) + ": " + l.reason + ";";
      Status dropped = state_->dropPending(l.round);
      if (!dropped.ok()) return dropped;
    }
    log_.error(lastError_);
  }
  // Files no row names: a crash between writing one and its commit, or
  // between a commit that dropped a row and the file's removal.
  state_->removeUnreferencedPendingFiles();

  std::lock_guard lock(mu_);
  deploy_ = std::move(deployments.value());
  const DeploymentState loaded = deploy_;
  // Files no state references: a crash between writing a file and the
  // commit that adopts it, or old deployments whose removal was cut short.
  files_->removeUnless([&](const std::string& name) { return deploy_.references(name); });
  restoreSlots();
  reconcile({}, nullptr);
  deploy_.prune();
  // Only a fallback or a failed model changes the state here; an unchanged
  // one is not rewritten (a commit costs an fsync).
  if (!(deploy_ == loaded)) {
    Status committed = commitDeployments();
    if (!committed.ok()) return committed;
  }
  log_.info("opened: model " +
            (deploy_.activeFile.empty() ? std::string("none") : deploy_.activeFile) + ", " +
            str(store_->size()) + " samples, " + str(pending_.size()) + " pending updates");
  return {};
}

void DeviceCore::setTransport(Transport* transport) {
  std::lock_guard lock(mu_);
  transport_ = transport;
}

// ---------------------------------------------------------------------------
// Model slots

Result<std::shared_ptr<const CachedModel>> DeviceCore::loadStored(const StoredDeployment& stored) {
  auto bytes = files_->read(stored.file, config_.limits.maxMessageBytes);
  if (!bytes.ok()) return bytes.error();
  // The file is the signed envelope as received: check it again (a file
  // changed on disk must not serve), with the delegation judged at the time
  // the deployment was accepted so a model keeps running after its
  // coordinator's delegation expires.
  DeploymentVerifier verifier{rootRing_, config_.fleet, config_.limits, *cache_, &delegations_};
  auto checked = checkDeployment(bytes.value(), stored.channel, stored.acceptedAt, false, verifier);
  if (!checked.ok()) return checked.error();
  if (checked->sequence != stored.sequence || checked->digest != stored.digest) {
    return makeError(Code::BadModel, stored.file + " holds sequence " + str(checked->sequence) +
                                         " digest " + shortHex(checked->digest) +
                                         "; the state says " + str(stored.sequence) + " " +
                                         shortHex(stored.digest));
  }
  return std::move(checked->model);
}

Result<DeviceCore::ModelSlot> DeviceCore::prepareSlot(const StoredDeployment& stored,
                                                      std::shared_ptr<const CachedModel> model) {
  ModelSlot slot;
  slot.meta = stored;
  slot.model = std::move(model);
  auto scorer = Scorer::prepare(slot.model->model, ScorerOptions{1, KernelIsa::Auto});
  if (!scorer.ok()) return scorer.error();
  slot.scorer.emplace(std::move(scorer.value()));
  EDGEFL_TRY(healthCheck(slot.model->model, *slot.scorer));
  return slot;
}

void DeviceCore::markFailed(const std::string& file, const Error& error, std::string_view what) {
  if (StoredDeployment* d = deploy_.find(file)) d->failed = true;
  ++healthFailures_;
  (void)state_->setCounter(kHealthCheckFailures, healthFailures_);
  lastError_ = std::string(what) + " " + file + ": " + error.toString();
  log_.warn(lastError_);
}

void DeviceCore::installActive(ModelSlot slot) {
  const Model& m = slot.model->model;
  monitor_.prepare(m);
  activeOut_.assign(m.outputCount(), 0.0f);
  active_ = std::move(slot);
  labelled_ = correct_ = 0;
  lossSum_ = 0;
  // Shadow results compare against the active model: start them over.
  shadowSamples_ = shadowAgree_ = shadowLabelled_ = 0;
  shadowActiveCorrect_ = shadowCandidateCorrect_ = 0;
}

void DeviceCore::installShadow(std::optional<ModelSlot> slot) {
  shadow_ = std::move(slot);
  shadowOut_.assign(shadow_ ? shadow_->model->model.outputCount() : 0, 0.0f);
  shadowSamples_ = shadowAgree_ = shadowLabelled_ = 0;
  shadowActiveCorrect_ = shadowCandidateCorrect_ = 0;
}

void DeviceCore::restoreSlots() {
  // The active model first; if it no longer loads or fails its health
  // check, the previous one serves instead.
  for (const std::string* file : {&deploy_.activeFile, &deploy_.previousFile}) {
    if (file->empty()) continue;
    const StoredDeployment* stored = deploy_.find(*file);
    if (stored == nullptr) continue;
    Result<ModelSlot> slot = makeError(Code::NotFound, "no state for " + *file);
    auto model = loadStored(*stored);
    if (model.ok()) {
      slot = prepareSlot(*stored, std::move(model.value()));
    } else {
      slot = model.error();
    }
    if (slot.ok()) {
      if (file == &deploy_.previousFile) {
        deploy_.activeFile = deploy_.previousFile;
        deploy_.previousFile.clear();
      }
      std::lock_guard lock(scoreMu_);
      installActive(std::move(slot.value()));
      break;
    }
    markFailed(*file, slot.error(), "cannot restore model");
    if (file == &deploy_.activeFile) {
      ++fallbacks_;
      (void)state_->setCounter(kFallbacks, fallbacks_);
      log_.warn("falling back to the previous model" + (deploy_.previousFile.empty()
                                                            ? std::string(" (none)")
                                                            : " " + deploy_.previousFile));
    }
  }
  if (!active_) {
    deploy_.activeFile.clear();
    deploy_.previousFile.clear();
  }
  if (!deploy_.shadowFile.empty()) {
    const StoredDeployment* stored = deploy_.find(deploy_.shadowFile);
    auto model =
        stored != nullptr
            ? loadStored(*stored)
            : Result<std::shared_ptr<const CachedModel>>(makeError(Code::NotFound, "no state"));
    Result<ModelSlot> slot = model.ok() ? prepareSlot(*stored, std::move(model.value()))
                                        : Result<ModelSlot>(model.error());
    if (slot.ok() && active_) {
      std::lock_guard lock(scoreMu_);
      installShadow(std::move(slot.value()));
    } else {
      if (!slot.ok()) markFailed(deploy_.shadowFile, slot.error(), "cannot restore shadow model");
      deploy_.shadowFile.clear();
    }
  }
}

void DeviceCore::reconcile(const std::string& freshFile, const CheckedDeployment* fresh) {
  const ChannelState& stable = deploy_.channels[channelIndex(Channel::STABLE)];
  const ChannelState& canary = deploy_.channels[channelIndex(Channel::CANARY)];
  const bool member = canary.present && inCanary(canary.salt, canary.percent, config_.deviceId);
  auto usable = [&](const std::string& file) {
    const StoredDeployment* d = deploy_.find(file);
    return d != nullptr && !d->failed;
  };
  auto loadSlot = [&](const std::string& file) -> Result<ModelSlot> {
    const StoredDeployment& stored = *deploy_.find(file);
    if (fresh != nullptr && file == freshFile) return prepareSlot(stored, fresh->model);
    auto model = loadStored(stored);
    if (!model.ok()) return model.error();
    return prepareSlot(stored, std::move(model.value()));
  };

  // Active: a canary member runs the canary's model, everyone else (and a
  // member whose canary model failed) the stable one. Each failure marks
  // the deployment, so the loop ends.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::string desired;
    if (member && usable(canary.activateFile)) {
      desired = canary.activateFile;
    } else if (usable(stable.activateFile)) {
      desired = stable.activateFile;
    }
    if (desired.empty() || desired == deploy_.activeFile) break;
    auto slot = loadSlot(desired);
    if (!slot.ok()) {
      markFailed(desired, slot.error(), "health check failed for");
      continue;
    }
    const StoredDeployment& d = *deploy_.find(desired);
    log_.info("activating " + desired + " (model version " + str(d.modelVersion) + ", digest " +
              shortHex(d.digest) + ")");
    deploy_.previousFile = deploy_.activeFile;
    deploy_.activeFile = desired;
    std::lock_guard lock(scoreMu_);
    installActive(std::move(slot.value()));
    break;
  }

  // Shadow: the member's canary shadow, else a stable shadow deployment.
  std::string desiredShadow;
  if (member && usable(canary.shadowFile)) {
    desiredShadow = canary.shadowFile;
  } else if (usable(stable.shadowFile)) {
    desiredShadow = stable.shadowFile;
  }
  if (desiredShadow == deploy_.shadowFile) return;
  if (desiredShadow.empty() || !active_) {
    deploy_.shadowFile.clear();
    std::lock_guard lock(scoreMu_);
    installShadow(std::nullopt);
    return;
  }
  auto slot = loadSlot(desiredShadow);
  if (slot.ok()) {
    const Model& a = active_->model->model;
    const Model& s = slot->model->model;
    if (a.featureCount() != s.featureCount() || a.outputCount() != s.outputCount()) {
      slot = makeError(Code::ShapeMismatch,
                       "shadow model has " + str(s.featureCount()) + " inputs and " +
                           str(s.outputCount()) + " outputs; the active one " +
                           str(a.featureCount()) + " and " + str(a.outputCount()));
    }
  }
  if (!slot.ok()) {
    markFailed(desiredShadow, slot.error(), "cannot shadow");
    return;
  }
  log_.info("shadowing " + desiredShadow);
  deploy_.shadowFile = desiredShadow;
  std::lock_guard lock(scoreMu_);
  installShadow(std::move(slot.value()));
}

Status DeviceCore::commitDeployments() {
  deploy_.prune();
  Status saved = state_->saveDeployments(deploy_);
  if (!saved.ok()) {
    lastError_ = "cannot save deployment state: " + saved.error().toString();
    log_.error(lastError_);
    return saved;
  }
  // Only after the commit: a crash before it leaves the old state with all
  // of its files. The spare stays for the next deployment's write.
  files_->removeUnless([&](const std::string& name) { return deploy_.references(name); },
                       /*temporaries=*/false);
  return {};
}

// ---------------------------------------------------------------------------
// Messages

Error DeviceCore::refuse(Error error, std::string_view what) {
  const auto code = static_cast<std::size_t>(error.code);
  ++refused_[code < kCodeCount ? code : static_cast<std::size_t>(Code::BadField)];
  lastError_ = std::string(what) + ": " + error.toString();
  log_.warn(lastError_);
  return error;
}

Status DeviceCore::handleMessage(std::string_view topic, ByteView payload) {
  if (closing_) return makeError(Code::NotFound, "device is closing");
  Status result;
  {
    std::lock_guard lock(mu_);
    bytesReceived_ += payload.size();
    if (topic == topicStable_) {
      result = handleDeployment(Channel::STABLE, payload);
    } else if (topic == topicCanary_) {
      result = handleDeployment(Channel::CANARY, payload);
    } else if (topic == topicRound_) {
      result = handleRound(payload);
    } else if (topic == topicAck_) {
      result = handleAck(payload);
    } else {
      result = refuse(makeError(Code::BadTopic, "unexpected topic " + std::string(topic)),
                      "message refused");
    }
  }
  runDeferred();
  return result;
}

Status DeviceCore::handleDeployment(Channel channel, ByteView payload) {
  ChannelState& ch = deploy_.channels[channelIndex(channel)];
  const std::string what = "deployment on " + std::string(channelName(channel)) + " refused";
  if (payload.empty()) {
    // A zero-length retained message clears the channel: "no canary".
    if (channel == Channel::STABLE) {
      return refuse(makeError(Code::Empty, "the stable channel cannot be cleared"), what);
    }
    if (!ch.present) return {};
    log_.info("canary cleared");
    ch.present = false;
    ch.activateFile.clear();
    ch.shadowFile.clear();
    reconcile({}, nullptr);
    return commitDeployments();
  }
  const std::int64_t t = now();
  DeploymentVerifier verifier{rootRing_, config_.fleet, config_.limits, *cache_, &delegations_};
  auto checked = checkDeployment(payload, channel, t, true, verifier);
  if (!checked.ok()) return refuse(checked.error(), what);
  const CheckedDeployment& c = checked.value();
  if (c.sequence == ch.lastSequence) {
    return makeError(Code::Duplicate, "sequence " + str(c.sequence) + " on " +
                                          std::string(channelName(channel)) + " seen before");
  }
  if (c.sequence < ch.lastSequence) {
    // Rollback and freeze protection: an old signed deployment replayed.
    return refuse(makeError(Code::OutOfRange, "sequence " + str(c.sequence) +
                                                  " is not newer than " + str(ch.lastSequence) +
                                                  " on " + std::string(channelName(channel))),
                  what);
  }
  const bool member = channel == Channel::STABLE || inCanary(c.salt, c.percent, config_.deviceId);
  std::string file;
  if (member) {
    file = fileName(channel, c.sequence);
    Status written = files_->write(file, payload);
    // Not recorded as seen: the retained message comes again on reconnect.
    if (!written.ok()) return refuse(written.error(), "cannot store deployment");
  }
  ch.lastSequence = c.sequence;
  ch.present = true;
  ch.percent = c.percent;
  ch.salt = c.salt;
  if (!member) {
    // Not in this canary: nothing from this channel runs here.
    ch.activateFile.clear();
    ch.shadowFile.clear();
  } else {
    StoredDeployment stored;
    stored.file = file;
    stored.channel = channel;
    stored.sequence = c.sequence;
    stored.mode = c.mode;
    stored.modelVersion = c.modelVersion;
    stored.digest = c.digest;
    stored.acceptedAt = t;
    deploy_.files[file] = stored;
    if (c.mode == DeployMode::ACTIVATE) {
      ch.activateFile = file;
      ch.shadowFile.clear();  // a new model replaces whatever was being compared
    } else {
      ch.shadowFile = file;
    }
  }
  log_.info("accepted deployment " + str(c.sequence) + " on " + std::string(channelName(channel)) +
            (c.mode == DeployMode::SHADOW ? " (shadow)" : "") + (member ? "" : " (not a member)") +
            (c.isRollback ? " (rollback)" : "") + ", model version " + str(c.modelVersion));
  reconcile(file, &c);
  Status committed = commitDeployments();
  maybeStartTraining();
  if (!committed.ok()) return committed;
  if (member && deploy_.find(file) != nullptr && deploy_.find(file)->failed) {
    return makeError(Code::BadModel, "deployment " + str(c.sequence) + " failed its health check");
  }
  return {};
}

Status DeviceCore::handleRound(ByteView payload) {
  const std::string what = "round task refused";
  if (payload.empty()) {
    round_.reset();
    roundState_ = "no round task";
    return {};
  }
  VerifyOptions options;
  options.fleet = config_.fleet;
  options.now = now();
  options.limits.maxBytes = config_.limits.maxMessageBytes;
  options.delegations = &delegations_;
  // decodeVerified's steps, with the selection read in between: a round
  // task names the devices it selects (or the fraction their ids are
  // hashed against), and one that does not select this device is set
  // aside before its signature is checked. Nothing in it is acted on, so a
  // forged one changes nothing either, and the devices a round leaves out
  // (most of a large fleet) do not spend a signature check on it. Only the
  // status names its round. The exception is a newer task while this
  // device holds an open round that selects it and that it has not started
  // on: verified, that task ends the round here, as it always did.
  auto envelope = parseEnvelope(payload, options.limits);
  if (!envelope.ok()) return refuse(envelope.error(), what);
  const auto body = envelope->root().getPayload();
  auto task = parseMessage<wire::RoundTask>(ByteView(body.begin(), body.size()), options.limits);
  Result<RoundPlan> plan =
      task.ok() ? roundPlanFromWire(task->root()) : Result<RoundPlan>(task.error());
  const bool holdsUnstartedRound =
      round_ && round_->state == wire::RoundState::OPEN && selectedFor(*round_, config_.deviceId) &&
      trainingRounds_.count(round_->round) == 0 && sentRounds_.count(round_->round) == 0;
  if (plan.ok() && envelope->root().getKind() == kindOf<wire::RoundTask>() &&
      plan->fleet == config_.fleet && !selectedFor(*plan, config_.deviceId) &&
      !(holdsUnstartedRound && plan->round > round_->round)) {
    setAsideRound_ = std::max(setAsideRound_, plan->round);
    if (round_) {
      maybeStartTraining();
    } else {
      roundState_ = "NotSelected: round " + str(setAsideRound_);
    }
    return {};
  }
  auto signer = verifyEnvelope(envelope->root(), kindOf<wire::RoundTask>(), rootRing_, options);
  if (!signer.ok()) return refuse(signer.error(), what);
  if (!plan.ok()) return refuse(plan.error(), what);
  if (plan->fleet != config_.fleet) {
    return refuse(makeError(Code::WrongFleet, "round task for fleet '" + plan->fleet + "'"), what);
  }
  if (round_ && plan->round < round_->round) {
    return refuse(
        makeError(Code::RoundClosed, "round " + str(plan->round) +
                                         " is older than the current round " + str(round_->round)),
        what);
  }
  if (round_ && plan->round == round_->round && plan->state == round_->state) {
    return makeError(Code::Duplicate, "round task " + str(plan->round) + " seen before");
  }
  log_.info("round task " + str(plan->round) + " (" +
            (plan->state == wire::RoundState::OPEN ? "open" : "not open") + ", base " +
            shortHex(plan->baseDigest) + ")");
  round_ = std::move(plan.value());
  maybeStartTraining();
  return {};
}

Status DeviceCore::handleAck(ByteView payload) {
  const std::string what = "ack refused";
  VerifyOptions options;
  options.fleet = config_.fleet;
  options.now = now();
  options.limits.maxBytes = config_.limits.maxMessageBytes;
  options.delegations = &delegations_;
  auto verified = decodeVerified<wire::Ack>(payload, rootRing_, options);
  if (!verified.ok()) return refuse(verified.error(), what);
  auto ack = verified->root();
  if (std::string_view(ack.getFleet().cStr(), ack.getFleet().size()) != config_.fleet) {
    return refuse(
        makeError(Code::WrongFleet, "ack for fleet '" + std::string(ack.getFleet()) + "'"), what);
  }
  if (std::string_view(ack.getDeviceId().cStr(), ack.getDeviceId().size()) != config_.deviceId) {
    return refuse(
        makeError(Code::Impersonation, "ack for device '" + std::string(ack.getDeviceId()) + "'"),
        what);
  }
  const std::uint64_t round = ack.getRound();
  const std::string verdict(verdictName(ack.getVerdict()));
  const std::string reason = ack.getReason();
  // Overloaded and rate-limited mean "try again later": keep it pending.
  const bool keep = ack.getVerdict() == wire::Verdict::REJECTED &&
                    (reason == codeName(Code::Overloaded) || reason == codeName(Code::RateLimited));
  auto it = std::find_if(pending_.begin(), pending_.end(),
                         [&](const PendingEntry& e) { return e.update.round == round; });
  if (it != pending_.end() && ack.getUpdateDigest().size() == kDigestBytes &&
      !std::equal(it->update.payloadDigest.begin(), it->update.payloadDigest.end(),
                  ack.getUpdateDigest().begin())) {
    log_.warn("ack for round " + str(round) + " names another update than the one pending");
  }
  Status recorded = state_->recordAck(round, verdict, reason, keep);
  if (!recorded.ok()) return refuse(recorded.error(), "cannot record ack");
  if (!keep && it != pending_.end()) pending_.erase(it);
  lastAckRound_ = round;
  lastAckVerdict_ = verdict;
  lastAckReason_ = reason;
  log_.info("ack for round " + str(round) + ": " + verdict + (reason.empty() ? "" : " " + reason));
  return {};
}

// ---------------------------------------------------------------------------
// Rounds and updates

void DeviceCore::maybeStartTraining() {
  if (!round_ || closing_) return;
  const RoundPlan& plan = *round_;
  const std::int64_t t = now();
  // A later round set aside (it does not select this device) is what the
  // status names once this one is over.
  const bool laterSetAside = setAsideRound_ > plan.round;
  if (plan.state != wire::RoundState::OPEN) {
    roundState_ = laterSetAside ? "NotSelected: round " + str(setAsideRound_)
                                : "RoundClosed: round " + str(plan.round) + " is not open";
    return;
  }
  if (plan.deadline != 0 && t >= plan.deadline) {
    roundState_ = laterSetAside ? "NotSelected: round " + str(setAsideRound_)
                                : "RoundClosed: round " + str(plan.round) + " deadline passed";
    return;
  }
  if (trainingRounds_.count(plan.round) > 0) {
    roundState_ = "training";
    return;
  }
  if (sentRounds_.count(plan.round) > 0) {
    roundState_ = "sent";
    return;
  }
  if (!selectedFor(plan, config_.deviceId)) {
    roundState_ = "NotSelected: round " + str(plan.round);
    return;
  }
  std::shared_ptr<const CachedModel> base;
  bool onStable = false;
  {
    std::lock_guard lock(scoreMu_);
    if (active_) {
      base = active_->model;
      onStable = active_->meta.channel == Channel::STABLE;
    }
  }
  if (!base) {
    roundState_ = "NotFound: no active model";
    return;
  }
  // Synchronous rounds aggregate deltas against one base. A buffered
  // asynchronous round takes updates on recent stable models too (the
  // coordinator judges the staleness), so a device running a stable model
  // trains on it; one running a canary waits for the decision.
  const bool asyncOnStable = plan.mode == wire::RoundMode::ASYNCHRONOUS && onStable;
  if (base->parameterDigest != plan.baseDigest && !asyncOnStable) {
    roundState_ = "BaseMismatch: active " + shortHex(base->parameterDigest) + ", round base " +
                  shortHex(plan.baseDigest);
    return;
  }
  const std::uint64_t samples = store_->count(base->model.featureCount());
  const std::uint64_t needed = std::max<std::uint64_t>(1, plan.minSamples);
  if (samples < needed) {
    roundState_ = "not enough samples: " + str(samples) + " of " + str(needed);
    return;
  }
  trainingRounds_.insert(plan.round);
  roundState_ = "training";
  log_.info("training for round " + str(plan.round) + " on " + str(samples) + " samples");
  schedule([this, plan, base] { runTraining(plan, base); });
}

void DeviceCore::runTraining(const RoundPlan& plan, std::shared_ptr<const CachedModel> base) {
  const Model& model = base->model;
  auto data = store_->snapshot(model.featureCount());
  Result<BuiltUpdate> built = makeError(Code::NotFound, "not built");
  std::optional<Residual> residual;
  if (data.ok()) {
    Dataset& d = data.value();
    d.classCount = model.outputCount();
    if (model.task() == Task::Classification) {
      d.targets.clear();
    } else {
      d.labels.clear();
    }
    const bool topK = plan.delta.encoding == wire::DeltaEncoding::TOP_K;
    if (topK) {
      // Error feedback carries over rounds for the same architecture: what
      // one round held back is added to the next round's delta.
      auto stored = state_->residual(model.arch());
      residual.emplace();
      residual->arch = model.arch();
      if (stored.ok() && stored->has_value() &&
          stored->value().values.size() == model.parameterCount()) {
        residual = std::move(*stored.value());
      } else {
        residual->values.assign(model.parameterCount(), 0.0f);
      }
      residual->baseDigest = plan.baseDigest;
    }
    std::mt19937_64 rng(std::random_device{}());
    built = builder_->build(model, d, plan,
                            residual ? std::span<float>(residual->values) : std::span<float>(), rng,
                            now(), &base->parameterDigest);
  } else {
    built = data.error();
  }

  std::lock_guard lock(mu_);
  trainingRounds_.erase(plan.round);
  if (!built.ok()) {
    roundState_ = "failed: " + built.error().toString();
    lastError_ = "round " + str(plan.round) + " training failed: " + built.error().toString();
    log_.warn(lastError_);
    return;
  }
  PendingEntry entry;
  entry.update.round = plan.round;
  entry.update.envelope = std::move(built->envelope);
  entry.update.payloadDigest = built->payloadDigest;
  entry.update.deadline = plan.deadline;
  entry.update.createdAt = now();
  std::uint32_t dropped = 0;
  Status recorded = state_->recordBuiltUpdate(entry.update, residual ? &*residual : nullptr,
                                              config_.limits.maxPendingUpdates, &dropped);
  if (!recorded.ok()) {
    roundState_ = "failed: " + recorded.error().toString();
    lastError_ =
        "cannot store the update for round " + str(plan.round) + ": " + recorded.error().toString();
    log_.error(lastError_);
    return;
  }
  sentRounds_.insert(plan.round);
  ++updatesSent_;
  lastRound_ = std::max(lastRound_, plan.round);
  newSamples_ = persistedNewSamples_ = 0;  // reset in the same transaction
  roundState_ = "sent";
  log_.info("update for round " + str(plan.round) + ": " + str(built->sampleCount) +
            " samples, loss " + std::to_string(built->before.loss) + " -> " +
            std::to_string(built->after.loss) + ", " + str(entry.update.envelope.size()) +
            " bytes");
  pending_.push_back(std::move(entry));
  // The store keeps the newest maxPendingUpdates; so does the mirror.
  std::sort(pending_.begin(), pending_.end(), [](const PendingEntry& a, const PendingEntry& b) {
    return a.update.round < b.update.round;
  });
  while (pending_.size() > config_.limits.maxPendingUpdates) pending_.erase(pending_.begin());
  if (dropped > 0) log_.warn("dropped " + str(dropped) + " unacknowledged updates over the limit");
  for (PendingEntry& e : pending_) {
    if (e.update.round == plan.round) publishPending(e);
  }
}

bool DeviceCore::sendLocked(const std::string& topic, ByteView payload) {
  if (!transport_->publish(topic, payload, false)) return false;
  bytesSent_ += payload.size();
  return true;
}

void DeviceCore::publishPending(PendingEntry& entry) {
  if (transport_ == nullptr || !transport_->connected()) return;
  if (sendLocked(topicUpdate_, entry.update.envelope)) entry.lastSent = now();
}

Status DeviceCore::publishUpdate(ByteView bytes) {
  std::lock_guard lock(mu_);
  if (transport_ == nullptr || !transport_->connected()) {
    return makeError(Code::NotFound, "not connected");
  }
  if (!sendLocked(topicUpdate_, bytes)) {
    return makeError(Code::IoError, "publish to " + topicUpdate_ + " failed");
  }
  return {};
}

void DeviceCore::schedule(std::function<void()> job) {
  // Handed out by runDeferred() once the state lock is released: an
  // executor that runs jobs inline must not find the lock held.
  deferred_.push_back(std::move(job));
}

void DeviceCore::runDeferred() {
  for (;;) {
    std::vector<std::function<void()>> jobs;
    {
      std::lock_guard lock(mu_);
      jobs.swap(deferred_);
    }
    if (jobs.empty()) return;
    for (auto& job : jobs) {
      if (config_.executor) {
        config_.executor([gate = gate_, job = std::move(job)] {
          if (!gate->enter()) return;
          job();
          gate->leave();
        });
        continue;
      }
      // No executor: on the caller's thread (deterministic for tests and
      // single-threaded firmware).
      if (!gate_->enter()) return;
      job();
      gate_->leave();
    }
  }
}

void DeviceCore::handleConnected() {
  if (closing_) return;
  std::lock_guard lock(mu_);
  for (PendingEntry& e : pending_) publishPending(e);
  if (config_.limits.telemetryInterval.count() > 0) nextTelemetry_ = 0;  // due now
}

void DeviceCore::tick() {
  if (closing_) return;
  {
    std::lock_guard lock(mu_);
    const std::int64_t t = now();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->update.deadline != 0 && t > it->update.deadline) {
        log_.info("round " + str(it->update.round) + " closed without an ack; update dropped");
        (void)state_->dropPending(it->update.round);
        it = pending_.erase(it);
        continue;
      }
      if (t - it->lastSent >= config_.limits.resendInterval.count()) publishPending(*it);
      ++it;
    }
    const auto interval = config_.limits.telemetryInterval.count();
    if (interval > 0 && transport_ != nullptr && transport_->connected() && t >= nextTelemetry_) {
      sendTelemetryLocked();
      nextTelemetry_ = t + interval;
    }
  }
  runDeferred();
}

// ---------------------------------------------------------------------------
// Scoring and observing

Error DeviceCore::sampleError(const SampleCheck& check) const {
  switch (check.code) {
    case Code::ShapeMismatch:
      return makeError(Code::ShapeMismatch, "sample has " + str(check.feature) +
                                                " features; the model takes " +
                                                str(monitor_.featureCount()));
    case Code::NonFinite:
      return makeError(Code::NonFinite,
                       "feature " + str(check.feature) + " is " + std::to_string(check.value));
    default:
      return makeError(check.code, "feature " + str(check.feature) + " = " +
                                       std::to_string(check.value) + " is outside its range");
  }
}

Status DeviceCore::score(std::span<const float> x, std::span<float> out) {
  const auto start = std::chrono::steady_clock::now();
  std::lock_guard lock(scoreMu_);
  if (!active_) return makeError(Code::NotFound, "no active model");
  const std::size_t outputs = activeOut_.size();
  if (out.size() < outputs) {
    return makeError(Code::InvalidArgument,
                     "output buffer holds " + str(out.size()) + "; need " + str(outputs));
  }
  const SampleCheck check = monitor_.check(x);
  if (!check.ok()) {
    ++rejected_[static_cast<std::size_t>(check.code)];
    return sampleError(check);
  }
  const std::span<float> result = out.first(outputs);
  active_->scorer->score(x, result);
  if (shadow_) {
    shadow_->scorer->score(x, shadowOut_);
    ++shadowSamples_;
    shadowAgree_ += argmax(result) == argmax(shadowOut_) ? 1 : 0;
  }
  monitor_.add(x);
  ++scored_;
  latency_.record(
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  return {};
}

Status DeviceCore::scoreBatch(std::span<const float> xs, std::span<float> out) {
  std::lock_guard lock(scoreMu_);
  if (!active_) return makeError(Code::NotFound, "no active model");
  const std::size_t features = monitor_.featureCount();
  const std::size_t outputs = activeOut_.size();
  if (features == 0 || xs.size() % features != 0) {
    ++rejected_[static_cast<std::size_t>(Code::ShapeMismatch)];
    return makeError(Code::ShapeMismatch, "batch of " + str(xs.size()) +
                                              " values is not a multiple of " + str(features));
  }
  const std::size_t n = xs.size() / features;
  if (out.size() < n * outputs) {
    return makeError(Code::InvalidArgument,
                     "output buffer holds " + str(out.size()) + "; need " + str(n * outputs));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const SampleCheck check = monitor_.check(xs.subspan(i * features, features));
    if (!check.ok()) {
      ++rejected_[static_cast<std::size_t>(check.code)];
      Error e = sampleError(check);
      e.detail = "row " + str(i) + ": " + e.detail;
      return e;
    }
  }
  if (!active_->batchScorer) {
    auto scorer = Scorer::prepare(active_->model->model,
                                  ScorerOptions{config_.limits.maxBatch, KernelIsa::Auto});
    if (!scorer.ok()) return scorer.error();
    active_->batchScorer.emplace(std::move(scorer.value()));
  }
  const std::size_t step = config_.limits.maxBatch;
  for (std::size_t i = 0; i < n; i += step) {
    const std::size_t m = std::min(step, n - i);
    active_->batchScorer->scoreBatch(xs.subspan(i * features, m * features),
                                     out.subspan(i * outputs, m * outputs));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto row = xs.subspan(i * features, features);
    if (shadow_) {
      shadow_->scorer->score(row, shadowOut_);
      ++shadowSamples_;
      shadowAgree_ += argmax(out.subspan(i * outputs, outputs)) == argmax(shadowOut_) ? 1 : 0;
    }
    monitor_.add(row);
  }
  scored_ += n;
  return {};
}

Status DeviceCore::observeChecked(std::span<const float> x, std::int32_t label, float target,
                                  bool regression) {
  std::lock_guard lock(scoreMu_);
  if (!active_) {
    return makeError(Code::NotFound, "no active model to validate the sample against");
  }
  const Model& m = active_->model->model;
  const bool isRegression = m.task() == Task::Regression;
  if (regression != isRegression) {
    return makeError(Code::InvalidArgument, std::string("the active model is a ") +
                                                std::string(taskName(m.task())) + " model; use " +
                                                (isRegression ? "observeTarget" : "observe"));
  }
  const SampleCheck check = monitor_.check(x);
  if (!check.ok()) {
    ++rejected_[static_cast<std::size_t>(check.code)];
    return sampleError(check);
  }
  if (!regression && (label < 0 || static_cast<std::uint32_t>(label) >= m.outputCount())) {
    ++rejected_[static_cast<std::size_t>(Code::OutOfRange)];
    return makeError(Code::OutOfRange, "label " + std::to_string(label) + " outside [0, " +
                                           str(m.outputCount()) + ")");
  }
  if (regression && (!std::isfinite(target) || m.outputCount() != 1)) {
    ++rejected_[static_cast<std::size_t>(!std::isfinite(target) ? Code::NonFinite
                                                                : Code::ShapeMismatch)];
    return makeError(!std::isfinite(target) ? Code::NonFinite : Code::ShapeMismatch,
                     "target " + std::to_string(target) + " for a model with " +
                         str(m.outputCount()) + " outputs");
  }
  // Score before storing: the prequential accuracy of the model in service.
  active_->scorer->score(x, activeOut_);
  ++labelled_;
  if (regression) {
    const double e = activeOut_[0] - target;
    lossSum_ += e * e;
  } else {
    const auto y = static_cast<std::size_t>(label);
    lossSum_ += -std::log(std::max(static_cast<double>(activeOut_[y]), 1e-7));
    correct_ += argmax(activeOut_) == y ? 1 : 0;
  }
  if (shadow_ && !regression) {
    shadow_->scorer->score(x, shadowOut_);
    const auto y = static_cast<std::size_t>(label);
    ++shadowLabelled_;
    shadowActiveCorrect_ += argmax(activeOut_) == y ? 1 : 0;
    shadowCandidateCorrect_ += argmax(shadowOut_) == y ? 1 : 0;
  }
  monitor_.add(x);
  ++observed_;
  return {};
}

Status DeviceCore::observe(std::span<const float> x, std::int32_t label) {
  EDGEFL_TRY(observeChecked(x, label, 0.0f, false));
  Status stored = store_->add(x, label, 0.0f);
  {
    std::lock_guard lock(mu_);
    if (!stored.ok()) {
      lastError_ = "cannot store sample: " + stored.error().toString();
      return stored;
    }
    ++newSamples_;
    maybeStartTraining();
  }
  runDeferred();
  return {};
}

Status DeviceCore::observeTarget(std::span<const float> x, float target) {
  EDGEFL_TRY(observeChecked(x, 0, target, true));
  Status stored = store_->add(x, 0, target);
  {
    std::lock_guard lock(mu_);
    if (!stored.ok()) {
      lastError_ = "cannot store sample: " + stored.error().toString();
      return stored;
    }
    ++newSamples_;
    maybeStartTraining();
  }
  runDeferred();
  return {};
}

std::uint32_t DeviceCore::inputCount() const {
  std::lock_guard lock(scoreMu_);
  return active_ ? active_->model->model.featureCount() : 0;
}

std::uint32_t DeviceCore::outputCount() const {
  std::lock_guard lock(scoreMu_);
  return active_ ? active_->model->model.outputCount() : 0;
}

std::vector<FeatureStatistics> DeviceCore::featureStatistics() const {
  std::lock_guard lock(scoreMu_);
  return monitor_.featureStatistics();
}

// ---------------------------------------------------------------------------
// Status and telemetry

DeviceStatus DeviceCore::status() const {
  std::lock_guard lock(mu_);
  return statusLocked();
}

DeviceStatus DeviceCore::statusLocked() const {
  DeviceStatus s;
  s.connected = transport_ != nullptr && transport_->connected();
  const ChannelState& stable = deploy_.channels[channelIndex(Channel::STABLE)];
  const ChannelState& canary = deploy_.channels[channelIndex(Channel::CANARY)];
  s.stableSequence = stable.lastSequence;
  s.canarySequence = canary.lastSequence;
  s.canaryPresent = canary.present;
  s.canaryMember = canary.present && inCanary(canary.salt, canary.percent, config_.deviceId);
  s.refused = total(refused_);
  s.refusedByReason = reasonCounts(refused_);
  s.fallbacks = static_cast<std::uint32_t>(fallbacks_);
  s.healthCheckFailures = static_cast<std::uint32_t>(healthFailures_);
  s.lastError = lastError_;
  s.samplesStored = store_->size();
  s.storageBytes = db_->fileBytes() + files_->bytesUsed() + pendingFiles_->bytesUsed() +
                   (config_.sampleStore == SampleStoreKind::Memory ? store_->bytesUsed() : 0);
  s.newSamples = newSamples_;
  s.pendingUpdates = static_cast<std::uint32_t>(pending_.size());
  s.updatesSent = updatesSent_;
  s.lastRound = lastRound_;
  s.roundState = roundState_;
  s.lastAckRound = lastAckRound_;
  s.lastAckVerdict = lastAckVerdict_;
  s.lastAckReason = lastAckReason_;
  s.telemetrySent = telemetrySent_;
  s.bytesSent = bytesSent_;
  s.bytesReceived = bytesReceived_;

  std::lock_guard lock(scoreMu_);
  if (active_) {
    const Model& m = active_->model->model;
    s.modelLoaded = true;
    s.activeVersion = active_->meta.modelVersion;
    s.activeDigest = toHex(active_->model->parameterDigest);
    s.activeChannel = std::string(channelName(active_->meta.channel));
    s.activeSequence = active_->meta.sequence;
    s.inputCount = m.featureCount();
    s.outputCount = m.outputCount();
  }
  if (shadow_) s.shadowVersion = shadow_->meta.modelVersion;
  s.scored = scored_;
  s.observed = observed_;
  s.rejected = total(rejected_);
  s.rejectedByReason = reasonCounts(rejected_);
  const DriftSummary drift = monitor_.drift();
  s.drift.samples = drift.samples;
  s.drift.psiMax = drift.psiMax;
  s.drift.psiMean = drift.psiMean;
  s.drift.worstFeature = drift.worstFeature;
  s.local.labelled = labelled_;
  if (labelled_ > 0) {
    s.local.accuracy = static_cast<float>(static_cast<double>(correct_) / labelled_);
    s.local.loss = static_cast<float>(lossSum_ / labelled_);
  }
  s.shadow.samples = shadowSamples_;
  if (shadowSamples_ > 0) {
    s.shadow.agreement = static_cast<float>(static_cast<double>(shadowAgree_) / shadowSamples_);
  }
  s.shadow.labelled = shadowLabelled_;
  if (shadowLabelled_ > 0) {
    s.shadow.activeAccuracy =
        static_cast<float>(static_cast<double>(shadowActiveCorrect_) / shadowLabelled_);
    s.shadow.candidateAccuracy =
        static_cast<float>(static_cast<double>(shadowCandidateCorrect_) / shadowLabelled_);
  }
  return s;
}

Bytes DeviceCore::buildTelemetryLocked() {
  TelemetryContext context;
  context.fleet = config_.fleet;
  context.deviceId = config_.deviceId;
  context.sequence = ++telemetrySequence_;
  context.timestamp = now();
  const DeviceStatus s = statusLocked();
  std::array<std::uint64_t, LatencyHistogram::kBounds + 1> counts{};
  {
    std::lock_guard scoring(scoreMu_);
    if (active_) {
      context.activeDigest = active_->model->parameterDigest;
      context.hasActiveDigest = true;
    }
    std::copy(latency_.counts().begin(), latency_.counts().end(), counts.begin());
  }
  context.latencyBoundsMicros = LatencyHistogram::kBoundsMicros;
  context.latencyCounts = counts;
  // A sequence that went backwards after a restart would look like a
  // replay to the coordinator. What is persisted is a bound reserved ahead
  // (a transaction per block of messages, not per message); a restart
  // continues above it, leaving a gap.
  if (telemetrySequence_ > telemetryReserved_) {
    const std::uint64_t reserve = telemetrySequence_ + kTelemetrySequenceBlock - 1;
    Status saved = state_->setCounter(kTelemetrySequence, reserve);
    if (saved.ok()) {
      telemetryReserved_ = reserve;
    } else {
      log_.warn("cannot persist the telemetry sequence: " + saved.error().toString());
    }
  }
  if (newSamples_ != persistedNewSamples_ && state_->setCounter(kNewSamples, newSamples_).ok()) {
    persistedNewSamples_ = newSamples_;
  }
  return seal(Kind::TELEMETRY, telemetryPayload(context, s), key_);
}

Result<Bytes> DeviceCore::telemetryEnvelope() {
  std::lock_guard lock(mu_);
  return buildTelemetryLocked();
}

void DeviceCore::sendTelemetryLocked() {
  const Bytes envelope = buildTelemetryLocked();
  if (transport_ != nullptr && sendLocked(topicTelemetry_, envelope)) {
    ++telemetrySent_;
  }
}

Status DeviceCore::sendTelemetry() {
  std::lock_guard lock(mu_);
  if (transport_ == nullptr || !transport_->connected()) {
    return makeError(Code::NotFound, "not connected");
  }
  const std::uint64_t before = telemetrySent_;
  sendTelemetryLocked();
  if (telemetrySent_ == before) return makeError(Code::IoError, "telemetry publish failed");
  return {};
}

}  // namespace edgefl::device
