#pragma once
// The coordinator's registry and metadata store: one SQLite file (WAL) with
// models and their lineage, rounds, updates with verdicts, devices,
// deployments, server-optimizer state and an audit log of events.
//
// Every state change is one transaction, so a crash at any point leaves the
// file consistent and the coordinator resumes from it. The schema is
// versioned (PRAGMA user_version) and migrated forward on open.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"

struct sqlite3;

namespace edgefl::server {

enum class ModelStage { Candidate, Rejected, Canary, Stable, Archived };
std::string_view stageName(ModelStage stage);
std::optional<ModelStage> stageFromName(std::string_view name);

struct ModelRecord {
  std::uint64_t version = 0;
  std::uint64_t parent = 0;  // 0: none
  std::string arch;
  Digest digest{};
  std::uint64_t parameterCount = 0;
  std::uint64_t sizeBytes = 0;
  ModelStage stage = ModelStage::Candidate;
  std::uint64_t round = 0;  // the round that produced it; 0 for the initial model
  double accuracy = 0;
  double loss = 0;
  std::vector<double> perClassAccuracy;
  std::string reason;  // why rejected / archived
  std::int64_t createdAt = 0;
  std::vector<std::uint8_t> bytes;  // the Model message (empty in listings)
};

enum class RoundState { Open, Aggregating, Validating, Closed, Failed, Cancelled };
std::string_view roundStateName(RoundState state);

struct RoundRecord {
  std::uint64_t round = 0;
  std::string trigger;
  std::string configJson;  // the RoundTask settings, for the record
  RoundState state = RoundState::Open;
  std::uint64_t baseVersion = 0;
  std::int64_t openedAt = 0;
  std::int64_t deadline = 0;
  std::int64_t closedAt = 0;
  std::uint64_t selected = 0;
  std::uint64_t resultVersion = 0;
  std::string strategy;
  double noiseMultiplier = 0;
  std::map<std::string, double> phaseMillis;      // phase -> milliseconds
  std::map<std::string, std::uint64_t> verdicts;  // reason -> count ("accepted" included)
  std::string outcome;  // what happened at close, e.g. "deployed canary v4" or a failure reason
};

struct UpdateRecord {
  std::uint64_t round = 0;
  std::string deviceId;
  bool accepted = false;
  std::string reason;  // "" when accepted; else a Code name such as "BadSignature"
  std::string detail;
  std::uint32_t sampleCount = 0;
  std::uint32_t staleness = 0;  // asynchronous rounds: stable models behind
  double norm = 0;
  Digest digest{};  // BLAKE2b-256 of the update payload
  std::int64_t receivedAt = 0;
  std::vector<float> delta;  // decoded delta of an accepted update (for crash resume)
};

struct DeviceRecord {
  std::string id;
  PublicKey key{};
  std::int64_t enrolledAt = 0;
  std::int64_t revokedAt = 0;  // 0: active
  std::int64_t lastSeen = 0;
  std::uint64_t activeVersion = 0;
  std::string lastTelemetryJson;
};

enum class DeploymentState { Active, Promoted, RolledBack, Superseded, Paused };
std::string_view deploymentStateName(DeploymentState state);

struct DeploymentRecord {
  std::uint64_t sequence = 0;
  std::uint64_t version = 0;
  std::string channel;  // stable | canary
  double percent = 100;
  DeploymentState state = DeploymentState::Active;
  std::int64_t createdAt = 0;
  std::string reason;
  std::vector<std::uint8_t> signedBytes;  // the Signed(deployment) as published
};

struct EventRecord {
  std::int64_t id = 0;
  std::int64_t at = 0;
  std::string kind;
  std::string subject;
  std::string detail;
};

struct CommandRecord {
  std::int64_t id = 0;
  std::string kind;  // round-start | promote | rollback | pause | resume | reload-devices
  std::string args;
  std::int64_t createdAt = 0;
  std::int64_t doneAt = 0;  // 0: pending
  std::string result;       // "ok: ..." or "error: ..."
};

class Registry {
 public:
  // Opens (creating and migrating as needed) the registry at `path`.
  static Result<Registry> open(const std::filesystem::path& path);
  Registry(Registry&&) noexcept;
  Registry& operator=(Registry&&) noexcept;
  ~Registry();

  int schemaVersion() const;
  // "ok" when PRAGMA integrity_check passes, else its first message.
  std::string integrityCheck() const;

