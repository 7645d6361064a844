// `edgefl fleet init`, `device enroll|revoke`, `keygen` and `inspect`,
// run as the real CLI binary.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/process.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"
#include "support/fleet.hpp"
#include "support/messages.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

unsigned modeOf(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 0777;
}

TEST(FleetInit, CreatesAReadyFleetDirectory) {
  test::TempDir tmp;
  const fs::path dir = tmp.path() / "fleet";
  std::string out;
  ASSERT_EQ(test::runCli("fleet init " + dir.string() + " --name demo --broker-port 18999", &out),
            0)
      << out;
  for (const char* f :
       {"coordinator.toml", "keys/root.key", "keys/root.pub", "keys/coordinator.key",
        "keys/coordinator.pub", "keys/coordinator.delegation", "keys/coordinator.mqtt-password",
        "keys/observer.mqtt-password", "broker/mosquitto.conf", "broker/passwd", "broker/acl"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  EXPECT_TRUE(fs::is_directory(dir / "devices"));
  // The broker's command line carries the allocator setting.
  EXPECT_NE(out.find(std::string("GLIBC_TUNABLES=") + kBrokerMallocTunables + " mosquitto -c " +
                     fs::absolute(dir / "broker" / "mosquitto.conf").string()),
            std::string::npos)
      << out;
  EXPECT_EQ(modeOf(dir / "keys/root.key"), 0600u);
  EXPECT_EQ(modeOf(dir / "keys/coordinator.key"), 0600u);
  EXPECT_EQ(modeOf(dir / "broker/passwd"), 0600u);

  auto config = server::loadCoordinatorConfig(dir / "coordinator.toml");
  ASSERT_TRUE(config.ok()) << config.error().toString();
  EXPECT_EQ(config->fleet.name, "demo");
  EXPECT_EQ(config->broker.port, 18999);
  EXPECT_EQ(config->resolve(config->keys.rootPublic), dir / "keys/root.pub");

  // The delegation verifies against the root and authorizes the coordinator key.
  auto root = loadPublicKey(dir / "keys/root.pub");
  auto coordinator = KeyPair::load(dir / "keys/coordinator.key");
  ASSERT_TRUE(root.ok() && coordinator.ok());
  Keyring ring;
  ring.add(*root, Role::ROOT);
  VerifyOptions options;
  options.fleet = "demo";
  auto delegation = readFileBytes(dir / "keys/coordinator.delegation", 1 << 16);
  ASSERT_TRUE(delegation.ok());
  auto subject = verifyDelegation(*delegation, ring, options);
  ASSERT_TRUE(subject.ok()) << subject.error().toString();
  EXPECT_EQ(subject->key, coordinator->publicKey());
  EXPECT_EQ(subject->role, Role::COORDINATOR);

  std::string conf;
  std::getline(std::ifstream(dir / "broker/mosquitto.conf"), conf, '\0');
  EXPECT_NE(conf.find("listener 18999 127.0.0.1"), std::string::npos);
  EXPECT_NE(conf.find("allow_anonymous false"), std::string::npos);
  std::string acl;
  std::getline(std::ifstream(dir / "broker/acl"), acl, '\0');
  EXPECT_NE(acl.find("pattern write edgefl/demo/device/%u/update"), std::string::npos);
  EXPECT_EQ(acl.find("pattern write edgefl/demo/round"), std::string::npos);
}

TEST(FleetInit, RefusesNonEmptyDirectoryAndBadNames) {
  test::TempDir tmp;
  std::ofstream(tmp.path() / "precious") << "x";
  std::string out;
  EXPECT_NE(test::runCli("fleet init " + tmp.path().string(), &out), 0);
  EXPECT_NE(out.find("AlreadyExists"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(tmp.path() / "precious"));
  EXPECT_NE(test::runCli("fleet init " + (tmp.path() / "f").string() + " --name 'a/b'", &out), 0);
  EXPECT_NE(out.find("fleet name"), std::string::npos) << out;
  EXPECT_NE(test::runCli("fleet init " + (tmp.path() / "g").string() + " --broker-port 0", &out),
            0);
}

TEST(Device, EnrollIsIdempotentAndRevokeRemovesAccess) {
  test::TempDir tmp;
  const fs::path dir = tmp.path() / "fleet";
  ASSERT_EQ(test::runCli("fleet init " + dir.string() + " --name demo"), 0);
  std::string out;
  ASSERT_EQ(test::runCli("keygen --out " + (tmp.path() / "d1").string() + " --json", &out), 0)
      << out;
  EXPECT_NE(out.find("\"keyId\""), std::string::npos);
  const std::string enroll = "device enroll --fleet " + dir.string() + " --id dev-1 --pubkey " +
                             (tmp.path() / "d1.pub").string();
  ASSERT_EQ(test::runCli(enroll + " --json", &out), 0) << out;
  EXPECT_TRUE(fs::exists(dir / "devices/dev-1.pub"));
  EXPECT_EQ(modeOf(dir / "devices/dev-1.mqtt-password"), 0600u);
  const std::string password = test::readPassword(dir / "devices/dev-1.mqtt-password");
  ASSERT_EQ(test::runCli(enroll, &out), 0) << out;
  EXPECT_EQ(test::readPassword(dir / "devices/dev-1.mqtt-password"), password);

  ASSERT_EQ(test::runCli("keygen --out " + (tmp.path() / "d2").string()), 0);
  EXPECT_NE(test::runCli("device enroll --fleet " + dir.string() + " --id dev-1 --pubkey " +
                             (tmp.path() / "d2.pub").string(),
                         &out),
            0);
  EXPECT_NE(out.find("another key"), std::string::npos) << out;
  EXPECT_NE(test::runCli("device enroll --fleet " + dir.string() + " --id coordinator --pubkey " +
                             (tmp.path() / "d2.pub").string(),
                         &out),
            0);
  EXPECT_NE(out.find("reserved"), std::string::npos) << out;

  std::string passwd;
  std::getline(std::ifstream(dir / "broker/passwd"), passwd, '\0');
  EXPECT_NE(passwd.find("dev-1:$7$"), std::string::npos);
  ASSERT_EQ(test::runCli("device revoke --fleet " + dir.string() + " --id dev-1", &out), 0) << out;
  std::getline(std::ifstream(dir / "broker/passwd"), passwd, '\0');
  EXPECT_EQ(passwd.find("dev-1:"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "devices/revoked/dev-1.pub"));
  EXPECT_NE(test::runCli("device revoke --fleet " + dir.string() + " --id dev-1", &out), 0);
}

TEST(Inspect, DecodesAndVerifiesSignedMessages) {
  test::TempDir tmp;
  const fs::path dir = tmp.path() / "fleet";
  ASSERT_EQ(test::runCli("fleet init " + dir.string() + " --name demo"), 0);
  auto coordinator = KeyPair::load(dir / "keys/coordinator.key");
  auto delegation = readFileBytes(dir / "keys/coordinator.delegation", 1 << 16);
  ASSERT_TRUE(coordinator.ok() && delegation.ok());
  Bytes task = seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 4), *coordinator, *delegation);
  const fs::path file = tmp.path() / "task.bin";
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(task.data()), static_cast<std::streamsize>(task.size()));
  std::string out;
  ASSERT_EQ(test::runCli("inspect " + file.string() + " --json --fleet " + dir.string(), &out), 0)
      << out;
  EXPECT_NE(out.find("\"kind\":\"roundTask\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"verified\":true"), std::string::npos) << out;
  EXPECT_NE(out.find("\"round\":4"), std::string::npos) << out;
  EXPECT_NE(out.find("\"delegated\":true"), std::string::npos) << out;

  // Human text without keys: decoded, not verified, exit 0.
  ASSERT_EQ(test::runCli("inspect " + file.string(), &out), 0) << out;
  EXPECT_NE(out.find("trigger: manual"), std::string::npos) << out;

  // Verification against another fleet's root fails with exit 3 and a reason.
  const fs::path other = tmp.path() / "other";
  ASSERT_EQ(test::runCli("fleet init " + other.string() + " --name demo"), 0);
  EXPECT_EQ(test::runCli("inspect " + file.string() + " --json --fleet " + other.string(), &out),
            3);
  EXPECT_NE(out.find("DelegationInvalid"), std::string::npos) << out;

  // Garbage is refused with its reason.
  std::ofstream(tmp.path() / "junk.bin") << "definitely not a message";
  EXPECT_EQ(test::runCli("inspect " + (tmp.path() / "junk.bin").string(), &out), 1);
  EXPECT_NE(out.find("neither a signed message nor a model file"), std::string::npos) << out;
}

