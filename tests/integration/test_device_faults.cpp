// Real devices (edgefl::Device) under faults, against a real mosquitto and
// edgefl-coordinator as its own process: the broker restarted in the middle
// of a round (devices and coordinator reconnect and the round completes);
// a device whose storage runs out of space (a clear error naming the file,
// and the store reopens intact once there is room again).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "edgefl/device/device.hpp"
#include "edgefl/server/registry.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/topics.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/fleet.hpp"
#include "support/process.hpp"

extern char** environ;

namespace edgefl {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

const Dataset& fashionTrain() {
  static const Dataset data = [] {
    IdxOptions o;
    o.firstN = 2000;
    auto d = loadFashionMnist("train", o);
    if (!d.ok()) throw std::runtime_error(d.error().toString());
    return std::move(d.value());
  }();
  return data;
}

std::unique_ptr<test::ChildProcess> startCoordinator(test::TestFleet& fleet) {
  return std::make_unique<test::ChildProcess>(
      std::vector<std::string>{EDGEFL_COORDINATOR, "--config",
                               (fleet.dir() / "coordinator.toml").string()},
      fleet.dir() / "coordinator.log");
}

server::Registry openRegistry(const test::TestFleet& fleet) {
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  if (!reg.ok()) throw std::runtime_error(reg.error().toString());
  return std::move(reg.value());
}

// A real device enrolled in `fleet`, its key and storage under `dir`.
DeviceConfig enrolledDeviceConfig(test::TestFleet& fleet, const fs::path& dir,
                                  const std::string& id) {
  KeyPair key = KeyPair::generate();
  EXPECT_TRUE(key.save(dir / id).ok());
  auto enrolled = tools::enrollDevice(fleet.dir(), id, key.publicKey());
  EXPECT_TRUE(enrolled.ok()) << enrolled.error().toString();
  DeviceConfig c;
  c.deviceId = id;
  c.fleet = fleet.name();
  c.storageDir = dir / ("storage-" + id);
  c.deviceKeyFile = dir / (id + ".key");
  c.rootPublicKeyFile = fleet.dir() / "keys/root.pub";
  c.transport.port = fleet.port();
  c.transport.passwordFile = fleet.dir() / "devices" / (id + ".mqtt-password");
  c.transport.keepaliveSeconds = 5;
  c.transport.reconnectMinSeconds = 1;
  c.transport.reconnectMaxSeconds = 1;
  // A resend soon after the broker is back, whichever side reconnects first.
  c.limits.resendInterval = 2s;
  c.log = [](LogLevel, std::string_view) {};
  return c;
}

void observeExamples(Device& device, std::uint32_t begin, std::uint32_t count) {
  const Dataset& data = fashionTrain();
  for (std::uint32_t i = begin; i < begin + count; ++i) {
    DeviceError e = device.observe(data.sample(i), data.labels[i]);
    ASSERT_TRUE(e.ok()) << "sample " << i << ": " << e.toString();
  }
}

TEST(DeviceFaults, BrokerRestartedMidRoundDevicesAndCoordinatorReconnect) {
  test::TestFleet fleet;
  test::TempDir work("edgefl-device-faults");
  constexpr int kDevices = 3;
  fleet.config().rounds.minUpdates = kDevices;
  fleet.config().rounds.maxUpdates = kDevices;
  fleet.config().rounds.deadlineSeconds = 300;
  fleet.saveConfig();
  // One device on its own network thread, two on a shared loop.
  auto loop = std::make_shared<MqttLoop>();
  loop->start();
  std::vector<DeviceConfig> configs;
  for (int i = 0; i < kDevices; ++i) {
    configs.push_back(enrolledDeviceConfig(fleet, work.path(), "real-" + std::to_string(i)));
    if (i > 0) configs.back().transport.loop = loop;
  }
  auto coordinator = startCoordinator(fleet);
  std::string out;
  ASSERT_EQ(test::runCli("round start --fleet " + fleet.dir().string() + " --wait 60", &out), 0)
      << out;
  std::vector<std::unique_ptr<Device>> devices;
  for (auto& c : configs) {
    auto d = Device::open(c);
    ASSERT_TRUE(d.ok()) << d.error().toString();
    devices.push_back(std::move(d.value()));
  }
  for (auto& d : devices) {
    ASSERT_TRUE(test::waitUntil([&] { return d->status().modelLoaded; }, 30s)) << d->id();
  }
  // The first device trains and is accepted before the broker goes down.
  ASSERT_NO_FATAL_FAILURE(observeExamples(*devices[0], 0, 400));
  ASSERT_TRUE(
      test::waitUntil([&] { return devices[0]->status().lastAckVerdict == "accepted"; }, 60s))
      << devices[0]->status().roundState;

  fleet.broker().stop();
  for (auto& d : devices) {
    ASSERT_TRUE(test::waitUntil([&] { return !d->status().connected; }, 30s)) << d->id();
  }
  // The others train while it is down: their updates wait, stored.
  for (int i = 1; i < kDevices; ++i) {
    auto& d = *devices[static_cast<std::size_t>(i)];
    ASSERT_NO_FATAL_FAILURE(observeExamples(d, static_cast<std::uint32_t>(i) * 400, 400));
    ASSERT_TRUE(test::waitUntil([&] { return d.status().pendingUpdates == 1u; }, 60s))
        << d.id() << ": " << d.status().roundState;
  }
  std::this_thread::sleep_for(1s);  // the coordinator's reconnect attempts fail meanwhile
  fleet.broker().start();

  auto reg = openRegistry(fleet);
  ASSERT_TRUE(test::waitUntil(
      [&] {
        auto r = reg.round(1);
        return r.ok() && r->state == server::RoundState::Closed;
      },
      90s))
      << "coordinator log in " << (fleet.dir() / "coordinator.log");
  for (auto& d : devices) {
    ASSERT_TRUE(test::waitUntil(
        [&] {
          const DeviceStatus s = d->status();
          // A resend that crossed the first answer is told "duplicate".
          return s.connected && s.pendingUpdates == 0 &&
                 (s.lastAckVerdict == "accepted" || s.lastAckVerdict == "duplicate");
        },
        30s))
        << d->id() << ": " << d->status().lastAckVerdict << " " << d->status().roundState;
  }
  EXPECT_TRUE(coordinator->running()) << "the coordinator reconnects rather than exits";
  std::map<std::string, int> accepted;
  for (const auto& u : reg.updates(1)) accepted[u.deviceId] += u.accepted;
  EXPECT_EQ(accepted.size(), static_cast<std::size_t>(kDevices));
  for (const auto& [id, n] : accepted) EXPECT_EQ(n, 1) << id;
  auto r = reg.round(1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->resultVersion, 2u) << r->outcome;
  EXPECT_EQ(reg.integrityCheck(), "ok");
  for (auto& d : devices) d->close();
  loop->stop();
}

// --- A full disk ------------------------------------------------------------
//
// The device runs in a child process, this test binary again filtered to
// DeviceFaults.DiskFullChild, whose storage directory is a small tmpfs in a
// user and mount namespace of its own, so the disk really fills (ENOSPC).
// Where unprivileged namespaces are refused, the child runs with
// RLIMIT_FSIZE instead (SIGXFSZ ignored: writes past it fail with EFBIG).

constexpr char kDiskFullDirVariable[] = "EDGEFL_DISK_FULL_DIR";
constexpr char kTmpfsOptions[] = "size=2m";
constexpr rlim_t kFileSizeLimit = 1 << 20;
constexpr long kTmpfsMagic = 0x01021994;  // statfs f_type of a tmpfs (linux/magic.h)

bool writeProcFile(const char* path, const char* text, std::size_t size) {
  const int fd = ::open(path, O_WRONLY);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text, size) == static_cast<ssize_t>(size);
  ::close(fd);
  return ok;
}

