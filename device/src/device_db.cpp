#include "edgefl/device/device_db.hpp"

#include <sqlite3.h>

#include <system_error>

namespace edgefl::device {
namespace {

// Version 1: the first schema. Version 2: a pending update's envelope may
// live in a file of <storageDir>/pending (`file`, `envelope_bytes`), with an
// empty `envelope`; rows of version 1 keep theirs inline. A later version
// adds a step to migrate().
constexpr int kSchemaVersion = 2;

constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE samples(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  feature_count INTEGER NOT NULL,
  features BLOB NOT NULL,
  label INTEGER NOT NULL,
  target REAL NOT NULL
);
CREATE TABLE counters(
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
-- Every stored deployment file, with what was verified about it.
CREATE TABLE deployments(
  file TEXT PRIMARY KEY,
  channel INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  mode INTEGER NOT NULL,
  model_version INTEGER NOT NULL,
  digest BLOB NOT NULL,
  accepted_at INTEGER NOT NULL,
  failed INTEGER NOT NULL
);
-- Per channel: the last sequence seen (rollback protection) and the latest
-- deployments of each mode.
CREATE TABLE channels(
  channel INTEGER PRIMARY KEY,
  last_sequence INTEGER NOT NULL,
  present INTEGER NOT NULL,
  percent REAL NOT NULL,
  salt INTEGER NOT NULL,
  activate_file TEXT,
  shadow_file TEXT
);
-- active | previous | shadow -> deployment file
CREATE TABLE slots(
  slot TEXT PRIMARY KEY,
  file TEXT NOT NULL
);
CREATE TABLE rounds(
  round INTEGER PRIMARY KEY,
  sent_at INTEGER NOT NULL,
  verdict TEXT,
  reason TEXT
);
CREATE TABLE pending(
  round INTEGER PRIMARY KEY,
  envelope BLOB NOT NULL,
  payload_digest BLOB NOT NULL,
  deadline INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE residuals(
  arch TEXT PRIMARY KEY,
  parameter_count INTEGER NOT NULL,
  base_digest BLOB NOT NULL,
  data BLOB NOT NULL
);
)sql";

}  // namespace

Statement::Statement(DeviceDb& db, const char* sql) : db_(db) {
  stmt_ = db_.prepare(sql, status_);
}

Statement::~Statement() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (status_.ok() && sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) {
    status_ = db_.lastError("bind");
  }
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (status_.ok() && sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) {
    status_ = db_.lastError("bind");
  }
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  if (status_.ok() && sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()),
                                        SQLITE_TRANSIENT) != SQLITE_OK) {
    status_ = db_.lastError("bind");
  }
  return *this;
}

Statement& Statement::bind(int index, ByteView blob) {
  // A zero-length blob must still be a blob, not NULL: pass a valid pointer.
  static const std::uint8_t kEmpty = 0;
  const void* data = blob.empty() ? &kEmpty : blob.data();
  if (status_.ok() &&
      sqlite3_bind_blob64(stmt_, index, data, blob.size(), SQLITE_TRANSIENT) != SQLITE_OK) {
    status_ = db_.lastError("bind");
  }
  return *this;
}

Statement& Statement::bindNull(int index) {
  if (status_.ok() && sqlite3_bind_null(stmt_, index) != SQLITE_OK) {
    status_ = db_.lastError("bind");
  }
  return *this;
}

Result<bool> Statement::step() {
  if (!status_.ok()) return status_.error();
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  status_ = db_.lastError("step");
  return status_.error();
}

Status Statement::run() {
  for (;;) {
    auto row = step();
    if (!row.ok()) return row.error();
    if (!*row) return {};
  }
}

