#include "edgefl/sim/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "edgefl/tools/inspect.hpp"

namespace edgefl::sim {
namespace {
namespace fs = std::filesystem;
using tools::Node;

Node optionalNumber(const std::optional<double>& v) {
  return v ? Node(*v) : Node();
}

Node counts(const std::map<std::string, std::uint64_t>& m) {
  Node::Object o;
  for (const auto& [k, v] : m) o.emplace_back(k, Node(v));
  return Node(std::move(o));
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string percent(const std::optional<double>& v) {
  return v ? fixed(*v * 100.0, 2) + "%" : "-";
}

std::string megabytes(std::uint64_t bytes) {
  return fixed(static_cast<double>(bytes) / 1e6, 2) + " MB";
}

std::string joinCounts(const std::map<std::string, std::uint64_t>& m, const char* sep) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : sep) + k + "=" + std::to_string(v);
  return s.empty() ? "-" : s;
}

Node configNode(const SimConfig& c) {
  Node::Array kinds;
  for (Attack a : c.attackers.kinds) kinds.emplace_back(std::string(attackName(a)));
  return Node(Node::Object{
      {"devices", Node(static_cast<std::uint64_t>(c.devices))},
      {"rounds", Node(static_cast<std::uint64_t>(c.rounds))},
      {"dataset", Node(c.dataset)},
      {"partition", Node(c.partition)},
      {"seed", Node(c.seed)},
      {"availability", Node(c.availability.probability)},
      {"day_night_amplitude", Node(c.availability.dayNightAmplitude)},
      {"straggler_fraction", Node(c.stragglers.fraction)},
      {"straggler_delay", Node(c.stragglers.delay.spec)},
      {"dropout_fraction", Node(c.dropouts.fraction)},
      {"attacker_fraction", Node(c.attackers.fraction)},
      {"attack_kinds", Node(std::move(kinds))},
  });
}

Node rowNode(const RoundRow& r) {
  Node::Object phases;
  for (const auto& [k, v] : r.phaseMillis) phases.emplace_back(k, Node(v));
  return Node(Node::Object{
      {"round", Node(r.round)},
      {"state", Node(r.state)},
      {"online", Node(r.online)},
      {"selected", Node(r.selected)},
      {"received", Node(r.received)},
      {"accepted", Node(r.accepted)},
      {"rejected", Node(r.received - r.accepted + r.excluded)},
      {"rejected_by_reason", counts(r.rejectedByReason)},
      {"excluded", Node(r.excluded)},
      {"dropouts", Node(r.dropouts)},
      {"accuracy", optionalNumber(r.accuracy)},
      {"version", Node(r.version)},
      {"rollout", Node(r.rollout)},
      {"stable_version", Node(r.stableVersion)},
      {"stable_accuracy", optionalNumber(r.stableAccuracy)},
      {"seconds", Node(r.seconds)},
      {"rollout_seconds", Node(r.rolloutSeconds)},
      {"phase_ms", Node(std::move(phases))},
      {"bytes_up", Node(r.bytesUp)},
      {"bytes_down", Node(r.bytesDown)},
      {"outcome", Node(r.outcome)},
  });
}

Status writeAtomically(const fs::path& path, const std::string& text) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return makeError(Code::IoError, "cannot write " + tmp.string());
  }
  fs::rename(tmp, path, ec);
  if (ec)
    return makeError(Code::IoError, "cannot rename to " + path.string() + ": " + ec.message());
  return {};
}

std::string svgEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

fs::path csvPathFor(const fs::path& summaryJson) {
  fs::path p = summaryJson;
  return p.replace_extension(".csv");
}

fs::path svgPathFor(const fs::path& summaryJson) {
  fs::path p = summaryJson;
  return p.replace_extension(".svg");
}