// Starts `argv` with `env`, output appended to `log`, on a small disk
// mounted at `mountPoint` (or under RLIMIT_FSIZE). Between fork and exec
// only system calls run, on buffers prepared before the fork.
pid_t spawnOnSmallDisk(std::vector<std::string> argv, std::vector<std::string> env,
                       const fs::path& mountPoint, const fs::path& log) {
  std::vector<char*> args, envp;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string uidMap = "0 " + std::to_string(::getuid()) + " 1\n";
  const std::string gidMap = "0 " + std::to_string(::getgid()) + " 1\n";
  const std::string target = mountPoint.string(), logFile = log.string();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int fd = ::open(logFile.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
  }
  bool tmpfs = ::unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 &&
               writeProcFile("/proc/self/setgroups", "deny", 4) &&
               writeProcFile("/proc/self/uid_map", uidMap.c_str(), uidMap.size()) &&
               writeProcFile("/proc/self/gid_map", gidMap.c_str(), gidMap.size()) &&
               ::mount("tmpfs", target.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, kTmpfsOptions) == 0;
  if (!tmpfs) {
    struct rlimit limit {};
    ::getrlimit(RLIMIT_FSIZE, &limit);
    limit.rlim_cur = kFileSizeLimit;
    ::setrlimit(RLIMIT_FSIZE, &limit);
    ::signal(SIGXFSZ, SIG_IGN);
  }
  ::execve(args[0], args.data(), envp.data());
  ::_exit(127);
}