  // Models. addModel assigns the next version when record.version is 0.
  Result<std::uint64_t> addModel(ModelRecord record);
  Result<ModelRecord> model(std::uint64_t version, bool withBytes = true) const;
  std::vector<ModelRecord> models() const;
  Status setModelStage(std::uint64_t version, ModelStage stage, const std::string& reason = {});
  std::optional<ModelRecord> latestInStage(ModelStage stage, bool withBytes = true) const;
  Status addLineage(std::uint64_t version, std::uint64_t round,
                    const std::vector<std::string>& devices);
  std::vector<std::string> lineage(std::uint64_t version) const;

  // Rounds.
  Status openRound(const RoundRecord& record);
  Result<RoundRecord> round(std::uint64_t round) const;
  std::optional<RoundRecord> openRoundRecord() const;  // the round not yet closed, if any
  std::vector<RoundRecord> rounds() const;
  std::uint64_t lastRound() const;
  Status updateRound(const RoundRecord& record);

  // Updates. Accepted updates are idempotent by (round, device): a second
  // accepted record for the same pair returns AlreadyExists and changes
  // nothing, so a redelivery is never counted twice. Rejections are recorded
  // as they come and do not block a later valid update. The round's verdict
  // counts are updated in the same transaction.
  Status recordUpdate(const UpdateRecord& record);
  // The accepted update of (round, device), else its latest rejection.
  std::optional<UpdateRecord> update(std::uint64_t round, const std::string& deviceId) const;
  // The digest of the accepted update of (round, device), if there is one:
  // one lookup in the unique index of accepted updates, whatever the number
  // of rejections recorded for the device (ingest asks for every update).
  std::optional<Digest> acceptedDigest(std::uint64_t round, const std::string& deviceId) const;
  std::vector<UpdateRecord> updates(std::optional<std::uint64_t> round = {},
                                    bool withDeltas = false) const;
  std::uint64_t acceptedCount(std::uint64_t round) const;

  // Devices.
  Status upsertDevice(const DeviceRecord& record);
  Status revokeDevice(const std::string& id, std::int64_t at);
  Status touchDevice(const std::string& id, std::int64_t at, std::uint64_t activeVersion,
                     const std::string& telemetryJson);
  std::optional<DeviceRecord> device(const std::string& id) const;
  std::vector<DeviceRecord> devices() const;

  // Deployments: sequence numbers are monotonic and never reused.
  std::uint64_t nextDeploymentSequence() const;
  Status addDeployment(const DeploymentRecord& record);
  Status setDeploymentState(std::uint64_t sequence, DeploymentState state);
  std::vector<DeploymentRecord> deployments() const;
  std::optional<DeploymentRecord> activeDeployment(const std::string& channel) const;

  // Server-side state (aggregation optimizer moments, ...).
  Status putState(const std::string& key, const std::vector<std::uint8_t>& value);
  std::optional<std::vector<std::uint8_t>> state(const std::string& key) const;

  // Operator commands for a running coordinator.
  Result<std::int64_t> submitCommand(const std::string& kind, const std::string& args = {});
  std::vector<CommandRecord> pendingCommands() const;
  std::optional<CommandRecord> command(std::int64_t id) const;
  Status completeCommand(std::int64_t id, const std::string& result);

  // Audit log.
  Status logEvent(const std::string& kind, const std::string& subject, const std::string& detail);
  std::vector<EventRecord> events(std::size_t limit = 1000) const;

  // Runs `body` inside one transaction (BEGIN IMMEDIATE ... COMMIT); rolls
  // back if it returns an error.
  Status transaction(const std::function<Status()>& body);

  // Moves WAL checkpoints off the committing thread: from now on a thread
  // with its own connection copies the WAL into the database (a PASSIVE
  // checkpoint, which blocks neither writers nor readers) once the WAL holds
  // `backgroundBytes`, so a commit pays for its own writes and fsync only.
  // A commit that finds `hardBytes` in the WAL (the thread cannot keep up)
  // checkpoints itself, as SQLite does by default. Without this call SQLite
  // checkpoints inside the commit that reaches 1,000 pages.
  struct CheckpointOptions {
    std::uint64_t backgroundBytes = 16ull << 20;
    std::uint64_t hardBytes = 256ull << 20;
  };
  Status startBackgroundCheckpoints(CheckpointOptions options);
  struct CheckpointStats {
    std::uint64_t background = 0;  // checkpoints run by the thread
    std::uint64_t inCommit = 0;    // run by a commit past hardBytes
    std::uint64_t failed = 0;      // answered with an error other than busy
    std::string lastError;
  };
  CheckpointStats checkpointStats() const;

 private:
  struct Checkpointer;
  Registry(sqlite3* db, std::filesystem::path path);
  void stopCheckpointer();
  sqlite3* db_ = nullptr;
  int txDepth_ = 0;
  std::filesystem::path path_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace edgefl::server
