// The device runtime against a real mosquitto with the configuration
// `edgefl fleet init` generates; the test is the coordinator: it publishes
// signed deployments (retained) with the fleet's coordinator key and
// delegation, and reads what the device publishes.

#include <gtest/gtest.h>

#include <fstream>

#include "device/broker_fixture.hpp"
#include "edgefl/shared/selection.hpp"
#include "edgefl/shared/topics.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class DeviceDeployTest : public test::BrokerFixture {};

TEST_F(DeviceDeployTest, SignedDeploymentArrivesAndIsActivated) {
  enroll("dev-1");
  auto c = coordinator();
  ASSERT_LT(c->subscribe("edgefl/demo/device/+/state"), 0x80);
  ASSERT_LT(c->subscribe("edgefl/demo/device/+/telemetry"), 0x80);
  const Model model = test::smallModel("mlp:8-16-3", 1, 3);
  // Retained before the device exists: it gets it when it subscribes.
  ASSERT_TRUE(
      test::accepted(c->publish(deployTopic("demo", "stable"),
                                fleet->deployment(model, {.sequence = 2}), 1, /*retain=*/true)));

  DeviceConfig config = deviceConfig("dev-1");
  config.limits.telemetryInterval = 1s;
  auto device = open(config);
  ASSERT_NE(device, nullptr);
  ASSERT_TRUE(test::eventually([&] { return device->status().modelLoaded; }))
      << device->status().lastError;
  DeviceStatus s = device->status();
  EXPECT_TRUE(s.connected);
  EXPECT_EQ(s.activeVersion, 3u);
  EXPECT_EQ(s.stableSequence, 2u);
  std::vector<float> x(8, 0.5f), y(3);
  ASSERT_TRUE(device->score(x, y).ok());

  auto online = waitFor(*c, deviceTopic("demo", "dev-1", "state"));
  ASSERT_TRUE(online.has_value());
  EXPECT_EQ(std::string(online->payload.begin(), online->payload.end()), "online");
  // Telemetry is due at connect, which can be before the retained
  // deployment is installed (version 0); one of the next reports (every
  // second) carries the installed model.
  std::uint64_t reported = 0;
  for (int i = 0; i < 5 && reported != 3u; ++i) {
    auto telemetry = waitFor(*c, deviceTopic("demo", "dev-1", "telemetry"));
    ASSERT_TRUE(telemetry.has_value());
    auto t = decodeVerified<wire::Telemetry>(telemetry->payload, enrolledKeys());
    ASSERT_TRUE(t.ok()) << t.error().toString();
    EXPECT_EQ(t->signer.subject, "dev-1");
    reported = t->root().getActiveVersion();
  }
  EXPECT_EQ(reported, 3u);

  // A new deployment while connected replaces it; the old one stays as the
  // previous model.
  const Model v4 = test::smallModel("mlp:8-16-3", 4, 4);
  ASSERT_TRUE(test::accepted(
      c->publish(deployTopic("demo", "stable"), fleet->deployment(v4, {.sequence = 3}), 1, true)));
  ASSERT_TRUE(test::eventually([&] { return device->status().activeVersion == 4u; }));

  device->close();
  auto offline = waitFor(*c, deviceTopic("demo", "dev-1", "state"));
  ASSERT_TRUE(offline.has_value());
  EXPECT_EQ(std::string(offline->payload.begin(), offline->payload.end()), "offline");
  auto late = coordinator();
  ASSERT_LT(late->subscribe(deviceTopic("demo", "dev-1", "state")), 0x80);
  auto retained = late->waitMessage(5s);
  ASSERT_TRUE(retained.has_value());
  EXPECT_TRUE(retained->retained);
  EXPECT_EQ(std::string(retained->payload.begin(), retained->payload.end()), "offline");
}

TEST_F(DeviceDeployTest, ForgedAndOlderDeploymentsAreRefusedWithTheirReason) {
  enroll("dev-1");
  auto device = open(deviceConfig("dev-1"));
  ASSERT_NE(device, nullptr);
  ASSERT_TRUE(test::eventually([&] { return device->status().connected; }));
  auto c = coordinator();
  const Model model = test::smallModel("mlp:8-16-3", 1, 5);
  const std::string stable = deployTopic("demo", "stable");
  ASSERT_TRUE(
      test::accepted(c->publish(stable, fleet->deployment(model, {.sequence = 5}), 1, true)));
  ASSERT_TRUE(test::eventually([&] { return device->status().activeVersion == 5u; }));

  // Signed by a key the fleet root never delegated to, carrying no
  // delegation.
  KeyPair stranger = KeyPair::generate();
  const Model evil = test::smallModel("mlp:8-16-3", 66, 6);
  ASSERT_TRUE(test::accepted(c->publish(
      stable, seal(Kind::DEPLOYMENT, fleet->deploymentPayload(evil, {.sequence = 6}), stranger), 1,
      true)));
  ASSERT_TRUE(test::eventually([&] { return device->status().refused == 1u; }));
  DeviceStatus s = device->status();
  EXPECT_EQ(s.activeVersion, 5u);
  EXPECT_NE(s.lastError.find("UnknownKey"), std::string::npos) << s.lastError;

  // Properly signed but older than what the device has seen.
  const Model old = test::smallModel("mlp:8-16-3", 2, 2);
  ASSERT_TRUE(test::accepted(c->publish(stable, fleet->deployment(old, {.sequence = 3}), 1, true)));
  ASSERT_TRUE(test::eventually([&] { return device->status().refused == 2u; }));
  s = device->status();
  EXPECT_EQ(s.activeVersion, 5u);
  EXPECT_EQ(s.stableSequence, 5u);
  EXPECT_NE(s.lastError.find("OutOfRange"), std::string::npos) << s.lastError;
  std::map<std::string, std::uint64_t> reasons;
  for (const auto& r : s.refusedByReason) reasons[r.reason] = r.count;
  EXPECT_EQ(reasons["UnknownKey"], 1u);
  EXPECT_EQ(reasons["OutOfRange"], 1u);
}