TEST(DeviceFaults, FullDiskGivesAClearErrorAndLeavesTheStoreIntact) {
  test::TestFleet fleet;
  test::TempDir work("edgefl-disk-full");
  // The coordinator signs and records the fleet's first stable deployment:
  // what the device installs before its disk fills.
  Bytes deployment;
  {
    auto coordinator = startCoordinator(fleet);
    auto reg = openRegistry(fleet);
    ASSERT_TRUE(test::waitUntil([&] { return reg.activeDeployment("stable").has_value(); }, 60s))
        << "coordinator log in " << (fleet.dir() / "coordinator.log");
    deployment = reg.activeDeployment("stable")->signedBytes;
    coordinator->kill(SIGTERM);
  }
  std::ofstream(work.path() / "stable.deployment", std::ios::binary)
      .write(reinterpret_cast<const char*>(deployment.data()),
             static_cast<std::streamsize>(deployment.size()));
  std::ofstream(work.path() / "fleet-name") << fleet.name();
  fs::copy_file(fleet.dir() / "keys/root.pub", work.path() / "root.pub");
  ASSERT_TRUE(KeyPair::generate().save(work.path() / "full").ok());
  fs::create_directories(work.path() / "storage");

  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.push_back(std::string(kDiskFullDirVariable) + "=" + work.path().string());
  const fs::path log = work.path() / "child.log";
  const pid_t pid = spawnOnSmallDisk(
      {fs::read_symlink("/proc/self/exe").string(), "--gtest_filter=DeviceFaults.DiskFullChild"},
      env, work.path() / "storage", log);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_TRUE(test::waitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 120s))
      << test::readTextFile(log);
  const std::string output = test::readTextFile(log);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_NE(output.find("[  PASSED  ] 1 test"), std::string::npos) << output;
  for (const char* mark : {"disk-full mode:", "full after"}) {
    const auto at = output.find(mark);
    ASSERT_NE(at, std::string::npos) << output;
    std::cout << "[ disk     ] " << output.substr(at, output.find('\n', at) - at) << "\n";
  }
}

std::string integrityCheck(const fs::path& file) {
  sqlite3* db = nullptr;
  std::string result = "cannot open";
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return result;
}

std::string storageListing(const fs::path& dir) {
  std::ostringstream out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out << e.path().string() << " " << e.file_size() << "\n";
  }
  return out.str();
}

