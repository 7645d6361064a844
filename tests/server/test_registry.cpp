#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "edgefl/server/registry.hpp"
#include "support/broker.hpp"

namespace edgefl::server {
namespace {

ModelRecord sampleModel(std::uint64_t parent, ModelStage stage) {
  ModelRecord m;
  m.parent = parent;
  m.arch = "mlp:784-128-10";
  m.digest.fill(static_cast<std::uint8_t>(parent + 1));
  m.parameterCount = 101770;
  m.sizeBytes = 407080;
  m.stage = stage;
  m.accuracy = 0.8;
  m.perClassAccuracy = {0.7, 0.9};
  m.bytes = {1, 2, 3, 4};
  return m;
}

UpdateRecord sampleUpdate(std::uint64_t round, const std::string& device, bool accepted,
                          const std::string& reason = {}) {
  UpdateRecord u;
  u.round = round;
  u.deviceId = device;
  u.accepted = accepted;
  u.reason = reason;
  u.sampleCount = 100;
  u.norm = 1.5;
  if (accepted) u.delta = {0.5f, -1.0f, 2.0f};
  return u;
}

TEST(Registry, CreatesSchemaInWalModeAndReopens) {
  test::TempDir tmp;
  const auto path = tmp.path() / "registry.db";
  {
    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().toString();
    EXPECT_EQ(reg->schemaVersion(), 1);
    EXPECT_EQ(reg->integrityCheck(), "ok");
    ASSERT_TRUE(reg->addModel(sampleModel(0, ModelStage::Stable)).ok());
  }
  auto again = Registry::open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->models().size(), 1u);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(db);
}

// A new registry gets 64 KiB pages (a 400 KB delta is 7 WAL frames, not
// 100); one made with SQLite's default 4 KiB pages keeps them, opens, and
// stores and returns a large delta the same.
TEST(Registry, NewFilesGetLargePagesAndOldFilesKeepTheirs) {
  test::TempDir tmp;
  auto pageSize = [](const std::filesystem::path& path) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, nullptr);
    const int size = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return size;
  };
  const auto fresh = tmp.path() / "fresh.db";
  const auto old = tmp.path() / "old.db";
  {
    // An existing file with default pages, as earlier builds made them.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(old.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; "
                           "CREATE TABLE t(x); DROP TABLE t;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  std::vector<float> delta(101770);
  for (std::size_t i = 0; i < delta.size(); ++i) delta[i] = static_cast<float>(i) * 0.25f;
  for (const auto& path : {fresh, old}) {
    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().toString();
    RoundRecord round;
    round.round = 1;
    round.trigger = "manual";
    round.baseVersion = 1;
    ASSERT_TRUE(reg->openRound(round).ok());
    UpdateRecord u = sampleUpdate(1, "a", true);
    u.delta = delta;
    ASSERT_TRUE(reg->recordUpdate(u).ok());
    ASSERT_EQ(reg->update(1, "a")->delta, delta);
    EXPECT_EQ(reg->integrityCheck(), "ok");
  }
  EXPECT_EQ(pageSize(fresh), 65536);
  EXPECT_EQ(pageSize(old), 4096);
}

