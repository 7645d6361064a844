#pragma once
// Durable device state in the device database: what was deployed where
// (per channel: the last sequence seen, the latest deployment of each mode;
// the active, previous and shadow slots), the rounds an update was sent
// for, updates waiting for an Ack, top-k residuals, and counters. Every
// change is one transaction with Durability::Full.
//
// The envelope of a pending update (the whole signed update, 400 KB for an
// mlp) is written as its own file in <storageDir>/pending, whole or not at
// all (ModelFiles), before the transaction that records the row naming it;
// the row is deleted before the file. Through the database the same bytes
// went into the WAL and again into the database at the next checkpoint,
// read back through a page cache smaller than they are; a file is written
// once. So a crash leaves at most a file no row names (removed at the next
// open), and a row whose file is missing or cut short is reported and
// dropped rather than resent.

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "edgefl/device/device_db.hpp"
#include "edgefl/device/model_files.hpp"
#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl::device {

using Channel = wire::Channel;
using DeployMode = wire::DeployMode;
inline constexpr std::size_t kChannelCount = 2;  // stable, canary
std::string_view channelName(Channel channel);
inline std::size_t channelIndex(Channel channel) {
  return static_cast<std::size_t>(channel);
}

// A deployment envelope stored in <storageDir>/models/<file>, with what was
// verified about it when it was accepted.
struct StoredDeployment {
  std::string file;
  Channel channel = Channel::STABLE;
  std::uint64_t sequence = 0;
  DeployMode mode = DeployMode::ACTIVATE;
  std::uint64_t modelVersion = 0;
  Digest digest{};              // parameter digest of the model inside
  std::int64_t acceptedAt = 0;  // delegation validity is re-checked at this time
  bool failed = false;          // failed to load or its health check: never activated again

  bool operator==(const StoredDeployment&) const = default;
};

struct ChannelState {
  std::uint64_t lastSequence = 0;  // refuse anything not newer
  bool present = false;            // canary: false once cleared (zero-length retained)
  float percent = 0;
  std::uint64_t salt = 0;
  std::string activateFile;  // latest mode=activate deployment, "" = none
  std::string shadowFile;    // latest mode=shadow deployment since then

  bool operator==(const ChannelState&) const = default;
};

struct DeploymentState {
  std::array<ChannelState, kChannelCount> channels;
  std::map<std::string, StoredDeployment> files;  // every file referenced below
  std::string activeFile;
  std::string previousFile;
  std::string shadowFile;

  bool operator==(const DeploymentState&) const = default;

  const StoredDeployment* find(const std::string& file) const;
  StoredDeployment* find(const std::string& file);
  // Drops entries of `files` that no channel or slot references.
  void prune();
  bool references(const std::string& file) const;
};

struct PendingUpdate {
  std::uint64_t round = 0;
  Bytes envelope;             // Signed(update), exactly as published
  Digest payloadDigest{};     // updateDigest of the Update payload (what Acks name)
  std::int64_t deadline = 0;  // the round's deadline; 0 = none
  std::int64_t createdAt = 0;
};

// A pending update whose stored envelope cannot be read back.
struct LostPending {
  std::uint64_t round = 0;
  std::string reason;
};

struct Residual {
  std::string arch;
  Digest baseDigest{};
  std::vector<float> values;
};

// Counter names.
inline constexpr const char* kTelemetrySequence = "telemetry_sequence";
// Telemetry sequence numbers reserved per write of kTelemetrySequence.
inline constexpr std::uint64_t kTelemetrySequenceBlock = 64;
inline constexpr const char* kFallbacks = "fallbacks";
inline constexpr const char* kHealthCheckFailures = "health_check_failures";
inline constexpr const char* kNewSamples = "new_samples";
inline constexpr const char* kUpdatesSent = "updates_sent";
inline constexpr const char* kLastRound = "last_round";

class DeviceState {
 public:
  // `pendingFiles`: where envelopes of pending updates go; null keeps them
  // in the database.
  explicit DeviceState(DeviceDb& db, const ModelFiles* pendingFiles = nullptr)
      : db_(db), pendingFiles_(pendingFiles) {}

  Result<DeploymentState> loadDeployments() const;
  // Replaces the stored deployment state with `state` in one transaction.
  Status saveDeployments(const DeploymentState& state);

  Result<std::uint64_t> counter(const char* name) const;
  Status setCounter(const char* name, std::uint64_t value);
  Status addCounter(const char* name, std::uint64_t delta);

  Result<bool> roundSent(std::uint64_t round) const;
  // The pending updates in round order, envelopes read back; rows whose
  // envelope file cannot be read (missing, not the recorded size) are left
  // out and listed in `*lost` if given.
  Result<std::vector<PendingUpdate>> pendingUpdates(std::vector<LostPending>* lost = nullptr) const;
  // Removes the files in `pendingFiles` that no pending row names.
  void removeUnreferencedPendingFiles() const;
  // One transaction: the round is marked sent, the update becomes pending
  // (the oldest pending beyond `maxPending` are dropped and counted in
  // `*dropped`), the residual (if any) replaces the stored one for its
  // arch, new_samples resets, updates_sent and last_round advance.
  Status recordBuiltUpdate(const PendingUpdate& update, const Residual* residual,
                           std::uint32_t maxPending, std::uint32_t* dropped);
  // Records an Ack's verdict; removes the pending update unless `keep`.
  Status recordAck(std::uint64_t round, std::string_view verdict, std::string_view reason,
                   bool keepPending);
  Status dropPending(std::uint64_t round);
  Result<std::optional<Residual>> residual(const std::string& arch) const;

  static std::string pendingFileName(std::uint64_t round);

 private:
  // Deletes the pending row of `round` (inside a transaction) and returns
  // the file it named, if any, to remove after the commit.
  Result<std::string> deletePendingRow(std::uint64_t round);
  // One transaction: `also`, then the pending row of `round` goes; its file
  // after the commit.
  Status dropPendingWith(std::uint64_t round, const std::function<Status()>& also);
  void removePendingFile(const std::string& file) const;

  DeviceDb& db_;
  const ModelFiles* pendingFiles_;
};

}  // namespace edgefl::device