TEST_F(DeviceDeployTest, CorruptedModelFileFallsBackToThePreviousAtStart) {
  enroll("dev-1");
  auto c = coordinator();
  const std::string stable = deployTopic("demo", "stable");
  DeviceConfig config = deviceConfig("dev-1");
  {
    auto device = open(config);
    ASSERT_NE(device, nullptr);
    ASSERT_TRUE(test::eventually([&] { return device->status().connected; }));
    ASSERT_TRUE(test::accepted(
        c->publish(stable, fleet->deployment(test::smallModel("mlp:8-16-3", 1, 1), {.sequence = 1}),
                   1, true)));
    ASSERT_TRUE(test::eventually([&] { return device->status().activeVersion == 1u; }));
    ASSERT_TRUE(test::accepted(
        c->publish(stable, fleet->deployment(test::smallModel("mlp:8-16-3", 2, 2), {.sequence = 2}),
                   1, true)));
    ASSERT_TRUE(test::eventually([&] { return device->status().activeVersion == 2u; }));
  }
  const fs::path file = config.storageDir / "models/stable-2.deploy";
  ASSERT_TRUE(fs::exists(file));
  fs::resize_file(file, fs::file_size(file) / 2);  // a torn write by something else

  auto device = open(config);
  ASSERT_NE(device, nullptr);
  DeviceStatus s = device->status();
  EXPECT_TRUE(s.modelLoaded);
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.fallbacks, 1u);
  // The broker hands it sequence 2 again (retained); it is not news, and the
  // device keeps serving the model that works.
  ASSERT_TRUE(test::eventually([&] { return device->status().connected; }));
  std::this_thread::sleep_for(300ms);
  s = device->status();
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.refused, 0u);
}

TEST_F(DeviceDeployTest, CanaryMembersFollowTheCanaryAndLeaveWhenItIsCleared) {
  // Find ids on both sides of a 50% split for salt 11.
  std::string member, outsider;
  for (int i = 0; member.empty() || outsider.empty(); ++i) {
    const std::string id = "dev-" + std::to_string(i);
    (inCanary(11, 50, id) ? member : outsider) = id;
  }
  enroll(member);
  enroll(outsider);
  auto c = coordinator();
  ASSERT_TRUE(
      test::accepted(c->publish(deployTopic("demo", "stable"),
                                fleet->deployment(test::smallModel("mlp:8-16-3", 1, 1)), 1, true)));
  ASSERT_TRUE(test::accepted(
      c->publish(deployTopic("demo", "canary"),
                 fleet->deployment(test::smallModel("mlp:8-16-3", 2, 2),
                                   {.channel = wire::Channel::CANARY, .percent = 50, .salt = 11}),
                 1, true)));
  auto m = open(deviceConfig(member));
  auto o = open(deviceConfig(outsider));
  ASSERT_TRUE(test::eventually(
      [&] { return m->status().activeVersion == 2u && o->status().canarySequence == 1u; }));
  EXPECT_EQ(m->status().activeChannel, "canary");
  EXPECT_EQ(o->status().activeVersion, 1u);
  // A zero-length retained message clears the canary.
  ASSERT_TRUE(test::accepted(c->publish(deployTopic("demo", "canary"), {}, 1, true)));
  ASSERT_TRUE(test::eventually([&] { return m->status().activeVersion == 1u; }));
  EXPECT_FALSE(m->status().canaryPresent);
}

// The example application (device/examples/device_example.c), built by the
// normal build against the shared library, run against this fleet.
TEST_F(DeviceDeployTest, ExampleApplicationRuns) {
  const fs::path keyFile = enroll("dev-1");
  fs::path build = fs::read_symlink("/proc/self/exe").parent_path();
  while (!fs::exists(build / "CMakeCache.txt") && build != build.root_path()) {
    build = build.parent_path();
  }
  const fs::path example = build / "device/edgefl_device_example";
  ASSERT_TRUE(fs::exists(example)) << example;
  auto c = coordinator();
  ASSERT_TRUE(
      test::accepted(c->publish(deployTopic("demo", "stable"),
                                fleet->deployment(test::smallModel("mlp:8-16-3", 1, 9)), 1, true)));
  const std::string command = example.string() + " " + dir.string() + " demo dev-1 " +
                              keyFile.string() + " " + (tmp.path() / "example").string() + " " +
                              std::to_string(port) + " 10 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("model version 9 (stable), 8 inputs, 3 outputs"), std::string::npos) << out;
  EXPECT_NE(out.find("scored 200, observed 200"), std::string::npos) << out;
}

}  // namespace
}  // namespace edgefl