// With background checkpoints the WAL is copied into the file by the
// registry's own thread once it passes the threshold; every commit stays,
// in the moved-to registry too, and after reopening. Past the hard limit a
// commit checkpoints itself.
TEST(Registry, BackgroundCheckpointsCopyTheWalAndLoseNothing) {
  test::TempDir tmp;
  const auto path = tmp.path() / "r.db";
  std::vector<float> delta(101770, 0.5f);
  auto record = [&](Registry& reg, std::uint64_t round, int devices) {
    RoundRecord r;
    r.round = round;
    r.trigger = "manual";
    r.baseVersion = 1;
    ASSERT_TRUE(reg.openRound(r).ok());
    for (int i = 0; i < devices; ++i) {
      std::string id = "d";  // built by appends: GCC 12 -Wrestrict misfires on "d" + s
      id.append(std::to_string(i));
      UpdateRecord u = sampleUpdate(round, id, true);
      u.delta = delta;
      u.delta[0] = static_cast<float>(i);
      ASSERT_TRUE(reg.recordUpdate(u).ok());
    }
  };
  auto waitForBackground = [](const Registry& reg, std::uint64_t atLeast) {
    for (int i = 0; i < 1000 && reg.checkpointStats().background < atLeast; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return reg.checkpointStats().background;
  };
  {
    auto opened = Registry::open(path);
    ASSERT_TRUE(opened.ok());
    Registry reg = std::move(opened.value());
    EXPECT_EQ(reg.startBackgroundCheckpoints({0, 1 << 20}).code(), Code::InvalidArgument);
    EXPECT_EQ(reg.startBackgroundCheckpoints({2 << 20, 1 << 20}).code(), Code::InvalidArgument);
    ASSERT_TRUE(reg.startBackgroundCheckpoints({1 << 20, 64 << 20}).ok());
    EXPECT_EQ(reg.startBackgroundCheckpoints({1 << 20, 64 << 20}).code(), Code::InvalidArgument);
    record(reg, 1, 10);  // 4 MB: past the 1 MiB threshold
    const std::uint64_t first = waitForBackground(reg, 1);
    EXPECT_GE(first, 1u);
    EXPECT_EQ(reg.checkpointStats().inCommit, 0u);
    EXPECT_EQ(reg.checkpointStats().failed, 0u);

    // The hook follows the registry when it moves.
    Registry moved = std::move(reg);
    record(moved, 2, 10);
    EXPECT_GT(waitForBackground(moved, first + 1), first);
    EXPECT_EQ(moved.acceptedCount(1), 10u);
    EXPECT_EQ(moved.acceptedCount(2), 10u);
  }
  {
    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok());
    EXPECT_EQ(reg->integrityCheck(), "ok");
    EXPECT_EQ(reg->acceptedCount(1), 10u);
    EXPECT_EQ(reg->acceptedCount(2), 10u);
    EXPECT_EQ(reg->update(2, "d7")->delta[0], 7.0f);
    EXPECT_EQ(reg->update(2, "d7")->delta[1], 0.5f);
    // A hard limit the background thread cannot keep under: commits past it
    // checkpoint themselves.
    ASSERT_TRUE(reg->startBackgroundCheckpoints({64 << 10, 64 << 10}).ok());
    record(*reg, 3, 3);
    EXPECT_GE(reg->checkpointStats().inCommit, 1u);
    EXPECT_EQ(reg->checkpointStats().failed, 0u);
  }
}

TEST(Registry, RefusesANewerSchemaAndGarbageFiles) {
  test::TempDir tmp;
  const auto path = tmp.path() / "registry.db";
  { ASSERT_TRUE(Registry::open(path).ok()); }
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto r = Registry::open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().detail.find("schema version 99"), std::string::npos);

  const auto junk = tmp.path() / "junk.db";
  std::ofstream(junk) << std::string(8192, 'x');
  EXPECT_FALSE(Registry::open(junk).ok());
}

// The coordinator's first start and an operator's command may create the
// registry at the same moment: every process gets a working registry,
// migrated once. (SQLite can answer SQLITE_BUSY here without waiting.)
TEST(Registry, ProcessesCreatingOneRegistryAtOnceAllSucceed) {
  constexpr int kIterations = 60;
  constexpr int kProcesses = 3;
  for (int it = 0; it < kIterations; ++it) {
    test::TempDir tmp;
    const auto path = tmp.path() / "registry.db";
    int gate[2];
    ASSERT_EQ(::pipe(gate), 0);
    std::vector<pid_t> children;
    for (int c = 0; c < kProcesses; ++c) {
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        ::close(gate[1]);
        char byte = 0;
        (void)!::read(gate[0], &byte, 1);  // all start when the gate opens
        auto reg = Registry::open(path);
        if (!reg.ok()) ::_exit(1);
        ::_exit(reg->submitCommand("round-start", "child").ok() ? 0 : 2);
      }
      children.push_back(pid);
    }
    ::close(gate[0]);
    ::close(gate[1]);  // EOF releases every child at once
    for (pid_t pid : children) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "iteration " << it << ": a process could not open or write the new registry (exit "
          << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ")";
    }
    auto reg = Registry::open(path);
    ASSERT_TRUE(reg.ok()) << reg.error().toString();
    EXPECT_EQ(reg->schemaVersion(), 1);
    EXPECT_EQ(reg->pendingCommands().size(), static_cast<std::size_t>(kProcesses));
    if (HasFailure()) break;
  }
}