// The child's half of FullDiskGivesAClearErrorAndLeavesTheStoreIntact.
TEST(DeviceFaults, DiskFullChild) {
  const char* dirVariable = std::getenv(kDiskFullDirVariable);
  if (dirVariable == nullptr) {
    GTEST_SKIP() << "runs as the child process of FullDiskGivesAClearErrorAndLeavesTheStoreIntact";
  }
  const fs::path dir = dirVariable, storage = dir / "storage";
  struct statfs disk {};
  ASSERT_EQ(::statfs(storage.c_str(), &disk), 0);
  const bool tmpfs = static_cast<long>(disk.f_type) == kTmpfsMagic;
  std::cout << "disk-full mode: "
            << (tmpfs ? std::string("tmpfs ") + kTmpfsOptions
                      : "RLIMIT_FSIZE " + std::to_string(kFileSizeLimit) + " bytes")
            << std::endl;
  // On the tmpfs, space to free afterwards.
  const fs::path filler = storage / "filler";
  if (tmpfs) std::ofstream(filler) << std::string(512 << 10, 'x');

  DeviceConfig c;
  c.deviceId = "full";
  c.fleet = test::readTextFile(dir / "fleet-name");
  c.storageDir = storage / "device";
  c.deviceKeyFile = dir / "full.key";
  c.rootPublicKeyFile = dir / "root.pub";
  c.transport.enabled = false;
  c.limits.maxStoredSamples = 100'000;  // the disk, not the budget, runs out
  c.limits.telemetryInterval = 0s;
  c.log = [](LogLevel, std::string_view) {};
  const std::string deploymentText = test::readTextFile(dir / "stable.deployment");
  const std::vector<std::uint8_t> deployment(deploymentText.begin(), deploymentText.end());
  const fs::path dbFile = c.storageDir / "device.db";
  const Dataset& data = fashionTrain();

  std::uint64_t stored = 0;
  {
    auto device = Device::open(c);
    ASSERT_TRUE(device.ok()) << device.error().toString();
    auto& d = *device.value();
    DeviceError installed = d.handleMessage(deployTopic(c.fleet, "stable"), deployment);
    ASSERT_TRUE(installed.ok()) << installed.toString();
    ASSERT_TRUE(d.status().modelLoaded);
    DeviceError failure;
    for (std::uint32_t i = 0; i < 20'000 && failure.ok(); ++i) {
      const std::uint32_t k = i % static_cast<std::uint32_t>(data.size());
      failure = d.observe(data.sample(k), data.labels[k]);
      stored += failure.ok();
    }
    ASSERT_FALSE(failure.ok()) << "the disk never filled after " << stored << " samples";
    std::cout << "full after " << stored << " samples: " << failure.toString() << std::endl;
    EXPECT_EQ(failure.status, EDGEFL_STATUS_IO_ERROR) << failure.toString();
    EXPECT_NE(failure.detail.find(dbFile.string()), std::string::npos) << failure.toString();
    // Still serving: scoring needs no disk; another write fails the same way.
    std::vector<float> out(d.outputCount());
    EXPECT_TRUE(d.score(data.sample(0), out).ok());
    DeviceError again = d.observe(data.sample(1), data.labels[1]);
    EXPECT_EQ(again.status, EDGEFL_STATUS_IO_ERROR) << again.toString();
    EXPECT_EQ(d.status().samplesStored, stored);
    d.close();
  }

  // Room again: the store is intact and the device carries on from it.
  if (tmpfs) {
    fs::remove(filler);
  } else {
    struct rlimit limit {};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &limit), 0);
    limit.rlim_cur = limit.rlim_max;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  }
  EXPECT_EQ(integrityCheck(dbFile), "ok");
  auto device = Device::open(c);
  ASSERT_TRUE(device.ok()) << device.error().toString();
  auto& d = *device.value();
  const DeviceStatus s = d.status();
  EXPECT_TRUE(s.modelLoaded);
  EXPECT_EQ(s.activeVersion, 1u);
  EXPECT_EQ(s.samplesStored, stored);
  DeviceError more = d.observe(data.sample(2), data.labels[2]);
  EXPECT_TRUE(more.ok()) << more.toString() << "\n" << storageListing(storage);
  EXPECT_EQ(d.status().samplesStored, stored + 1);
  d.close();
  EXPECT_EQ(integrityCheck(dbFile), "ok");
}

}  // namespace
}  // namespace edgefl
