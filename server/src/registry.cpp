#include "edgefl/server/registry.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>

namespace edgefl::server {
namespace {

// Schema migrations, applied in order; user_version = number applied.
// Never edit a released migration: append a new one.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE models (
  version INTEGER PRIMARY KEY,
  parent INTEGER NOT NULL DEFAULT 0,
  arch TEXT NOT NULL,
  digest BLOB NOT NULL,
  parameter_count INTEGER NOT NULL,
  size_bytes INTEGER NOT NULL,
  stage TEXT NOT NULL CHECK (stage IN ('candidate','rejected','canary','stable','archived')),
  round INTEGER NOT NULL DEFAULT 0,
  accuracy REAL NOT NULL DEFAULT 0,
  loss REAL NOT NULL DEFAULT 0,
  per_class BLOB,
  reason TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  bytes BLOB NOT NULL
);
CREATE TABLE lineage (
  version INTEGER NOT NULL REFERENCES models(version),
  round INTEGER NOT NULL,
  device_id TEXT NOT NULL,
  PRIMARY KEY (version, device_id)
);
CREATE TABLE rounds (
  round INTEGER PRIMARY KEY,
  trigger TEXT NOT NULL,
  config TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  base_version INTEGER NOT NULL,
  opened_at INTEGER NOT NULL,
  deadline INTEGER NOT NULL,
  closed_at INTEGER NOT NULL DEFAULT 0,
  selected INTEGER NOT NULL DEFAULT 0,
  result_version INTEGER NOT NULL DEFAULT 0,
  strategy TEXT NOT NULL DEFAULT '',
  noise_multiplier REAL NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT ''
);
CREATE TABLE round_phases (
  round INTEGER NOT NULL REFERENCES rounds(round),
  phase TEXT NOT NULL,
  millis REAL NOT NULL,
  PRIMARY KEY (round, phase)
);
CREATE TABLE round_verdicts (
  round INTEGER NOT NULL,
  reason TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (round, reason)
);
CREATE TABLE updates (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  round INTEGER NOT NULL,
  device_id TEXT NOT NULL,
  verdict TEXT NOT NULL CHECK (verdict IN ('accepted','rejected')),
  reason TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT '',
  sample_count INTEGER NOT NULL DEFAULT 0,
  staleness INTEGER NOT NULL DEFAULT 0,
  norm REAL NOT NULL DEFAULT 0,
  digest BLOB,
  received_at INTEGER NOT NULL,
  delta BLOB
);
-- At most one accepted update per (round, device): the idempotency key.
-- Rejections are kept as they come (the coordinator rate-limits them).
CREATE UNIQUE INDEX updates_accepted ON updates(round, device_id) WHERE verdict = 'accepted';
CREATE INDEX updates_round ON updates(round);
CREATE TABLE devices (
  device_id TEXT PRIMARY KEY,
  public_key BLOB NOT NULL,
  enrolled_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  last_seen INTEGER NOT NULL DEFAULT 0,
  active_version INTEGER NOT NULL DEFAULT 0,
  last_telemetry TEXT NOT NULL DEFAULT ''
);
CREATE TABLE deployments (
  sequence INTEGER PRIMARY KEY,
  version INTEGER NOT NULL REFERENCES models(version),
  channel TEXT NOT NULL CHECK (channel IN ('stable','canary')),
  percent REAL NOT NULL,
  state TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  signed BLOB
);
CREATE TABLE state (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
-- Operator requests (edgefl round start, rollout promote|rollback|pause)
-- for a running coordinator, which polls and answers them here.
CREATE TABLE commands (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  args TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  done_at INTEGER NOT NULL DEFAULT 0,
  result TEXT NOT NULL DEFAULT ''
);
CREATE TABLE events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail TEXT NOT NULL
);
)sql",
};

std::int64_t nowSeconds() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

// A prepared statement with typed binds and column reads.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      error_ = sqlite3_errmsg(db);
      stmt_ = nullptr;
    }
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, std::int64_t v) {
    if (stmt_) sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& bind(int i, std::uint64_t v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, std::uint32_t v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, double v) {
    if (stmt_) sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) {
    if (stmt_) sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, std::string_view v) { return bind(i, std::string(v)); }
  Stmt& bind(int i, const char* v) { return bind(i, std::string(v)); }
  Stmt& bindBlob(int i, const void* data, std::size_t size) {
    if (stmt_) sqlite3_bind_blob64(stmt_, i, data, size, SQLITE_TRANSIENT);
    return *this;
  }
  // No copy: `data` must stay valid until the statement is done.
  Stmt& bindBlobStatic(int i, const void* data, std::size_t size) {
    if (stmt_) sqlite3_bind_blob64(stmt_, i, data, size, SQLITE_STATIC);
    return *this;
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() {
    if (!stmt_) return SQLITE_ERROR;
    int rc = sqlite3_step(stmt_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) error_ = sqlite3_errmsg(db_);
    return rc;
  }
  Status run() {
    int rc = step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return {};
    return makeError(rc == SQLITE_CONSTRAINT ? Code::AlreadyExists : Code::IoError,
                     "sqlite: " + error_);
  }

  std::int64_t i64(int c) const { return sqlite3_column_int64(stmt_, c); }
  std::uint64_t u64(int c) const { return static_cast<std::uint64_t>(i64(c)); }
  double f64(int c) const { return sqlite3_column_double(stmt_, c); }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(stmt_, c);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c)))
             : std::string();
  }
  std::vector<std::uint8_t> blob(int c) const {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, c));
    const int n = sqlite3_column_bytes(stmt_, c);
    return p ? std::vector<std::uint8_t>(p, p + n) : std::vector<std::uint8_t>();
  }
  const std::string& error() const { return error_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string error_;
};