std::string summaryJson(const SimSummary& s) {
  Node::Array rounds;
  for (const auto& r : s.rounds) rounds.push_back(rowNode(r));
  Node::Object attacks;
  for (const auto& [name, a] : s.attacks) {
    attacks.emplace_back(name, Node(Node::Object{
                                   {"devices", Node(a.devices)},
                                   {"updates", Node(a.updates)},
                                   {"accepted", Node(a.accepted)},
                                   {"excluded", Node(a.excluded)},
                                   {"rejected_by_reason", counts(a.rejectedByReason)},
                               }));
  }
  Node::Array lineage;
  for (const auto& l : s.lineage) lineage.emplace_back(l);
  Node top(Node::Object{
      {"schema", Node("edgefl-sim/1")},
      {"fleet", Node(s.fleetName)},
      {"arch", Node(s.arch)},
      {"strategy", Node(s.strategy)},
      {"config", configNode(s.config)},
      {"devices", Node(s.devices)},
      {"attackers", Node(s.attackers)},
      {"stragglers", Node(s.stragglers)},
      {"workers", Node(static_cast<std::uint64_t>(s.workers))},
      {"cores", Node(static_cast<std::uint64_t>(s.cores))},
      {"setup_seconds", Node(s.setupSeconds)},
      {"run_seconds", Node(s.runSeconds)},
      {"memory", Node(Node::Object{{"idle_bytes_per_device", Node(s.idleBytesPerDevice)},
                                   {"loaded_bytes_per_device", Node(s.loadedBytesPerDevice)},
                                   {"peak_rss_bytes", Node(s.peakRssBytes)}})},
      {"throughput", Node(Node::Object{{"client_rounds_per_second", Node(s.clientRoundsPerSecond)},
                                       {"client_rounds_per_second_per_core",
                                        Node(s.clientRoundsPerSecondPerCore)}})},
      {"rounds", Node(std::move(rounds))},
      {"attacks", Node(std::move(attacks))},
      {"final", Node(Node::Object{{"stable_version", Node(s.stableVersion)},
                                  {"stable_accuracy", optionalNumber(s.stableAccuracy)},
                                  {"initial_accuracy", optionalNumber(s.initialAccuracy)},
                                  {"lineage", Node(std::move(lineage))},
                                  {"promotions", Node(s.promotions)},
                                  {"rollbacks", Node(s.rollbacks)},
                                  {"gate_rejections", Node(s.gateRejections)}})},
      {"stop_reason", Node(s.stopReason)},
  });
  return tools::toJson(top) + "\n";
}

std::string roundsCsv(const SimSummary& s) {
  std::ostringstream out;
  out << "round,state,online,selected,received,accepted,rejected,excluded,rejected_by_reason,"
         "dropouts,accuracy,version,rollout,stable_version,stable_accuracy,seconds,"
         "rollout_seconds,aggregate_ms,validate_ms,deploy_ms,bytes_up,bytes_down\n";
  auto phase = [](const RoundRow& r, const char* name) {
    auto it = r.phaseMillis.find(name);
    return it == r.phaseMillis.end() ? std::string() : fixed(it->second, 1);
  };
  for (const auto& r : s.rounds) {
    out << r.round << ',' << r.state << ',' << r.online << ',' << r.selected << ',' << r.received
        << ',' << r.accepted << ',' << (r.received - r.accepted + r.excluded) << ',' << r.excluded
        << ",\"" << joinCounts(r.rejectedByReason, ";") << "\"," << r.dropouts << ','
        << (r.accuracy ? fixed(*r.accuracy, 4) : "") << ',' << r.version << ",\"" << r.rollout
        << "\"," << r.stableVersion << ',' << (r.stableAccuracy ? fixed(*r.stableAccuracy, 4) : "")
        << ',' << fixed(r.seconds, 2) << ',' << fixed(r.rolloutSeconds, 2) << ','
        << phase(r, "aggregate") << ',' << phase(r, "validate") << ',' << phase(r, "deploy") << ','
        << r.bytesUp << ',' << r.bytesDown << '\n';
  }
  return out.str();
}