TEST(BrokerPasswords, LineFormatIsMosquittoPbkdf2) {
  std::string line = tools::mosquittoPasswordLine("dev-1", "secret", 1000);
  EXPECT_EQ(line.rfind("dev-1:$7$1000$", 0), 0u) << line;
  // user:$7$iterations$salt(12 bytes -> 16 b64)$hash(64 bytes -> 88 b64)
  auto parts = line.substr(line.find(':') + 1);
  EXPECT_EQ(std::count(parts.begin(), parts.end(), '$'), 4);
  EXPECT_EQ(parts.substr(parts.rfind('$') + 1).size(), 88u);
  EXPECT_NE(tools::mosquittoPasswordLine("dev-1", "secret"), line);  // fresh salt
}

// The brokers the demo and the tests start run with the same allocator
// setting that `edgefl fleet init` prints, and the README shows it.
TEST(FleetInit, TheDemoTheReadmeAndTheTestBrokersRunTheBrokerAsPrinted) {
  for (const char* file : {"tools/demo.sh", "README.md"}) {
    std::ifstream in(fs::path(EDGEFL_SOURCE_DIR) / file);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find(kBrokerMallocTunables), std::string::npos) << file;
  }
  if (std::getenv("GLIBC_TUNABLES") != nullptr) GTEST_SKIP() << "GLIBC_TUNABLES is set here";
  test::TestFleet fleet;
  std::ifstream in("/proc/" + std::to_string(fleet.broker().pid()) + "/environ");
  std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(env.begin(), env.end(), '\0', '\n');
  // glibc's loader may cut the variable in place at each ':' as it parses
  // it (2.36 does), so the value is looked for whole or cut.
  std::string cut = kBrokerMallocTunables;
  std::replace(cut.begin(), cut.end(), ':', '\n');
  const bool whole = env.find(std::string("\nGLIBC_TUNABLES=") + kBrokerMallocTunables + "\n") !=
                     std::string::npos;
  const bool split = env.find("\nGLIBC_TUNABLES=" + cut + "\n") != std::string::npos;
  EXPECT_TRUE(whole || split) << env;
}

}  // namespace
}  // namespace edgefl