Status exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown";
    sqlite3_free(err);
    return makeError(Code::IoError, "sqlite: " + msg);
  }
  return {};
}

template <std::size_t N>
std::array<std::uint8_t, N> toArray(const std::vector<std::uint8_t>& v) {
  std::array<std::uint8_t, N> out{};
  if (v.size() == N) std::memcpy(out.data(), v.data(), N);
  return out;
}

template <typename T>
std::vector<T> fromBlob(const std::vector<std::uint8_t>& blob) {
  std::vector<T> out(blob.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), blob.data(), out.size() * sizeof(T));
  return out;
}

constexpr const char* kModelColumns =
    "version, parent, arch, digest, parameter_count, size_bytes, stage, round, accuracy, loss, "
    "per_class, reason, created_at";

ModelRecord readModel(const Stmt& s, bool withBytes) {
  ModelRecord m;
  m.version = s.u64(0);
  m.parent = s.u64(1);
  m.arch = s.text(2);
  m.digest = toArray<kDigestBytes>(s.blob(3));
  m.parameterCount = s.u64(4);
  m.sizeBytes = s.u64(5);
  m.stage = stageFromName(s.text(6)).value_or(ModelStage::Candidate);
  m.round = s.u64(7);
  m.accuracy = s.f64(8);
  m.loss = s.f64(9);
  m.perClassAccuracy = fromBlob<double>(s.blob(10));
  m.reason = s.text(11);
  m.createdAt = s.i64(12);
  if (withBytes) m.bytes = s.blob(13);
  return m;
}

}  // namespace

std::string_view stageName(ModelStage stage) {
  switch (stage) {
    case ModelStage::Candidate: return "candidate";
    case ModelStage::Rejected: return "rejected";
    case ModelStage::Canary: return "canary";
    case ModelStage::Stable: return "stable";
    case ModelStage::Archived: return "archived";
  }
  return "candidate";
}

std::optional<ModelStage> stageFromName(std::string_view name) {
  for (auto s : {ModelStage::Candidate, ModelStage::Rejected, ModelStage::Canary,
                 ModelStage::Stable, ModelStage::Archived}) {
    if (stageName(s) == name) return s;
  }
  return std::nullopt;
}

std::string_view roundStateName(RoundState state) {
  switch (state) {
    case RoundState::Open: return "open";
    case RoundState::Aggregating: return "aggregating";
    case RoundState::Validating: return "validating";
    case RoundState::Closed: return "closed";
    case RoundState::Failed: return "failed";
    case RoundState::Cancelled: return "cancelled";
  }
  return "open";
}

namespace {
RoundState roundStateFromName(std::string_view name) {
  for (auto s : {RoundState::Open, RoundState::Aggregating, RoundState::Validating,
                 RoundState::Closed, RoundState::Failed, RoundState::Cancelled}) {
    if (roundStateName(s) == name) return s;
  }
  return RoundState::Failed;
}
}  // namespace

std::string_view deploymentStateName(DeploymentState state) {
  switch (state) {
    case DeploymentState::Active: return "active";
    case DeploymentState::Promoted: return "promoted";
    case DeploymentState::RolledBack: return "rolled_back";
    case DeploymentState::Superseded: return "superseded";
    case DeploymentState::Paused: return "paused";
  }
  return "active";
}

namespace {
DeploymentState deploymentStateFromName(std::string_view name) {
  for (auto s : {DeploymentState::Active, DeploymentState::Promoted, DeploymentState::RolledBack,
                 DeploymentState::Superseded, DeploymentState::Paused}) {
    if (deploymentStateName(s) == name) return s;
  }
  return DeploymentState::Superseded;
}
}  // namespace

// The background checkpoint thread and what the WAL hook tells it. Its
// address is stable (owned through a unique_ptr), so the hook keeps it while
// the Registry moves.
struct Registry::Checkpointer {
  CheckpointOptions options;
  std::uint64_t pageSize = 4096;
  sqlite3* own = nullptr;  // the thread's connection
  mutable std::mutex mu;
  std::condition_variable cv;
  bool wanted = false;
  bool stopping = false;
  CheckpointStats stats;
  std::thread thread;