std::string accuracySvg(const SimSummary& s) {
  const double width = 640, height = 360, left = 60, right = 20, top = 40, bottom = 50;
  const double plotW = width - left - right, plotH = height - top - bottom;
  std::vector<std::pair<double, double>> candidate, stable;
  double lo = 1.0, hi = 0.0;
  if (s.initialAccuracy) stable.emplace_back(0.0, *s.initialAccuracy);
  for (const auto& r : s.rounds) {
    if (r.accuracy) candidate.emplace_back(static_cast<double>(r.round), *r.accuracy);
    if (r.stableAccuracy) stable.emplace_back(static_cast<double>(r.round), *r.stableAccuracy);
  }
  for (const auto& series : {candidate, stable}) {
    for (const auto& [x, y] : series) {
      lo = std::min(lo, y);
      hi = std::max(hi, y);
    }
  }
  if (hi < lo) lo = 0.0, hi = 1.0;
  lo = std::max(0.0, std::floor(lo * 10.0) / 10.0);
  hi = std::min(1.0, std::ceil(hi * 10.0 + 1e-9) / 10.0);
  if (hi - lo < 0.1) hi = std::min(1.0, lo + 0.1);
  const double maxRound = std::max(1.0, s.rounds.empty() ? 1.0 : double(s.rounds.back().round));
  auto px = [&](double x) { return left + plotW * x / maxRound; };
  auto py = [&](double y) { return top + plotH * (1.0 - (y - lo) / (hi - lo)); };

  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">"
      << svgEscape("Holdout accuracy per round: " + s.fleetName + " (" + s.arch + ", " +
                   s.config.partition + ", " + std::to_string(s.devices) + " devices)")
      << "</text>\n";
  // Grid lines at whole tenths (lo and hi are rounded to tenths above).
  const int tenths = static_cast<int>(std::lround((hi - lo) * 10.0));
  for (int i = 0; i <= tenths; ++i) {
    const double y = lo + i / 10.0;
    out << "<line x1=\"" << left << "\" x2=\"" << width - right << "\" y1=\"" << py(y) << "\" y2=\""
        << py(y) << "\" stroke=\"#ddd\"/>\n";
    out << "<text x=\"" << left - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
        << fixed(y * 100.0, 0) << "%</text>\n";
  }
  const int ticks = static_cast<int>(std::min(10.0, maxRound));
  for (int i = 0; i <= ticks; ++i) {
    const double x = std::round(maxRound * i / std::max(1, ticks));
    out << "<text x=\"" << px(x) << "\" y=\"" << height - bottom + 18
        << "\" text-anchor=\"middle\">" << x << "</text>\n";
  }
  out << "<text x=\"" << left + plotW / 2 << "\" y=\"" << height - 12
      << "\" text-anchor=\"middle\">round</text>\n";
  out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plotW << "\" height=\""
      << plotH << "\" fill=\"none\" stroke=\"#444\"/>\n";
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* color,
                      const char* dash) {
    if (pts.empty()) return;
    out << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
        << (dash[0] ? std::string(" stroke-dasharray=\"") + dash + "\"" : "") << " points=\"";
    for (const auto& [x, y] : pts) out << px(x) << ',' << py(y) << ' ';
    out << "\"/>\n";
    for (const auto& [x, y] : pts) {
      out << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"" << color
          << "\"/>\n";
    }
  };
  polyline(stable, "#1f77b4", "");
  polyline(candidate, "#ff7f0e", "4 3");
  out << "<text x=\"" << left + 10 << "\" y=\"" << top + 16
      << "\" fill=\"#1f77b4\">stable model</text>\n";
  out << "<text x=\"" << left + 10 << "\" y=\"" << top + 32
      << "\" fill=\"#ff7f0e\">candidate of the round</text>\n";
  out << "</svg>\n";
  return out.str();
}

std::string rowHeader() {
  return "round  online  sel  recv  acc  rejected (by reason)                      accuracy  "
         "round s  collect/aggregate/validate/deploy s  rollout             up/down";
}

// The coordinator's phases of a round in seconds, "-" for a phase it did
// not reach (a failed round is never aggregated).
std::string phasesText(const RoundRow& r) {
  std::string out;
  for (const char* name : {"collect", "aggregate", "validate", "deploy"}) {
    auto it = r.phaseMillis.find(name);
    if (!out.empty()) out += '/';
    out += it == r.phaseMillis.end() ? std::string("-") : fixed(it->second / 1000.0, 2);
  }
  return out;
}

