#pragma once
// The device's SQLite database (<storageDir>/device.db): durable state and
// the labelled sample store. WAL journal; state changes commit with
// synchronous=FULL (a commit survives power loss), sample inserts with
// NORMAL (a power loss may drop the last few samples, never corrupt the
// file). One connection, serialized by a mutex: the application thread,
// the network loop and the training worker all use it.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace edgefl::device {

enum class Durability : std::uint8_t {
  Full,    // fsync at commit: device state
  Normal,  // WAL without fsync at commit: samples
};

class DeviceDb;

// A prepared statement from the connection's cache, reset when it goes out
// of scope. `sql` must be a string literal (the cache keys by its address). Errors are kept and
// returned by step()/run(), so a chain of binds needs no checks in between. Use only while holding
// DeviceDb::lock().
class Statement {
 public:
  Statement(DeviceDb& db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, ByteView blob);
  Statement& bindNull(int index);

  // true when a row is available, false when done.
  Result<bool> step();
  // Steps until done (statements without rows).
  Status run();

  std::int64_t integer(int column) const;
  double real(int column) const;
  std::string text(int column) const;
  ByteView blob(int column) const;
  bool isNull(int column) const;

 private:
  DeviceDb& db_;
  sqlite3_stmt* stmt_ = nullptr;
  Status status_;
};

class DeviceDb {
 public:
  // Opens (creating) the database and brings its schema to the current
  // version. `durable` false makes every commit Normal (simulations).
  // IoError with SQLite's message on failure.
  static Result<std::unique_ptr<DeviceDb>> open(const std::filesystem::path& file, bool durable);
  ~DeviceDb();
  DeviceDb(const DeviceDb&) = delete;
  DeviceDb& operator=(const DeviceDb&) = delete;

  // Serializes users of the connection; recursive so a transaction body
  // can call helpers that lock too.
  std::unique_lock<std::recursive_mutex> lock() const {
    return std::unique_lock<std::recursive_mutex>(mu_);
  }

  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT under the lock; rolls
  // back and returns the error when body or the commit fails.
  Status transaction(Durability durability, const std::function<Status()>& body);
  // Executes SQL without results (schema, pragmas).
  Status exec(const char* sql);

  std::uint64_t fileBytes() const;
  const std::filesystem::path& path() const { return path_; }

  Error lastError(std::string_view what) const;

 private:
  friend class Statement;
  DeviceDb() = default;
  sqlite3_stmt* prepare(const char* sql, Status& status);
  Status migrate();
  Status setSynchronous(Durability durability);

  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  bool durable_ = true;
  Durability synchronous_ = Durability::Full;
  // Keyed by the SQL's address: callers pass string literals.
  std::unordered_map<const char*, sqlite3_stmt*> statements_;
  mutable std::recursive_mutex mu_;
  // fileBytes() as of sqlite3_total_changes64() == fileBytesChanges_.
  mutable bool fileBytesValid_ = false;
  mutable std::int64_t fileBytesChanges_ = 0;
  mutable std::uint64_t fileBytes_ = 0;
};

}  // namespace edgefl::device