  void record(int code, sqlite3* db, bool background) {
    std::lock_guard lock(mu);
    if (code == SQLITE_OK || (code & 0xff) == SQLITE_BUSY) {
      // Busy: another checkpoint was running; the next one catches up.
      ++(background ? stats.background : stats.inCommit);
    } else {
      ++stats.failed;
      stats.lastError = sqlite3_errmsg(db);
    }
  }

  void run() {
    for (;;) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return wanted || stopping; });
        if (stopping) return;
        wanted = false;
      }
      const int code =
          sqlite3_wal_checkpoint_v2(own, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      record(code, own, true);
    }
  }

  // SQLite calls this on the committing thread after every commit, with the
  // number of frames in the WAL.
  static int onCommit(void* self, sqlite3* db, const char*, int frames) {
    auto* c = static_cast<Checkpointer*>(self);
    const std::uint64_t bytes = static_cast<std::uint64_t>(frames) * c->pageSize;
    if (bytes >= c->options.hardBytes) {
      const int code =
          sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      c->record(code, db, false);
    } else if (bytes >= c->options.backgroundBytes) {
      {
        std::lock_guard lock(c->mu);
        c->wanted = true;
      }
      c->cv.notify_one();
    }
    return SQLITE_OK;
  }
};

Registry::Registry(sqlite3* db, std::filesystem::path path) : db_(db), path_(std::move(path)) {}
Registry::Registry(Registry&& o) noexcept
    : db_(std::exchange(o.db_, nullptr)),
      txDepth_(o.txDepth_),
      path_(std::move(o.path_)),
      checkpointer_(std::move(o.checkpointer_)) {}
Registry& Registry::operator=(Registry&& o) noexcept {
  if (this != &o) {
    stopCheckpointer();
    if (db_) sqlite3_close_v2(db_);
    db_ = std::exchange(o.db_, nullptr);
    txDepth_ = o.txDepth_;
    path_ = std::move(o.path_);
    checkpointer_ = std::move(o.checkpointer_);
  }
  return *this;
}
Registry::~Registry() {
  stopCheckpointer();
  if (db_) sqlite3_close_v2(db_);
}

void Registry::stopCheckpointer() {
  if (!checkpointer_) return;
  // SQLite's own hook again, so no commit reaches the thread being stopped.
  if (db_) sqlite3_wal_autocheckpoint(db_, 1000);
  {
    std::lock_guard lock(checkpointer_->mu);
    checkpointer_->stopping = true;
  }
  checkpointer_->cv.notify_one();
  if (checkpointer_->thread.joinable()) checkpointer_->thread.join();
  sqlite3_close_v2(checkpointer_->own);
  checkpointer_.reset();
}

Status Registry::startBackgroundCheckpoints(CheckpointOptions options) {
  if (checkpointer_) return makeError(Code::InvalidArgument, "background checkpoints already run");
  if (options.backgroundBytes == 0 || options.hardBytes < options.backgroundBytes) {
    return makeError(Code::InvalidArgument, "checkpoint thresholds: background " +
                                                std::to_string(options.backgroundBytes) +
                                                " B, hard " + std::to_string(options.hardBytes) +
                                                " B; need 0 < background <= hard");
  }
  auto c = std::make_unique<Checkpointer>();
  c->options = options;
  {
    Stmt s(db_, "PRAGMA page_size");
    if (s.step() == SQLITE_ROW) c->pageSize = static_cast<std::uint64_t>(s.i64(0));
  }
  const int rc = sqlite3_open_v2(path_.c_str(), &c->own, SQLITE_OPEN_READWRITE, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = c->own != nullptr ? sqlite3_errmsg(c->own) : "out of memory";
    sqlite3_close_v2(c->own);
    return makeError(Code::IoError, "cannot open registry " + path_.string() +
                                        " for background checkpoints: " + msg);
  }
  c->thread = std::thread([p = c.get()] { p->run(); });
  sqlite3_wal_hook(db_, &Checkpointer::onCommit, c.get());
  checkpointer_ = std::move(c);
  return {};
}

Registry::CheckpointStats Registry::checkpointStats() const {
  if (!checkpointer_) return {};
  std::lock_guard lock(checkpointer_->mu);
  return checkpointer_->stats;
}

