#pragma once
// coordinator.toml: every setting of edgefl-coordinator, with its default,
// range and documentation in one table (coordinator_config.cpp), so the
// file `edgefl fleet init` writes and the loader never disagree.

#include <cstdint>
#include <filesystem>
#include <string>

#include "edgefl/shared/result.hpp"

namespace edgefl::server {

struct CoordinatorConfig {
  struct Fleet {
    std::string name = "fleet";
    std::string directory = ".";  // relative paths below resolve against it
  } fleet;
  struct Keys {
    std::string rootPublic = "keys/root.pub";
    std::string coordinatorKey = "keys/coordinator.key";
    std::string coordinatorDelegation = "keys/coordinator.delegation";
    std::string devicesDir = "devices";
  } keys;
  struct Broker {
    std::string host = "127.0.0.1";
    std::int64_t port = 1883;
    std::string username = "coordinator";
    std::string passwordFile = "keys/coordinator.mqtt-password";
    std::int64_t keepaliveSeconds = 30;
    std::int64_t maxMessageBytes = 16 << 20;
  } broker;
  struct Registry {
    std::string path = "registry.db";
  } registry;
  struct Model {
    std::string arch = "mlp:784-128-10";
    std::string initial = "models/initial.model";
  } model;
  struct Validation {
    std::string holdout = "fashion-mnist:test";
    double tolerance = 0.01;
    double sliceTolerance = 0.05;
    double sliceMinStableAccuracy = 0.2;
    std::int64_t maxParameters = 4'000'000;
    std::int64_t maxModelBytes = 16 << 20;
  } validation;
  struct Rounds {
    std::string mode = "synchronous";
    double fraction = 0.1;
    std::int64_t targetUpdates = 0;
    double overSelection = 1.3;
    std::int64_t minUpdates = 2;
    std::int64_t maxUpdates = 1000;
    std::int64_t deadlineSeconds = 120;
    std::int64_t minSamples = 16;
    std::int64_t asyncBuffer = 10;
    double stalenessExponent = 0.5;
    std::int64_t maxStaleness = 4;
  } rounds;
  struct Triggers {
    std::int64_t scheduleSeconds = 0;
    std::int64_t newDataSamples = 0;
    double driftPsi = 0.0;
    double degradationDrop = 0.0;
  } triggers;
  struct Training {
    std::int64_t epochs = 1;
    std::int64_t batchSize = 32;
    double learningRate = 0.05;
    std::string optimizer = "sgd";
    double momentum = 0.9;
    double weightDecay = 0.0;
    double proximalMu = 0.0;
    std::string trainable = "all";
  } training;
  struct Delta {
    std::string encoding = "float32";
    double clipNorm = 0.0;
    double noiseStd = 0.0;
    double topKFraction = 0.1;
    std::string rounding = "nearest";
  } delta;
  struct Aggregation {
    std::string strategy = "fedavg";
    double serverLearningRate = 1.0;
    double serverMomentum = 0.9;
    double beta1 = 0.9;
    double beta2 = 0.99;
    double tau = 1e-3;
    double trimFraction = 0.1;
    std::int64_t krumByzantine = 1;
    std::int64_t multiKrumSelect = 0;
    double clipNorm = 0.0;
    double dpNoiseMultiplier = 0.0;
  } aggregation;
  struct Ingest {
    std::int64_t queueCapacity = 1024;
    std::int64_t verifyThreads = 2;
    double maxUpdateNorm = 100.0;
  } ingest;
  struct Rollout {
    double canaryPercent = 10.0;
    std::int64_t windowSeconds = 60;
    std::int64_t minReports = 3;
    double maxAccuracyDrop = 0.02;
    double minShadowAgreement = 0.9;
    std::int64_t maxHealthFailures = 0;
    bool autoPromote = true;
    bool autoRollback = true;
  } rollout;

  // `path` resolved against fleet.directory unless absolute.
  std::filesystem::path resolve(const std::string& path) const;
};

// Parses and validates a coordinator.toml. Unknown sections or keys, wrong
// types and out-of-range values are BadConfig errors naming the key.
Result<CoordinatorConfig> loadCoordinatorConfig(const std::filesystem::path& file);
Result<CoordinatorConfig> parseCoordinatorConfig(std::string_view text, std::string_view source);

// The commented TOML text of `config`: every setting with its documentation.
std::string renderCoordinatorConfig(const CoordinatorConfig& config);

}  // namespace edgefl::server
