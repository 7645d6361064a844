// The labelled sample stores (SQLite and in-memory) and the device
// database they share with the device state.

#include "edgefl/device/sample_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "edgefl/device/device_state.hpp"
#include "support/broker.hpp"

namespace edgefl::device {
namespace {

std::vector<float> sample(float base, std::size_t n = 4) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = base + static_cast<float>(i) / 10.0f;
  return x;
}

std::unique_ptr<DeviceDb> openDb(const std::filesystem::path& file) {
  auto db = DeviceDb::open(file, true);
  EXPECT_TRUE(db.ok()) << db.error().toString();
  return std::move(db.value());
}

void checkStoreBasics(SampleStore& store) {
  ASSERT_TRUE(store.add(sample(1), 1, 0.0f).ok());
  ASSERT_TRUE(store.add(sample(2), 2, 0.0f).ok());
  ASSERT_TRUE(store.add(sample(3, 6), 0, 0.0f).ok());  // another model's input size
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.count(4), 2u);
  EXPECT_EQ(store.count(6), 1u);
  auto d = store.snapshot(4);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ(d->featureCount, 4u);
  EXPECT_FLOAT_EQ(d->features[0], 1.0f);
  EXPECT_FLOAT_EQ(d->features[4], 2.0f);
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{1, 2}));
  EXPECT_GT(store.bytesUsed(), 0u);

  // Past the capacity (4) the oldest go first.
  for (int i = 4; i <= 7; ++i) ASSERT_TRUE(store.add(sample(static_cast<float>(i)), i, 0.5f).ok());
  EXPECT_EQ(store.size(), 4u);
  EXPECT_EQ(store.evicted(), 3u);
  d = store.snapshot(4);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->labels, (std::vector<std::int32_t>{4, 5, 6, 7}));
  EXPECT_FLOAT_EQ(d->features[0], 4.0f);
  EXPECT_FLOAT_EQ(d->targets[3], 0.5f);
  EXPECT_EQ(store.count(6), 0u);
}

TEST(MemorySampleStore, IsABoundedRingOldestFirst) {
  MemorySampleStore store(4);
  checkStoreBasics(store);
  MemorySampleStore none(0);
  EXPECT_EQ(none.add(sample(1), 0, 0).code(), Code::InvalidArgument);
}

TEST(SqliteSampleStore, IsBoundedAndSurvivesReopening) {
  test::TempDir tmp;
  const auto file = tmp.path() / "device.db";
  {
    auto db = openDb(file);
    auto store = SqliteSampleStore::open(*db, 4);
    ASSERT_TRUE(store.ok());
    checkStoreBasics(*store.value());
  }
  {
    auto db = openDb(file);
    auto store = SqliteSampleStore::open(*db, 4);
    ASSERT_TRUE(store.ok());
    EXPECT_EQ(store.value()->size(), 4u);
    auto d = store.value()->snapshot(4);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->labels, (std::vector<std::int32_t>{4, 5, 6, 7}));
  }
  {
    // A smaller capacity on the next open evicts down to it.
    auto db = openDb(file);
    auto store = SqliteSampleStore::open(*db, 2);
    ASSERT_TRUE(store.ok());
    EXPECT_EQ(store.value()->size(), 2u);
    auto d = store.value()->snapshot(4);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->labels, (std::vector<std::int32_t>{6, 7}));
  }
  // The file is a healthy WAL database.
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &raw), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "ok");
  sqlite3_finalize(st);
  sqlite3_close(raw);
}

