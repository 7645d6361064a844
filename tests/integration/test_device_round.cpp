// Rounds over a real mosquitto: a signed round task leads to a signed
// update that verifies against the device's enrolled key; an Ack clears it;
// updates made while the broker is down are kept (durably) and sent when it
// is back; many devices run from one MQTT loop and one training pool.

#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <thread>

#include "device/broker_fixture.hpp"
#include "edgefl/shared/topics.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

class DeviceRoundTest : public test::BrokerFixture {
 protected:
  Model model = test::smallModel("mlp:8-16-3", 1, 1);

  void observe(Device& device, std::size_t n, std::uint64_t seed = 5) {
    const Dataset d = test::syntheticData(8, 3, n, seed);
    for (std::size_t i = 0; i < d.size(); ++i) {
      DeviceError e = device.observe(d.sample(i), d.labels[i]);
      ASSERT_TRUE(e.ok()) << e.toString();
    }
  }

  // Enrolls sim-0 .. sim-(n-1) and publishes the stable model; the
  // coordinator's client, subscribed to their updates (nullptr on failure).
  std::unique_ptr<test::MqttClient> fleetOf(int n) {
    for (int i = 0; i < n; ++i) enroll("sim-" + std::to_string(i));
    auto c = coordinator();
    const bool ready = c->subscribe("edgefl/demo/device/+/update") < 0x80 &&
                       test::accepted(c->publish(deployTopic("demo", "stable"),
                                                 fleet->deployment(model), 1, true));
    EXPECT_TRUE(ready);
    return ready ? std::move(c) : nullptr;
  }

  template <typename Check>
  static bool all(const std::vector<std::unique_ptr<Device>>& devices, Check check) {
    for (const auto& d : devices) {
      if (!check(d->status())) return false;
    }
    return true;
  }

  // Opens `round` for every device of `devices` (named sim-0, sim-1, ...),
  // takes one verified update from each and acknowledges them all.
  void runRound(test::MqttClient& c, const std::vector<std::unique_ptr<Device>>& devices,
                std::uint64_t round) {
    ASSERT_TRUE(test::accepted(c.publish(
        roundTopic("demo"),
        fleet->roundTask({.round = round, .baseDigest = parameterDigest(model)}), 1, true)));
    std::set<std::string> senders;
    const Keyring ring = enrolledKeys();
    while (senders.size() < devices.size()) {
      auto m = c.waitMessage(15s);
      ASSERT_TRUE(m.has_value()) << senders.size() << " of " << devices.size() << " updates";
      auto v = decodeVerified<wire::Update>(m->payload, ring);
      ASSERT_TRUE(v.ok()) << v.error().toString();
      EXPECT_EQ(std::string(v->root().getDeviceId()), v->signer.subject);
      EXPECT_EQ(v->root().getRound(), round);
      senders.insert(v->signer.subject);
    }
    for (std::size_t i = 0; i < devices.size(); ++i) {
      const std::string id = "sim-" + std::to_string(i);
      ASSERT_TRUE(test::accepted(c.publish(deviceTopic("demo", id, "ack"), fleet->ack(id, round))));
    }
    ASSERT_TRUE(test::eventually(
        [&] { return all(devices, [](const DeviceStatus& s) { return s.pendingUpdates == 0; }); }));
  }
};