TEST(Registry, ModelsLineageAndStages) {
  test::TempDir tmp;
  auto reg = Registry::open(tmp.path() / "r.db");
  ASSERT_TRUE(reg.ok());
  auto v1 = reg->addModel(sampleModel(0, ModelStage::Stable));
  auto v2 = reg->addModel(sampleModel(1, ModelStage::Candidate));
  ASSERT_TRUE(v1.ok() && v2.ok());
  EXPECT_EQ(*v1, 1u);
  EXPECT_EQ(*v2, 2u);
  ASSERT_TRUE(reg->addLineage(2, 1, {"dev-b", "dev-a"}).ok());
  EXPECT_EQ(reg->lineage(2), (std::vector<std::string>{"dev-a", "dev-b"}));
  ASSERT_TRUE(reg->setModelStage(2, ModelStage::Canary).ok());
  EXPECT_EQ(reg->latestInStage(ModelStage::Canary)->version, 2u);
  EXPECT_EQ(reg->latestInStage(ModelStage::Stable)->bytes, (std::vector<std::uint8_t>{1, 2, 3, 4}));
  ASSERT_TRUE(reg->setModelStage(2, ModelStage::Rejected, "regressed class 3").ok());
  auto m2 = reg->model(2);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(m2->stage, ModelStage::Rejected);
  EXPECT_EQ(m2->reason, "regressed class 3");
  EXPECT_EQ(m2->perClassAccuracy, (std::vector<double>{0.7, 0.9}));
  EXPECT_EQ(reg->model(9).code(), Code::NotFound);
  EXPECT_EQ(reg->setModelStage(9, ModelStage::Stable).code(), Code::NotFound);
}

