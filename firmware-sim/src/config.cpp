#include "edgefl/sim/config.hpp"

#include <toml++/toml.h>

#include <array>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <variant>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/topics.hpp"

namespace edgefl::sim {
namespace {

constexpr std::array<std::pair<Attack, std::string_view>, 8> kAttacks{{
    {Attack::LabelFlip, "label_flip"},
    {Attack::SignFlip, "sign_flip"},
    {Attack::Scale, "scale"},
    {Attack::Noise, "noise"},
    {Attack::NonFinite, "nonfinite"},
    {Attack::Replay, "replay"},
    {Attack::ForgedSignature, "forged_signature"},
    {Attack::Impersonation, "impersonation"},
}};
constexpr std::array<Attack, 8> kAllAttacks{
    Attack::LabelFlip, Attack::SignFlip, Attack::Scale,           Attack::Noise,
    Attack::NonFinite, Attack::Replay,   Attack::ForgedSignature, Attack::Impersonation};

std::optional<double> number(std::string_view s) {
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string formatNumber(double v) {
  std::ostringstream os;
  os.precision(10);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// One setting of the file: where it lives, what it means, where it goes.
using Target = std::variant<std::uint32_t*, std::uint64_t*, double*, std::string*, bool*, Delay*,
                            std::vector<Attack>*>;
struct Setting {
  std::string_view section;
  std::string_view key;
  std::string_view help;
  Target target;
  double min = 0;
  double max = 0;
  std::vector<std::string_view> choices = {};
};

std::vector<Setting> settingsOf(SimConfig& c, const SimLimits& l) {
  const double u32 = 4294967295.0;
  return {
      {"sim", "devices",
       "Virtual devices (each a real edgefl::Device with its own key and connection).", &c.devices,
       1, static_cast<double>(l.maxDevices)},
      {"sim", "rounds", "Rounds to run.", &c.rounds, 1, static_cast<double>(l.maxRounds)},
      {"sim", "dataset", "Training data: fashion-mnist or csv:PATH.", &c.dataset},
      {"sim", "partition", "How the training set is split: iid, dirichlet:A, labels:K, shards:S.",
       &c.partition},
      {"sim", "seed", "Seed of every random choice of the simulation.", &c.seed, 0, 1.8e19},
      {"sim", "device_prefix", "Device ids are <prefix>-<n>.", &c.devicePrefix},
      {"sim", "samples_per_device", "Samples each device stores (0 = its whole partition).",
       &c.samplesPerDevice, 0, u32},
      {"sim", "train_samples", "Use the first N training samples (0 = all).", &c.trainSamples, 0,
       u32},
      {"sim", "workers", "Training threads shared by all devices (0 = one per core).", &c.workers,
       0, static_cast<double>(l.maxWorkers)},
      {"sim", "mqtt_loops", "Threads driving the MQTT connections (0 = one per 500 devices).",
       &c.mqttLoops, 0, static_cast<double>(l.maxLoops)},
      {"sim", "sample_store", "Device sample store.", &c.sampleStore, 0, 0, {"memory", "sqlite"}},
      {"sim", "telemetry_seconds", "Telemetry period of each device.", &c.telemetrySeconds, 1,
       3600},
      {"sim", "stream_per_second", "Fresh labelled samples each online device observes per second.",
       &c.streamPerSecond, 0, 1000},
      {"sim", "round_timeout_seconds", "Give up on a round (and the run) after this long.",
       &c.roundTimeoutSeconds, 1, 86400},
      {"sim", "setup_timeout_seconds", "Give up when devices are not ready after this long.",
       &c.setupTimeoutSeconds, 1, 86400},
      {"sim", "wait_for_rollout", "After the last round, wait for its canary decision.",
       &c.waitForRollout},
      {"availability", "probability", "Probability that a device is online in a round.",
       &c.availability.probability, 0, 1},
      {"availability", "day_night_amplitude",
       "Day/night swing: probability * (1 + amplitude * sin(2 pi t / day_seconds)).",
       &c.availability.dayNightAmplitude, 0, 1},
      {"availability", "day_seconds", "Length of a simulated day.", &c.availability.daySeconds, 1,
       1e7},
      {"stragglers", "fraction", "Share of devices that are slow.", &c.stragglers.fraction, 0, 1},
      {"stragglers", "delay",
       "Delay before each of their training jobs: fixed:S, uniform:A:B, exponential:MEAN, "
       "lognormal:MU:SIGMA (seconds).",
       &c.stragglers.delay},
      {"dropouts", "fraction",
       "Probability that a selected device goes offline while training for a round.",
       &c.dropouts.fraction, 0, 1},
      {"dropouts", "offline_seconds", "How long a dropped-out device stays offline.",
       &c.dropouts.offlineSeconds, 0, 86400},
      {"attackers", "fraction", "Share of devices that attack.", &c.attackers.fraction, 0, 1},
      {"attackers", "kinds",
       "Attacks, assigned round-robin: label_flip sign_flip scale noise nonfinite replay "
       "forged_signature impersonation.",
       &c.attackers.kinds},
      {"attackers", "scale_factor", "Factor of the scale attack.", &c.attackers.scaleFactor, -1e6,
       1e6},
      {"attackers", "noise_std", "Standard deviation of the noise attack, per coordinate.",
       &c.attackers.noiseStd, 0, 1e6},
  };
}

Status bad(std::string_view where, const Setting& s, const std::string& what) {
  return makeError(Code::BadConfig, std::string(where) + ": " + std::string(s.section) + "." +
                                        std::string(s.key) + " " + what);
}

Status checkRange(std::string_view where, const Setting& s, double v) {
  if (!(v >= s.min && v <= s.max)) {
    return bad(where, s,
               "= " + formatNumber(v) + " is outside [" + formatNumber(s.min) + ", " +
                   formatNumber(s.max) + "]");
  }
  return {};
}

Status assign(const Setting& s, const toml::node& node, std::string_view where) {
  return std::visit(
      [&](auto* dst) -> Status {
        using T = std::remove_pointer_t<decltype(dst)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!node.is_string()) return bad(where, s, "must be a string");
          *dst = *node.value<std::string>();
        } else if constexpr (std::is_same_v<T, Delay>) {
          if (!node.is_string()) return bad(where, s, "must be a string such as \"exponential:2\"");
          auto d = parseDelay(*node.value<std::string>());
          if (!d.ok()) return bad(where, s, d.error().detail);
          *dst = std::move(d.value());
        } else if constexpr (std::is_same_v<T, std::vector<Attack>>) {
          const toml::array* list = node.as_array();
          if (list == nullptr) return bad(where, s, "must be a list of attack names");
          std::vector<Attack> kinds;
          for (const auto& item : *list) {
            auto name = item.value<std::string>();
            auto a = name ? attackFromName(*name) : std::nullopt;
            if (!a) {
              return bad(where, s, "has '" + name.value_or("?") + "', not an attack name");
            }
            kinds.push_back(*a);
          }
          *dst = std::move(kinds);
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number()) return bad(where, s, "must be a number");
          const double v = *node.value<double>();
          EDGEFL_TRY(checkRange(where, s, v));
          *dst = v;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean()) return bad(where, s, "must be true or false");
          *dst = *node.value<bool>();
        } else {
          if (!node.is_integer()) return bad(where, s, "must be an integer");
          const auto v = *node.value<std::int64_t>();
          EDGEFL_TRY(checkRange(where, s, static_cast<double>(v)));
          *dst = static_cast<T>(v);
        }
        return {};
      },
      s.target);
}

}  // namespace

