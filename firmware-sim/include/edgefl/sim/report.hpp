#pragma once
// What a simulation run measured, and the files it writes: a per-round CSV,
// the JSON summary (its schema is in the README; external tooling relies on
// the names of the `rounds` entries), an SVG plot of accuracy per round, and
// the text summary printed at the end.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "edgefl/shared/result.hpp"
#include "edgefl/sim/config.hpp"

namespace edgefl::sim {

struct RoundRow {
  std::uint64_t round = 0;
  std::string state;           // closed | failed | timeout
  std::string outcome;         // the coordinator's words
  std::uint64_t online = 0;    // virtual devices online when it opened
  std::uint64_t selected = 0;  // devices chosen (known to the coordinator or reported by devices)
  std::uint64_t received = 0;  // updates the coordinator judged
  std::uint64_t accepted = 0;
  // Ingest rejections by reason, plus updates that aggregation excluded
  // (e.g. KrumOutlier); `accepted` still counts the latter.
  std::map<std::string, std::uint64_t> rejectedByReason;
  std::uint64_t excluded = 0;
  std::uint64_t dropouts = 0;  // devices that went offline while training
  // Holdout accuracy of the model the round produced (absent when none was).
  std::optional<double> accuracy;
  std::uint64_t version = 0;  // that model's version (0: none)
  // canary promoted | rolled back | rejected by the gate | ...
  std::string rollout;
  std::uint64_t stableVersion = 0;  // stable after the rollout decision
  std::optional<double> stableAccuracy;
  double seconds = 0;                         // open -> closed, measured by the simulator
  double rolloutSeconds = 0;                  // closed -> canary decided
  std::map<std::string, double> phaseMillis;  // the coordinator's phases
  std::uint64_t bytesUp = 0;                  // device -> broker payload bytes while it was open
  std::uint64_t bytesDown = 0;                // broker -> device, open through the rollout
};

struct AttackOutcome {
  std::uint64_t devices = 0;
  std::uint64_t updates = 0;   // judged by the coordinator
  std::uint64_t accepted = 0;  // passed ingest
  std::uint64_t excluded = 0;  // of those, excluded by aggregation
  std::map<std::string, std::uint64_t> rejectedByReason;
};

struct SimSummary {
  SimConfig config;
  std::string fleetName;
  std::string arch;
  std::string strategy;
  std::uint64_t devices = 0;
  std::uint64_t attackers = 0;
  std::uint64_t stragglers = 0;
  std::uint32_t workers = 0;
  double setupSeconds = 0;
  double runSeconds = 0;
  // Resident memory per virtual device: after open and model install
  // (idle, no samples), and with the samples stored.
  double idleBytesPerDevice = 0;
  double loadedBytesPerDevice = 0;
  std::uint64_t peakRssBytes = 0;
  // Accepted updates per second of the rounds' collect phases (from the
  // round's opening until its last accepted update was recorded: training,
  // signing, upload, verification, commit), and the same per core of this
  // machine.
  double clientRoundsPerSecond = 0;
  double clientRoundsPerSecondPerCore = 0;
  unsigned cores = 0;
  std::vector<RoundRow> rounds;
  std::map<std::string, AttackOutcome> attacks;  // by attack name
  std::uint64_t promotions = 0;
  std::uint64_t rollbacks = 0;
  std::uint64_t gateRejections = 0;
  std::uint64_t stableVersion = 0;
  std::optional<double> initialAccuracy;
  std::optional<double> stableAccuracy;
  std::vector<std::string> lineage;  // of the stable model, newest first
  std::string stopReason;            // empty when every round ran
};

// Files beside the JSON summary: summary.json -> summary.csv, summary.svg.
std::filesystem::path csvPathFor(const std::filesystem::path& summaryJson);
std::filesystem::path svgPathFor(const std::filesystem::path& summaryJson);

std::string summaryJson(const SimSummary& summary);
std::string roundsCsv(const SimSummary& summary);
std::string accuracySvg(const SimSummary& summary);
// The text a person reads at the end of a run.
std::string summaryText(const SimSummary& summary);
// One line per round as it finishes, and its header.
std::string rowHeader();
std::string rowText(const RoundRow& row);

// Writes the JSON summary, the CSV and the SVG (each atomically).
Status writeReports(const SimSummary& summary);

}  // namespace edgefl::sim
