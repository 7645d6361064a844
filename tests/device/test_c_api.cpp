// The C API: argument checks, status names, an offline device fed through
// edgefl_device_handle_message, and a custom transport through the publish
// callback (firmware with its own MQTT stack).

#include "edgefl/device.h"

#include <gtest/gtest.h>

#include <cstring>
#include <mutex>

#include "device/device_fixture.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

struct Outbox {
  std::mutex mu;
  std::vector<std::pair<std::string, Bytes>> messages;
  int refuse = 0;  // non-zero: the callback fails

  static int publish(void* user, const char* topic, const uint8_t* payload, size_t size, int) {
    auto* self = static_cast<Outbox*>(user);
    std::lock_guard lock(self->mu);
    if (self->refuse != 0) return 1;
    self->messages.emplace_back(topic, Bytes(payload, payload + size));
    return 0;
  }
  std::size_t count(const std::string& topic) {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& m : messages) n += m.first == topic ? 1 : 0;
    return n;
  }
};

struct LogLines {
  std::mutex mu;
  std::vector<std::string> lines;
  static void log(void* user, edgefl_log_level, const char* message) {
    auto* self = static_cast<LogLines*>(user);
    std::lock_guard lock(self->mu);
    self->lines.emplace_back(message);
  }
};

class CApiTest : public ::testing::Test {
 protected:
  test::TempDir tmp;
  test::TestFleet fleet;
  KeyPair key = KeyPair::generate();
  std::string keyFile, rootPub, storage;
  Outbox outbox;
  LogLines logs;
  edgefl_device_config config{};

  void SetUp() override {
    keyFile = test::saveDeviceKey(key, tmp.path(), "dev-1").string();
    rootPub = (tmp.path() / "root.pub").string();
    fleet.writeRootPublicKey(rootPub);
    storage = (tmp.path() / "storage").string();
    edgefl_device_config_init(&config);
    config.device_id = "dev-1";
    config.fleet = "demo";
    config.storage_dir = storage.c_str();
    config.device_key_file = keyFile.c_str();
    config.root_public_key_file = rootPub.c_str();
    config.mqtt_enabled = 0;
    config.publish = &Outbox::publish;
    config.publish_user = &outbox;
    config.log = &LogLines::log;
    config.log_user = &logs;
  }
};

TEST(CApi, StatusNamesMatchTheErrorCodes) {
  EXPECT_STREQ(edgefl_status_str(EDGEFL_STATUS_OK), "Ok");
  EXPECT_STREQ(edgefl_status_str(EDGEFL_STATUS_BAD_SIGNATURE), "BadSignature");
  EXPECT_STREQ(edgefl_status_str(EDGEFL_STATUS_RATE_LIMITED), "RateLimited");
  EXPECT_STREQ(edgefl_status_str(EDGEFL_STATUS_OUT_OF_MEMORY), "OutOfMemory");
  EXPECT_STREQ(edgefl_status_str(static_cast<edgefl_status>(777)), "Unknown");
  for (int s = EDGEFL_STATUS_OK; s <= EDGEFL_STATUS_RATE_LIMITED; ++s) {
    EXPECT_EQ(edgefl_status_str(static_cast<edgefl_status>(s)),
              std::string(codeName(static_cast<Code>(s))));
  }
  EXPECT_STREQ(edgefl_version(), EDGEFL_DEVICE_VERSION_STRING);
}

