// edgefl registry ... | rollout ... | round start: the operator's view of a
// fleet's registry and requests to its running coordinator. Requests go
// through the registry's commands table, which the coordinator polls.

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <thread>

#include "commands.hpp"
#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/server/registry.hpp"
#include "edgefl/tools/inspect.hpp"

namespace edgefl::tools {
namespace fs = std::filesystem;
using server::Registry;

namespace {

Node modelNode(const server::ModelRecord& m) {
  Node::Object o;
  o.emplace_back("version", m.version);
  o.emplace_back("parent", m.parent);
  o.emplace_back("stage", std::string(server::stageName(m.stage)));
  o.emplace_back("accuracy", m.accuracy);
  o.emplace_back("loss", m.loss);
  o.emplace_back("round", m.round);
  o.emplace_back("arch", m.arch);
  o.emplace_back("parameters", m.parameterCount);
  o.emplace_back("bytes", m.sizeBytes);
  o.emplace_back("digest", toHex(m.digest));
  Node::Array perClass;
  for (double a : m.perClassAccuracy) perClass.emplace_back(a);
  o.emplace_back("perClassAccuracy", std::move(perClass));
  o.emplace_back("reason", m.reason);
  o.emplace_back("createdAt", m.createdAt);
  return Node(std::move(o));
}

Node roundNode(const server::RoundRecord& r) {
  Node::Object o;
  o.emplace_back("round", r.round);
  o.emplace_back("trigger", r.trigger);
  o.emplace_back("state", std::string(server::roundStateName(r.state)));
  o.emplace_back("baseVersion", r.baseVersion);
  o.emplace_back("resultVersion", r.resultVersion);
  o.emplace_back("selected", r.selected);
  o.emplace_back("strategy", r.strategy);
  o.emplace_back("noiseMultiplier", r.noiseMultiplier);
  o.emplace_back("openedAt", r.openedAt);
  o.emplace_back("closedAt", r.closedAt);
  Node::Object verdicts, phases;
  for (const auto& [k, v] : r.verdicts) verdicts.emplace_back(k, v);
  for (const auto& [k, v] : r.phaseMillis) phases.emplace_back(k, v);
  o.emplace_back("verdicts", std::move(verdicts));
  o.emplace_back("phaseMillis", std::move(phases));
  o.emplace_back("outcome", r.outcome);
  return Node(std::move(o));
}

Node updateNode(const server::UpdateRecord& u) {
  Node::Object o;
  o.emplace_back("round", u.round);
  o.emplace_back("device", u.deviceId);
  o.emplace_back("verdict", std::string(u.accepted ? "accepted" : "rejected"));
  o.emplace_back("reason", u.reason);
  o.emplace_back("detail", u.detail);
  o.emplace_back("sampleCount", static_cast<std::uint64_t>(u.sampleCount));
  o.emplace_back("norm", u.norm);
  o.emplace_back("digest", toHex(u.digest));
  o.emplace_back("receivedAt", u.receivedAt);
  return Node(std::move(o));
}

Node deploymentNode(const server::DeploymentRecord& d) {
  Node::Object o;
  o.emplace_back("sequence", d.sequence);
  o.emplace_back("version", d.version);
  o.emplace_back("channel", d.channel);
  o.emplace_back("percent", d.percent);
  o.emplace_back("state", std::string(server::deploymentStateName(d.state)));
  o.emplace_back("reason", d.reason);
  o.emplace_back("createdAt", d.createdAt);
  return Node(std::move(o));
}

Node deviceNode(const server::DeviceRecord& d) {
  Node::Object o;
  o.emplace_back("device", d.id);
  o.emplace_back("keyId", toHex(keyIdOf(d.key)));
  o.emplace_back("enrolledAt", d.enrolledAt);
  o.emplace_back("revokedAt", d.revokedAt);
  o.emplace_back("lastSeen", d.lastSeen);
  o.emplace_back("activeVersion", d.activeVersion);
  o.emplace_back("lastTelemetry", d.lastTelemetryJson);
  return Node(std::move(o));
}

Node eventNode(const server::EventRecord& e) {
  Node::Object o;
  o.emplace_back("id", e.id);
  o.emplace_back("at", e.at);
  o.emplace_back("kind", e.kind);
  o.emplace_back("subject", e.subject);
  o.emplace_back("detail", e.detail);
  return Node(std::move(o));
}

// Prints an array of objects: JSON, or an aligned table of the named columns.
void printRows(const Node::Array& rows, bool json, const std::vector<std::string>& columns) {
  if (json) {
    std::cout << toJson(Node(rows)) << "\n";
    return;
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<std::size_t> width(columns.size());
  for (std::size_t c = 0; c < columns.size(); ++c) width[c] = columns[c].size();
  for (const auto& row : rows) {
    std::vector<std::string> line;
    const auto& o = std::get<Node::Object>(row.value);
    for (std::size_t c = 0; c < columns.size(); ++c) {
      std::string cell;
      for (const auto& [k, v] : o) {
        if (k != columns[c]) continue;
        if (const auto* s = std::get_if<std::string>(&v.value)) {
          cell = *s;
        } else if (const auto* d = std::get_if<double>(&v.value)) {
          std::ostringstream os;
          os << std::fixed << std::setprecision(4) << *d;
          cell = os.str();
        } else {
          cell = toJson(v);
        }
      }
      width[c] = std::max(width[c], cell.size());
      line.push_back(cell);
    }
    cells.push_back(std::move(line));
  }
  for (std::size_t c = 0; c < columns.size(); ++c) {
    std::cout << std::left << std::setw(static_cast<int>(width[c]) + 2) << columns[c];
  }
  std::cout << "\n";
  for (const auto& line : cells) {
    for (std::size_t c = 0; c < line.size(); ++c) {
      std::cout << std::left << std::setw(static_cast<int>(width[c]) + 2) << line[c];
    }
    std::cout << "\n";
  }
}

Result<fs::path> registryOfFleet(const std::string& fleetDir) {
  auto config = server::loadCoordinatorConfig(fs::path(fleetDir) / "coordinator.toml");
  if (!config.ok()) return config.error();
  return config->resolve(config->registry.path);
}

// Submits a command and waits for the coordinator to carry it out.
int submit(const std::string& fleetDir, const std::string& kind, const std::string& args,
           double waitSeconds) {
  auto path = registryOfFleet(fleetDir);
  if (!path.ok()) return reportError(path.error());
  auto reg = Registry::open(*path);
  if (!reg.ok()) return reportError(reg.error());
  auto id = reg->submitCommand(kind, args);
  if (!id.ok()) return reportError(id.error());
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int>(waitSeconds * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    auto c = reg->command(*id);
    if (c && c->doneAt != 0) {
      std::cout << kind << ": " << c->result << "\n";
      return c->result.rfind("ok:", 0) == 0 ? 0 : 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::cout << kind << ": queued as command " << *id
            << "; the coordinator carries it out when it runs\n";
  return 0;
}

}  // namespace

void addRegistryCommands(CLI::App& app, int& exitCode) {
  auto* registry = app.add_subcommand("registry", "Read a fleet's registry");
  registry->require_subcommand(1);
  struct Args {
    std::string db;
    bool json = false;
    std::int64_t round = 0;
    std::size_t limit = 1000;
  };
  auto a = std::make_shared<Args>();
  auto addCommon = [&](CLI::App* sub) {
    sub->add_option("--db", a->db, "Registry database (the fleet's registry.db)")->required();
    sub->add_flag("--json", a->json, "Print one JSON array of objects");
  };
  auto open = [a, &exitCode]() -> std::optional<Registry> {
    if (!fs::exists(a->db)) {
      exitCode = reportError(makeError(Code::NotFound, "no registry at " + a->db));
      return std::nullopt;
    }
    auto reg = Registry::open(a->db);
    if (!reg.ok()) {
      exitCode = reportError(reg.error());
      return std::nullopt;
    }
    return std::move(reg.value());
  };

  auto* models = registry->add_subcommand("models", "Models with lineage, stage and metrics");
  addCommon(models);
  models->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    for (const auto& m : reg->models()) rows.push_back(modelNode(m));
    printRows(rows, a->json, {"version", "parent", "stage", "accuracy", "round", "reason"});
  });
  auto* rounds = registry->add_subcommand("rounds", "Rounds with trigger, state, phases, verdicts");
  addCommon(rounds);
  rounds->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    for (const auto& r : reg->rounds()) rows.push_back(roundNode(r));
    printRows(rows, a->json,
              {"round", "trigger", "state", "baseVersion", "resultVersion", "outcome"});
  });
  auto* updates = registry->add_subcommand("updates", "Updates with their verdicts and reasons");
  addCommon(updates);
  updates->add_option("--round", a->round, "Only this round");
  updates->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    std::optional<std::uint64_t> round;
    if (a->round > 0) round = static_cast<std::uint64_t>(a->round);
    for (const auto& u : reg->updates(round)) rows.push_back(updateNode(u));
    printRows(rows, a->json, {"round", "device", "verdict", "reason", "sampleCount", "norm"});
  });
  auto* deployments = registry->add_subcommand("deployments", "Deployments by sequence");
  addCommon(deployments);
  deployments->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    for (const auto& d : reg->deployments()) rows.push_back(deploymentNode(d));
    printRows(rows, a->json, {"sequence", "version", "channel", "percent", "state", "reason"});
  });
  auto* devices = registry->add_subcommand("devices", "Devices, keys and last telemetry");
  addCommon(devices);
  devices->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    for (const auto& d : reg->devices()) rows.push_back(deviceNode(d));
    printRows(rows, a->json, {"device", "keyId", "revokedAt", "lastSeen", "activeVersion"});
  });
  auto* events = registry->add_subcommand("events", "The audit log");
  addCommon(events);
  events->add_option("--limit", a->limit, "Most recent N events")->capture_default_str();
  events->callback([a, open] {
    auto reg = open();
    if (!reg) return;
    Node::Array rows;
    for (const auto& e : reg->events(a->limit)) rows.push_back(eventNode(e));
    printRows(rows, a->json, {"id", "at", "kind", "subject", "detail"});
  });

  struct Request {
    std::string fleet, reason;
    double wait = 10;
  };
  auto rollout = app.add_subcommand("rollout", "Promote, roll back or pause the canary rollout");
  rollout->require_subcommand(1);
  for (const char* kind : {"promote", "rollback", "pause", "resume"}) {
    auto r = std::make_shared<Request>();
    auto* sub = rollout->add_subcommand(kind, std::string("Ask the coordinator to ") + kind);
    sub->add_option("--fleet", r->fleet, "Fleet directory")->required();
    sub->add_option("--reason", r->reason, "Recorded in the audit log");
    sub->add_option("--wait", r->wait, "Seconds to wait for the coordinator")
        ->capture_default_str();
    std::string k = kind;
    sub->callback([r, k, &exitCode] { exitCode = submit(r->fleet, k, r->reason, r->wait); });
  }
  auto* round = app.add_subcommand("round", "Rounds");
  round->require_subcommand(1);
  auto rs = std::make_shared<Request>();
  auto* start = round->add_subcommand("start", "Ask the coordinator to open a round now");
  start->add_option("--fleet", rs->fleet, "Fleet directory")->required();
  start->add_option("--wait", rs->wait, "Seconds to wait for the coordinator")
      ->capture_default_str();
  start->callback(
      [rs, &exitCode] { exitCode = submit(rs->fleet, "round-start", "manual", rs->wait); });
}

}  // namespace edgefl::tools
