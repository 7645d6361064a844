// edgefl::Device without a broker: scoring allocates nothing once a model
// is active (counted with a replaced operator new), training runs on an
// executor the application provides, and devices share decoded models.

#include "edgefl/device/device.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <new>
#include <thread>

#include "device/device_fixture.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/broker.hpp"

namespace {
// Allocations made by the current thread while counting is on (the
// device's worker thread may allocate meanwhile; that is not the hot path).
thread_local bool counting = false;
thread_local std::size_t allocations = 0;

void* countedAlloc(std::size_t size) {
  if (counting) ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) {
  return countedAlloc(size);
}
void* operator new[](std::size_t size) {
  return countedAlloc(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (counting) ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  if (counting) ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace edgefl {
namespace {
namespace fs = std::filesystem;

class DeviceApiTest : public ::testing::Test {
 protected:
  test::TempDir tmp;
  test::TestFleet fleet;
  KeyPair key = KeyPair::generate();
  fs::path keyFile, rootPub;

  void SetUp() override {
    keyFile = test::saveDeviceKey(key, tmp.path(), "dev");
    rootPub = tmp.path() / "root.pub";
    fleet.writeRootPublicKey(rootPub);
  }
  DeviceConfig config(const std::string& id) {
    return test::offlineConfig(tmp.path(), id, keyFile, rootPub);
  }
  std::unique_ptr<Device> open(DeviceConfig c, const Model& model) {
    return open(std::move(c), fleet.deployment(model));
  }
  // With a deployment's bytes: devices that share a model cache share an
  // entry only for the same deployment, as they get the broker's retained
  // message (one built again in another second has another createdAt).
  std::unique_ptr<Device> open(DeviceConfig c, const Bytes& deployment) {
    auto device = Device::open(std::move(c));
    EXPECT_TRUE(device.ok()) << device.error().toString();
    DeviceError deployed = device.value()->handleMessage(deployTopic("demo", "stable"), deployment);
    EXPECT_TRUE(deployed.ok()) << deployed.toString();
    return std::move(device.value());
  }
};

TEST_F(DeviceApiTest, ScoringDoesNotAllocate) {
  const Model model = test::smallModel("mlp:64-32-10");
  auto device = open(config("dev-1"), model);
  ASSERT_EQ(device->inputCount(), 64u);
  std::vector<float> x(64, 0.25f), y(10);
  ASSERT_TRUE(device->score(x, y).ok());  // warm-up
  allocations = 0;
  counting = true;
  for (int i = 0; i < 1000; ++i) {
    x[static_cast<std::size_t>(i) % 64] = static_cast<float>(i % 100) / 100.0f;
    DeviceError e = device->score(x, y);
    if (!e.ok()) break;
  }
  counting = false;
  EXPECT_EQ(allocations, 0u);
  EXPECT_EQ(device->status().scored, 1001u);

  // Batches too, once their workspace exists.
  std::vector<float> batch(4 * 64, 0.5f), ys(40);
  ASSERT_TRUE(device->scoreBatch(batch, ys).ok());  // first batch: the workspace
  allocations = 0;
  counting = true;
  for (int i = 0; i < 100; ++i) {
    DeviceError e = device->scoreBatch(batch, ys);
    if (!e.ok()) break;
  }
  counting = false;
  EXPECT_EQ(allocations, 0u);
}

// A bounded pool shared by many devices, as a simulator would run one.
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
          ++ran;
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
  std::atomic<int> ran{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

TEST_F(DeviceApiTest, DevicesShareAnExecutorAndTheirModels) {
  const Model model = test::smallModel();
  Pool pool(2);
  auto cache = std::make_shared<ModelCache>();
  std::vector<std::unique_ptr<Device>> devices;
  std::vector<std::vector<Bytes>> sent(6);
  std::mutex sentMu;
  const Bytes deployment = fleet.deployment(model);
  for (int i = 0; i < 6; ++i) {
    DeviceConfig c = config("dev-" + std::to_string(i));
    c.executor = pool.executor();
    c.modelCache = cache;
    c.sampleStore = SampleStoreKind::Memory;
    c.limits.telemetryInterval = std::chrono::seconds(0);
    c.transport.publish = [&sentMu, &sent, i](std::string_view topic,
                                              std::span<const std::uint8_t> payload, bool) {
      if (topic.ends_with("/update")) {
        std::lock_guard lock(sentMu);
        sent[static_cast<std::size_t>(i)].emplace_back(payload.begin(), payload.end());
      }
      return true;
    };
    devices.push_back(open(std::move(c), deployment));
  }
  EXPECT_EQ(cache->size(), 1u);
  const Dataset d = test::syntheticData(8, 3, 16, 8);
  const Bytes task = fleet.roundTask({.round = 1, .baseDigest = parameterDigest(model)});
  for (auto& device : devices) {
    for (std::size_t i = 0; i < d.size(); ++i)
      ASSERT_TRUE(device->observe(d.sample(i), d.labels[i]).ok());
    ASSERT_TRUE(device->handleMessage(roundTopic("demo"), task).ok());
  }
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(sentMu);
    for (const auto& s : sent) {
      if (s.size() != 1) return false;
    }
    return true;
  }));
  EXPECT_EQ(pool.ran.load(), 6);
  Keyring ring;
  ring.add(key.publicKey(), Role::DEVICE, "any");
  for (std::size_t i = 0; i < sent.size(); ++i) {
    auto v = decodeVerified<wire::Update>(sent[i][0], ring);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(std::string(v->root().getDeviceId()), "dev-" + std::to_string(i));
    // Byte counters: the update out; the deployment and the task in.
    const DeviceStatus st = devices[i]->status();
    EXPECT_EQ(st.bytesSent, sent[i][0].size());
    EXPECT_EQ(st.bytesReceived, fleet.deployment(model).size() + task.size());
  }
  // Closing with nothing queued, and the pool outliving the devices.
  devices.clear();
  EXPECT_EQ(cache->size(), 0u);
}

TEST_F(DeviceApiTest, ClosingWaitsForTrainingAndDropsLateJobs) {
  const Model model = test::smallModel();
  // An executor that holds jobs until the test releases them: the device
  // is closed while its job is still queued.
  std::vector<std::function<void()>> held;
  std::mutex heldMu;
  DeviceConfig c = config("dev-1");
  c.executor = [&](std::function<void()> job) {
    std::lock_guard lock(heldMu);
    held.push_back(std::move(job));
  };
  auto device = open(std::move(c), model);
  const Dataset d = test::syntheticData(8, 3, 16, 8);
  for (std::size_t i = 0; i < d.size(); ++i)
    ASSERT_TRUE(device->observe(d.sample(i), d.labels[i]).ok());
  ASSERT_TRUE(
      device
          ->handleMessage(roundTopic("demo"),
                          fleet.roundTask({.round = 1, .baseDigest = parameterDigest(model)}))
          .ok());
  EXPECT_EQ(device->status().roundState, "training");
  device.reset();
  ASSERT_EQ(held.size(), 1u);
  held[0]();  // runs after the device is gone: must not touch it
}

TEST_F(DeviceApiTest, OpenReportsConfigurationErrors) {
  DeviceConfig c = config("dev-1");
  c.transport.enabled = true;
  c.transport.passwordFile = tmp.path() / "nope";
  auto r = Device::open(c);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().status, EDGEFL_STATUS_BAD_CONFIG);
  EXPECT_STREQ(r.error().name(), "BadConfig");
  c = config("dev-1");
  c.fleet = "";
  EXPECT_EQ(Device::open(c).error().status, EDGEFL_STATUS_BAD_CONFIG);
  c = config("dev-1");
  c.transport.enabled = true;
  c.transport.port = 0;
  EXPECT_EQ(Device::open(c).error().status, EDGEFL_STATUS_BAD_CONFIG);
}

}  // namespace
}  // namespace edgefl
