// edgefl-coordinator as its own process behind a real mosquitto, SIGKILLed
// at random points of a round again and again: the registry stays intact,
// no acknowledged update is lost, none is counted twice, and the round
// completes after the last restart. Under sustained load at a fixed rate,
// every update sent is accounted for. (Faults of real devices and of the
// broker under them: test_device_faults.cpp.)

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "edgefl/server/registry.hpp"
#include "edgefl/shared/datasets.hpp"
#include "edgefl/shared/topics.hpp"
#include "support/fleet.hpp"
#include "support/process.hpp"

namespace edgefl {
namespace {
using namespace std::chrono_literals;

// edgefl-coordinator for one fleet, killed and restarted at will. Every
// start appends to the same log; a start is complete when the log has one
// more "running" line than before it.
class CoordinatorProcess {
 public:
  explicit CoordinatorProcess(test::TestFleet& fleet)
      : config_((fleet.dir() / "coordinator.toml").string()),
        log_(fleet.dir() / "coordinator.log") {}

  void start() {
    linesBefore_ = runningLines();
    process_ = std::make_unique<test::ChildProcess>(
        std::vector<std::string>{EDGEFL_COORDINATOR, "--config", config_}, log_);
  }
  // True once the latest start is serving (broker connected, round resumed).
  bool waitRunning(std::chrono::milliseconds timeout = 30s) {
    return test::waitUntil([&] { return runningLines() > linesBefore_; }, timeout);
  }
  void kill(int signal) {
    if (process_) lastStatus_ = process_->kill(signal);
    process_.reset();
  }
  bool alive() { return process_ && process_->running(); }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  int lastStatus() const { return lastStatus_; }
  const std::filesystem::path& log() const { return log_; }