TEST(Registry, UpdatesAreIdempotentAndCountedOnce) {
  test::TempDir tmp;
  auto reg = Registry::open(tmp.path() / "r.db");
  ASSERT_TRUE(reg.ok());
  RoundRecord round;
  round.round = 1;
  round.trigger = "manual";
  round.baseVersion = 1;
  ASSERT_TRUE(reg->openRound(round).ok());
  ASSERT_TRUE(reg->recordUpdate(sampleUpdate(1, "a", true)).ok());
  ASSERT_TRUE(reg->recordUpdate(sampleUpdate(1, "b", false, "BadSignature")).ok());
  ASSERT_TRUE(reg->recordUpdate(sampleUpdate(1, "c", false, "BadSignature")).ok());
  EXPECT_EQ(reg->recordUpdate(sampleUpdate(1, "a", true)).code(), Code::AlreadyExists);
  // A rejection does not block a later valid update from the same device.
  ASSERT_TRUE(reg->recordUpdate(sampleUpdate(1, "b", true)).ok());
  EXPECT_EQ(reg->recordUpdate(sampleUpdate(1, "b", true)).code(), Code::AlreadyExists);
  EXPECT_EQ(reg->acceptedCount(1), 2u);
  auto r = reg->round(1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->verdicts["accepted"], 2u);
  EXPECT_EQ(r->verdicts["BadSignature"], 2u);
  auto a = reg->update(1, "a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->delta, (std::vector<float>{0.5f, -1.0f, 2.0f}));
  EXPECT_TRUE(reg->update(1, "b")->accepted);
  EXPECT_FALSE(reg->update(1, "c")->accepted);
  EXPECT_EQ(reg->updates(1).size(), 4u);
  // The accepted digest among the device's rejections; none for a device
  // with only rejections, another round or an unknown device.
  UpdateRecord later = sampleUpdate(1, "b", false, "Duplicate");
  later.digest[0] ^= 1;
  ASSERT_TRUE(reg->recordUpdate(later).ok());
  ASSERT_TRUE(reg->acceptedDigest(1, "b").has_value());
  EXPECT_EQ(*reg->acceptedDigest(1, "b"), sampleUpdate(1, "b", true).digest);
  EXPECT_NE(*reg->acceptedDigest(1, "b"), later.digest);
  EXPECT_FALSE(reg->acceptedDigest(1, "c").has_value());
  EXPECT_FALSE(reg->acceptedDigest(2, "a").has_value());
  EXPECT_FALSE(reg->acceptedDigest(1, "zz").has_value());
  EXPECT_EQ(reg->updates(1).size(), 5u);

  EXPECT_EQ(reg->openRoundRecord()->round, 1u);
  r->state = RoundState::Closed;
  r->phaseMillis["aggregate"] = 12.5;
  r->outcome = "deployed canary v2";
  ASSERT_TRUE(reg->updateRound(*r).ok());
  EXPECT_FALSE(reg->openRoundRecord().has_value());
  EXPECT_DOUBLE_EQ(reg->round(1)->phaseMillis["aggregate"], 12.5);
  EXPECT_EQ(reg->lastRound(), 1u);
}

TEST(Registry, DeploymentsAreMonotonicAndSupersede) {
  test::TempDir tmp;
  auto reg = Registry::open(tmp.path() / "r.db");
  ASSERT_TRUE(reg.ok());
  ASSERT_TRUE(reg->addModel(sampleModel(0, ModelStage::Stable)).ok());
  DeploymentRecord d;
  d.sequence = reg->nextDeploymentSequence();
  d.version = 1;
  d.channel = "stable";
  ASSERT_TRUE(reg->addDeployment(d).ok());
  d.sequence = reg->nextDeploymentSequence();
  EXPECT_EQ(d.sequence, 2u);
  ASSERT_TRUE(reg->addDeployment(d).ok());
  EXPECT_EQ(reg->activeDeployment("stable")->sequence, 2u);
  EXPECT_EQ(reg->deployments()[0].state, DeploymentState::Superseded);
  d.sequence = 2;  // reusing a sequence is refused
  EXPECT_EQ(reg->addDeployment(d).code(), Code::InvalidArgument);
  d.sequence = 3;
  d.version = 42;  // unknown model
  EXPECT_FALSE(reg->addDeployment(d).ok());
  EXPECT_EQ(reg->activeDeployment("stable")->sequence, 2u);
}

TEST(Registry, DevicesStateAndEvents) {
  test::TempDir tmp;
  auto reg = Registry::open(tmp.path() / "r.db");
  ASSERT_TRUE(reg.ok());
  DeviceRecord d;
  d.id = "dev-1";
  d.key.fill(7);
  ASSERT_TRUE(reg->upsertDevice(d).ok());
  ASSERT_TRUE(reg->touchDevice("dev-1", 1000, 3, "{\"psi\":0.1}").ok());
  auto got = reg->device("dev-1");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->activeVersion, 3u);
  EXPECT_EQ(got->lastSeen, 1000);
  ASSERT_TRUE(reg->revokeDevice("dev-1", 2000).ok());
  EXPECT_EQ(reg->device("dev-1")->revokedAt, 2000);
  EXPECT_EQ(reg->revokeDevice("nobody", 1).code(), Code::NotFound);

  ASSERT_TRUE(reg->putState("fedadam", {1, 2, 3}).ok());
  EXPECT_EQ(*reg->state("fedadam"), (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_FALSE(reg->state("nothing").has_value());
  auto events = reg->events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, "device");
  EXPECT_EQ(events.back().detail, "revoked");
}

TEST(Registry, FailedTransactionLeavesNoTrace) {
  test::TempDir tmp;
  auto reg = Registry::open(tmp.path() / "r.db");
  ASSERT_TRUE(reg.ok());
  Status st = reg->transaction([&]() -> Status {
    EDGEFL_TRY(reg->addModel(sampleModel(0, ModelStage::Stable)));
    return makeError(Code::InvalidArgument, "abort");
  });
  EXPECT_EQ(st.code(), Code::InvalidArgument);
  EXPECT_TRUE(reg->models().empty());
}

TEST(Registry, CommittedUpdateSurvivesAKilledProcess) {
  test::TempDir tmp;
  const auto path = tmp.path() / "r.db";
  { ASSERT_TRUE(Registry::open(path).ok()); }
  pid_t pid = ::fork();
  if (pid == 0) {
    auto reg = Registry::open(path);
    RoundRecord round;
    round.round = 1;
    round.trigger = "manual";
    (void)reg->openRound(round);
    (void)reg->recordUpdate(sampleUpdate(1, "a", true));
    ::kill(::getpid(), SIGKILL);  // no destructors, no close
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto reg = Registry::open(path);
  ASSERT_TRUE(reg.ok());
  EXPECT_EQ(reg->integrityCheck(), "ok");
  EXPECT_EQ(reg->acceptedCount(1), 1u);
}

}  // namespace
}  // namespace edgefl::server
