#include "edgefl/server/coordinator_config.hpp"

#include <toml++/toml.h>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <variant>
#include <vector>

#include "edgefl/shared/topics.hpp"

namespace edgefl::server {
namespace {

using Ref = std::variant<std::string*, double*, std::int64_t*, bool*>;

struct Setting {
  std::string_view section;
  std::string_view key;
  Ref ref;
  std::string_view help;
  double min = -INFINITY;
  double max = INFINITY;
  std::vector<std::string_view> choices = {};
};

struct Section {
  std::string_view name;
  std::string_view help;
};

constexpr Section kSections[] = {
    {"fleet", "The fleet this coordinator serves."},
    {"keys", "Keys. The root secret key should live offline; only its public half is needed here."},
    {"broker", "MQTT broker connection (the generated broker/mosquitto.conf)."},
    {"registry", "SQLite registry and metadata store."},
    {"model", "The model the fleet starts from."},
    {"validation", "Validation gate for every candidate global model."},
    {"rounds", "Federated rounds."},
    {"triggers", "What starts a round besides `edgefl round start`. 0 disables a trigger."},
    {"training", "Local training hyperparameters sent to devices in each RoundTask."},
    {"delta", "How devices clip, noise and encode their model deltas."},
    {"aggregation", "Aggregation strategy."},
    {"ingest", "Update verification."},
    {"rollout", "Canary rollout of validated models."},
};

// The one table of settings: name, destination, documentation, bounds.
std::vector<Setting> settingsOf(CoordinatorConfig& c) {
  return {
      {"fleet", "name", &c.fleet.name, "Fleet name: the MQTT topic prefix edgefl/<name>/..."},
      {"fleet", "directory", &c.fleet.directory,
       "Fleet directory; relative paths in this file resolve against it."},

      {"keys", "root_public", &c.keys.rootPublic, "Fleet root public key."},
      {"keys", "coordinator_key", &c.keys.coordinatorKey, "Coordinator signing key (mode 0600)."},
      {"keys", "coordinator_delegation", &c.keys.coordinatorDelegation,
       "KeyDelegation by which the root authorizes the coordinator key."},
      {"keys", "devices_dir", &c.keys.devicesDir,
       "Enrolled devices: <id>.pub per device, written by `edgefl device enroll`."},

      {"broker", "host", &c.broker.host, "Broker address."},
      {"broker", "port", &c.broker.port, "Broker port.", 1, 65535},
      {"broker", "username", &c.broker.username, "Broker user of the coordinator."},
      {"broker", "password_file", &c.broker.passwordFile, "File holding the broker password."},
      {"broker", "keepalive_seconds", &c.broker.keepaliveSeconds, "MQTT keepalive.", 5, 3600},
      {"broker", "max_message_bytes", &c.broker.maxMessageBytes,
       "Largest message accepted (same as the broker's max_packet_size).", 1024, 256 << 20},

      {"registry", "path", &c.registry.path, "Registry database file."},

      {"model", "arch", &c.model.arch, "Architecture spec of the fleet's model."},
      {"model", "initial", &c.model.initial,
       "Initial model, registered as version 1 on first start with an empty registry."},

      {"validation", "holdout", &c.validation.holdout,
       "Holdout data: 'fashion-mnist:test' or a CSV file path."},
      {"validation", "tolerance", &c.validation.tolerance,
       "Largest overall accuracy drop vs the stable model a candidate may have.", 0, 1},
      {"validation", "slice_tolerance", &c.validation.sliceTolerance,
       "Largest per-class accuracy drop vs the stable model.", 0, 1},
      {"validation", "slice_min_stable_accuracy", &c.validation.sliceMinStableAccuracy,
       "Judge per-class drops only against a stable model at least this accurate overall: a "
       "near-random model's per-class accuracy only says which class it defaults to.",
       0, 1},
      {"validation", "max_parameters", &c.validation.maxParameters,
       "Device budget: most parameters a model may have.", 1, 1e9},
      {"validation", "max_model_bytes", &c.validation.maxModelBytes,
       "Device budget: largest serialized model.", 1024, 1e10},

      {"rounds",
       "mode",
       &c.rounds.mode,
       "synchronous: select, wait, aggregate. asynchronous: "
       "aggregate every async_buffer accepted updates, staleness-weighted.",
       -INFINITY,
       INFINITY,
       {"synchronous", "asynchronous"}},
      {"rounds", "fraction", &c.rounds.fraction,
       "Share of devices selected per round (when target_updates is 0).", 0, 1},
      {"rounds", "target_updates", &c.rounds.targetUpdates,
       "Updates wanted per round; 0 selects by fraction instead.", 0, 1e7},
      {"rounds", "over_selection", &c.rounds.overSelection,
       "Select this many times target_updates to absorb dropouts.", 1, 10},
      {"rounds", "min_updates", &c.rounds.minUpdates,
       "Accepted updates needed to aggregate at the deadline.", 1, 1e7},
      {"rounds", "max_updates", &c.rounds.maxUpdates,
       "Close the round early once this many are accepted.", 1, 1e7},
      {"rounds", "deadline_seconds", &c.rounds.deadlineSeconds, "Round deadline.", 1, 86400 * 7},
      {"rounds", "min_samples", &c.rounds.minSamples,
       "Local labelled samples a device needs to take part.", 0, 1e9},
      {"rounds", "async_buffer", &c.rounds.asyncBuffer,
       "Asynchronous mode: aggregate every K accepted updates.", 1, 1e6},
      {"rounds", "staleness_exponent", &c.rounds.stalenessExponent,
       "Asynchronous mode: weight = 1 / (1 + staleness)^exponent.", 0, 10},
      {"rounds", "max_staleness", &c.rounds.maxStaleness,
       "Asynchronous mode: accept updates trained on up to this many stable models back.", 0, 1000},

      {"triggers", "schedule_seconds", &c.triggers.scheduleSeconds,
       "Start a round every N seconds.", 0, 1e9},
      {"triggers", "new_data_samples", &c.triggers.newDataSamples,
       "Start a round when devices report this many new labelled samples.", 0, 1e12},
      {"triggers", "drift_psi", &c.triggers.driftPsi,
       "Start a round when mean fleet drift (PSI) exceeds this.", 0, 100},
      {"triggers", "degradation_drop", &c.triggers.degradationDrop,
       "Start a round when fleet-reported accuracy drops this much below validation.", 0, 1},

      {"training", "epochs", &c.training.epochs, "Local epochs.", 1, 1000},
      {"training", "batch_size", &c.training.batchSize, "Local batch size.", 1, 65536},
      {"training", "learning_rate", &c.training.learningRate, "Local learning rate.", 0, 100},
      {"training",
       "optimizer",
       &c.training.optimizer,
       "Local optimizer.",
       -INFINITY,
       INFINITY,
       {"sgd", "adam"}},
      {"training", "momentum", &c.training.momentum, "SGD momentum.", 0, 1},
      {"training", "weight_decay", &c.training.weightDecay, "L2 weight decay.", 0, 1},
      {"training", "proximal_mu", &c.training.proximalMu, "FedProx proximal term; 0 = FedAvg.", 0,
       100},
      {"training",
       "trainable",
       &c.training.trainable,
       "Which parameters devices train.",
       -INFINITY,
       INFINITY,
       {"all", "head", "bias"}},

      {"delta",
       "encoding",
       &c.delta.encoding,
       "Delta encoding on the wire.",
       -INFINITY,
       INFINITY,
       {"float32", "int8", "topk"}},
      {"delta", "clip_norm", &c.delta.clipNorm, "Device-side L2 clip; 0 disables.", 0, 1e9},
      {"delta", "noise_std", &c.delta.noiseStd, "Device-side Gaussian noise; 0 disables.", 0, 1e3},
      {"delta", "top_k_fraction", &c.delta.topKFraction, "topk: share of entries sent.", 1e-6, 1},
      {"delta",
       "rounding",
       &c.delta.rounding,
       "int8 rounding.",
       -INFINITY,
       INFINITY,
       {"nearest", "stochastic"}},

      {"aggregation",
       "strategy",
       &c.aggregation.strategy,
       "Aggregation strategy.",
       -INFINITY,
       INFINITY,
       {"fedavg", "fedavgm", "fedadam", "fedyogi", "median", "trimmed_mean", "krum", "multi_krum"}},
      {"aggregation", "server_learning_rate", &c.aggregation.serverLearningRate,
       "Server learning rate: the step applied to the global model (1 = the plain aggregate; "
       "fedadam/fedyogi usually want 0.01-0.1).",
       0, 100},
      {"aggregation", "server_momentum", &c.aggregation.serverMomentum, "fedavgm momentum.", 0, 1},
      {"aggregation", "beta1", &c.aggregation.beta1, "fedadam/fedyogi first moment decay.", 0, 1},
      {"aggregation", "beta2", &c.aggregation.beta2, "fedadam/fedyogi second moment decay.", 0, 1},
      {"aggregation", "tau", &c.aggregation.tau, "fedadam/fedyogi adaptivity.", 1e-12, 1},
      {"aggregation", "trim_fraction", &c.aggregation.trimFraction,
       "trimmed_mean: share trimmed from each end.", 0, 0.49},
      {"aggregation", "krum_byzantine", &c.aggregation.krumByzantine,
       "krum: number of Byzantine updates tolerated.", 0, 1e6},
      {"aggregation", "multi_krum_select", &c.aggregation.multiKrumSelect,
       "multi_krum: updates averaged; 0 = n - f.", 0, 1e6},
      {"aggregation", "clip_norm", &c.aggregation.clipNorm,
       "Server-side per-update L2 clip; 0 disables.", 0, 1e9},
      {"aggregation", "dp_noise_multiplier", &c.aggregation.dpNoiseMultiplier,
       "Central DP: Gaussian noise std = multiplier * clip_norm / updates.", 0, 100},

      {"ingest", "queue_capacity", &c.ingest.queueCapacity,
       "Bounded queue between the MQTT thread and verification; when full, updates are "
       "rejected with Overloaded.",
       1, 1e6},
      {"ingest", "verify_threads", &c.ingest.verifyThreads,
       "Verification threads; with 2 or more one verifies while another commits (batches still "
       "commit in arrival order).",
       1, 64},
      {"ingest", "max_update_norm", &c.ingest.maxUpdateNorm,
       "Reject updates whose delta L2 norm exceeds this.", 0, 1e9},

      {"rollout", "canary_percent", &c.rollout.canaryPercent,
       "Share of devices (percent) in the canary channel.", 0, 100},
      {"rollout", "window_seconds", &c.rollout.windowSeconds,
       "Observation window before a canary decision.", 1, 86400 * 30},
      {"rollout", "min_reports", &c.rollout.minReports,
       "Canary telemetry reports needed to decide.", 1, 1e6},
      {"rollout", "max_accuracy_drop", &c.rollout.maxAccuracyDrop,
       "Roll back when canary labelled accuracy is this much below stable.", 0, 1},
      {"rollout", "min_shadow_agreement", &c.rollout.minShadowAgreement,
       "Roll back when shadow agreement falls below this.", 0, 1},
      {"rollout", "max_health_failures", &c.rollout.maxHealthFailures,
       "Roll back when canary devices report more health-check failures.", 0, 1e9},
      {"rollout", "auto_promote", &c.rollout.autoPromote,
       "Promote canary to stable automatically."},
      {"rollout", "auto_rollback", &c.rollout.autoRollback, "Roll back automatically."},
  };
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out.push_back('\\');
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(ch);
  }
  out.push_back('"');
  return out;
}

std::string formatDouble(double v) {
  std::ostringstream os;
  os.precision(10);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

Status assign(const Setting& s, const toml::node& node, std::string_view where) {
  auto bad = [&](std::string what) {
    return makeError(Code::BadConfig, std::string(where) + ": " + std::string(s.section) + "." +
                                          std::string(s.key) + " " + what);
  };
  auto checkRange = [&](double v) -> Status {
    if (!(v >= s.min && v <= s.max)) {
      return bad("= " + formatDouble(v) + " is outside [" + formatDouble(s.min) + ", " +
                 formatDouble(s.max) + "]");
    }
    return {};
  };
  return std::visit(
      [&](auto* dst) -> Status {
        using T = std::remove_pointer_t<decltype(dst)>;
        if constexpr (std::is_same_v<T, std::string>) {
          auto v = node.value<std::string>();
          if (!node.is_string() || !v) return bad("must be a string");
          if (!s.choices.empty()) {
            bool found = false;
            std::string list;
            for (auto c : s.choices) {
              found = found || c == *v;
              list += (list.empty() ? "" : ", ") + std::string(c);
            }
            if (!found) return bad("= '" + *v + "' is not one of " + list);
          }
          *dst = *v;
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) return bad("must be a number");
          double v = *node.value<double>();
          EDGEFL_TRY(checkRange(v));
          *dst = v;
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          if (!node.is_integer()) return bad("must be an integer");
          std::int64_t v = *node.value<std::int64_t>();
          EDGEFL_TRY(checkRange(static_cast<double>(v)));
          *dst = v;
        } else {
          if (!node.is_boolean()) return bad("must be true or false");
          *dst = *node.value<bool>();
        }
        return {};
      },
      s.ref);
}

}  // namespace