// Runs `sql` on `file` through a connection of its own, as another
// program would; "" on success, else SQLite's message.
std::string execOutside(const std::filesystem::path& file, const char* sql) {
  sqlite3* raw = nullptr;
  std::string error;
  if (sqlite3_open(file.c_str(), &raw) != SQLITE_OK) {
    error = raw != nullptr ? sqlite3_errmsg(raw) : "cannot open";
  } else if (sqlite3_exec(raw, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    error = sqlite3_errmsg(raw);
  }
  sqlite3_close(raw);
  return error;
}

TEST(DeviceDb, RefusesANewerSchemaAndReportsIoErrors) {
  test::TempDir tmp;
  const auto file = tmp.path() / "device.db";
  { openDb(file); }
  ASSERT_EQ(execOutside(file, "PRAGMA user_version=99"), "");
  EXPECT_EQ(DeviceDb::open(file, true).code(), Code::Unsupported);
  EXPECT_EQ(DeviceDb::open(tmp.path() / "missing-dir" / "device.db", true).code(), Code::IoError);
}

// A database of schema version 1 keeps its pending envelopes inline: the
// open migrates it to version 2, and those rows read back as they were,
// next to rows whose envelope is a file.
TEST(DeviceDb, VersionOnePendingEnvelopesReadBackAfterTheMigration) {
  test::TempDir tmp;
  const auto file = tmp.path() / "device.db";
  { openDb(file); }
  // Back to version 1's table, with one update stored inline.
  ASSERT_EQ(execOutside(file,
                        "ALTER TABLE pending DROP COLUMN file; "
                        "ALTER TABLE pending DROP COLUMN envelope_bytes; "
                        "INSERT INTO pending VALUES(7, x'0102030405', zeroblob(32), 0, 11); "
                        "PRAGMA user_version=1"),
            "");

  auto db = openDb(file);
  {
    Statement st(*db, "PRAGMA user_version");
    ASSERT_TRUE(st.step().value());
    EXPECT_EQ(st.integer(0), 2);
  }
  ModelFiles files(tmp.path() / "pending", true);
  ASSERT_TRUE(files.prepare().ok());
  DeviceState state(*db, &files);
  PendingUpdate next;
  next.round = 8;
  next.envelope = Bytes(1000, 0xab);
  next.createdAt = 12;
  ASSERT_TRUE(state.recordBuiltUpdate(next, nullptr, 10, nullptr).ok());
  EXPECT_TRUE(std::filesystem::exists(files.pathOf(DeviceState::pendingFileName(8))));
  auto pending = state.pendingUpdates();
  ASSERT_TRUE(pending.ok()) << pending.error().toString();
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].round, 7u);
  EXPECT_EQ((*pending)[0].envelope, (Bytes{1, 2, 3, 4, 5}));
  EXPECT_EQ((*pending)[0].createdAt, 11);
  EXPECT_EQ((*pending)[1].round, 8u);
  EXPECT_EQ((*pending)[1].envelope, next.envelope);
  ASSERT_TRUE(state.dropPending(8).ok());
  EXPECT_FALSE(std::filesystem::exists(files.pathOf(DeviceState::pendingFileName(8))));
  ASSERT_TRUE(state.recordAck(7, "accepted", "", false).ok());
  EXPECT_TRUE(state.pendingUpdates()->empty());
}

// bytesUsed() is counted along with the writes and removals, not walked;
// it must still be what a walk of the directory finds, from files already
// there at prepare() through replacements and removals.
TEST(ModelFiles, BytesUsedFollowsWritesAndRemovals) {
  test::TempDir tmp;
  const auto dir = tmp.path() / "files";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "left.bin") << std::string(700, 'x');
  std::ofstream(dir / "cut.bin.tmp") << std::string(50, 'y');
  auto walked = [&] {
    std::uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) total += e.file_size();
    return total;
  };
  ModelFiles files(dir, false);
  ASSERT_TRUE(files.prepare().ok());
  EXPECT_EQ(files.bytesUsed(), 750u);
  ASSERT_TRUE(files.write("a", Bytes(1000, 1)).ok());
  ASSERT_TRUE(files.write("b", Bytes(300, 2)).ok());
  EXPECT_EQ(files.bytesUsed(), walked());
  ASSERT_TRUE(files.write("a", Bytes(10, 3)).ok());  // replaced: 1000 -> 10
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_EQ(files.bytesUsed(), 750u + 10u + 300u);
  EXPECT_TRUE(files.remove("b"));
  EXPECT_TRUE(files.remove("never-written"));
  EXPECT_EQ(files.bytesUsed(), walked());
  files.removeUnless([](const std::string& name) { return name == "a"; });
  EXPECT_EQ(files.bytesUsed(), 10u);
  EXPECT_EQ(files.bytesUsed(), walked());
  // A failed write changes nothing.
  EXPECT_FALSE(ModelFiles(tmp.path() / "missing", false).write("x", Bytes(5, 0)).ok());
  EXPECT_EQ(files.bytesUsed(), walked());
}

