#include <filesystem>

#include "commands.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/tools/fleet.hpp"

namespace edgefl::tools {
namespace fs = std::filesystem;

void addFleetCommands(CLI::App& app, int& exitCode) {
  auto* fleet = app.add_subcommand("fleet", "Fleet directories");
  fleet->require_subcommand(1);
  auto* init = fleet->add_subcommand("init", "Create a ready fleet directory");
  auto opts = std::make_shared<FleetInitOptions>();
  auto dir = std::make_shared<std::string>();
  init->add_option("DIR", *dir, "Fleet directory (must not exist or be empty)")->required();
  init->add_option("--name", opts->name, "Fleet name (topic prefix edgefl/<name>/)")
      ->capture_default_str();
  init->add_option("--broker-port", opts->brokerPort, "Loopback port of the fleet's broker")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  init->add_option("--delegation-days", opts->delegationDays,
                   "Validity of the coordinator key delegation")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  init->add_option("--arch", opts->arch,
                   "Model architecture: logreg:784-10, mlp:784-H...-10 or lenet")
      ->capture_default_str();
  init->add_option("--holdout", opts->holdout,
                   "Validation data: fashion-mnist:test[:N] or a CSV path")
      ->capture_default_str();
  init->add_option("--seed", opts->seed, "Seed of the initial model")->capture_default_str();
  init->callback([opts, dir, &exitCode] {
    opts->directory = *dir;
    Status st = initFleet(*opts);
    if (!st.ok()) {
      exitCode = reportError(st.error());
      return;
    }
    const fs::path abs = fs::absolute(*dir);
    std::cout << "fleet '" << opts->name << "' created in " << abs.string()
              << "\n  broker:      mosquitto -c " << (abs / "broker" / "mosquitto.conf").string()
              << "\n  coordinator: edgefl-coordinator --config "
              << (abs / "coordinator.toml").string()
              << "\n  keep keys/root.key offline once the fleet is set up\n";
  });

  auto* device = app.add_subcommand("device", "Enroll and revoke devices");
  device->require_subcommand(1);
  auto* enroll = device->add_subcommand("enroll", "Enroll a device key and create its broker user");
  struct EnrollArgs {
    std::string fleet, id, pubkey;
    bool json = false;
  };
  auto ea = std::make_shared<EnrollArgs>();
  enroll->add_option("--fleet", ea->fleet, "Fleet directory")->required();
  enroll->add_option("--id", ea->id, "Device id")->required();
  enroll->add_option("--pubkey", ea->pubkey, "The device's public key file")->required();
  enroll->add_flag("--json", ea->json, "Print the result as JSON");
  enroll->callback([ea, &exitCode] {
    auto key = loadPublicKey(ea->pubkey);
    if (!key.ok()) {
      exitCode = reportError(key.error());
      return;
    }
    auto enrolled = enrollDevice(ea->fleet, ea->id, *key);
    if (!enrolled.ok()) {
      exitCode = reportError(enrolled.error());
      return;
    }
    if (ea->json) {
      std::cout << "{\"id\":\"" << enrolled->id << "\",\"keyId\":\"" << toHex(enrolled->keyId)
                << "\",\"passwordFile\":\"" << enrolled->passwordFile.string() << "\"}\n";
    } else {
      std::cout << "enrolled " << enrolled->id << " (key id " << toHex(enrolled->keyId)
                << "); broker password in " << enrolled->passwordFile.string() << "\n";
    }
  });

  auto* revoke = device->add_subcommand("revoke", "Revoke a device's key and broker user");
  auto ra = std::make_shared<EnrollArgs>();
  revoke->add_option("--fleet", ra->fleet, "Fleet directory")->required();
  revoke->add_option("--id", ra->id, "Device id")->required();
  revoke->callback([ra, &exitCode] {
    Status st = revokeDevice(ra->fleet, ra->id);
    if (!st.ok()) {
      exitCode = reportError(st.error());
      return;
    }
    std::cout << "revoked " << ra->id << "\n";
  });
}

}  // namespace edgefl::tools
