#pragma once
// The shared model cache behind edgefl::ModelCache: immutable decoded
// models keyed by the signing digest of the verified deployment that
// carried their bytes (the BLAKE2b-256 the signature check has already
// computed over the payload that holds them; hashing the model's bytes
// again for the key cost a device as much as that check). Devices hold
// shared_ptr<const CachedModel>; the cache holds weak pointers, so a model
// lives exactly as long as some device runs it.

#include <memory>
#include <mutex>
#include <unordered_map>

#include "edgefl/device/device.hpp"
#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/model.hpp"

namespace edgefl::device {

struct CachedModel {
  Model model;
  Digest key{};              // the deployment's signing digest
  Digest parameterDigest{};  // parameterDigest(model), computed once
};

struct DigestHash {
  std::size_t operator()(const Digest& d) const noexcept {
    std::size_t h = 0;
    for (std::size_t i = 0; i < sizeof(std::size_t); ++i) h = h << 8 | d[i];
    return h;
  }
};

}  // namespace edgefl::device

namespace edgefl {

class EDGEFL_DEVICE_HIDDEN ModelCache::Impl {
 public:
  // The model decoded from `modelBytes` (modelFromBytes with these limits),
  // shared with every other user of the same `key`, which must determine
  // the bytes: a digest of a verified payload that contains them. Errors:
  // modelFromBytes'.
  Result<std::shared_ptr<const device::CachedModel>> get(const Digest& key, ByteView modelBytes,
                                                         const DecodeLimits& decode,
                                                         const ModelLimits& limits);
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<Digest, std::weak_ptr<const device::CachedModel>, device::DigestHash> entries_;
};

}  // namespace edgefl