std::filesystem::path CoordinatorConfig::resolve(const std::string& path) const {
  std::filesystem::path p(path);
  if (p.is_absolute()) return p;
  return std::filesystem::path(fleet.directory) / p;
}

Result<CoordinatorConfig> parseCoordinatorConfig(std::string_view text, std::string_view source) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return makeError(Code::BadConfig, os.str());
  }
  CoordinatorConfig config;
  std::vector<Setting> settings = settingsOf(config);
  for (auto&& [sectionKey, sectionNode] : table) {
    const std::string sectionName(sectionKey.str());
    const toml::table* section = sectionNode.as_table();
    bool known = false;
    for (const auto& s : kSections) known = known || s.name == sectionName;
    if (!known || section == nullptr) {
      return makeError(Code::BadConfig,
                       std::string(source) + ": unknown section [" + sectionName + "]");
    }
    for (auto&& [key, node] : *section) {
      const Setting* match = nullptr;
      for (const auto& s : settings) {
        if (s.section == sectionName && s.key == key.str()) match = &s;
      }
      if (match == nullptr) {
        return makeError(Code::BadConfig, std::string(source) + ": unknown setting " + sectionName +
                                              "." + std::string(key.str()));
      }
      EDGEFL_TRY(assign(*match, node, source));
    }
  }
  if (Status name = validateName("fleet.name", config.fleet.name); !name.ok()) {
    return makeError(Code::BadConfig, std::string(source) + ": " + name.error().detail);
  }
  if (config.rounds.minUpdates > config.rounds.maxUpdates) {
    return makeError(
        Code::BadConfig,
        std::string(source) + ": rounds.min_updates = " + std::to_string(config.rounds.minUpdates) +
            " exceeds rounds.max_updates = " + std::to_string(config.rounds.maxUpdates));
  }
  return config;
}