// A recycling directory keeps one removed file as its spare and writes the
// next file over it: shorter and longer contents come out exact, the bytes
// stay what a walk finds, a second removal while there is a spare removes,
// and the sweep of temporaries takes the spare too.
TEST(ModelFiles, ARecyclingDirectoryWritesOverItsSpare) {
  test::TempDir tmp;
  const auto dir = tmp.path() / "pending";
  auto walked = [&] {
    std::uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) total += e.file_size();
    return total;
  };
  auto inode = [](const std::filesystem::path& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
  };
  const auto spare = dir / std::string(ModelFiles::kSpareName);
  ModelFiles files(dir, true, /*recycle=*/true);
  ASSERT_TRUE(files.prepare().ok());
  ASSERT_TRUE(files.write("r1", Bytes(5000, 1)).ok());
  ASSERT_TRUE(files.write("r2", Bytes(3000, 2)).ok());
  const auto first = inode(files.pathOf("r1"));
  EXPECT_TRUE(files.remove("r1"));
  EXPECT_EQ(inode(spare), first);
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_TRUE(files.remove("r2"));  // there is a spare already
  EXPECT_FALSE(std::filesystem::exists(files.pathOf("r2")));
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_EQ(files.bytesUsed(), 5000u);

  ASSERT_TRUE(files.write("r3", Bytes(1200, 3)).ok());  // shorter than the spare
  EXPECT_FALSE(std::filesystem::exists(spare));
  EXPECT_EQ(inode(files.pathOf("r3")), first);
  EXPECT_EQ(files.read("r3", 1 << 20).value(), Bytes(1200, 3));
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_EQ(files.bytesUsed(), 1200u);
  ASSERT_TRUE(files.remove("r3"));
  ASSERT_TRUE(files.write("r4", Bytes(9000, 4)).ok());  // longer
  EXPECT_EQ(inode(files.pathOf("r4")), first);
  EXPECT_EQ(files.read("r4", 1 << 20).value(), Bytes(9000, 4));
  EXPECT_EQ(files.bytesUsed(), walked());

  // Replacing a file of the same name frees the old one, and the spare
  // becomes the new one.
  ASSERT_TRUE(files.write("r5", Bytes(10, 5)).ok());
  ASSERT_TRUE(files.remove("r5"));
  ASSERT_TRUE(files.write("r4", Bytes(700, 6)).ok());
  EXPECT_EQ(files.read("r4", 1 << 20).value(), Bytes(700, 6));
  EXPECT_FALSE(std::filesystem::exists(spare));
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_EQ(files.bytesUsed(), 700u);

  // A write over the spare that fails (its name is taken by a directory
  // that is not empty) loses the spare and leaves the count right.
  ASSERT_TRUE(files.remove("r4"));
  std::filesystem::create_directories(dir / "blocked" / "inside");
  EXPECT_FALSE(files.write("blocked", Bytes(50, 8)).ok());
  EXPECT_FALSE(std::filesystem::exists(spare));
  EXPECT_FALSE(std::filesystem::exists(dir / "blocked.tmp"));
  std::filesystem::remove_all(dir / "blocked");
  EXPECT_EQ(files.bytesUsed(), walked());
  EXPECT_EQ(files.bytesUsed(), 0u);

  // Something other than a regular file under the spare's name is never
  // written through: a link to a file outside stays untouched.
  const auto outside = tmp.path() / "outside";
  std::ofstream(outside) << "keep me";
  std::filesystem::create_symlink(outside, spare);
  ASSERT_TRUE(files.write("r7", Bytes(40, 10)).ok());
  EXPECT_EQ(files.read("r7", 1 << 20).value(), Bytes(40, 10));
  std::ifstream in(outside);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()),
            "keep me");
  std::filesystem::remove(spare);
  ASSERT_TRUE(files.remove("r7"));
  EXPECT_TRUE(std::filesystem::is_regular_file(spare));

  ASSERT_TRUE(files.write("r6", Bytes(30, 9)).ok());
  ASSERT_TRUE(files.remove("r6"));
  // A sweep without temporaries (a device's models after a deployment)
  // keeps the spare and makes the first file it drops the spare; the sweep
  // at a device's open removes the spare.
  ASSERT_TRUE(files.write("r8", Bytes(20, 8)).ok());
  ASSERT_TRUE(files.write("r9", Bytes(10, 9)).ok());
  auto names = [&] {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      out.insert(e.path().filename().string());
    }
    return out;
  };
  const auto onlyR9 = [](const std::string& name) { return name == "r9"; };
  for (int sweep = 0; sweep < 2; ++sweep) {
    files.removeUnless(onlyR9, /*temporaries=*/false);
    EXPECT_EQ(names(), (std::set<std::string>{"r9", std::string(ModelFiles::kSpareName)}));
    EXPECT_EQ(files.bytesUsed(), walked());
  }
  EXPECT_EQ(std::filesystem::file_size(spare), 20u);
  files.removeUnless(onlyR9);
  EXPECT_EQ(names(), std::set<std::string>{"r9"});
  EXPECT_EQ(files.bytesUsed(), walked());
  ASSERT_TRUE(files.remove("r9"));
  files.removeUnless([](const std::string&) { return true; });
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  EXPECT_EQ(files.bytesUsed(), 0u);
  // Without recycling a removal removes.
  ModelFiles plain(tmp.path() / "models", true);
  ASSERT_TRUE(plain.prepare().ok());
  ASSERT_TRUE(plain.write("m", Bytes(100, 7)).ok());
  ASSERT_TRUE(plain.remove("m"));
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path() / "models"));
}

