#pragma once
// The simulation: a fleet of virtual devices, each a real edgefl::Device
// with its own enrolled key, its own MQTT connection to the fleet's broker
// and its own local store holding its partition of the training data,
// against a running edgefl-coordinator.
//
// The simulator acts as the devices' owners and as an operator: it enrolls
// the devices, opens them (they get the model as a signed deployment),
// feeds them labelled samples, starts each round through the registry's
// command table (`edgefl round start`), follows it in the registry, and
// after each round waits for the canary decision before the next.
// Behaviours (availability, stragglers, dropouts, attackers) are applied
// to the real devices: offline devices are closed, stragglers' training
// jobs wait on the shared pool, attackers' hooks change what they send.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/log.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/sim/config.hpp"
#include "edgefl/sim/report.hpp"

namespace edgefl::sim {

struct RunHooks {
  // Log lines of the simulator (and warnings of its devices, rate-limited).
  LogSink log;
  // The live progress line while a round runs (no newline), and each row
  // as its round is decided.
  std::function<void(const std::string&)> progress;
  std::function<void(const RoundRow&)> row;
  // Called before each round starts, with the number of rounds run so far,
  // on the simulation's thread: a caller that paces the rounds (a benchmark
  // timing one round at a time) may block in it. `stop` is checked after it
  // returns, so setting `stop` inside it ends the run before that round.
  std::function<void(std::uint32_t)> beforeRound;
  // Set to stop after the round in progress; the run then closes every
  // device and returns what it has.
  const std::atomic<bool>* stop = nullptr;
};

// Whether a device has settled on the stable deployment (`version`,
// channel `sequence`): it runs that model and has taken the deployment
// itself. A canary member runs the new model before its stable deployment
// arrives; a round opened then queues its task behind that deployment on
// the devices' shared loop. The simulator opens the next round only when
// every online device has settled.
bool settledOnStable(const DeviceStatus& status, std::uint64_t version, std::uint64_t sequence);

// Runs the simulation described by `config` against the fleet directory it
// names, whose broker and coordinator must be running. Errors: BadConfig,
// NotFound (no fleet, no dataset), Timeout-like IoError when the devices or
// the coordinator do not respond within the configured timeouts. A round
// that fails or times out is a row of the summary, not an error.
Result<SimSummary> runSimulation(const SimConfig& config, const RunHooks& hooks);

}  // namespace edgefl::sim
