#include <filesystem>

#include "commands.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/tools/inspect.hpp"

namespace edgefl::tools {
namespace fs = std::filesystem;
namespace {

// Trusted keys: the fleet's root and enrolled devices, plus --key ROLE:FILE.
Result<Keyring> loadKeyring(const std::string& fleetDir, const std::vector<std::string>& keys) {
  Keyring ring;
  if (!fleetDir.empty()) {
    auto root = loadPublicKey(fs::path(fleetDir) / "keys" / "root.pub");
    if (!root.ok()) return root.error();
    ring.add(*root, Role::ROOT, "root");
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(fs::path(fleetDir) / "devices", ec)) {
      if (entry.path().extension() != ".pub") continue;
      auto key = loadPublicKey(entry.path());
      if (!key.ok()) return key.error();
      ring.add(*key, Role::DEVICE, entry.path().stem().string());
    }
  }
  for (const auto& spec : keys) {
    auto colon = spec.find(':');
    if (colon == std::string::npos) {
      return makeError(Code::InvalidArgument, "--key expects ROLE:FILE, got '" + spec + "'");
    }
    auto role = roleFromName(spec.substr(0, colon));
    if (!role) return makeError(Code::InvalidArgument, "unknown role in --key '" + spec + "'");
    auto key = loadPublicKey(spec.substr(colon + 1));
    if (!key.ok()) return key.error();
    ring.add(*key, *role, spec.substr(0, colon));
  }
  return ring;
}

}  // namespace

void addInspectCommand(CLI::App& app, int& exitCode) {
  auto* inspect =
      app.add_subcommand("inspect",
                         "Decode a signed message or model file; verify it when keys are given "
                         "(exit 3 when verification fails)");
  struct Args {
    std::string file, fleet, fleetName;
    std::vector<std::string> keys;
    std::int64_t now = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  inspect->add_option("FILE", a->file, "Message or model file")->required();
  inspect->add_option("--fleet", a->fleet, "Fleet directory: trust its root key and devices");
  inspect->add_option("--key", a->keys,
                      "Trust a public key: ROLE:FILE (root, coordinator, deployer, device)");
  inspect->add_option("--fleet-name", a->fleetName, "Require delegations for this fleet");
  inspect->add_option("--now", a->now, "Check validity at this Unix time instead of now");
  inspect->add_flag("--json", a->json, "Print JSON");
  inspect->callback([a, &exitCode] {
    VerifyOptions options;
    options.fleet = a->fleetName;
    options.now = a->now;
    auto bytes = readFileBytes(a->file, options.limits.maxBytes);
    if (!bytes.ok()) {
      exitCode = reportError(bytes.error());
      return;
    }
    auto ring = loadKeyring(a->fleet, a->keys);
    if (!ring.ok()) {
      exitCode = reportError(ring.error());
      return;
    }
    auto result = inspectBytes(*bytes, *ring, options);
    if (!result.ok()) {
      exitCode = reportError(result.error());
      return;
    }
    std::cout << (a->json ? toJson(result->tree) + "\n" : toText(result->tree));
    if (ring->size() > 0 && !result->verified) exitCode = 3;
  });
}

}  // namespace edgefl::tools
