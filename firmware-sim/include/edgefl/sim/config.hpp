#pragma once
// edgefl-sim settings: the command line names the fleet, the device count,
// the rounds, the dataset and its partition; a TOML file (sim.toml) holds
// the behaviours. Every value is checked against explicit limits; unknown
// keys are errors, as in coordinator.toml.
//
//   [sim]           devices, rounds, dataset, partition, seed, device_prefix,
//                   samples_per_device, train_samples, workers, mqtt_loops,
//                   sample_store, telemetry_seconds, stream_per_second,
//                   round_timeout_seconds, setup_timeout_seconds,
//                   wait_for_rollout
//   [availability]  probability, day_night_amplitude, day_seconds
//   [stragglers]    fraction, delay
//   [dropouts]      fraction, offline_seconds
//   [attackers]     fraction, kinds, scale_factor, noise_std

#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edgefl/shared/result.hpp"

namespace edgefl::sim {

// A delay in seconds drawn from a distribution: "fixed:S", "uniform:A:B",
// "exponential:MEAN" or "lognormal:MU:SIGMA" (of the log of the delay).
// Draws are clamped to [0, kMaxDelaySeconds].
struct Delay {
  enum class Kind : std::uint8_t { Fixed, Uniform, Exponential, LogNormal };
  Kind kind = Kind::Fixed;
  double a = 0;
  double b = 0;
  std::string spec = "fixed:0";

  double sample(std::mt19937_64& rng) const;
};
// A straggler slower than an hour is a dropout; the cap keeps a heavy-tailed
// draw from parking a training job for days.
inline constexpr double kMaxDelaySeconds = 3600;
// InvalidArgument for an unknown kind, a malformed number, a negative or
// non-finite parameter, B < A, or a value over kMaxDelaySeconds.
Result<Delay> parseDelay(std::string_view spec);

// What an attacking virtual device does. Each one is a real Device whose
// hooks (or data) are changed; see attacks.hpp.
enum class Attack : std::uint8_t {
  LabelFlip,        // trains on labels k -> classCount - 1 - k
  SignFlip,         // sends -delta
  Scale,            // sends scale_factor * delta
  Noise,            // sends Gaussian noise (noise_std per coordinate) instead of its delta
  NonFinite,        // puts NaN and infinity into its delta
  Replay,           // resends its first update in every later round
  ForgedSignature,  // sends its update with a corrupted signature
  Impersonation,    // signs an update that claims another device's id
};
std::span<const Attack> allAttacks();
std::string_view attackName(Attack attack);  // "label_flip", "sign_flip", ...
std::optional<Attack> attackFromName(std::string_view name);

struct SimConfig {
  // From the command line.
  std::filesystem::path fleet;        // made by `edgefl fleet init`; coordinator.toml inside
  std::filesystem::path summaryJson;  // the CSV and the plot are written beside it
  std::filesystem::path configFile;   // the TOML file read, if any

  // [sim]
  std::uint32_t devices = 10;
  std::uint32_t rounds = 5;
  std::string dataset = "fashion-mnist";  // or csv:PATH
  std::string partition = "iid";          // iid | dirichlet:A | labels:K | shards:S
  std::uint64_t seed = 1;
  std::string devicePrefix = "sim";
  // Labelled samples each device stores (its partition, cut to this);
  // 0 = the whole partition, up to the device's 2,000-sample store.
  std::uint32_t samplesPerDevice = 0;
  // Use only the first N samples of the training split; 0 = all.
  std::uint32_t trainSamples = 0;
  // Training threads shared by all devices; 0 = one per core.
  std::uint32_t workers = 0;
  // Threads driving the MQTT connections; 0 = one per 500 devices.
  std::uint32_t mqttLoops = 0;
  std::string sampleStore = "memory";  // memory | sqlite
  // Telemetry period of every device (the canary decision reads it).
  std::uint32_t telemetrySeconds = 2;
  // Fresh labelled samples each online device observes per second, from its
  // own partition: the labelled accuracy canary decisions compare.
  double streamPerSecond = 2.0;
  double roundTimeoutSeconds = 600;
  double setupTimeoutSeconds = 300;
  // After the last round, wait for its canary to be promoted or rolled back.
  bool waitForRollout = true;

  struct Availability {
    // Probability that a device is online in a round.
    double probability = 1.0;
    // Day/night pattern: probability * (1 + amplitude * sin(2 pi t / day)).
    double dayNightAmplitude = 0.0;
    double daySeconds = 120.0;
  } availability;
  struct Stragglers {
    double fraction = 0.0;  // share of devices that are slow
    Delay delay;            // added before each of their training jobs
  } stragglers;
  struct Dropouts {
    // Probability that a device selected for a round goes offline in the
    // middle of it (while training) and comes back after offline_seconds.
    double fraction = 0.0;
    double offlineSeconds = 10.0;
  } dropouts;
  struct Attackers {
    double fraction = 0.0;  // share of devices that attack
    // Kinds, assigned round-robin so that every listed kind is present.
    std::vector<Attack> kinds{allAttacks().begin(), allAttacks().end()};
    double scaleFactor = 50.0;
    double noiseStd = 1.0;
  } attackers;
};

// Limits on what a sim config may ask for, each with its reason.
struct SimLimits {
  // 10,000 connections need ~10,000 file descriptors and ~3 GB; past that a
  // single process is the wrong tool.
  std::uint32_t maxDevices = 10'000;
  std::uint32_t maxRounds = 100'000;
  std::uint32_t maxWorkers = 256;
  std::uint32_t maxLoops = 64;
  // Largest config file read.
  std::size_t maxFileBytes = 1u << 20;
};

// Reads a TOML file over `base` (values not in the file keep base's).
// BadConfig (with file, section and key) for a syntax error, an unknown
// section or key, a wrong type or a value out of range.
Result<SimConfig> loadSimConfig(const std::filesystem::path& file, SimConfig base = {},
                                const SimLimits& limits = {});
Result<SimConfig> parseSimConfig(std::string_view text, std::string_view source,
                                 SimConfig base = {}, const SimLimits& limits = {});
// The checks of parseSimConfig on a config built in code (the command line
// overrides the file). BadConfig naming the setting.
Status validateSimConfig(const SimConfig& config, const SimLimits& limits = {});

// The whole config as TOML, for the summary and for a starting file.
std::string renderSimConfig(const SimConfig& config);

}  // namespace edgefl::sim
