#pragma once
// Labelled samples kept on the device for local training: bounded (the
// oldest go first), behind one interface with two implementations: SQLite
// (durable, survives restarts) and an in-memory ring (small targets,
// simulations). Both are thread-safe.

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "edgefl/device/device_db.hpp"
#include "edgefl/shared/dataset.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl::device {

class SampleStore {
 public:
  virtual ~SampleStore() = default;

  // Appends a sample (already validated by the caller) and evicts the
  // oldest beyond the capacity. `label` for classification, `target` for
  // regression (the other is stored as 0). IoError for the SQLite store.
  virtual Status add(std::span<const float> features, std::int32_t label, float target) = 0;
  // Every stored sample with exactly `featureCount` features, oldest first
  // (samples kept for an earlier model with another input size are
  // skipped). labels and targets are both filled; classCount is left 0.
  virtual Result<Dataset> snapshot(std::uint32_t featureCount) const = 0;
  // Stored samples with `featureCount` features.
  virtual std::uint64_t count(std::uint32_t featureCount) const = 0;
  virtual std::uint64_t size() const = 0;
  virtual std::uint64_t bytesUsed() const = 0;
  virtual std::uint64_t evicted() const = 0;
  virtual std::uint32_t capacity() const = 0;
};

// A ring of `capacity` slots; each slot's buffer is reused, so a full store
// adds without allocating.
class MemorySampleStore final : public SampleStore {
 public:
  explicit MemorySampleStore(std::uint32_t capacity);

  Status add(std::span<const float> features, std::int32_t label, float target) override;
  Result<Dataset> snapshot(std::uint32_t featureCount) const override;
  std::uint64_t count(std::uint32_t featureCount) const override;
  std::uint64_t size() const override;
  std::uint64_t bytesUsed() const override;
  std::uint64_t evicted() const override;
  std::uint32_t capacity() const override { return capacity_; }

 private:
  struct Slot {
    std::vector<float> features;
    std::int32_t label = 0;
    float target = 0;
  };
  const std::uint32_t capacity_;
  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  std::size_t next_ = 0;  // slot written next (the oldest once full)
  std::uint64_t evicted_ = 0;
};

// Rows of the `samples` table of the device database. Inserts commit with
// Durability::Normal: a power cut may lose the last samples, not the file.
class SqliteSampleStore final : public SampleStore {
 public:
  // Reads the current count; evicts down to `capacity` if it shrank.
  static Result<std::unique_ptr<SqliteSampleStore>> open(DeviceDb& db, std::uint32_t capacity);

  Status add(std::span<const float> features, std::int32_t label, float target) override;
  Result<Dataset> snapshot(std::uint32_t featureCount) const override;
  std::uint64_t count(std::uint32_t featureCount) const override;
  std::uint64_t size() const override;
  std::uint64_t bytesUsed() const override;
  std::uint64_t evicted() const override;
  std::uint32_t capacity() const override { return capacity_; }

 private:
  SqliteSampleStore(DeviceDb& db, std::uint32_t capacity) : db_(db), capacity_(capacity) {}
  Status evictBeyondCapacity();

  DeviceDb& db_;
  const std::uint32_t capacity_;
  std::uint64_t size_ = 0;  // guarded by the db lock
  std::uint64_t bytes_ = 0;
  std::uint64_t evicted_ = 0;
};

}  // namespace edgefl::device
