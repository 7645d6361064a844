#pragma once
// edgefl-coordinator: verified ingest of device updates, rounds and their
// triggers, aggregation, the validation gate, the registry, and signed canary
// rollouts that promote or roll back on measured quality.
//
// Threads: libmosquitto's network thread only classifies and enqueues
// messages; `ingest.verify_threads` workers verify updates off that thread
// through a bounded queue; the control loop (run/tick) opens and closes
// rounds, aggregates, validates, deploys and watches rollouts. Every state
// change goes to the registry in one transaction before anything about it
// is published, so a crash at any point resumes from the registry.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/server/registry.hpp"
#include "edgefl/shared/log.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl::server {

struct CoordinatorStats {
  std::uint64_t received = 0;  // update messages taken from the broker
  std::uint64_t accepted = 0;
  std::uint64_t rejected = 0;
  std::uint64_t overloaded = 0;  // refused because the ingest queue was full
  std::uint64_t telemetry = 0;
  std::uint64_t telemetryDropped = 0;
  std::uint64_t roundsClosed = 0;
  std::uint64_t queueDepth = 0;
  std::uint64_t queueHighWater = 0;
  // Registry WAL checkpoints (Registry::startBackgroundCheckpoints).
  std::uint64_t checkpoints = 0;          // by the background thread
  std::uint64_t checkpointsInCommit = 0;  // by a commit, past the hard limit
  std::uint64_t checkpointsFailed = 0;
  std::string lastCheckpointError;
};

class Coordinator {
 public:
  // Loads keys, the registry (registering the initial model as version 1 on
  // first start), the holdout data and the strategy. Errors name the file or
  // setting at fault.
  static Result<std::unique_ptr<Coordinator>> open(const CoordinatorConfig& config,
                                                   LogSink log = stderrSink());
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Connects to the broker, republishes the active deployments and the open
  // round as retained messages, and starts the verification workers.
  Status start();
  // Stops workers and the broker connection; the registry stays consistent.
  void stop();

  // Runs the control loop until `stop` becomes true.
  void run(const std::atomic<bool>& stop,
           std::chrono::milliseconds period = std::chrono::milliseconds(100));
  // One pass of the control loop: commands, telemetry, triggers, round
  // deadlines, rollout decisions.
  void tick();

  // Manual operations (also reachable through registry commands).
  Result<std::uint64_t> startRound(const std::string& trigger);
  Status promote(const std::string& reason);
  Status rollback(const std::string& reason);
  Status pauseRollout(const std::string& reason);
  Status resumeRollout();
  // Re-reads devices/ (enrolled and revoked keys).
  Status reloadDevices();

  CoordinatorStats stats() const;
  std::uint64_t openRound() const;
  std::uint64_t stableVersion() const;
  std::uint64_t canaryVersion() const;
  const CoordinatorConfig& config() const;

 private:
  struct Impl;
  explicit Coordinator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgefl::server