// fileBytes() is measured again only after a write, and then follows it.
TEST(DeviceDb, FileBytesFollowTheWrites) {
  test::TempDir tmp;
  auto db = openDb(tmp.path() / "device.db");
  const std::uint64_t before = db->fileBytes();
  EXPECT_GT(before, 0u);
  DeviceState state(*db);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(db->transaction(Durability::Normal, [&]() -> Status {
                    Statement st(*db,
                                 "INSERT INTO samples(feature_count, features, label, target) "
                                 "VALUES(1, ?1, 0, 0)");
                    st.bind(1, ByteView(Bytes(4000, 7)));
                    return st.run();
                  }).ok());
  }
  std::uint64_t onDisk = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::error_code ec;
    const auto size =
        std::filesystem::file_size(tmp.path() / ("device.db" + std::string(suffix)), ec);
    if (!ec) onDisk += size;
  }
  EXPECT_GT(db->fileBytes(), before + 50 * 4000);
  EXPECT_EQ(db->fileBytes(), onDisk);
}

TEST(DeviceDb, TransactionsRollBackOnError) {
  test::TempDir tmp;
  auto db = openDb(tmp.path() / "device.db");
  DeviceState state(*db);
  ASSERT_TRUE(state.setCounter(kFallbacks, 3).ok());
  Status failed = db->transaction(Durability::Full, [&]() -> Status {
    Statement st(*db, "UPDATE counters SET value = 10 WHERE name = 'fallbacks'");
    EDGEFL_TRY(st.run());
    return makeError(Code::BadField, "abandon");
  });
  EXPECT_EQ(failed.code(), Code::BadField);
  EXPECT_EQ(state.counter(kFallbacks).value(), 3u);
  ASSERT_TRUE(state.addCounter(kFallbacks, 2).ok());
  EXPECT_EQ(state.counter(kFallbacks).value(), 5u);
  EXPECT_EQ(state.counter("never-set").value(), 0u);
}