 private:
  int runningLines() const {
    std::ifstream in(log_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find(" running: stable v") != std::string::npos;
    return n;
  }

  std::string config_;
  std::filesystem::path log_;
  std::unique_ptr<test::ChildProcess> process_;
  int linesBefore_ = 0;
  int lastStatus_ = 0;
};

void openRoundOne(test::TestFleet& fleet) {
  std::string out;
  ASSERT_EQ(test::runCli("round start --fleet " + fleet.dir().string() + " --wait 60", &out), 0)
      << out;
  ASSERT_NE(out.find("round 1 opened"), std::string::npos)
      << out << "coordinator log:\n"
      << test::readTextFile(fleet.dir() / "coordinator.log");
}

// Accepted rows of `round` per device: each must be 1.
std::map<std::string, int> acceptedRows(const server::Registry& reg, std::uint64_t round) {
  std::map<std::string, int> rows;
  for (const auto& u : reg.updates(round)) {
    if (u.accepted) ++rows[u.deviceId];
  }
  return rows;
}

server::Registry openRegistry(const test::TestFleet& fleet) {
  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  if (!reg.ok()) throw std::runtime_error(reg.error().toString());
  return std::move(reg.value());
}

bool roundOneClosed(const server::Registry& reg) {
  auto r = reg.round(1);
  return r.ok() && r->state == server::RoundState::Closed;
}

// `count` protocol-level devices <prefix>-0, <prefix>-1, ... enrolled in
// `fleet` and connected to its broker.
std::vector<std::unique_ptr<test::TestDevice>> enrollTestDevices(test::TestFleet& fleet,
                                                                 const std::string& prefix,
                                                                 int count) {
  std::vector<std::unique_ptr<test::TestDevice>> devices;
  for (int i = 0; i < count; ++i) {
    devices.push_back(std::make_unique<test::TestDevice>(fleet, prefix + "-" + std::to_string(i)));
  }
  return devices;
}

TEST(Faults, CoordinatorKilledAtRandomPointsLosesNothingAndCountsNothingTwice) {
  // The last device sends only after the last kill, so the round stays open
  // through every iteration and then closes on the final restart.
  constexpr int kDevices = 10;
  constexpr int kIterations = 30;
  IdxOptions io;
  io.firstN = kDevices * 350;
  auto data = loadFashionMnist("train", io);
  ASSERT_TRUE(data.ok()) << data.error().toString();
  test::TestFleet fleet;
  fleet.config().rounds.minUpdates = kDevices;
  fleet.config().rounds.maxUpdates = kDevices;
  fleet.config().rounds.deadlineSeconds = 600;
  fleet.saveConfig();
  auto devices = enrollTestDevices(fleet, "dev", kDevices);
  CoordinatorProcess coordinator(fleet);
  coordinator.start();
  ASSERT_NO_FATAL_FAILURE(openRoundOne(fleet));
  std::vector<Bytes> updates;
  for (int i = 0; i < kDevices; ++i) {
    auto& d = *devices[static_cast<std::size_t>(i)];
    ASSERT_TRUE(d.fetchModel("stable", 30s));
    ASSERT_TRUE(d.waitRound(30s));
    std::vector<std::uint32_t> idx(350);
    std::iota(idx.begin(), idx.end(), static_cast<std::uint32_t>(i) * 350);
    updates.push_back(d.buildUpdate(*data, idx));
  }

  const auto seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::set<std::string> ackedAccepted;  // devices told ACCEPTED
  std::set<int> settled;                // ACCEPTED or DUPLICATE: the device stops resending
  int sentCount = 0;                    // devices [0, sentCount) have sent at least once
  auto drainAcks = [&](std::chrono::milliseconds wait) {
    for (int i = 0; i < kDevices; ++i) {
      auto& d = *devices[static_cast<std::size_t>(i)];
      while (auto a = d.waitAck(i == 0 ? wait : 1ms)) {
        if (a->verdict == wire::Verdict::ACCEPTED) ackedAccepted.insert(d.id());
        if (a->verdict != wire::Verdict::REJECTED) settled.insert(i);
      }
    }
  };
  // Sends the next fresh update (when `fresh`) and resends every unsettled
  // one, as devices do after a lost answer; sometimes a settled one again.
  // `waiting` gets the devices that sent and have no answer yet.
  std::vector<int> waiting;
  auto sendRound = [&](bool fresh, int limit) {
    waiting.clear();
    if (fresh && sentCount < limit) ++sentCount;
    for (int i = 0; i < sentCount; ++i) {
      const bool replay = settled.count(i) > 0 && rng() % 8 == 0;
      if (settled.count(i) == 0 || replay) {
        ASSERT_GE(devices[static_cast<std::size_t>(i)]->send(updates[static_cast<std::size_t>(i)]),
                  0);
      }
      if (settled.count(i) == 0) waiting.push_back(i);
    }
  };
  // Acknowledged means durable: every device told ACCEPTED has exactly one
  // accepted row, and no device has two.
  server::Registry reg = openRegistry(fleet);
  auto checkNothingLostOrDoubled = [&](int iteration) {
    auto rows = acceptedRows(reg, 1);
    for (const auto& id : ackedAccepted) {
      EXPECT_EQ(rows[id], 1) << id << " was acknowledged but is not recorded (iteration "
                             << iteration << ")";
    }
    for (const auto& [id, n] : rows) EXPECT_EQ(n, 1) << id << " (iteration " << iteration << ")";
  };

  // Half the kills within 30 ms of sending, where verification and the
  // registry commit are likeliest to be cut; the others anywhere to 300 ms.
  std::uniform_int_distribution<int> soonMs(0, 30), delayMs(0, 300);
  int killedStarting = 0, killedBeforeAnswer = 0;
  const auto loopStart = std::chrono::steady_clock::now();
  for (int it = 0; it < kIterations; ++it) {
    // Most kills land while updates are verified and recorded; every fifth
    // lands while the restarted process is still starting and resuming.
    if (it % 5 != 4) {
      ASSERT_TRUE(coordinator.waitRunning()) << "log in " << coordinator.log();
    } else {
      ++killedStarting;
    }
    ASSERT_NO_FATAL_FAILURE(sendRound(it % 2 == 0, kDevices - 1));
    std::this_thread::sleep_for(
        std::chrono::milliseconds(it % 2 == 0 ? soonMs(rng) : delayMs(rng)));
    coordinator.kill(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(coordinator.lastStatus())) << "exited on its own before the kill";
    drainAcks(50ms);
    killedBeforeAnswer +=
        std::any_of(waiting.begin(), waiting.end(), [&](int i) { return settled.count(i) == 0; });
    checkNothingLostOrDoubled(it);
    EXPECT_EQ(reg.integrityCheck(), "ok") << "iteration " << it;
    coordinator.start();
  }
  const double loopSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loopStart).count();
  EXPECT_EQ(reg.round(1)->state, server::RoundState::Open);