double Delay::sample(std::mt19937_64& rng) const {
  double v = 0;
  switch (kind) {
    case Kind::Fixed: v = a; break;
    case Kind::Uniform: v = std::uniform_real_distribution<double>(a, b)(rng); break;
    case Kind::Exponential:
      v = a > 0 ? std::exponential_distribution<double>(1.0 / a)(rng) : 0.0;
      break;
    case Kind::LogNormal: v = std::lognormal_distribution<double>(a, b)(rng); break;
  }
  return std::clamp(std::isfinite(v) ? v : kMaxDelaySeconds, 0.0, kMaxDelaySeconds);
}

Result<Delay> parseDelay(std::string_view spec) {
  auto fail = [&](const std::string& why) {
    return makeError(Code::InvalidArgument, "delay '" + std::string(spec) + "': " + why);
  };
  std::vector<std::string_view> parts;
  for (std::size_t at = 0;;) {
    const auto colon = spec.find(':', at);
    parts.push_back(spec.substr(at, colon == std::string_view::npos ? spec.npos : colon - at));
    if (colon == std::string_view::npos) break;
    at = colon + 1;
  }
  std::vector<double> values;
  for (std::size_t i = 1; i < parts.size(); ++i) {
    auto v = number(parts[i]);
    if (!v) {
      std::string what(1, '\'');  // appends: GCC 12 -Wrestrict misfires on "'" + s
      what.append(parts[i]).append("' is not a finite number");
      return fail(what);
    }
    values.push_back(*v);
  }
  Delay d;
  d.spec = std::string(spec);
  auto want = [&](std::size_t n) { return values.size() == n; };
  if (parts[0] == "fixed" && want(1)) {
    d.kind = Delay::Kind::Fixed;
  } else if (parts[0] == "uniform" && want(2)) {
    d.kind = Delay::Kind::Uniform;
  } else if (parts[0] == "exponential" && want(1)) {
    d.kind = Delay::Kind::Exponential;
  } else if (parts[0] == "lognormal" && want(2)) {
    d.kind = Delay::Kind::LogNormal;
  } else {
    return fail("expected fixed:S, uniform:A:B, exponential:MEAN or lognormal:MU:SIGMA");
  }
  d.a = values[0];
  d.b = values.size() > 1 ? values[1] : 0.0;
  if (d.kind == Delay::Kind::LogNormal) {
    if (d.b < 0 || d.b > 10 || d.a > std::log(kMaxDelaySeconds)) {
      return fail("needs SIGMA in [0, 10] and MU <= ln(" + formatNumber(kMaxDelaySeconds) + ")");
    }
    return d;
  }
  if (d.a < 0 || d.b < 0) return fail("seconds must not be negative");
  if (d.a > kMaxDelaySeconds || d.b > kMaxDelaySeconds) {
    return fail("seconds must not exceed " + formatNumber(kMaxDelaySeconds));
  }
  if (d.kind == Delay::Kind::Uniform && d.b < d.a) return fail("B must not be below A");
  return d;
}