Result<Registry> Registry::open(const std::filesystem::path& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return makeError(Code::IoError, "cannot open registry " + path.string() + ": " + msg);
  }
  Registry reg(db, path);
  sqlite3_busy_timeout(db, 5000);
  // Two processes may create a new registry at once (the coordinator's
  // first start and an operator's command). Switching a new file to WAL
  // and migrating it take locks for which SQLite can answer SQLITE_BUSY
  // without waiting (when waiting could deadlock), so the set-up is retried
  // for a bounded time. Each migration step re-reads the version inside its
  // write transaction, so the registry is migrated once.
  const int want = static_cast<int>(std::size(kMigrations));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  auto busy = [](int code) {
    return (code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED;
  };
  std::chrono::milliseconds pause(2);
  for (;;) {
    int code = SQLITE_OK;
    std::string failure;
    // WAL + synchronous=FULL: a committed transaction survives a crash or
    // power loss, which "durable before acknowledged" relies on. A new file
    // gets 64 KiB pages (SQLite's largest; an existing file keeps its own):
    // a 400 KB update is then 7 WAL frames, each one write, instead of 100,
    // and checkpoints copy as many fewer pages (bench_ingest: 0.16-0.19 of
    // the raw broker rate with 4 KiB pages, 0.23-0.26 with 64 KiB).
    code = sqlite3_exec(db,
                        "PRAGMA page_size=65536; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                        "PRAGMA foreign_keys=ON;",
                        nullptr, nullptr, nullptr);
    // Most opens find the schema current and need no write lock at all.
    bool done = code == SQLITE_OK && reg.schemaVersion() == want;
    while (code == SQLITE_OK && !done) {
      code = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
      if (code != SQLITE_OK) break;
      const int v = reg.schemaVersion();
      if (v < 0) {
        code = sqlite3_extended_errcode(db);
        if (code == SQLITE_OK) code = SQLITE_ERROR;
      } else if (v > want) {
        (void)sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return makeError(Code::BadConfig, path.string() + " has schema version " +
                                              std::to_string(v) + "; this build knows up to " +
                                              std::to_string(want));
      } else if (v == want) {
        done = true;
      } else {
        code = sqlite3_exec(db, kMigrations[v], nullptr, nullptr, nullptr);
        if (code == SQLITE_OK) {
          code = sqlite3_exec(db, ("PRAGMA user_version=" + std::to_string(v + 1)).c_str(), nullptr,
                              nullptr, nullptr);
        }
      }
      if (code == SQLITE_OK) code = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
      if (code != SQLITE_OK) {
        failure = sqlite3_errmsg(db);
        (void)sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      }
    }
    if (code == SQLITE_OK) return reg;
    if (failure.empty()) failure = sqlite3_errmsg(db);
    if (!busy(code) || std::chrono::steady_clock::now() >= deadline) {
      return makeError(Code::IoError, "cannot set up registry " + path.string() + ": " + failure);
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

int Registry::schemaVersion() const {
  Stmt s(db_, "PRAGMA user_version");
  return s.step() == SQLITE_ROW ? static_cast<int>(s.i64(0)) : -1;
}

std::string Registry::integrityCheck() const {
  Stmt s(db_, "PRAGMA integrity_check");
  return s.step() == SQLITE_ROW ? s.text(0) : "integrity_check failed: " + s.error();
}

Status Registry::transaction(const std::function<Status()>& body) {
  if (txDepth_ > 0) return body();  // nested: part of the outer transaction
  EDGEFL_TRY(exec(db_, "BEGIN IMMEDIATE"));
  ++txDepth_;
  Status st = body();
  --txDepth_;
  if (!st.ok()) {
    (void)exec(db_, "ROLLBACK");
    return st;
  }
  Status committed = exec(db_, "COMMIT");
  if (!committed.ok()) (void)exec(db_, "ROLLBACK");
  return committed;
}

Result<std::uint64_t> Registry::addModel(ModelRecord m) {
  std::uint64_t version = m.version;
  Status st = transaction([&]() -> Status {
    if (version == 0) {
      Stmt next(db_, "SELECT COALESCE(MAX(version), 0) + 1 FROM models");
      next.step();
      version = next.u64(0);
    }
    Stmt s(db_,
           "INSERT INTO models (version, parent, arch, digest, parameter_count, size_bytes, stage, "
           "round, accuracy, loss, per_class, reason, created_at, bytes) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    s.bind(1, version)
        .bind(2, m.parent)
        .bind(3, m.arch)
        .bindBlob(4, m.digest.data(), m.digest.size());
    s.bind(5, m.parameterCount).bind(6, m.sizeBytes).bind(7, stageName(m.stage)).bind(8, m.round);
    s.bind(9, m.accuracy).bind(10, m.loss);
    s.bindBlob(11, m.perClassAccuracy.data(), m.perClassAccuracy.size() * sizeof(double));
    s.bind(12, m.reason).bind(13, m.createdAt != 0 ? m.createdAt : nowSeconds());
    s.bindBlob(14, m.bytes.data(), m.bytes.size());
    EDGEFL_TRY(s.run());
    return logEvent("model", "v" + std::to_string(version),
                    "registered " + std::string(stageName(m.stage)) + " (parent v" +
                        std::to_string(m.parent) + ", round " + std::to_string(m.round) + ")");
  });
  if (!st.ok()) return st.error();
  return version;
}

Result<ModelRecord> Registry::model(std::uint64_t version, bool withBytes) const {
  Stmt s(
      db_,
      (std::string("SELECT ") + kModelColumns + ", bytes FROM models WHERE version = ?").c_str());
  s.bind(1, version);
  if (s.step() != SQLITE_ROW) {
    return makeError(Code::NotFound, "no model version " + std::to_string(version));
  }
  return readModel(s, withBytes);
}

std::vector<ModelRecord> Registry::models() const {
  Stmt s(db_, (std::string("SELECT ") + kModelColumns + " FROM models ORDER BY version").c_str());
  std::vector<ModelRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(readModel(s, false));
  return out;
}

Status Registry::setModelStage(std::uint64_t version, ModelStage stage, const std::string& reason) {
  return transaction([&]() -> Status {
    Stmt s(db_,
           "UPDATE models SET stage = ?, reason = CASE WHEN ? = '' THEN reason ELSE ? END "
           "WHERE version = ?");
    s.bind(1, stageName(stage)).bind(2, reason).bind(3, reason).bind(4, version);
    EDGEFL_TRY(s.run());
    if (sqlite3_changes(db_) == 0) {
      return makeError(Code::NotFound, "no model version " + std::to_string(version));
    }
    return logEvent("stage", "v" + std::to_string(version),
                    std::string(stageName(stage)) + (reason.empty() ? "" : ": " + reason));
  });
}

std::optional<ModelRecord> Registry::latestInStage(ModelStage stage, bool withBytes) const {
  Stmt s(db_, (std::string("SELECT ") + kModelColumns +
               ", bytes FROM models WHERE stage = ? ORDER BY version DESC LIMIT 1")
                  .c_str());
  s.bind(1, stageName(stage));
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return readModel(s, withBytes);
}

Status Registry::addLineage(std::uint64_t version, std::uint64_t round,
                            const std::vector<std::string>& devices) {
  return transaction([&]() -> Status {
    for (const auto& d : devices) {
      Stmt s(db_, "INSERT OR IGNORE INTO lineage (version, round, device_id) VALUES (?,?,?)");
      s.bind(1, version).bind(2, round).bind(3, d);
      EDGEFL_TRY(s.run());
    }
    return {};
  });
}

std::vector<std::string> Registry::lineage(std::uint64_t version) const {
  Stmt s(db_, "SELECT device_id FROM lineage WHERE version = ? ORDER BY device_id");
  s.bind(1, version);
  std::vector<std::string> out;
  while (s.step() == SQLITE_ROW) out.push_back(s.text(0));
  return out;
}

Status Registry::openRound(const RoundRecord& r) {
  return transaction([&]() -> Status {
    Stmt s(db_,
           "INSERT INTO rounds (round, trigger, config, state, base_version, opened_at, deadline, "
           "selected, strategy, noise_multiplier) VALUES (?,?,?,?,?,?,?,?,?,?)");
    s.bind(1, r.round).bind(2, r.trigger).bind(3, r.configJson).bind(4, roundStateName(r.state));
    s.bind(5, r.baseVersion).bind(6, r.openedAt).bind(7, r.deadline).bind(8, r.selected);
    s.bind(9, r.strategy).bind(10, r.noiseMultiplier);
    EDGEFL_TRY(s.run());
    return logEvent("round", std::to_string(r.round),
                    "opened by " + r.trigger + " on v" + std::to_string(r.baseVersion));
  });
}

Result<RoundRecord> Registry::round(std::uint64_t round) const {
  Stmt s(
      db_,
      "SELECT round, trigger, config, state, base_version, opened_at, deadline, closed_at, "
      "selected, result_version, strategy, noise_multiplier, outcome FROM rounds WHERE round = ?");
  s.bind(1, round);
  if (s.step() != SQLITE_ROW) return makeError(Code::NotFound, "no round " + std::to_string(round));
  RoundRecord r;
  r.round = s.u64(0);
  r.trigger = s.text(1);
  r.configJson = s.text(2);
  r.state = roundStateFromName(s.text(3));
  r.baseVersion = s.u64(4);
  r.openedAt = s.i64(5);
  r.deadline = s.i64(6);
  r.closedAt = s.i64(7);
  r.selected = s.u64(8);
  r.resultVersion = s.u64(9);
  r.strategy = s.text(10);
  r.noiseMultiplier = s.f64(11);
  r.outcome = s.text(12);
  Stmt phases(db_, "SELECT phase, millis FROM round_phases WHERE round = ?");
  phases.bind(1, round);
  while (phases.step() == SQLITE_ROW) r.phaseMillis[phases.text(0)] = phases.f64(1);
  Stmt verdicts(db_, "SELECT reason, count FROM round_verdicts WHERE round = ?");
  verdicts.bind(1, round);
  while (verdicts.step() == SQLITE_ROW) r.verdicts[verdicts.text(0)] = verdicts.u64(1);
  return r;
}

std::optional<RoundRecord> Registry::openRoundRecord() const {
  Stmt s(db_,
         "SELECT round FROM rounds WHERE state IN ('open','aggregating','validating') "
         "ORDER BY round DESC LIMIT 1");
  if (s.step() != SQLITE_ROW) return std::nullopt;
  auto r = round(s.u64(0));
  if (!r.ok()) return std::nullopt;
  return std::move(r.value());
}

std::vector<RoundRecord> Registry::rounds() const {
  Stmt s(db_, "SELECT round FROM rounds ORDER BY round");
  std::vector<RoundRecord> out;
  while (s.step() == SQLITE_ROW) {
    auto r = round(s.u64(0));
    if (r.ok()) out.push_back(std::move(r.value()));
  }
  return out;
}

std::uint64_t Registry::lastRound() const {
  Stmt s(db_, "SELECT COALESCE(MAX(round), 0) FROM rounds");
  s.step();
  return s.u64(0);
}

Status Registry::updateRound(const RoundRecord& r) {
  return transaction([&]() -> Status {
    Stmt s(db_,
           "UPDATE rounds SET state = ?, closed_at = ?, selected = ?, result_version = ?, "
           "strategy = ?, noise_multiplier = ?, outcome = ? WHERE round = ?");
    s.bind(1, roundStateName(r.state)).bind(2, r.closedAt).bind(3, r.selected);
    s.bind(4, r.resultVersion).bind(5, r.strategy).bind(6, r.noiseMultiplier).bind(7, r.outcome);
    s.bind(8, r.round);
    EDGEFL_TRY(s.run());
    if (sqlite3_changes(db_) == 0)
      return makeError(Code::NotFound, "no round " + std::to_string(r.round));
    for (const auto& [phase, ms] : r.phaseMillis) {
      Stmt p(db_, "INSERT OR REPLACE INTO round_phases (round, phase, millis) VALUES (?,?,?)");
      p.bind(1, r.round).bind(2, phase).bind(3, ms);
      EDGEFL_TRY(p.run());
    }
    if (r.state != RoundState::Open) {
      return logEvent(
          "round", std::to_string(r.round),
          std::string(roundStateName(r.state)) + (r.outcome.empty() ? "" : ": " + r.outcome));
    }
    return {};
  });
}

Status Registry::recordUpdate(const UpdateRecord& u) {
  return transaction([&]() -> Status {
    Stmt s(db_,
           "INSERT INTO updates (round, device_id, verdict, reason, detail, sample_count, norm, "
           "digest, received_at, delta, staleness) VALUES (?,?,?,?,?,?,?,?,?,?,?)");
    s.bind(1, u.round).bind(2, u.deviceId).bind(3, u.accepted ? "accepted" : "rejected");
    s.bind(4, u.reason).bind(5, u.detail).bind(6, u.sampleCount).bind(7, u.norm);
    s.bindBlob(8, u.digest.data(), u.digest.size());
    s.bind(9, u.receivedAt != 0 ? u.receivedAt : nowSeconds());
    if (u.accepted && !u.delta.empty()) {
      // Bound in place (up to megabytes): `u` outlives the statement.
      s.bindBlobStatic(10, u.delta.data(), u.delta.size() * sizeof(float));
    }
    s.bind(11, u.staleness);
    // The unique index of accepted updates refuses a second accepted record
    // for (round, device); the statement alone is undone, the caller's
    // transaction goes on.
    Status inserted = s.run();
    if (inserted.code() == Code::AlreadyExists && u.accepted) {
      return makeError(Code::AlreadyExists, "an accepted update for round " +
                                                std::to_string(u.round) + " from " + u.deviceId +
                                                " is already recorded");
    }
    EDGEFL_TRY(inserted);
    Stmt v(db_,
           "INSERT INTO round_verdicts (round, reason, count) VALUES (?, ?, 1) "
           "ON CONFLICT(round, reason) DO UPDATE SET count = count + 1");
    v.bind(1, u.round).bind(2, u.accepted ? std::string("accepted") : u.reason);
    return v.run();
  });
}

namespace {
constexpr const char* kUpdateColumns =
    "round, device_id, verdict, reason, detail, sample_count, norm, digest, received_at, staleness";

UpdateRecord readUpdate(const Stmt& s, bool withDelta) {
  UpdateRecord u;
  u.round = s.u64(0);
  u.deviceId = s.text(1);
  u.accepted = s.text(2) == "accepted";
  u.reason = s.text(3);
  u.detail = s.text(4);
  u.sampleCount = static_cast<std::uint32_t>(s.u64(5));
  u.norm = s.f64(6);
  u.digest = toArray<kDigestBytes>(s.blob(7));
  u.receivedAt = s.i64(8);
  u.staleness = static_cast<std::uint32_t>(s.u64(9));
  if (withDelta) u.delta = fromBlob<float>(s.blob(10));
  return u;
}
}  // namespace

std::optional<UpdateRecord> Registry::update(std::uint64_t round,
                                             const std::string& deviceId) const {
  // The accepted update if there is one, else the latest rejection.
  Stmt s(db_, (std::string("SELECT ") + kUpdateColumns +
               ", delta FROM updates WHERE round = ? AND device_id = ? "
               "ORDER BY verdict = 'accepted' DESC, id DESC LIMIT 1")
                  .c_str());
  s.bind(1, round).bind(2, deviceId);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return readUpdate(s, true);
}

std::optional<Digest> Registry::acceptedDigest(std::uint64_t round,
                                               const std::string& deviceId) const {
  Stmt s(db_,
         "SELECT digest FROM updates INDEXED BY updates_accepted "
         "WHERE round = ? AND device_id = ? AND verdict = 'accepted'");
  s.bind(1, round).bind(2, deviceId);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return toArray<kDigestBytes>(s.blob(0));
}

std::vector<UpdateRecord> Registry::updates(std::optional<std::uint64_t> round,
                                            bool withDeltas) const {
  std::string sql = std::string("SELECT ") + kUpdateColumns + ", delta FROM updates";
  if (round) sql += " WHERE round = ?";
  sql += " ORDER BY id";
  Stmt s(db_, sql.c_str());
  if (round) s.bind(1, *round);
  std::vector<UpdateRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(readUpdate(s, withDeltas));
  return out;
}

std::uint64_t Registry::acceptedCount(std::uint64_t round) const {
  // recordUpdate counts verdicts in round_verdicts in the same transaction
  // as the row: one key lookup, where counting the accepted rows reads one
  // index entry per update (ingest asks for every update).
  Stmt s(db_, "SELECT count FROM round_verdicts WHERE round = ? AND reason = 'accepted'");
  s.bind(1, round);
  if (s.step() != SQLITE_ROW) return 0;
  return s.u64(0);
}

Status Registry::upsertDevice(const DeviceRecord& d) {
  return transaction([&]() -> Status {
    Stmt s(db_,
           "INSERT INTO devices (device_id, public_key, enrolled_at, revoked_at) VALUES (?,?,?,0) "
           "ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key, "
           "enrolled_at = excluded.enrolled_at, revoked_at = 0");
    s.bind(1, d.id).bindBlob(2, d.key.data(), d.key.size());
    s.bind(3, d.enrolledAt != 0 ? d.enrolledAt : nowSeconds());
    return s.run();
  });
}

Status Registry::revokeDevice(const std::string& id, std::int64_t at) {
  return transaction([&]() -> Status {
    Stmt s(db_, "UPDATE devices SET revoked_at = ? WHERE device_id = ?");
    s.bind(1, at).bind(2, id);
    EDGEFL_TRY(s.run());
    if (sqlite3_changes(db_) == 0) return makeError(Code::NotFound, "no device " + id);
    return logEvent("device", id, "revoked");
  });
}

Status Registry::touchDevice(const std::string& id, std::int64_t at, std::uint64_t activeVersion,
                             const std::string& telemetryJson) {
  Stmt s(db_,
         "UPDATE devices SET last_seen = ?, active_version = ?, "
         "last_telemetry = CASE WHEN ? = '' THEN last_telemetry ELSE ? END WHERE device_id = ?");
  s.bind(1, at).bind(2, activeVersion).bind(3, telemetryJson).bind(4, telemetryJson).bind(5, id);
  return s.run();
}

namespace {
DeviceRecord readDevice(const Stmt& s) {
  DeviceRecord d;
  d.id = s.text(0);
  d.key = toArray<kPublicKeyBytes>(s.blob(1));
  d.enrolledAt = s.i64(2);
  d.revokedAt = s.i64(3);
  d.lastSeen = s.i64(4);
  d.activeVersion = s.u64(5);
  d.lastTelemetryJson = s.text(6);
  return d;
}
constexpr const char* kDeviceSelect =
    "SELECT device_id, public_key, enrolled_at, revoked_at, last_seen, active_version, "
    "last_telemetry FROM devices";
}  // namespace

std::optional<DeviceRecord> Registry::device(const std::string& id) const {
  Stmt s(db_, (std::string(kDeviceSelect) + " WHERE device_id = ?").c_str());
  s.bind(1, id);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return readDevice(s);
}

std::vector<DeviceRecord> Registry::devices() const {
  Stmt s(db_, (std::string(kDeviceSelect) + " ORDER BY device_id").c_str());
  std::vector<DeviceRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(readDevice(s));
  return out;
}

std::uint64_t Registry::nextDeploymentSequence() const {
  Stmt s(db_, "SELECT COALESCE(MAX(sequence), 0) + 1 FROM deployments");
  s.step();
  return s.u64(0);
}

Status Registry::addDeployment(const DeploymentRecord& d) {
  return transaction([&]() -> Status {
    if (d.sequence < nextDeploymentSequence()) {
      return makeError(Code::InvalidArgument, "deployment sequence " + std::to_string(d.sequence) +
                                                  " is not newer than the last one");
    }
    // A new deployment on a channel supersedes the active one there.
    Stmt sup(db_,
             "UPDATE deployments SET state = 'superseded' WHERE channel = ? AND state = 'active'");
    sup.bind(1, d.channel);
    EDGEFL_TRY(sup.run());
    Stmt s(db_,
           "INSERT INTO deployments (sequence, version, channel, percent, state, created_at, "
           "reason, signed) VALUES (?,?,?,?,?,?,?,?)");
    s.bind(1, d.sequence).bind(2, d.version).bind(3, d.channel).bind(4, d.percent);
    s.bind(5, deploymentStateName(d.state)).bind(6, d.createdAt != 0 ? d.createdAt : nowSeconds());
    s.bind(7, d.reason).bindBlob(8, d.signedBytes.data(), d.signedBytes.size());
    EDGEFL_TRY(s.run());
    return logEvent("deployment", std::to_string(d.sequence),
                    "v" + std::to_string(d.version) + " to " + d.channel + " at " +
                        std::to_string(d.percent) + "%" +
                        (d.reason.empty() ? "" : ": " + d.reason));
  });
}

Status Registry::setDeploymentState(std::uint64_t sequence, DeploymentState state) {
  return transaction([&]() -> Status {
    Stmt s(db_, "UPDATE deployments SET state = ? WHERE sequence = ?");
    s.bind(1, deploymentStateName(state)).bind(2, sequence);
    EDGEFL_TRY(s.run());
    if (sqlite3_changes(db_) == 0) {
      return makeError(Code::NotFound, "no deployment " + std::to_string(sequence));
    }
    return logEvent("deployment", std::to_string(sequence),
                    std::string(deploymentStateName(state)));
  });
}

namespace {
constexpr const char* kDeploymentSelect =
    "SELECT sequence, version, channel, percent, state, created_at, reason, signed FROM "
    "deployments";
DeploymentRecord readDeployment(const Stmt& s) {
  DeploymentRecord d;
  d.sequence = s.u64(0);
  d.version = s.u64(1);
  d.channel = s.text(2);
  d.percent = s.f64(3);
  d.state = deploymentStateFromName(s.text(4));
  d.createdAt = s.i64(5);
  d.reason = s.text(6);
  d.signedBytes = s.blob(7);
  return d;
}
}  // namespace

std::vector<DeploymentRecord> Registry::deployments() const {
  Stmt s(db_, (std::string(kDeploymentSelect) + " ORDER BY sequence").c_str());
  std::vector<DeploymentRecord> out;
  while (s.step() == SQLITE_ROW) out.push_back(readDeployment(s));
  return out;
}

std::optional<DeploymentRecord> Registry::activeDeployment(const std::string& channel) const {
  Stmt s(db_, (std::string(kDeploymentSelect) +
               " WHERE channel = ? AND state IN ('active','paused') ORDER BY sequence DESC LIMIT 1")
                  .c_str());
  s.bind(1, channel);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return readDeployment(s);
}

Status Registry::putState(const std::string& key, const std::vector<std::uint8_t>& value) {
  Stmt s(db_, "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)");
  s.bind(1, key).bindBlob(2, value.data(), value.size());
  return s.run();
}

std::optional<std::vector<std::uint8_t>> Registry::state(const std::string& key) const {
  Stmt s(db_, "SELECT value FROM state WHERE key = ?");
  s.bind(1, key);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return s.blob(0);
}

Result<std::int64_t> Registry::submitCommand(const std::string& kind, const std::string& args) {
  Stmt s(db_, "INSERT INTO commands (kind, args, created_at) VALUES (?,?,?)");
  s.bind(1, kind).bind(2, args).bind(3, nowSeconds());
  EDGEFL_TRY(s.run());
  return static_cast<std::int64_t>(sqlite3_last_insert_rowid(db_));
}

std::vector<CommandRecord> Registry::pendingCommands() const {
  Stmt s(db_,
         "SELECT id, kind, args, created_at, done_at, result FROM commands "
         "WHERE done_at = 0 ORDER BY id");
  std::vector<CommandRecord> out;
  while (s.step() == SQLITE_ROW) {
    out.push_back({s.i64(0), s.text(1), s.text(2), s.i64(3), s.i64(4), s.text(5)});
  }
  return out;
}

std::optional<CommandRecord> Registry::command(std::int64_t id) const {
  Stmt s(db_, "SELECT id, kind, args, created_at, done_at, result FROM commands WHERE id = ?");
  s.bind(1, id);
  if (s.step() != SQLITE_ROW) return std::nullopt;
  return CommandRecord{s.i64(0), s.text(1), s.text(2), s.i64(3), s.i64(4), s.text(5)};
}

Status Registry::completeCommand(std::int64_t id, const std::string& result) {
  Stmt s(db_, "UPDATE commands SET done_at = ?, result = ? WHERE id = ?");
  s.bind(1, nowSeconds()).bind(2, result).bind(3, id);
  return s.run();
}

Status Registry::logEvent(const std::string& kind, const std::string& subject,
                          const std::string& detail) {
  Stmt s(db_, "INSERT INTO events (at, kind, subject, detail) VALUES (?,?,?,?)");
  s.bind(1, nowSeconds()).bind(2, kind).bind(3, subject).bind(4, detail);
  return s.run();
}

std::vector<EventRecord> Registry::events(std::size_t limit) const {
  Stmt s(db_, "SELECT id, at, kind, subject, detail FROM events ORDER BY id DESC LIMIT ?");
  s.bind(1, static_cast<std::int64_t>(limit));
  std::vector<EventRecord> out;
  while (s.step() == SQLITE_ROW)
    out.push_back({s.i64(0), s.i64(1), s.text(2), s.text(3), s.text(4)});
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace edgefl::server
