#include "edgefl/device/sample_store.hpp"

#include <cstring>

namespace edgefl::device {
namespace {

void appendSample(Dataset& out, std::span<const float> features, std::int32_t label, float target) {
  out.features.insert(out.features.end(), features.begin(), features.end());
  out.labels.push_back(label);
  out.targets.push_back(target);
}

}  // namespace

MemorySampleStore::MemorySampleStore(std::uint32_t capacity) : capacity_(capacity) {
  slots_.reserve(capacity);
}

Status MemorySampleStore::add(std::span<const float> features, std::int32_t label, float target) {
  if (capacity_ == 0) return makeError(Code::InvalidArgument, "sample store capacity is 0");
  std::lock_guard lock(mu_);
  if (slots_.size() < capacity_) {
    slots_.push_back(Slot{std::vector<float>(features.begin(), features.end()), label, target});
    return {};
  }
  Slot& slot = slots_[next_];
  slot.features.assign(features.begin(), features.end());
  slot.label = label;
  slot.target = target;
  next_ = (next_ + 1) % capacity_;
  ++evicted_;
  return {};
}

Result<Dataset> MemorySampleStore::snapshot(std::uint32_t featureCount) const {
  std::lock_guard lock(mu_);
  Dataset out;
  out.featureCount = featureCount;
  // Oldest first: once full, the ring starts at next_.
  const std::size_t n = slots_.size();
  const std::size_t start = n < capacity_ ? 0 : next_;
  for (std::size_t i = 0; i < n; ++i) {
    const Slot& slot = slots_[(start + i) % n];
    if (slot.features.size() != featureCount) continue;
    appendSample(out, slot.features, slot.label, slot.target);
  }
  return out;
}

std::uint64_t MemorySampleStore::count(std::uint32_t featureCount) const {
  std::lock_guard lock(mu_);
  std::uint64_t n = 0;
  for (const Slot& slot : slots_) n += slot.features.size() == featureCount ? 1 : 0;
  return n;
}

std::uint64_t MemorySampleStore::size() const {
  std::lock_guard lock(mu_);
  return slots_.size();
}

std::uint64_t MemorySampleStore::bytesUsed() const {
  std::lock_guard lock(mu_);
  std::uint64_t bytes = 0;
  for (const Slot& slot : slots_) bytes += slot.features.capacity() * sizeof(float) + sizeof(Slot);
  return bytes;
}

std::uint64_t MemorySampleStore::evicted() const {
  std::lock_guard lock(mu_);
  return evicted_;
}

Result<std::unique_ptr<SqliteSampleStore>> SqliteSampleStore::open(DeviceDb& db,
                                                                   std::uint32_t capacity) {
  std::unique_ptr<SqliteSampleStore> store(new SqliteSampleStore(db, capacity));
  auto held = db.lock();
  Statement st(db, "SELECT count(*), coalesce(sum(length(features)), 0) FROM samples");
  auto row = st.step();
  if (!row.ok()) return row.error();
  store->size_ = static_cast<std::uint64_t>(st.integer(0));
  store->bytes_ = static_cast<std::uint64_t>(st.integer(1));
  EDGEFL_TRY(db.transaction(Durability::Normal, [&] { return store->evictBeyondCapacity(); }));
  return store;
}

Status SqliteSampleStore::evictBeyondCapacity() {
  if (size_ <= capacity_) return {};
  const std::uint64_t excess = size_ - capacity_;
  // Ids only grow (AUTOINCREMENT), so the smallest ids are the oldest rows.
  {
    Statement sum(db_,
                  "SELECT coalesce(sum(length(features)), 0) FROM "
                  "(SELECT features FROM samples ORDER BY id LIMIT ?1)");
    sum.bind(1, static_cast<std::int64_t>(excess));
    auto row = sum.step();
    if (!row.ok()) return row.error();
    const auto freed = static_cast<std::uint64_t>(sum.integer(0));
    bytes_ = bytes_ > freed ? bytes_ - freed : 0;
  }
  Statement del(db_,
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?1)");
  del.bind(1, static_cast<std::int64_t>(excess));
  EDGEFL_TRY(del.run());
  size_ -= excess;
  evicted_ += excess;
  return {};
}

Status SqliteSampleStore::add(std::span<const float> features, std::int32_t label, float target) {
  if (capacity_ == 0) return makeError(Code::InvalidArgument, "sample store capacity is 0");
  auto held = db_.lock();
  const ByteView blob(reinterpret_cast<const std::uint8_t*>(features.data()),
                      features.size() * sizeof(float));
  const std::uint64_t sizeBefore = size_, bytesBefore = bytes_, evictedBefore = evicted_;
  Status st = db_.transaction(Durability::Normal, [&]() -> Status {
    Statement insert(db_,
                     "INSERT INTO samples(feature_count, features, label, target) "
                     "VALUES(?1, ?2, ?3, ?4)");
    insert.bind(1, static_cast<std::int64_t>(features.size()))
        .bind(2, blob)
        .bind(3, static_cast<std::int64_t>(label))
        .bind(4, static_cast<double>(target));
    EDGEFL_TRY(insert.run());
    ++size_;
    bytes_ += blob.size();
    return evictBeyondCapacity();
  });
  if (!st.ok()) {
    // The transaction rolled back: so do the counters.
    size_ = sizeBefore;
    bytes_ = bytesBefore;
    evicted_ = evictedBefore;
  }
  return st;
}

Result<Dataset> SqliteSampleStore::snapshot(std::uint32_t featureCount) const {
  auto held = db_.lock();
  Dataset out;
  out.featureCount = featureCount;
  Statement st(db_,
               "SELECT features, label, target FROM samples WHERE feature_count = ?1 ORDER BY id");
  st.bind(1, static_cast<std::int64_t>(featureCount));
  for (;;) {
    auto row = st.step();
    if (!row.ok()) return row.error();
    if (!*row) break;
    ByteView blob = st.blob(0);
    if (blob.size() != static_cast<std::size_t>(featureCount) * sizeof(float)) {
      return makeError(Code::IoError, "a stored sample has " + std::to_string(blob.size()) +
                                          " bytes; expected " +
                                          std::to_string(featureCount * sizeof(float)));
    }
    const std::size_t at = out.features.size();
    out.features.resize(at + featureCount);
    std::memcpy(out.features.data() + at, blob.data(), blob.size());
    out.labels.push_back(static_cast<std::int32_t>(st.integer(1)));
    out.targets.push_back(static_cast<float>(st.real(2)));
  }
  return out;
}

std::uint64_t SqliteSampleStore::count(std::uint32_t featureCount) const {
  auto held = db_.lock();
  Statement st(db_, "SELECT count(*) FROM samples WHERE feature_count = ?1");
  st.bind(1, static_cast<std::int64_t>(featureCount));
  auto row = st.step();
  return row.ok() && *row ? static_cast<std::uint64_t>(st.integer(0)) : 0;
}

std::uint64_t SqliteSampleStore::size() const {
  auto held = db_.lock();
  return size_;
}

std::uint64_t SqliteSampleStore::bytesUsed() const {
  auto held = db_.lock();
  return bytes_;
}

std::uint64_t SqliteSampleStore::evicted() const {
  auto held = db_.lock();
  return evicted_;
}

}  // namespace edgefl::device