  // The last device completes the round; one more kill lands somewhere in
  // verification, aggregation or validation, and the restart finishes it.
  ASSERT_TRUE(coordinator.waitRunning()) << "log in " << coordinator.log();
  ASSERT_NO_FATAL_FAILURE(sendRound(true, kDevices));
  std::this_thread::sleep_for(std::chrono::milliseconds(delayMs(rng)));
  coordinator.kill(SIGKILL);
  drainAcks(50ms);
  checkNothingLostOrDoubled(kIterations);
  coordinator.start();
  ASSERT_TRUE(test::waitUntil(
      [&] {
        drainAcks(200ms);
        if (roundOneClosed(reg)) return true;
        // Devices resend what was not answered.
        for (int i = 0; i < kDevices; ++i) {
          if (settled.count(i) == 0) {
            (void)devices[static_cast<std::size_t>(i)]->send(updates[static_cast<std::size_t>(i)]);
          }
        }
        std::this_thread::sleep_for(1s);
        return false;
      },
      90s))
      << "log in " << coordinator.log();
  drainAcks(500ms);

  EXPECT_EQ(reg.integrityCheck(), "ok");
  checkNothingLostOrDoubled(kIterations + 1);
  auto rows = acceptedRows(reg, 1);
  EXPECT_EQ(rows.size(), static_cast<std::size_t>(kDevices));
  EXPECT_EQ(reg.acceptedCount(1), static_cast<std::uint64_t>(kDevices));
  auto r = reg.round(1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->verdicts["accepted"], static_cast<std::uint64_t>(kDevices));
  EXPECT_EQ(r->resultVersion, 2u) << r->outcome;
  EXPECT_EQ(reg.lineage(2).size(), static_cast<std::size_t>(kDevices));
  std::cout << "[ kills    ] " << kIterations + 1 << " SIGKILLs (" << killedStarting
            << " while starting, " << killedBeforeAnswer << " before an update was answered) in "
            << loopSeconds << " s; " << ackedAccepted.size() << " of " << kDevices
            << " devices told ACCEPTED, " << r->verdicts["Duplicate"] << " duplicates answered\n";
  ASSERT_TRUE(coordinator.alive());
}

// A number from the environment, else `fallback`.
double envNumber(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtod(v, nullptr) : fallback;
}

// Sustained ingest: signed updates at a fixed rate through the broker into
// the coordinator process, then every update the broker took is accounted
// for in the registry, accepted or rejected. tools/load.sh runs this for
// minutes (EDGEFL_LOAD_SECONDS, EDGEFL_LOAD_RATE, EDGEFL_LOAD_ARCH); the
// suite for 20 s with a small model.
TEST(Faults, SustainedLoadEveryUpdateIsAccountedFor) {
  const double seconds = envNumber("EDGEFL_LOAD_SECONDS", 20);
  const double rate = envNumber("EDGEFL_LOAD_RATE", 100);
  const char* archEnv = std::getenv("EDGEFL_LOAD_ARCH");
  const std::string arch = archEnv != nullptr && *archEnv != '\0' ? archEnv : "mlp:784-16-10";
  ASSERT_GT(seconds, 0);
  ASSERT_GT(rate, 0);
  // Each device's first update is accepted; its later ones (other
  // trainings) are answered Duplicate after the same full verification.
  // The round stays open for the whole run.
  constexpr int kDevices = 20, kVariants = 3;
  IdxOptions io;
  io.firstN = kDevices * kVariants * 100;
  auto data = loadFashionMnist("train", io);
  ASSERT_TRUE(data.ok()) << data.error().toString();
  test::TestFleetOptions fo;
  fo.arch = arch;
  test::TestFleet fleet(fo);
  fleet.config().rounds.minUpdates = kDevices;
  fleet.config().rounds.maxUpdates = 10'000'000;
  fleet.config().rounds.deadlineSeconds = static_cast<std::int64_t>(seconds) + 3600;
  fleet.saveConfig();
  auto devices = enrollTestDevices(fleet, "load", kDevices);
  CoordinatorProcess coordinator(fleet);
  coordinator.start();
  ASSERT_NO_FATAL_FAILURE(openRoundOne(fleet));
  std::vector<std::vector<Bytes>> updates(kDevices);
  for (int i = 0; i < kDevices; ++i) {
    auto& d = *devices[static_cast<std::size_t>(i)];
    ASSERT_TRUE(d.fetchModel("stable", 30s));
    ASSERT_TRUE(d.waitRound(30s));
    for (int v = 0; v < kVariants; ++v) {
      std::vector<std::uint32_t> idx(100);
      std::iota(idx.begin(), idx.end(), static_cast<std::uint32_t>(i * kVariants + v) * 100);
      updates[static_cast<std::size_t>(i)].push_back(d.buildUpdate(*data, idx));
    }
  }

  // Publishes go out on schedule without waiting for their PUBACKs (a
  // device's connection pipelines them); the rate achieved is the one at
  // which the broker took them: updates over the time to the last PUBACK.
  const auto total = static_cast<std::uint64_t>(seconds * rate);
  const auto period = std::chrono::duration<double>(1.0 / rate);
  std::uint64_t published = 0, notQueued = 0;
  double maxLagSeconds = 0;
  auto pubacked = [&] {
    test::MqttClient::PubackCount sum;
    for (auto& d : devices) {
      const auto c = d->mqtt().pubacks();
      sum.accepted += c.accepted;
      sum.refused += c.refused;
    }
    return sum;
  };
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t n = 0; n < total; ++n) {
    const auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 period * static_cast<double>(n));
    std::this_thread::sleep_until(due);
    maxLagSeconds =
        std::max(maxLagSeconds,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - due).count());
    const std::size_t device = n % kDevices, variant = (n / kDevices) % kVariants;
    if (devices[device]->mqtt().publishNoWait(
            deviceTopic(fleet.name(), devices[device]->id(), "update"), updates[device][variant]) >=
        0) {
      ++published;
    } else {
      ++notQueued;
    }
    // The acks are not read here; keep the devices' inboxes small.
    if (n % 1000 == 999) {
      for (auto& d : devices) d->mqtt().discardMessages();
    }
  }
  ASSERT_TRUE(test::waitUntil(
      [&] {
        const auto c = pubacked();
        return c.accepted + c.refused >= published;
      },
      120s))
      << pubacked().accepted << " of " << published << " publishes acknowledged by the broker";
  const double sendSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto acks = pubacked();
  const std::uint64_t sentCount = acks.accepted;
  EXPECT_EQ(notQueued, 0u) << "publishes libmosquitto did not take";
  EXPECT_EQ(acks.refused, 0u) << "publishes the broker refused";
  EXPECT_GE(static_cast<double>(sentCount) / sendSeconds, 0.9 * rate)
      << "the broker took the updates slower than asked: the run did not load what it says";

  server::Registry reg = openRegistry(fleet);
  std::map<std::string, std::uint64_t> verdicts;
  std::uint64_t recorded = 0;
  const auto drainStart = std::chrono::steady_clock::now();
  ASSERT_TRUE(test::waitUntil(
      [&] {
        verdicts.clear();
        recorded = 0;
        for (const auto& u : reg.updates(1)) {
          ++verdicts[u.accepted ? "accepted" : u.reason];
          ++recorded;
        }
        return recorded >= sentCount;
      },
      120s))
      << recorded << " of " << sentCount << " recorded; log in " << coordinator.log();
  const double drainSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - drainStart).count();
  std::this_thread::sleep_for(500ms);  // nothing more arrives than was sent
  EXPECT_EQ(reg.updates(1).size(), sentCount);
  EXPECT_EQ(verdicts["accepted"], static_cast<std::uint64_t>(kDevices));
  // Overloaded is a recorded rejection too, but a run that sheds load did
  // not ingest at the rate it names.
  EXPECT_LE(verdicts["Overloaded"] * 100, sentCount)
      << "over 1% answered Overloaded: the coordinator did not keep up with " << rate << "/s";
  EXPECT_EQ(acceptedRows(reg, 1).size(), static_cast<std::size_t>(kDevices));
  EXPECT_EQ(reg.integrityCheck(), "ok");
  EXPECT_TRUE(coordinator.alive());
  std::ostringstream summary;
  summary << sentCount << " updates (" << arch << ", " << updates[0][0].size() / 1024
          << " KB each) taken by the broker in " << sendSeconds << " s ("
          << static_cast<double>(sentCount) / sendSeconds << "/s, asked " << rate
          << "/s, worst publish lag " << maxLagSeconds << " s); all recorded " << drainSeconds
          << " s after the last; coordinator VmHWM ";
  {
    std::ifstream status("/proc/" + std::to_string(coordinator.pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmHWM:", 0) == 0) summary << line.substr(line.find_first_not_of(" \t", 6));
    }
  }
  summary << "; verdicts:";
  for (const auto& [reason, count] : verdicts) summary << " " << reason << "=" << count;
  std::cout << "[ load     ] " << summary.str() << "\n";
  RecordProperty("load", summary.str());
}

}  // namespace
}  // namespace edgefl
