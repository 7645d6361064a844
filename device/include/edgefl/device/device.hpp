#pragma once
// edgefl::Device — the on-device runtime, C++ API.
//
// A Device scores and observes samples with the fleet's active model, takes
// signed deployments (atomic install, health check, fallback), trains on its
// labelled samples when a signed round task selects it, and sends signed
// updates and telemetry. Everything that reaches it from outside is
// verified against the fleet root key before it is used.
//
// This header depends on the standard library only (and edgefl/device.h for
// the status codes), so it is the whole installed C++ surface of
// libedgefl_device. In-tree code that needs more (the core without MQTT,
// the update builder) uses the other headers of this folder.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "edgefl/device.h"

namespace edgefl {

// The runtime version Deployment.minRuntimeVersion is compared with
// (major * 10000 + minor * 100 + patch).
inline constexpr std::uint32_t kRuntimeVersion = EDGEFL_DEVICE_RUNTIME_VERSION;
inline constexpr std::string_view kRuntimeVersionString = EDGEFL_DEVICE_VERSION_STRING;

// Why a call failed: a status with the same name as the edgefl error code
// ("ShapeMismatch", "BadSignature", ...) and a detail naming the offending
// values. A default-constructed DeviceError means success and holds no heap
// memory.
struct [[nodiscard]] DeviceError {
  edgefl_status status = EDGEFL_STATUS_OK;
  std::string detail;

  bool ok() const { return status == EDGEFL_STATUS_OK; }
  const char* name() const { return edgefl_status_str(status); }
  std::string toString() const { return detail.empty() ? name() : name() + (": " + detail); }
};

// A value or the DeviceError that says why there is none.
template <typename T>
class [[nodiscard]] DeviceResult {
 public:
  DeviceResult(T value) : value_(std::move(value)) {}            // NOLINT
  DeviceResult(DeviceError error) : error_(std::move(error)) {}  // NOLINT

  bool ok() const { return value_.has_value(); }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  const DeviceError& error() const { return error_; }

 private:
  std::optional<T> value_;
  DeviceError error_;
};

// LogLevel and LogSink are the project's one logging interface
// (edgefl/shared/log.hpp). The installed package does not ship the shared
// library's headers, so there this header repeats the two definitions
// token for token (device/src/logger.cpp checks that they still agree).
// A device's sink receives every log line, on any runtime thread, and must
// not call back into the device; the default writes warnings and errors to
// stderr.
}  // namespace edgefl
#if __has_include("edgefl/shared/log.hpp")
#include "edgefl/shared/log.hpp"
#else
namespace edgefl {
enum class LogLevel { Debug, Info, Warn, Error };
using LogSink = std::function<void(LogLevel, std::string_view)>;
}  // namespace edgefl
#endif
namespace edgefl {

// Runs a job, now or later, on some thread: how a Device trains without
// blocking its network loop. A simulation shares one bounded pool between
// many devices; the default is one worker thread per Device. The job must
// run exactly once (a Device waits for its jobs when it closes).
using Executor = std::function<void(std::function<void()> job)>;

// Immutable models shared between the Devices of one process, keyed by the
// digest of their bytes: a thousand virtual devices running the same
// deployment hold one copy of its parameters. Thread-safe. Entries go away
// when the last Device using them lets go.
class EDGEFL_DEVICE_API ModelCache {
 public:
  ModelCache();
  ~ModelCache();
  ModelCache(const ModelCache&) = delete;
  ModelCache& operator=(const ModelCache&) = delete;

  // Models currently held by at least one Device.
  std::size_t size() const;

