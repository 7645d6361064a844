#pragma once
// The device runtime without a network: model slots, scoring, input
// checks and drift, the sample store, deployments, rounds and updates,
// telemetry. It works on bytes: messages come in through handleMessage()
// and go out through a Transport, so firmware with its own MQTT stack can
// embed the core alone (edgefl::device_core); edgefl::Device adds the
// libmosquitto transport.
//
// Threads: every public function may be called from any thread. Scoring
// takes only the scoring lock (never held across I/O); message handling,
// timers and training results are serialized by the state lock. Lock
// order: state -> scoring -> database.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edgefl/device/deployment_check.hpp"
#include "edgefl/device/device.hpp"
#include "edgefl/device/device_db.hpp"
#include "edgefl/device/device_state.hpp"
#include "edgefl/device/input_monitor.hpp"
#include "edgefl/device/logger.hpp"
#include "edgefl/device/model_cache.hpp"
#include "edgefl/device/model_files.hpp"
#include "edgefl/device/sample_store.hpp"
#include "edgefl/device/update_builder.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/model_scorer.hpp"

namespace edgefl::device {

// How the core sends. Implementations must be thread-safe and must not
// call back into the core from publish().
class Transport {
 public:
  virtual ~Transport() = default;
  // Queues a QoS 1 message; false when it could not even be queued.
  virtual bool publish(const std::string& topic, ByteView payload, bool retain) = 0;
  virtual bool connected() const = 0;
};

// Number of edgefl::Code values this build knows (for per-reason counters).
inline constexpr std::size_t kCodeCount = static_cast<std::size_t>(Code::RateLimited) + 1;

class DeviceCore {
 public:
  // Checks the configuration (BadConfig), loads the keys (BadKeyFile,
  // IoError), opens <storageDir>/device.db and the sample store, restores
  // the active model (a model that no longer loads or passes its health
  // check falls back to the previous one; counted in fallbacks), and
  // restores pending updates. The transport fields of `config` are ignored.
  static Result<std::unique_ptr<DeviceCore>> open(const DeviceConfig& config);
  ~DeviceCore();
  DeviceCore(const DeviceCore&) = delete;
  DeviceCore& operator=(const DeviceCore&) = delete;

  // The transport must outlive its use: set it to null before destroying it.
  void setTransport(Transport* transport);
  // Stops taking messages and starting jobs, and waits for running jobs.
  void shutdown();

  // A message from the broker. Returns why it was refused (also counted in
  // the status and logged), OK when it was taken, or Duplicate for a
  // retained message seen before (not counted: brokers redeliver them on
  // every subscribe).
  Status handleMessage(std::string_view topic, ByteView payload);
  // The transport (re)connected: pending updates are resent, telemetry due.
  void handleConnected();
  // Timers: telemetry, resends, expiry of pending updates. Call often
  // (every 100 ms-1 s); it does nothing when nothing is due.
  void tick();

  // See edgefl::Device.
  Status score(std::span<const float> x, std::span<float> out);
  Status scoreBatch(std::span<const float> xs, std::span<float> out);
  Status observe(std::span<const float> x, std::int32_t label);
  Status observeTarget(std::span<const float> x, float target);
  DeviceStatus status() const;
  std::uint32_t inputCount() const;
  std::uint32_t outputCount() const;
  std::vector<FeatureStatistics> featureStatistics() const;
  Status sendTelemetry();
  Status publishUpdate(ByteView bytes);
  // Signed telemetry as it would be sent now (advances the sequence).
  Result<Bytes> telemetryEnvelope();

  const std::string& deviceId() const { return config_.deviceId; }
  const std::string& fleet() const { return config_.fleet; }
  const Logger& logger() const { return log_; }
  const KeyPair& key() const { return key_; }
  std::string topic(std::string_view leaf) const;  // this device's topic
  std::vector<std::string> subscriptions() const;  // QoS 1, every connect

 private:
  struct ModelSlot {
    StoredDeployment meta;
    std::shared_ptr<const CachedModel> model;
    std::optional<Scorer> scorer;       // batch 1
    std::optional<Scorer> batchScorer;  // limits.maxBatch, made on first batch call
  };
  struct PendingEntry {
    PendingUpdate update;
    std::int64_t lastSent = 0;
  };
  struct JobGate;

  explicit DeviceCore(const DeviceConfig& config, KeyPair key);
  Status openStorage();
  std::int64_t now() const;

