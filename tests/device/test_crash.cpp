// Crash safety of deployment intake: a child process installs one signed
// deployment after another and is killed with SIGKILL at a random moment;
// the device must always reopen with a valid, signed model, never an older
// one than it had already activated, and with a healthy database.

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "device/device_fixture.hpp"
#include "edgefl/device/device_core.hpp"
#include "edgefl/device/model_files.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

constexpr int kIterations = 200;

bool integrityOk(const fs::path& file) {
  sqlite3* db = nullptr;
  if (sqlite3_open(file.c_str(), &db) != SQLITE_OK) return false;
  sqlite3_stmt* st = nullptr;
  bool ok = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW &&
            std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok";
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ok;
}

TEST(Crash, KilledInstallsAlwaysReopenWithAValidSignedModel) {
  test::TempDir tmp;
  test::TestFleet fleet;
  const fs::path rootPub = tmp.path() / "root.pub";
  fleet.writeRootPublicKey(rootPub);
  KeyPair key = KeyPair::generate();
  DeviceConfig config = test::offlineConfig(tmp.path(), "dev-1",
                                            test::saveDeviceKey(key, tmp.path(), "dev-1"), rootPub);
  // SIGKILL loses no written data (the page cache survives the process),
  // so fsync plays no part in what this test can break: atomic rename and
  // SQLite's journal do. Without the three fsyncs per install (10-16 ms on
  // this disk) 200 runs take a couple of seconds.
  config.durableWrites = false;

  // Everything the child installs is signed up front: the child only
  // verifies and installs, like a device receiving retained messages.
  std::vector<Model> models;
  for (std::uint64_t v = 1; v <= 4; ++v) models.push_back(test::smallModel("mlp:8-16-3", v, v));
  std::vector<Bytes> deployments;
  for (std::uint64_t seq = 1; seq <= 3000; ++seq) {
    deployments.push_back(fleet.deployment(models[seq % models.size()], {.sequence = seq}));
  }
  const std::string topic = deployTopic("demo", "stable");
  {
    auto core = device::DeviceCore::open(config);
    ASSERT_TRUE(core.ok()) << core.error().toString();
    ASSERT_TRUE(core.value()->handleMessage(topic, deployments[0]).ok());
  }

  // Forks a child that opens the device, says so on a pipe, then installs
  // the deployments after the newest it has, at most `limit` of them. The
  // parent gets the child's pid and the pipe's read end; pid -1 when the
  // pipe or the fork failed.
  struct Child {
    pid_t pid = -1;
    int ready = -1;
  };
  auto startChild = [&](const DeviceConfig& c, std::size_t limit) {
    int ready[2];
    if (::pipe(ready) != 0) return Child{};
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      auto core = device::DeviceCore::open(c);
      if (!core.ok()) ::_exit(3);
      const char opened = 1;
      if (::write(ready[1], &opened, 1) != 1) ::_exit(5);
      const std::uint64_t first = core.value()->status().stableSequence + 1;
      for (std::uint64_t seq = first; seq <= deployments.size() && seq - first < limit; ++seq) {
        if (!core.value()->handleMessage(topic, deployments[seq - 1]).ok()) ::_exit(4);
      }
      ::_exit(0);
    }
    ::close(ready[1]);
    if (pid < 0) {
      ::close(ready[0]);
      return Child{};
    }
    return Child{pid, ready[0]};
  };

  // How long the first installs of a freshly forked child take in this
  // build, on a device of its own: one to two milliseconds in a release
  // build, several times more under AddressSanitizer (its shadow memory is
  // copied on write after the fork). Kills are spread over the first few.
  double installMicros = 0;
  {
    test::TempDir scratch;
    DeviceConfig c = test::offlineConfig(
        scratch.path(), "dev-1", test::saveDeviceKey(key, scratch.path(), "dev-1"), rootPub);
    c.durableWrites = false;
    constexpr std::size_t kTimed = 5;
    const Child child = startChild(c, kTimed);
    ASSERT_GE(child.pid, 0);
    char opened = 0;
    ASSERT_EQ(::read(child.ready, &opened, 1), 1) << "calibration child died while opening";
    const auto t0 = std::chrono::steady_clock::now();
    int status = 0;
    ASSERT_EQ(::waitpid(child.pid, &status, 0), child.pid);
    ::close(child.ready);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
    installMicros =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
        kTimed;
  }

  Keyring rootRing;
  rootRing.add(fleet.root.publicKey(), Role::ROOT);
  std::mt19937 rng(20240611);
  // Kills land anywhere in the first few installs; one in ten lands while
  // the child is still opening.
  std::uniform_int_distribution<int> delayMicros(
      0, std::max(5000, static_cast<int>(3 * installMicros)));
  std::uint64_t lastActive = 1;
  int killedMidway = 0;
  for (int i = 0; i < kIterations; ++i) {
    const Child started = startChild(config, deployments.size());
    ASSERT_GE(started.pid, 0);
    const pid_t child = started.pid;
    if (i % 10 != 0) {
      char opened = 0;
      ASSERT_EQ(::read(started.ready, &opened, 1), 1) << "child died while opening";
    }
    ::usleep(static_cast<useconds_t>(delayMicros(rng)));
    ::kill(child, SIGKILL);
    ::close(started.ready);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed on its own in iteration " << i;
    } else {
      ++killedMidway;
    }

    auto core = device::DeviceCore::open(config);
    ASSERT_TRUE(core.ok()) << "iteration " << i << ": " << core.error().toString();
    const DeviceStatus s = core.value()->status();
    ASSERT_TRUE(s.modelLoaded) << "iteration " << i << ": " << s.lastError;
    EXPECT_EQ(s.fallbacks, 0u) << "iteration " << i << ": " << s.lastError;
    ASSERT_GE(s.activeSequence, lastActive) << "iteration " << i;
    ASSERT_GE(s.stableSequence, s.activeSequence);
    lastActive = s.activeSequence;
    // The file it runs is the signed envelope, intact.
    const fs::path file =
        config.storageDir / "models" / ("stable-" + std::to_string(s.activeSequence) + ".deploy");
    auto bytes = readFileBytes(file.string(), 1 << 20);
    ASSERT_TRUE(bytes.ok()) << file;
    auto v = decodeVerified<wire::Deployment>(bytes.value(), rootRing);
    ASSERT_TRUE(v.ok()) << v.error().toString();
    EXPECT_EQ(v->root().getSequence(), s.activeSequence);
    EXPECT_EQ(toHex(ByteView(v->root().getModelDigest().begin(), 32)), s.activeDigest);
    core.value().reset();
    ASSERT_TRUE(integrityOk(config.storageDir / "device.db")) << "iteration " << i;
    // No write cut short is left; the one spare (a removed model kept for
    // the next write) may be.
    for (const auto& entry : fs::directory_iterator(config.storageDir / "models")) {
      if (entry.path().filename() == device::ModelFiles::kSpareName) continue;
      ASSERT_FALSE(entry.path().string().ends_with(".tmp")) << entry.path();
    }
  }
  // Most runs must really have been cut short, or nothing was tested.
  EXPECT_GT(killedMidway, kIterations * 3 / 4);
  EXPECT_GT(lastActive, static_cast<std::uint64_t>(kIterations / 10));
}

}  // namespace
}  // namespace edgefl