Result<CoordinatorConfig> loadCoordinatorConfig(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return makeError(Code::IoError, "cannot open " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > (1u << 20)) {
    return makeError(Code::BadConfig, file.string() + " is larger than 1 MiB");
  }
  return parseCoordinatorConfig(text.str(), file.string());
}

std::string renderCoordinatorConfig(const CoordinatorConfig& config) {
  CoordinatorConfig copy = config;
  std::vector<Setting> settings = settingsOf(copy);
  std::ostringstream out;
  out << "# edgefl-coordinator configuration.\n"
         "# Every setting is listed with its default or chosen value; unknown keys are errors.\n";
  for (const auto& section : kSections) {
    out << "\n# " << section.help << "\n[" << section.name << "]\n";
    for (const auto& s : settings) {
      if (s.section != section.name) continue;
      out << "# " << s.help;
      if (!s.choices.empty()) {
        out << " One of:";
        for (auto c : s.choices) out << " " << c;
        out << ".";
      }
      out << "\n" << s.key << " = ";
      std::visit(
          [&](auto* v) {
            using T = std::remove_pointer_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) {
              out << quote(*v);
            } else if constexpr (std::is_same_v<T, double>) {
              out << formatDouble(*v);
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
              out << *v;
            } else {
              out << (*v ? "true" : "false");
            }
          },
          s.ref);
      out << "\n";
    }
  }
  return out.str();
}

}  // namespace edgefl::server
