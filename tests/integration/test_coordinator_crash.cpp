// edgefl-coordinator as its own process, killed with SIGKILL in the middle
// of a round and restarted: the round completes, the registry passes
// PRAGMA integrity_check, and every accepted update counts exactly once.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <numeric>
#include <set>
#include <thread>

#include "edgefl/server/registry.hpp"
#include "edgefl/shared/datasets.hpp"
#include "support/fleet.hpp"
#include "support/process.hpp"

namespace edgefl {
namespace {
using namespace std::chrono_literals;

template <typename F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return condition();
}

std::unique_ptr<test::ChildProcess> startCoordinator(test::TestFleet& fleet) {
  return std::make_unique<test::ChildProcess>(
      std::vector<std::string>{EDGEFL_COORDINATOR, "--config",
                               (fleet.dir() / "coordinator.toml").string()},
      fleet.dir() / "coordinator.log");
}

TEST(CoordinatorCrash, KilledMidRoundResumesWithEveryUpdateCountedOnce) {
  IdxOptions io;
  io.firstN = 3000;
  auto data = loadFashionMnist("train", io);
  ASSERT_TRUE(data.ok());
  test::TestFleet fleet;
  constexpr int kDevices = 6;
  fleet.config().rounds.minUpdates = kDevices;
  fleet.config().rounds.maxUpdates = kDevices;
  fleet.config().rounds.deadlineSeconds = 120;
  fleet.saveConfig();
  std::vector<std::unique_ptr<test::TestDevice>> devices;
  for (int i = 0; i < kDevices; ++i) {
    devices.push_back(std::make_unique<test::TestDevice>(fleet, "dev-" + std::to_string(i)));
  }
  auto coordinator = startCoordinator(fleet);
  // The operator starts the round through the CLI; the coordinator picks the
  // request up from the registry.
  std::string out;
  ASSERT_EQ(test::runCli("round start --fleet " + fleet.dir().string() + " --wait 20", &out), 0)
      << out;
  ASSERT_NE(out.find("round 1 opened"), std::string::npos) << out;

  std::vector<Bytes> updates;
  for (int i = 0; i < kDevices; ++i) {
    auto& d = *devices[static_cast<std::size_t>(i)];
    ASSERT_TRUE(d.fetchModel());
    ASSERT_TRUE(d.waitRound());
    std::vector<std::uint32_t> idx(400);
    std::iota(idx.begin(), idx.end(), static_cast<std::uint32_t>(i) * 400);
    updates.push_back(d.buildUpdate(*data, idx));
  }
  // Half the updates arrive and are acknowledged.
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(devices[static_cast<std::size_t>(i)]->send(updates[static_cast<std::size_t>(i)]), 0);
    auto ack = devices[static_cast<std::size_t>(i)]->waitAck();
    ASSERT_TRUE(ack.has_value());
    ASSERT_EQ(ack->verdict, wire::Verdict::ACCEPTED) << ack->reason;
  }
  // Crash while the fourth is in flight.
  ASSERT_GE(devices[3]->send(updates[3]), 0);
  coordinator->kill(SIGKILL);
  // While it is down, the rest arrive at the broker (queued for the
  // coordinator's persistent session), and an acknowledged device resends.
  ASSERT_GE(devices[4]->send(updates[4]), 0);
  ASSERT_GE(devices[1]->send(updates[1]), 0);
  coordinator = startCoordinator(fleet);
  ASSERT_GE(devices[5]->send(updates[5]), 0);
  // Device 3 did not get its ack before the crash: it resends after restart.
  ASSERT_GE(devices[3]->send(updates[3]), 0);

  auto reg = server::Registry::open(fleet.dir() / "registry.db");
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE(eventually([&] {
    auto r = reg->round(1);
    return r.ok() && r->state == server::RoundState::Closed;
  })) << "coordinator log in "
      << (fleet.dir() / "coordinator.log");
  EXPECT_EQ(reg->integrityCheck(), "ok");
  EXPECT_EQ(reg->acceptedCount(1), static_cast<std::uint64_t>(kDevices));
  std::set<std::string> accepted;
  for (const auto& u : reg->updates(1)) {
    if (u.accepted) {
      EXPECT_TRUE(accepted.insert(u.deviceId).second) << u.deviceId << " twice";
    }
  }
  EXPECT_EQ(accepted.size(), static_cast<std::size_t>(kDevices));
  auto r = reg->round(1);
  EXPECT_EQ(r->verdicts["accepted"], static_cast<std::uint64_t>(kDevices));
  EXPECT_GE(r->verdicts["Duplicate"], 1u);  // the resends
  EXPECT_EQ(r->resultVersion, 2u);
  EXPECT_EQ(reg->lineage(2).size(), static_cast<std::size_t>(kDevices));

  // SIGTERM stops it cleanly.
  int status = coordinator->kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace edgefl
