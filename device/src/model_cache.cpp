#include "edgefl/device/model_cache.hpp"

namespace edgefl {

ModelCache::ModelCache() : impl_(std::make_unique<Impl>()) {}
ModelCache::~ModelCache() = default;
std::size_t ModelCache::size() const {
  return impl_->size();
}

Result<std::shared_ptr<const device::CachedModel>> ModelCache::Impl::get(
    const Digest& key, ByteView modelBytes, const DecodeLimits& decode, const ModelLimits& limits) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (auto model = it->second.lock()) return model;
    }
  }
  // Decode outside the lock: devices decoding different models do not wait
  // for each other. Two decoding the same bytes at once both succeed; the
  // first one stored wins.
  auto model = modelFromBytes(modelBytes, decode, limits);
  if (!model.ok()) return model.error();
  auto entry = std::make_shared<device::CachedModel>();
  entry->model = std::move(model.value());
  entry->key = key;
  entry->parameterDigest = parameterDigest(entry->model);
  std::lock_guard lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = it->second.expired() ? entries_.erase(it) : std::next(it);
  }
  auto [it, inserted] = entries_.try_emplace(key, entry);
  if (!inserted) {
    if (auto existing = it->second.lock()) return existing;
    it->second = entry;
  }
  return std::shared_ptr<const device::CachedModel>(std::move(entry));
}

std::size_t ModelCache::Impl::size() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (const auto& [key, entry] : entries_) n += entry.expired() ? 0 : 1;
  return n;
}

}  // namespace edgefl