std::int64_t Statement::integer(int column) const {
  return sqlite3_column_int64(stmt_, column);
}
double Statement::real(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string Statement::text(int column) const {
  const auto* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
}

ByteView Statement::blob(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  if (p == nullptr || n <= 0) return {};
  return ByteView(static_cast<const std::uint8_t*>(p), static_cast<std::size_t>(n));
}

bool Statement::isNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

Result<std::unique_ptr<DeviceDb>> DeviceDb::open(const std::filesystem::path& file, bool durable) {
  std::unique_ptr<DeviceDb> db(new DeviceDb());
  db->path_ = file;
  db->durable_ = durable;
  int rc =
      sqlite3_open_v2(file.c_str(), &db->db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Error error = db->db_ != nullptr ? db->lastError("open " + file.string())
                                     : makeError(Code::IoError, "cannot open " + file.string());
    return error;
  }
  sqlite3_extended_result_codes(db->db_, 1);
  // A second process (a crashed predecessor being reaped) may hold the lock
  // briefly; wait rather than fail.
  sqlite3_busy_timeout(db->db_, 5000);
  // Small page cache: a thousand simulated devices each hold a connection.
  // The default 4 KB pages: every sample and state change writes whole
  // pages into the WAL, and larger pages multiply that for the small writes
  // that dominate (a 2 MB store filled with no sample stored at 64 KB).
  EDGEFL_TRY(
      db->exec("PRAGMA journal_mode=WAL; PRAGMA cache_size=-256; "
               "PRAGMA foreign_keys=OFF; PRAGMA synchronous=FULL;"));
  EDGEFL_TRY(db->migrate());
  return db;
}

DeviceDb::~DeviceDb() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  if (db_ != nullptr) sqlite3_close(db_);
}

Error DeviceDb::lastError(std::string_view what) const {
  return makeError(Code::IoError,
                   std::string(what) + ": " + sqlite3_errmsg(db_) + " (" + path_.string() + ")");
}

sqlite3_stmt* DeviceDb::prepare(const char* sql, Status& status) {
  auto it = statements_.find(sql);
  if (it != statements_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    status = lastError(std::string("prepare ") + sql);
    return nullptr;
  }
  statements_.emplace(sql, stmt);
  return stmt;
}

Status DeviceDb::exec(const char* sql) {
  auto held = lock();
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return makeError(Code::IoError, text + " (" + path_.string() + ")");
  }
  return {};
}

Status DeviceDb::setSynchronous(Durability durability) {
  if (!durable_) durability = Durability::Normal;
  if (durability == synchronous_) return {};
  EDGEFL_TRY(exec(durability == Durability::Full ? "PRAGMA synchronous=FULL"
                                                 : "PRAGMA synchronous=NORMAL"));
  synchronous_ = durability;
  return {};
}

Status DeviceDb::transaction(Durability durability, const std::function<Status()>& body) {
  auto held = lock();
  EDGEFL_TRY(setSynchronous(durability));
  EDGEFL_TRY(exec("BEGIN IMMEDIATE"));
  Status result = body();
  if (result.ok()) {
    result = exec("COMMIT");
    if (result.ok()) return {};
  }
  (void)exec("ROLLBACK");
  return result;
}

Status DeviceDb::migrate() {
  int version = 0;
  {
    Statement st(*this, "PRAGMA user_version");
    auto row = st.step();
    if (!row.ok()) return row.error();
    if (*row) version = static_cast<int>(st.integer(0));
  }
  if (version > kSchemaVersion) {
    return makeError(Code::Unsupported,
                     path_.string() + " has schema version " + std::to_string(version) +
                         "; this runtime knows up to " + std::to_string(kSchemaVersion));
  }
  if (version == 0) {
    EDGEFL_TRY(transaction(Durability::Full, [&]() -> Status {
      EDGEFL_TRY(exec(kSchemaV1));
      return exec("PRAGMA user_version=1");
    }));
    version = 1;
  }
  if (version == 1) {
    EDGEFL_TRY(transaction(Durability::Full, [&]() -> Status {
      EDGEFL_TRY(
          exec("ALTER TABLE pending ADD COLUMN file TEXT; "
               "ALTER TABLE pending ADD COLUMN envelope_bytes INTEGER"));
      return exec("PRAGMA user_version=2");
    }));
  }
  return {};
}

std::uint64_t DeviceDb::fileBytes() const {
  auto held = lock();
  // The files change size only with a write: measured again only after
  // one (status() is read far more often than the database is written).
  const sqlite3_int64 changes = sqlite3_total_changes64(db_);
  if (fileBytesValid_ && changes == fileBytesChanges_) return fileBytes_;
  std::error_code ec;
  std::uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    auto size = std::filesystem::file_size(path_.string() + suffix, ec);
    if (!ec) total += size;
  }
  fileBytes_ = total;
  fileBytesChanges_ = changes;
  fileBytesValid_ = true;
  return total;
}

}  // namespace edgefl::device