TEST(DeviceState, DeploymentStateRoundTrips) {
  test::TempDir tmp;
  auto db = openDb(tmp.path() / "device.db");
  DeviceState state(*db);
  DeploymentState s;
  StoredDeployment a;
  a.file = "stable-3.deploy";
  a.sequence = 3;
  a.modelVersion = 7;
  a.digest[0] = 0xab;
  a.acceptedAt = 1700000000;
  StoredDeployment b = a;
  b.file = "canary-4.deploy";
  b.channel = Channel::CANARY;
  b.sequence = 4;
  b.mode = DeployMode::SHADOW;
  b.failed = true;
  StoredDeployment orphan = a;
  orphan.file = "stable-1.deploy";
  s.files = {{a.file, a}, {b.file, b}, {orphan.file, orphan}};
  s.channels[0].lastSequence = 3;
  s.channels[0].present = true;
  s.channels[0].activateFile = a.file;
  s.channels[1].lastSequence = 9;
  s.channels[1].present = true;
  s.channels[1].percent = 12.5f;
  s.channels[1].salt = 77;
  s.channels[1].shadowFile = b.file;
  s.activeFile = a.file;
  s.shadowFile = b.file;
  ASSERT_TRUE(state.saveDeployments(s).ok());

  auto loaded = state.loadDeployments();
  ASSERT_TRUE(loaded.ok());
  const DeploymentState& l = loaded.value();
  EXPECT_EQ(l.files.size(), 2u);  // the unreferenced one is not kept
  ASSERT_NE(l.find(b.file), nullptr);
  EXPECT_TRUE(l.find(b.file)->failed);
  EXPECT_EQ(l.find(b.file)->mode, DeployMode::SHADOW);
  EXPECT_EQ(l.find(a.file)->digest, a.digest);
  EXPECT_EQ(l.find(a.file)->acceptedAt, a.acceptedAt);
  EXPECT_EQ(l.channels[1].lastSequence, 9u);
  EXPECT_FLOAT_EQ(l.channels[1].percent, 12.5f);
  EXPECT_EQ(l.channels[1].salt, 77u);
  EXPECT_EQ(l.channels[1].shadowFile, b.file);
  EXPECT_TRUE(l.channels[1].activateFile.empty());
  EXPECT_EQ(l.activeFile, a.file);
  EXPECT_TRUE(l.previousFile.empty());
  EXPECT_EQ(l.shadowFile, b.file);
}

TEST(DeviceState, PendingUpdatesAcksAndResiduals) {
  test::TempDir tmp;
  auto db = openDb(tmp.path() / "device.db");
  DeviceState state(*db);
  Residual residual{"mlp:2-2", Digest{}, {0.5f, -0.25f}};
  std::uint32_t dropped = 99;
  for (std::uint64_t round = 1; round <= 3; ++round) {
    PendingUpdate p{round, Bytes{1, 2, static_cast<std::uint8_t>(round)}, Digest{}, 100, 50};
    ASSERT_TRUE(state.recordBuiltUpdate(p, round == 3 ? &residual : nullptr, 2, &dropped).ok());
  }
  EXPECT_EQ(dropped, 1u);
  auto pending = state.pendingUpdates();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].round, 2u);
  EXPECT_EQ((*pending)[1].envelope, (Bytes{1, 2, 3}));
  EXPECT_TRUE(state.roundSent(1).value());
  EXPECT_FALSE(state.roundSent(4).value());
  EXPECT_EQ(state.counter(kUpdatesSent).value(), 3u);
  EXPECT_EQ(state.counter(kLastRound).value(), 3u);

  ASSERT_TRUE(state.recordAck(2, "rejected", "Overloaded", true).ok());
  EXPECT_EQ(state.pendingUpdates()->size(), 2u);
  ASSERT_TRUE(state.recordAck(2, "accepted", "", false).ok());
  EXPECT_EQ(state.pendingUpdates()->size(), 1u);
  ASSERT_TRUE(state.dropPending(3).ok());
  EXPECT_TRUE(state.pendingUpdates()->empty());

  auto r = state.residual("mlp:2-2");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(r->value().values, residual.values);
  EXPECT_FALSE(state.residual("mlp:3-3")->has_value());
}

// A pending update of hundreds of KB (a float32 mlp delta) survives a
// reopen byte for byte.
TEST(DeviceDb, LargePendingUpdateRoundTrips) {
  test::TempDir tmp;
  Bytes envelope(400 * 1024);
  for (std::size_t i = 0; i < envelope.size(); ++i) {
    envelope[i] = static_cast<std::uint8_t>(i * 2654435761u >> 24);
  }
  const auto file = tmp.path() / "device.db";
  {
    auto db = openDb(file);
    DeviceState state(*db);
    PendingUpdate p{1, envelope, Digest{}, 100, 50};
    ASSERT_TRUE(state.recordBuiltUpdate(p, nullptr, 4, nullptr).ok());
  }
  auto db = openDb(file);
  DeviceState state(*db);
  auto pending = state.pendingUpdates();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].envelope, envelope);
}

}  // namespace
}  // namespace edgefl::device