std::span<const Attack> allAttacks() {
  return kAllAttacks;
}

std::string_view attackName(Attack attack) {
  for (const auto& [a, name] : kAttacks) {
    if (a == attack) return name;
  }
  return "unknown";
}

std::optional<Attack> attackFromName(std::string_view name) {
  for (const auto& [a, n] : kAttacks) {
    if (n == name) return a;
  }
  return std::nullopt;
}

Status validateSimConfig(const SimConfig& config, const SimLimits& limits) {
  SimConfig copy = config;
  const std::string where = config.configFile.empty() ? "sim config" : config.configFile.string();
  for (const Setting& s : settingsOf(copy, limits)) {
    Status st = std::visit(
        [&](auto* v) -> Status {
          using T = std::remove_pointer_t<decltype(v)>;
          if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
            return checkRange(where, s, static_cast<double>(*v));
          } else if constexpr (std::is_same_v<T, std::string>) {
            if (s.choices.empty()) return {};
            for (auto c : s.choices) {
              if (c == *v) return {};
            }
            return bad(where, s, "= '" + *v + "' is not one of the choices");
          } else {
            return {};
          }
        },
        s.target);
    EDGEFL_TRY(std::move(st));
  }
  auto check = [&](std::string_view section, std::string_view key, const std::string& what) {
    return makeError(Code::BadConfig,
                     where + ": " + std::string(section) + "." + std::string(key) + " " + what);
  };
  Status prefix = validateName("device prefix", config.devicePrefix);
  if (!prefix.ok() || config.devicePrefix.size() > 40) {
    return check("sim", "device_prefix",
                 "'" + config.devicePrefix + "' must be 1-40 of [A-Za-z0-9_.-], not starting " +
                     "with '.' or '-'");
  }
  if (config.dataset != "fashion-mnist" && config.dataset.rfind("csv:", 0) != 0) {
    return check("sim", "dataset", "= '" + config.dataset + "' is not fashion-mnist or csv:PATH");
  }
  if (config.attackers.fraction > 0 && config.attackers.kinds.empty()) {
    return check("attackers", "kinds", "is empty while attackers.fraction > 0");
  }
  return {};
}