  // State lock held.
  Status handleDeployment(Channel channel, ByteView payload);
  Status handleRound(ByteView payload);
  Status handleAck(ByteView payload);
  Error refuse(Error error, std::string_view what);
  Result<std::shared_ptr<const CachedModel>> loadStored(const StoredDeployment& stored);
  Result<ModelSlot> prepareSlot(const StoredDeployment& stored,
                                std::shared_ptr<const CachedModel> model);
  void markFailed(const std::string& file, const Error& error, std::string_view what);
  // Brings the active and shadow models in line with the channels;
  // `fresh` is a deployment just checked (its model need not be reloaded).
  void reconcile(const std::string& freshFile, const CheckedDeployment* fresh);
  Status commitDeployments();
  void restoreSlots();
  void maybeStartTraining();
  void runTraining(const RoundPlan& plan, std::shared_ptr<const CachedModel> base);
  // Publishes (QoS 1, not retained) through the transport and counts the
  // bytes; false when the transport could not queue it.
  bool sendLocked(const std::string& topic, ByteView payload);
  void publishPending(PendingEntry& entry);
  Bytes buildTelemetryLocked();
  void sendTelemetryLocked();
  DeviceStatus statusLocked() const;
  void schedule(std::function<void()> job);
  void runDeferred();

  // Scoring lock held.
  void installActive(ModelSlot slot);
  void installShadow(std::optional<ModelSlot> slot);
  Error sampleError(const SampleCheck& check) const;
  Status observeChecked(std::span<const float> x, std::int32_t label, float target,
                        bool regression);

  DeviceConfig config_;
  Logger log_;
  KeyPair key_;
  Keyring rootRing_;
  // The coordinator's delegation, verified once rather than with every
  // round task, ack and deployment it signs.
  DelegationCache delegations_;
  std::unique_ptr<DeviceDb> db_;
  std::unique_ptr<DeviceState> state_;
  std::unique_ptr<SampleStore> store_;
  std::unique_ptr<ModelFiles> files_;
  std::unique_ptr<ModelFiles> pendingFiles_;  // envelopes of pending updates
  std::shared_ptr<ModelCache> cache_;
  std::unique_ptr<UpdateBuilder> builder_;
  std::string topicStable_, topicCanary_, topicRound_, topicAck_;
  std::string topicUpdate_, topicTelemetry_;
  std::shared_ptr<JobGate> gate_;
  std::atomic<bool> closing_{false};

  // State lock.
  mutable std::mutex mu_;
  Transport* transport_ = nullptr;
  DeploymentState deploy_;
  std::optional<RoundPlan> round_;
  std::set<std::uint64_t> sentRounds_;
  std::set<std::uint64_t> trainingRounds_;
  std::string roundState_ = "no round task";
  // The latest round whose task did not select this device, set aside
  // unverified (0: none). Only the status names it; nothing acts on it.
  std::uint64_t setAsideRound_ = 0;
  std::vector<PendingEntry> pending_;
  std::vector<std::function<void()>> deferred_;
  std::array<std::uint64_t, kCodeCount> refused_{};
  std::string lastError_;
  std::uint64_t fallbacks_ = 0;
  std::uint64_t healthFailures_ = 0;
  std::uint64_t telemetrySequence_ = 0;
  std::uint64_t telemetryReserved_ = 0;  // persisted bound of the sequences sent
  std::uint64_t telemetrySent_ = 0;
  // Message payload bytes through the transport since open (MQTT headers
  // and the connection's own state messages not included).
  std::uint64_t bytesSent_ = 0;
  std::uint64_t bytesReceived_ = 0;
  std::int64_t nextTelemetry_ = 0;
  std::uint64_t updatesSent_ = 0;
  std::uint64_t lastRound_ = 0;
  std::uint64_t newSamples_ = 0;  // persisted lazily: it is informational
  std::uint64_t persistedNewSamples_ = 0;
  std::uint64_t lastAckRound_ = 0;
  std::string lastAckVerdict_;
  std::string lastAckReason_;

  // Scoring lock.
  mutable std::mutex scoreMu_;
  std::optional<ModelSlot> active_;
  std::optional<ModelSlot> shadow_;
  InputMonitor monitor_;
  LatencyHistogram latency_;
  std::array<std::uint64_t, kCodeCount> rejected_{};
  std::vector<float> activeOut_;  // scratch, outputCount
  std::vector<float> shadowOut_;
  std::uint64_t scored_ = 0;
  std::uint64_t observed_ = 0;
  std::uint64_t labelled_ = 0;  // since the active model was installed
  std::uint64_t correct_ = 0;
  double lossSum_ = 0;
  std::uint64_t shadowSamples_ = 0;
  std::uint64_t shadowAgree_ = 0;
  std::uint64_t shadowLabelled_ = 0;
  std::uint64_t shadowActiveCorrect_ = 0;
  std::uint64_t shadowCandidateCorrect_ = 0;
};

}  // namespace edgefl::device