TEST_F(CApiTest, OpenChecksItsArguments) {
  edgefl_device* device = reinterpret_cast<edgefl_device*>(0x1);
  EXPECT_EQ(edgefl_device_open(nullptr, &device), EDGEFL_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(edgefl_device_open(&config, nullptr), EDGEFL_STATUS_INVALID_ARGUMENT);
  edgefl_device_config raw{};
  EXPECT_EQ(edgefl_device_open(&raw, &device), EDGEFL_STATUS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(edgefl_last_error()).find("edgefl_device_config_init"), std::string::npos);
  edgefl_device_config missing = config;
  missing.fleet = nullptr;
  EXPECT_EQ(edgefl_device_open(&missing, &device), EDGEFL_STATUS_BAD_CONFIG);
  EXPECT_EQ(device, nullptr);
  EXPECT_NE(std::string(edgefl_last_error()).find("fleet"), std::string::npos);
  edgefl_device_config badKey = config;
  badKey.device_key_file = rootPub.c_str();  // a public key file is not a secret key
  EXPECT_EQ(edgefl_device_open(&badKey, &device), EDGEFL_STATUS_BAD_KEY_FILE);
  edgefl_device_config noPassword = config;
  noPassword.mqtt_enabled = 1;
  EXPECT_EQ(edgefl_device_open(&noPassword, &device), EDGEFL_STATUS_BAD_CONFIG);
  edgefl_device_config store = config;
  store.sample_store = static_cast<edgefl_store_kind>(5);
  EXPECT_EQ(edgefl_device_open(&store, &device), EDGEFL_STATUS_BAD_CONFIG);

  EXPECT_EQ(edgefl_device_score(nullptr, nullptr, 0, nullptr, 0), EDGEFL_STATUS_INVALID_ARGUMENT);
  EXPECT_EQ(edgefl_device_get_status(nullptr, nullptr), EDGEFL_STATUS_INVALID_ARGUMENT);
  edgefl_device_close(nullptr);  // ignored
}

TEST_F(CApiTest, OfflineDeviceTakesMessagesScoresAndObserves) {
  edgefl_device* device = nullptr;
  ASSERT_EQ(edgefl_device_open(&config, &device), EDGEFL_STATUS_OK) << edgefl_last_error();
  const Model model = test::smallModel();
  float x[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  float y[3] = {};
  EXPECT_EQ(edgefl_device_score(device, x, 8, y, 3), EDGEFL_STATUS_NOT_FOUND);

  const std::string stable = deployTopic("demo", "stable");
  const Bytes deployment = fleet.deployment(model, {.sequence = 4});
  ASSERT_EQ(
      edgefl_device_handle_message(device, stable.c_str(), deployment.data(), deployment.size()),
      EDGEFL_STATUS_OK)
      << edgefl_last_error();
  EXPECT_EQ(
      edgefl_device_handle_message(device, stable.c_str(), deployment.data(), deployment.size()),
      EDGEFL_STATUS_DUPLICATE);
  const Bytes older = fleet.deployment(model, {.sequence = 3});
  EXPECT_EQ(edgefl_device_handle_message(device, stable.c_str(), older.data(), older.size()),
            EDGEFL_STATUS_OUT_OF_RANGE);
  EXPECT_NE(std::string(edgefl_last_error()).find("not newer"), std::string::npos);
  const Bytes junk{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_NE(edgefl_device_handle_message(device, stable.c_str(), junk.data(), junk.size()),
            EDGEFL_STATUS_OK);

  ASSERT_EQ(edgefl_device_score(device, x, 8, y, 3), EDGEFL_STATUS_OK);
  EXPECT_NEAR(y[0] + y[1] + y[2], 1.0f, 1e-5f);
  EXPECT_EQ(edgefl_device_score(device, x, 7, y, 3), EDGEFL_STATUS_SHAPE_MISMATCH);
  EXPECT_EQ(edgefl_device_score(device, x, 8, y, 2), EDGEFL_STATUS_INVALID_ARGUMENT);
  float batch[16], ys[6];
  std::memcpy(batch, x, sizeof x);
  std::memcpy(batch + 8, x, sizeof x);
  ASSERT_EQ(edgefl_device_score_batch(device, batch, 2, 8, ys, 6), EDGEFL_STATUS_OK);
  EXPECT_FLOAT_EQ(ys[0], y[0]);
  EXPECT_FLOAT_EQ(ys[3], y[0]);
  EXPECT_EQ(edgefl_device_score_batch(device, batch, 2, 7, ys, 6), EDGEFL_STATUS_SHAPE_MISMATCH);
  x[0] = 3.0f;
  EXPECT_EQ(edgefl_device_score(device, x, 8, y, 3), EDGEFL_STATUS_OUT_OF_RANGE);
  EXPECT_NE(std::string(edgefl_last_error()).find("feature 0"), std::string::npos);
  x[0] = 0.5f;
  ASSERT_EQ(edgefl_device_observe(device, x, 8, 2), EDGEFL_STATUS_OK);
  EXPECT_EQ(edgefl_device_observe(device, x, 8, 3), EDGEFL_STATUS_OUT_OF_RANGE);
  EXPECT_EQ(edgefl_device_observe_target(device, x, 8, 1.0f), EDGEFL_STATUS_INVALID_ARGUMENT);

  edgefl_device_status status;
  std::memset(&status, 0, sizeof status);
  EXPECT_EQ(edgefl_device_get_status(device, &status), EDGEFL_STATUS_INVALID_ARGUMENT);
  status.struct_size = sizeof status;
  ASSERT_EQ(edgefl_device_get_status(device, &status), EDGEFL_STATUS_OK);
  EXPECT_EQ(status.model_loaded, 1);
  EXPECT_EQ(status.active_version, 1u);
  EXPECT_EQ(status.active_sequence, 4u);
  EXPECT_EQ(status.stable_sequence, 4u);
  EXPECT_STREQ(status.active_channel, "stable");
  EXPECT_STREQ(status.active_digest, toHex(parameterDigest(model)).c_str());
  EXPECT_EQ(status.input_count, 8u);
  EXPECT_EQ(status.output_count, 3u);
  EXPECT_EQ(status.scored, 3u);
  EXPECT_EQ(status.observed, 1u);
  EXPECT_EQ(status.rejected, 3u);  // 7 features, 3.0 out of range, label 3
  EXPECT_EQ(status.samples_stored, 1u);
  EXPECT_EQ(status.refused_messages, 2u);
  EXPECT_NE(std::string(status.last_error).find("refused"), std::string::npos);
  edgefl_device_close(device);
  {
    std::lock_guard lock(logs.mu);
    EXPECT_FALSE(logs.lines.empty());
  }
}

TEST_F(CApiTest, PublishCallbackCarriesTelemetryAndUpdates) {
  config.telemetry_interval_seconds = 0;  // only the telemetry asked for
  edgefl_device* device = nullptr;
  ASSERT_EQ(edgefl_device_open(&config, &device), EDGEFL_STATUS_OK) << edgefl_last_error();
  const Model model = test::smallModel();
  const Bytes deployment = fleet.deployment(model);
  const std::string stable = deployTopic("demo", "stable");
  ASSERT_EQ(
      edgefl_device_handle_message(device, stable.c_str(), deployment.data(), deployment.size()),
      EDGEFL_STATUS_OK);
  ASSERT_EQ(edgefl_device_send_telemetry(device), EDGEFL_STATUS_OK) << edgefl_last_error();
  EXPECT_EQ(outbox.count(deviceTopic("demo", "dev-1", "telemetry")), 1u);

  // Offline: the update waits; it goes out when the transport is back.
  ASSERT_EQ(edgefl_device_set_connected(device, 0), EDGEFL_STATUS_OK);
  EXPECT_EQ(edgefl_device_send_telemetry(device), EDGEFL_STATUS_NOT_FOUND);
  const Dataset d = test::syntheticData(8, 3, 20, 2);
  for (std::size_t i = 0; i < d.size(); ++i) {
    ASSERT_EQ(edgefl_device_observe(device, d.sample(i).data(), 8, d.labels[i]), EDGEFL_STATUS_OK);
  }
  const Bytes task = fleet.roundTask({.round = 1, .baseDigest = parameterDigest(model)});
  const std::string round = roundTopic("demo");
  ASSERT_EQ(edgefl_device_handle_message(device, round.c_str(), task.data(), task.size()),
            EDGEFL_STATUS_OK);
  const std::string updateTopic = deviceTopic("demo", "dev-1", "update");
  edgefl_device_status status;
  status.struct_size = sizeof status;
  // Training runs on the device's worker thread.
  ASSERT_TRUE(test::eventually([&] {
    return edgefl_device_get_status(device, &status) == EDGEFL_STATUS_OK &&
           status.pending_updates == 1;
  }));
  EXPECT_EQ(outbox.count(updateTopic), 0u);
  ASSERT_EQ(edgefl_device_set_connected(device, 1), EDGEFL_STATUS_OK);
  EXPECT_EQ(outbox.count(updateTopic), 1u);
  EXPECT_EQ(status.last_round, 1u);
  edgefl_device_close(device);
}

}  // namespace
}  // namespace edgefl