std::string rowText(const RoundRow& r) {
  char buf[512];
  std::string rejected = std::to_string(r.received - r.accepted + r.excluded) + " (" +
                         joinCounts(r.rejectedByReason, " ") + ")";
  std::snprintf(
      buf, sizeof buf, "%5llu  %6llu  %3llu  %4llu  %3llu  %-40s  %8s  %7s  %-34s  %-18s  %s/%s",
      static_cast<unsigned long long>(r.round), static_cast<unsigned long long>(r.online),
      static_cast<unsigned long long>(r.selected), static_cast<unsigned long long>(r.received),
      static_cast<unsigned long long>(r.accepted), rejected.c_str(), percent(r.accuracy).c_str(),
      fixed(r.seconds, 1).c_str(), phasesText(r).c_str(), r.rollout.c_str(),
      megabytes(r.bytesUp).c_str(), megabytes(r.bytesDown).c_str());
  return buf;
}

std::string summaryText(const SimSummary& s) {
  std::ostringstream out;
  out << "\n== edgefl-sim summary: fleet " << s.fleetName << ", " << s.arch << ", " << s.devices
      << " devices (" << s.attackers << " attackers, " << s.stragglers << " stragglers), "
      << s.config.partition << ", " << s.strategy << " ==\n";
  out << "Accuracy (holdout) per round: ";
  if (s.initialAccuracy) out << "start " << percent(s.initialAccuracy);
  for (const auto& r : s.rounds) out << " -> " << percent(r.stableAccuracy);
  out << "\n";
  std::uint64_t accepted = 0, received = 0;
  std::map<std::string, std::uint64_t> reasons;
  for (const auto& r : s.rounds) {
    accepted += r.accepted;
    received += r.received;
    for (const auto& [k, v] : r.rejectedByReason) reasons[k] += v;
  }
  out << "Updates: " << received << " judged, " << accepted
      << " accepted; rejected by reason: " << joinCounts(reasons, ", ") << "\n";
  if (!s.attacks.empty()) {
    out << "Attacks (what the coordinator did with each attacker's updates):\n";
    for (const auto& [name, a] : s.attacks) {
      out << "  " << name << ": " << a.devices << " devices, " << a.updates << " updates, "
          << a.accepted << " passed ingest (" << a.excluded << " of them excluded by aggregation); "
          << "rejected: " << joinCounts(a.rejectedByReason, ", ") << "\n";
    }
  }
  out << "Rollout: " << s.promotions << " models promoted to stable, " << s.rollbacks
      << " rollbacks, " << s.gateRejections << " candidates rejected by the validation gate\n";
  out << "Deployed: stable v" << s.stableVersion << " (holdout accuracy "
      << percent(s.stableAccuracy) << ")";
  if (!s.lineage.empty()) {
    // The newest few and the initial model; the JSON has all of them.
    constexpr std::size_t kShown = 6;
    out << ", lineage ";
    for (std::size_t i = 0; i < s.lineage.size(); ++i) {
      if (i >= kShown && i + 1 < s.lineage.size()) {
        if (i == kShown) out << " <- ... (" << s.lineage.size() - kShown - 1 << " more)";
        continue;
      }
      out << (i ? " <- " : "") << s.lineage[i];
    }
  }
  out << "\n";
  out << "Throughput: " << fixed(s.clientRoundsPerSecond, 1) << " client-rounds/s ("
      << fixed(s.clientRoundsPerSecondPerCore, 1) << " per core, " << s.cores
      << " cores, training + signing + verification)\n";
  out << "Memory: " << fixed(s.idleBytesPerDevice / 1024.0, 0) << " KB per idle device, "
      << fixed(s.loadedBytesPerDevice / 1024.0, 0) << " KB with its samples; peak RSS "
      << megabytes(s.peakRssBytes) << "\n";
  out << "Time: setup " << fixed(s.setupSeconds, 1) << " s, rounds " << fixed(s.runSeconds, 1)
      << " s\n";
  if (!s.stopReason.empty()) out << "Stopped early: " << s.stopReason << "\n";
  return out.str();
}

Status writeReports(const SimSummary& summary) {
  const fs::path json = summary.config.summaryJson;
  EDGEFL_TRY(writeAtomically(json, summaryJson(summary)));
  EDGEFL_TRY(writeAtomically(csvPathFor(json), roundsCsv(summary)));
  EDGEFL_TRY(writeAtomically(svgPathFor(json), accuracySvg(summary)));
  return {};
}

}  // namespace edgefl::sim