Result<SimConfig> parseSimConfig(std::string_view text, std::string_view source, SimConfig base,
                                 const SimLimits& limits) {
  if (text.size() > limits.maxFileBytes) {
    return makeError(Code::BadConfig, std::string(source) + ": " + std::to_string(text.size()) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(limits.maxFileBytes));
  }
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
       << e.description();
    return makeError(Code::BadConfig, os.str());
  }
  SimConfig config = std::move(base);
  const std::vector<Setting> settings = settingsOf(config, limits);
  for (auto&& [sectionKey, sectionNode] : table) {
    const std::string section(sectionKey.str());
    const toml::table* entries = sectionNode.as_table();
    bool known = false;
    for (const auto& s : settings) known = known || s.section == section;
    if (!known || entries == nullptr) {
      return makeError(Code::BadConfig,
                       std::string(source) + ": unknown section [" + section + "]");
    }
    for (auto&& [key, node] : *entries) {
      const Setting* match = nullptr;
      for (const auto& s : settings) {
        if (s.section == section && s.key == key.str()) match = &s;
      }
      if (match == nullptr) {
        return makeError(Code::BadConfig, std::string(source) + ": unknown setting " + section +
                                              "." + std::string(key.str()));
      }
      EDGEFL_TRY(assign(*match, node, source));
    }
  }
  EDGEFL_TRY(validateSimConfig(config, limits));
  return config;
}

Result<SimConfig> loadSimConfig(const std::filesystem::path& file, SimConfig base,
                                const SimLimits& limits) {
  auto bytes = readFileBytes(file.string(), limits.maxFileBytes);
  if (!bytes.ok()) return makeError(Code::BadConfig, bytes.error().toString());
  base.configFile = file;
  return parseSimConfig(
      std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()), file.string(),
      std::move(base), limits);
}

std::string renderSimConfig(const SimConfig& config) {
  SimConfig copy = config;
  std::ostringstream out;
  out << "# edgefl-sim configuration. Unknown keys are errors.\n";
  std::string_view section;
  for (const Setting& s : settingsOf(copy, SimLimits{})) {
    if (s.section != section) {
      section = s.section;
      out << "\n[" << section << "]\n";
    }
    out << "# " << s.help << "\n" << s.key << " = ";
    std::visit(
        [&](auto* v) {
          using T = std::remove_pointer_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) {
            out << toml::value<std::string>(*v);
          } else if constexpr (std::is_same_v<T, Delay>) {
            out << toml::value<std::string>(v->spec);
          } else if constexpr (std::is_same_v<T, std::vector<Attack>>) {
            out << "[";
            for (std::size_t i = 0; i < v->size(); ++i) {
              out << (i ? ", " : "") << '"' << attackName((*v)[i]) << '"';
            }
            out << "]";
          } else if constexpr (std::is_same_v<T, bool>) {
            out << (*v ? "true" : "false");
          } else if constexpr (std::is_same_v<T, double>) {
            out << formatNumber(*v);
          } else {
            out << *v;
          }
        },
        s.target);
    out << "\n";
  }
  return out.str();
}

}  // namespace edgefl::sim