TEST_F(DeviceRoundTest, RoundTaskLeadsToAVerifiedUpdateAndTheAckClearsIt) {
  enroll("dev-1");
  auto c = coordinator();
  ASSERT_LT(c->subscribe("edgefl/demo/device/+/update"), 0x80);
  ASSERT_TRUE(
      test::accepted(c->publish(deployTopic("demo", "stable"), fleet->deployment(model), 1, true)));
  auto device = open(deviceConfig("dev-1"));
  ASSERT_NE(device, nullptr);
  ASSERT_TRUE(test::eventually([&] { return device->status().modelLoaded; }));
  observe(*device, 40);
  ASSERT_TRUE(test::accepted(
      c->publish(roundTopic("demo"),
                 fleet->roundTask({.round = 7, .baseDigest = parameterDigest(model)}), 1, true)));

  auto message = waitFor(*c, deviceTopic("demo", "dev-1", "update"));
  ASSERT_TRUE(message.has_value());
  auto topic = parseDeviceTopic("demo", message->topic);
  ASSERT_TRUE(topic.has_value());
  auto update = decodeVerified<wire::Update>(message->payload, enrolledKeys());
  ASSERT_TRUE(update.ok()) << update.error().toString();
  EXPECT_EQ(update->signer.subject, topic->deviceId);
  auto u = update->root();
  EXPECT_EQ(std::string(u.getDeviceId()), "dev-1");
  EXPECT_EQ(u.getRound(), 7u);
  EXPECT_EQ(u.getSampleCount(), 40u);
  EXPECT_LT(u.getLossAfter(), u.getLossBefore());
  const auto delta = test::decodeUpdateDelta(u, model);
  EXPECT_GT(l2Norm(delta), 0.0);
  EXPECT_EQ(device->status().pendingUpdates, 1u);

  ASSERT_TRUE(
      test::accepted(c->publish(deviceTopic("demo", "dev-1", "ack"), fleet->ack("dev-1", 7))));
  ASSERT_TRUE(test::eventually([&] { return device->status().pendingUpdates == 0u; }));
  const DeviceStatus s = device->status();
  EXPECT_EQ(s.lastAckRound, 7u);
  EXPECT_EQ(s.lastAckVerdict, "accepted");
  EXPECT_EQ(s.lastRound, 7u);
}

TEST_F(DeviceRoundTest, UpdatesMadeWhileTheBrokerIsDownAreSentWhenItIsBack) {
  enroll("dev-1");
  DeviceConfig config = deviceConfig("dev-1");
  // The test's coordinator client is not a persistent session: after the
  // broker restart it subscribes anew, so resend often enough to meet it.
  config.limits.resendInterval = 1s;
  {
    auto c = coordinator();
    ASSERT_TRUE(test::accepted(
        c->publish(deployTopic("demo", "stable"), fleet->deployment(model), 1, true)));
    // Needs more samples than the device has yet.
    ASSERT_TRUE(test::accepted(c->publish(
        roundTopic("demo"),
        fleet->roundTask({.round = 2, .baseDigest = parameterDigest(model), .minSamples = 30}), 1,
        true)));
  }
  auto device = open(config);
  ASSERT_NE(device, nullptr);
  ASSERT_TRUE(test::eventually([&] {
    return device->status().roundState.rfind("not enough samples", 0) == 0;
  })) << device->status().roundState;
  observe(*device, 10);

  broker->stop();
  ASSERT_TRUE(test::eventually([&] { return !device->status().connected; }));
  observe(*device, 20, 6);  // now eligible: trains while the broker is down
  ASSERT_TRUE(test::eventually([&] { return device->status().pendingUpdates == 1u; }))
      << device->status().roundState;

  // Across a restart of the device as well: the update is in its database.
  device.reset();
  device = open(config);
  ASSERT_NE(device, nullptr);
  EXPECT_EQ(device->status().pendingUpdates, 1u);

  broker->start();
  auto c = coordinator();
  ASSERT_LT(c->subscribe("edgefl/demo/device/+/update"), 0x80);
  // Sent on reconnect (and again every resendInterval until acknowledged).
  auto message = waitFor(*c, deviceTopic("demo", "dev-1", "update"), 15s);
  ASSERT_TRUE(message.has_value()) << "connected " << device->status().connected;
  auto update = decodeVerified<wire::Update>(message->payload, enrolledKeys());
  ASSERT_TRUE(update.ok()) << update.error().toString();
  EXPECT_EQ(update->root().getRound(), 2u);
  EXPECT_EQ(update->root().getSampleCount(), 30u);
  ASSERT_TRUE(
      test::accepted(c->publish(deviceTopic("demo", "dev-1", "ack"), fleet->ack("dev-1", 2))));
  ASSERT_TRUE(test::eventually([&] { return device->status().pendingUpdates == 0u; }));
}

int threadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] {
        std::unique_lock lock(mu_);
        for (;;) {
          cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
          if (jobs_.empty()) return;
          auto job = std::move(jobs_.front());
          jobs_.pop_front();
          lock.unlock();
          job();
          lock.lock();
        }
      });
    }
  }
  ~Pool() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  Executor executor() {
    return [this](std::function<void()> job) {
      std::lock_guard lock(mu_);
      jobs_.push_back(std::move(job));
      cv_.notify_one();
    };
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

TEST_F(DeviceRoundTest, ManyDevicesRunFromOneLoopAndOnePool) {
  constexpr int kDevices = 24;
  auto c = fleetOf(kDevices);
  ASSERT_NE(c, nullptr);

  Pool pool(2);
  auto loop = std::make_shared<MqttLoop>();
  auto cache = std::make_shared<ModelCache>();
  loop->start();
  const int threadsBefore = threadCount();
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < kDevices; ++i) {
    DeviceConfig config = deviceConfig("sim-" + std::to_string(i));
    config.transport.loop = loop;
    config.executor = pool.executor();
    config.modelCache = cache;
    config.sampleStore = SampleStoreKind::Memory;
    config.durableWrites = false;
    devices.push_back(open(config));
    ASSERT_NE(devices.back(), nullptr);
  }
  // No thread per device: the loop and the pool drive them all.
  EXPECT_EQ(threadCount(), threadsBefore);
  EXPECT_EQ(loop->connectionCount(), static_cast<std::size_t>(kDevices));
  ASSERT_TRUE(test::eventually(
      [&] { return all(devices, [](const DeviceStatus& s) { return s.modelLoaded; }); }));
  EXPECT_EQ(cache->size(), 1u);
  for (auto& d : devices) observe(*d, 16);
  runRound(*c, devices, 1);
  // The loop reconnects its devices on its own after the broker restarts,
  // and serves their new sockets.
  broker->stop();
  ASSERT_TRUE(test::eventually(
      [&] { return all(devices, [](const DeviceStatus& s) { return !s.connected; }); }));
  broker->start();
  ASSERT_TRUE(test::eventually(
      [&] { return all(devices, [](const DeviceStatus& s) { return s.connected; }); }));
  auto after = coordinator();
  ASSERT_LT(after->subscribe("edgefl/demo/device/+/update"), 0x80);
  runRound(*after, devices, 2);
  devices.clear();
  EXPECT_EQ(loop->connectionCount(), 0u);
  loop->stop();
}

TEST_F(DeviceRoundTest, TheLoopServesTrafficWithoutWaitingForItsTimerPass) {
  // A pass over all connections only once a minute: connecting, the
  // retained deployment, the round task, the update published from a pool
  // thread and the ack all travel on socket events and on the publishing
  // connection's own wake-up.
  constexpr int kDevices = 3;
  auto c = fleetOf(kDevices);
  ASSERT_NE(c, nullptr);
  Pool pool(2);
  auto loop = std::make_shared<MqttLoop>(MqttLoop::Options{.tick = 60s});
  loop->start();
  // Let the loop make its first pass (right at start) with no connection.
  std::this_thread::sleep_for(100ms);
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < kDevices; ++i) {
    DeviceConfig config = deviceConfig("sim-" + std::to_string(i));
    config.transport.loop = loop;
    config.executor = pool.executor();
    config.sampleStore = SampleStoreKind::Memory;
    devices.push_back(open(config));
    ASSERT_NE(devices.back(), nullptr);
  }
  ASSERT_TRUE(test::eventually(
      [&] { return all(devices, [](const DeviceStatus& s) { return s.modelLoaded; }); }));
  for (auto& d : devices) observe(*d, 16);
  runRound(*c, devices, 1);
  devices.clear();
  EXPECT_EQ(loop->connectionCount(), 0u);
  loop->stop();
}

}  // namespace
}  // namespace edgefl