  class Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Drives the MQTT connections of many Devices from one thread (epoll over
// their sockets, then libmosquitto's read/write/misc steps), with their
// timers (telemetry, resends), so a simulation of a thousand devices does
// not need a thousand network threads. A wake-up serves the connections
// that have something to read or write; keepalives, reconnects (with
// backoff) and the devices' timers run once per `tick` for all of them.
class EDGEFL_DEVICE_API MqttLoop {
 public:
  struct Options {
    // Period of the pass over all connections: bounds how late
    // keepalives, reconnects and the devices' timers run, so it must stay
    // well below the keepalive interval. 100 ms keeps telemetry and
    // resends on time (they are counted in seconds) at negligible cost for
    // idle devices.
    std::chrono::milliseconds tick{100};
  };

  MqttLoop();
  explicit MqttLoop(Options options);
  // Stops the thread if started. Every Device using the loop must be closed
  // first.
  ~MqttLoop();
  MqttLoop(const MqttLoop&) = delete;
  MqttLoop& operator=(const MqttLoop&) = delete;

  // Runs the loop on a thread of its own until stop() or destruction.
  void start();
  void stop();
  // Or runs one iteration on the calling thread: waits up to `timeout` for
  // network events, serves them, then runs due timers. Not while start()ed.
  void runOnce(std::chrono::milliseconds timeout);

  std::size_t connectionCount() const;

  class Impl;
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

struct TransportConfig {
  // false: no built-in MQTT. Messages come in through Device::handleMessage
  // and go out through `publish` (firmware with its own MQTT stack), or
  // nowhere when `publish` is empty (an offline device).
  bool enabled = true;
  std::string host = "127.0.0.1";
  int port = 1883;
  // The broker user name and client id are the device id (the generated
  // broker ACL binds both to it); the password is the file's first line.
  std::filesystem::path passwordFile;
  // Short enough that the broker publishes the "offline" will within a
  // minute of a silent failure, long enough to be free on idle links.
  int keepaliveSeconds = 30;
  // Reconnect backoff doubles from min to max, so a restarting broker is
  // not hammered by a whole fleet at once.
  int reconnectMinSeconds = 1;
  int reconnectMaxSeconds = 30;
  // Drive the connection from this shared loop; null: libmosquitto's own
  // network thread (mosquitto_loop_start).
  std::shared_ptr<MqttLoop> loop;
  // With enabled == false: sends a message (QoS 1); returns false when it
  // could not be queued (updates stay pending and are retried).
  std::function<bool(std::string_view topic, std::span<const std::uint8_t> payload, bool retain)>
      publish;
};

// Budgets of the device, each with the reason for its default.
struct DeviceLimits {
  // Largest model accepted: 1M float32 parameters are 4 MB, a gateway-class
  // budget; the fleet's models have 10^4-10^6 (mlp:784-128-10: 101,770).
  std::uint64_t maxModelParameters = 1'000'000;
  // Largest Model message: 1M parameters plus schema, statistics and names
  // fit in 8 MiB with room to spare.
  std::uint64_t maxModelBytes = 8u << 20;
  // Largest MQTT payload decoded (the broker's max_packet_size).
  std::uint64_t maxMessageBytes = 16u << 20;
  // Labelled samples kept; the oldest go first. 2,000 samples of 784
  // features are 6 MB: several local epochs of fresh data, small enough for
  // flash.
  std::uint32_t maxStoredSamples = 2000;
  // Updates kept for resending. An update is only useful until its round's
  // deadline, so a handful covers the rounds that overlap a long outage.
  std::uint32_t maxPendingUpdates = 8;
  // Largest batch one scoreBatch step computes; larger calls are split. The
  // batch workspace (allocated on first use) is this times the widest layer.
  std::uint32_t maxBatch = 32;
  // Unacknowledged updates are resent this often while their round is open
  // (QoS 1 covers a live session; this covers a lost session or broker).
  std::chrono::seconds resendInterval{30};
  // Signed telemetry this often (0 disables; sendTelemetry() still works).
  std::chrono::seconds telemetryInterval{60};
};

// Hooks for simulations (attackers): they see and may change what a real
// Device sends. Called on the training thread; empty hooks cost nothing.
struct DeviceHooks {
  // The delta (local - base, the model's parameter order) before clipping,
  // noise and encoding. A hook that writes NaN or infinity gets them sent
  // as float32 (the device's own training never sends non-finite values).
  std::function<void(std::uint64_t round, std::span<float> delta)> delta;
  // The encoded Update message (Cap'n Proto flat array) before signing.
  std::function<void(std::uint64_t round, std::vector<std::uint8_t>& payload)> updatePayload;
  // The signed envelope before it is stored and published.
  std::function<void(std::uint64_t round, std::vector<std::uint8_t>& envelope)> updateEnvelope;
};

enum class SampleStoreKind : std::uint8_t {
  Sqlite,  // durable, bounded, in <storageDir>/device.db (WAL)
  Memory,  // bounded ring in memory; lost on close
};

struct DeviceConfig {
  // Fleet names and device ids: 1-64 of [A-Za-z0-9_.-], not starting with
  // '.' or '-' (they become topic levels, user names and file names).
  std::string deviceId;
  std::string fleet;
  // Models, state and samples live here; created when missing:
  // device.db (state, and samples with SampleStoreKind::Sqlite), models/
  // (deployment files), pending/ (signed updates waiting for their Ack).
  std::filesystem::path storageDir;
  // The device's Ed25519 secret key (enrolled with the fleet) and the fleet
  // root's public key, the only key the device trusts directly.
  std::filesystem::path deviceKeyFile;
  std::filesystem::path rootPublicKeyFile;
  TransportConfig transport;
  DeviceLimits limits;
  SampleStoreKind sampleStore = SampleStoreKind::Sqlite;
  // fsync model files and state commits. Off only for simulations on
  // scratch storage: a crash may then lose the last state change.
  bool durableWrites = true;
  LogSink log;
  LogLevel logLevel = LogLevel::Info;
  Executor executor;                       // empty: one worker thread per Device
  std::shared_ptr<ModelCache> modelCache;  // empty: a private cache
  DeviceHooks hooks;
  // Unix seconds; empty: the system clock. Lets tests move past deadlines.
  std::function<std::int64_t()> clock;
};

struct ReasonCount {
  std::string reason;  // an edgefl error code name, e.g. "OutOfRange"
  std::uint64_t count = 0;
};

// A snapshot of a device, for applications and tests.
struct DeviceStatus {
  bool connected = false;
  bool modelLoaded = false;
  std::uint64_t activeVersion = 0;
  std::string activeDigest;   // hex parameter digest
  std::string activeChannel;  // "stable", "canary" or ""
  std::uint64_t activeSequence = 0;
  // Last deployment sequence seen on each channel (refusals below these).
  std::uint64_t stableSequence = 0;
  std::uint64_t canarySequence = 0;
  bool canaryPresent = false;
  bool canaryMember = false;
  std::uint64_t shadowVersion = 0;  // 0 = no shadow model
  std::uint32_t inputCount = 0;
  std::uint32_t outputCount = 0;

  std::uint64_t scored = 0;
  std::uint64_t observed = 0;
  std::uint64_t rejected = 0;
  std::vector<ReasonCount> rejectedByReason;  // input samples
  std::uint64_t refused = 0;
  std::vector<ReasonCount> refusedByReason;  // deployments, round tasks, acks

  std::uint32_t fallbacks = 0;
  std::uint32_t healthCheckFailures = 0;
  std::string lastError;

  std::uint64_t samplesStored = 0;
  std::uint64_t storageBytes = 0;
  std::uint64_t newSamples = 0;  // labelled since the last update sent
  std::uint32_t pendingUpdates = 0;
  std::uint64_t updatesSent = 0;
  std::uint64_t lastRound = 0;  // last round an update was built for
  // Why the device does or does not take part in the current round task
  // ("training", "sent", "NotSelected: ...", "BaseMismatch: ...").
  std::string roundState;
  std::uint64_t lastAckRound = 0;
  std::string lastAckVerdict;  // "accepted", "rejected", "duplicate" or ""
  std::string lastAckReason;
  std::uint64_t telemetrySent = 0;
  // Payload bytes of the messages sent (updates, telemetry) and received
  // (deployments, round tasks, acks) since the device was opened.
  std::uint64_t bytesSent = 0;
  std::uint64_t bytesReceived = 0;

  struct Drift {
    std::uint64_t samples = 0;
    float psiMax = 0;
    float psiMean = 0;
    std::uint32_t worstFeature = 0;
  } drift;
  struct Local {  // observed samples, scored by the active model before storing
    std::uint64_t labelled = 0;
    float accuracy = 0;
    float loss = 0;
  } local;
  struct Shadow {
    std::uint64_t samples = 0;
    float agreement = 0;  // share of samples where both models' argmax agree
    std::uint64_t labelled = 0;
    float activeAccuracy = 0;
    float candidateAccuracy = 0;
  } shadow;
};

// Running statistics of one input feature since the active model was
// installed (raw values, accepted samples only).
struct FeatureStatistics {
  std::uint64_t count = 0;
  double mean = 0;
  double std = 0;
};

class EDGEFL_DEVICE_API Device {
 public:
  // Opens a device (see edgefl_device_open for what it does). Errors:
  // BAD_CONFIG (a missing or malformed field), BAD_KEY_FILE, IO_ERROR.
  static DeviceResult<std::unique_ptr<Device>> open(DeviceConfig config);

  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Scores one sample of inputCount() raw features into `out` (at least
  // outputCount() values). Validates it against the input schema first and
  // counts rejections by reason. Does not allocate on success. Errors:
  // NOT_FOUND (no model), SHAPE_MISMATCH, NON_FINITE, OUT_OF_RANGE,
  // INVALID_ARGUMENT (out too small).
  DeviceError score(std::span<const float> x, std::span<float> out);
  // n = xs.size() / inputCount() samples, row-major; out holds n *
  // outputCount() values. Every row is validated before any is scored.
  DeviceError scoreBatch(std::span<const float> xs, std::span<float> out);

  // Validates and stores a labelled sample (classification), scoring it
  // with the active (and shadow) model first for the local accuracy.
  // Errors: those of score, OUT_OF_RANGE (label), IO_ERROR.
  DeviceError observe(std::span<const float> x, std::int32_t label);
  // The same for regression models.
  DeviceError observeTarget(std::span<const float> x, float target);

  DeviceStatus status() const;
  std::uint32_t inputCount() const;  // 0 without a model
  std::uint32_t outputCount() const;
  std::vector<FeatureStatistics> featureStatistics() const;
  const std::string& id() const;

  // Builds, signs and publishes telemetry now. NOT_FOUND when offline.
  DeviceError sendTelemetry();

  // Lower level, for simulations and custom transports.
  // Publishes arbitrary bytes on the device's own update topic (replays,
  // forgeries). NOT_FOUND when offline.
  DeviceError publishUpdate(std::span<const std::uint8_t> bytes);
  // Hands a message to the runtime as if it came from the broker; returns
  // why it was refused, or OK.
  DeviceError handleMessage(std::string_view topic, std::span<const std::uint8_t> payload);
  // With a custom transport (TransportConfig::publish; it starts out
  // connected): the connection came up (pending updates are resent) or went
  // down.
  void setConnected(bool connected);

  // Publishes "offline", disconnects, waits for training in progress.
  // Idempotent; the destructor calls it.
  void close();

  class Impl;

 private:
  explicit Device(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgefl
