#pragma once
// Decoding untrusted bytes: the one place where bytes from outside become a
// verified message or a specific error. Nothing here throws to the caller;
// Cap'n Proto's exceptions on malformed input are caught and mapped.
//
// A Parsed<T> has been walked once in full, by its schema, under the limits:
// every pointer field was read with its declared type, so a field of the
// wrong shape is caught here. Reading its fields afterwards does not throw
// (readers may revisit each field up to DecodeLimits::traversalFactor times
// before the traversal limit trips).

#include <capnp/dynamic.h>
#include <capnp/serialize.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/shared/signing.hpp"

namespace edgefl {

struct DecodeLimits {
  // Largest message accepted. 16 MiB holds a 4M-parameter float32 model with
  // headroom; our models are 0.1-1 MB. Generated broker configs use the same
  // max_packet_size so the broker drops larger ones first.
  std::size_t maxBytes = 16u << 20;
  // Cap'n Proto traversal limit, as a multiple of the message's own size in
  // words. Validation walks the message once and readers touch each field a
  // few more times; beyond that is pointer amplification.
  std::uint64_t traversalFactor = 8;
  // Deepest path in the schema is Signed > Model > Layer > Conv2D > Tensor
  // (5); 16 leaves room for evolution and stops recursion bombs.
  int nestingLimit = 16;
  // Our builders write one segment; more than a few only inflate the table.
  std::uint32_t maxSegments = 64;
};

namespace detail {
struct MessageHolder {
  kj::Array<capnp::word> copy;  // the message, owned and word-aligned
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  ByteView bytes;
};
Result<std::unique_ptr<MessageHolder>> openMessage(ByteView bytes, const DecodeLimits& limits);
// Reads every field of `root` by its schema, recursively.
void walkBySchema(capnp::DynamicStruct::Reader root);
// walkBySchema of the held message as `schema`, on a reader of its own
// whose traversal budget is the message's size: a well-formed message is
// read once by the walk, so one that needs more has pointers that alias
// the same bytes (amplification) and is refused with TraversalLimit. The
// holder's reader keeps limits.traversalFactor times the size for the
// readers of the result.
Status checkBySchema(const MessageHolder& holder, capnp::StructSchema schema,
                     const DecodeLimits& limits);
// Runs `walk` and maps a Cap'n Proto exception to NotCapnp / TooDeep /
// TraversalLimit.
Status guardedWalk(const std::function<void()>& walk);
}  // namespace detail

// A Cap'n Proto message of type T that passed framing and a full walk.
template <typename T>
class Parsed {
 public:
  typename T::Reader root() const { return root_; }
  // The message's bytes (an owned copy: they live as long as this object,
  // whatever happened to the buffer it was parsed from).
  ByteView bytes() const { return holder_->bytes; }

  static Result<Parsed<T>> parse(ByteView bytes, const DecodeLimits& limits) {
    auto holder = detail::openMessage(bytes, limits);
    if (!holder.ok()) return holder.error();
    Parsed<T> out;
    out.holder_ = std::move(holder.value());
    Status checked = detail::checkBySchema(*out.holder_, capnp::Schema::from<T>(), limits);
    if (!checked.ok()) return checked.error();
    Status rooted =
        detail::guardedWalk([&] { out.root_ = out.holder_->reader->template getRoot<T>(); });
    if (!rooted.ok()) return rooted.error();
    return out;
  }

 private:
  std::unique_ptr<detail::MessageHolder> holder_;
  typename T::Reader root_;
};

template <typename T>
Result<Parsed<T>> parseMessage(ByteView bytes, const DecodeLimits& limits = {}) {
  return Parsed<T>::parse(bytes, limits);
}

template <typename T>
constexpr Kind kindOf();
template <>
constexpr Kind kindOf<wire::Model>() {
  return Kind::MODEL;
}
template <>
constexpr Kind kindOf<wire::Update>() {
  return Kind::UPDATE;
}
template <>
constexpr Kind kindOf<wire::Deployment>() {
  return Kind::DEPLOYMENT;
}
template <>
constexpr Kind kindOf<wire::RoundTask>() {
  return Kind::ROUND_TASK;
}
template <>
constexpr Kind kindOf<wire::Telemetry>() {
  return Kind::TELEMETRY;
}
template <>
constexpr Kind kindOf<wire::Ack>() {
  return Kind::ACK;
}
template <>
constexpr Kind kindOf<wire::KeyDelegation>() {
  return Kind::KEY_DELEGATION;
}

struct KeyIdHash {
  std::size_t operator()(const KeyId& id) const noexcept {
    std::size_t h = 0;
    for (std::uint8_t b : id) h = h << 8 | b;
    return h;
  }
};

// Keys a verifier trusts directly: the fleet root (to check delegations),
// enrolled device keys, and any other key the process was configured with.
// `subject` names what the key speaks for: the device id for device keys.
class Keyring {
 public:
  struct Entry {
    PublicKey key{};
    Role role = Role::UNKNOWN;
    std::string subject;
  };

  void add(const PublicKey& key, Role role, std::string subject = {});
  bool remove(const KeyId& id);
  const Entry* find(const KeyId& id) const;
  std::size_t size() const { return entries_.size(); }

 private:
  std::unordered_map<KeyId, Entry, KeyIdHash> entries_;
};

class DelegationCache;

struct VerifyOptions {
  DecodeLimits limits;
  // When non-empty, a delegation must name this fleet.
  std::string fleet;
  // Unix seconds against which delegation validity is checked; 0 = now.
  std::int64_t now = 0;
  // Delegations verified before (see DelegationCache); null verifies every
  // delegation in full.
  DelegationCache* delegations = nullptr;
};

// Delegations already verified. A device gets every round task and ack
// signed by the same delegated coordinator key, and checking the root's
// signature over that delegation each time doubled the cost of verifying
// them. An entry (keyed by the BLAKE2b digest of the delegation's bytes)
// keeps what the delegation says; it is used only while the keyring still
// holds, as a root key, the key that signed it, and its fleet and validity
// window are checked again on every use, so removing a root key or the
// passing of notAfter takes effect as without the cache. A hit skips
// parsing the delegation again, so one cache serves verifications with the
// same DecodeLimits. Holds the `capacity` delegations verified last (the
// first verified is dropped first); thread-safe.
class DelegationCache {
 public:
  // What a verified delegation says, and the root key that signed it.
  struct Entry {
    KeyId rootKeyId{};
    PublicKey rootKey{};
    PublicKey subjectKey{};
    Role role = Role::UNKNOWN;
    std::string fleet;
    std::int64_t notBefore = 0;
    std::int64_t notAfter = 0;
  };

  explicit DelegationCache(std::size_t capacity = 4) : capacity_(capacity) {}

  std::optional<Entry> find(const Digest& digest) const;
  // Replaces the oldest entry when full.
  void insert(const Digest& digest, Entry entry);
  // Uses that skipped the root's signature check.
  void countHit() { hits_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }

 private:
  std::size_t capacity_;
  mutable std::mutex mu_;
  std::vector<std::pair<Digest, Entry>> entries_;  // oldest first
  std::atomic<std::uint64_t> hits_{0};
};

// Who signed a verified message.
struct Signer {
  KeyId keyId{};
  PublicKey key{};
  Role role = Role::UNKNOWN;
  std::string subject;
  bool delegated = false;  // authorized through a KeyDelegation from a root
  // signingDigest(kind, payload): what the signature covers, and the name
  // an Update goes by (Acks, duplicate checks, the registry).
  Digest payloadDigest{};
};

// Framing and field checks of an envelope, without verifying it: kind is
// known, key id is 8 bytes, signature 64 bytes, payload non-empty.
Result<Parsed<wire::Signed>> parseEnvelope(ByteView bytes, const DecodeLimits& limits = {});

// Verifies an envelope against the keyring: kind == expected, signer found
// directly or through a delegation chain to a root key in the keyring, role
// allowed to sign the kind, signature valid.
Result<Signer> verifyEnvelope(wire::Signed::Reader envelope, Kind expected, const Keyring& keyring,
                              const VerifyOptions& options);

// A verified KeyDelegation (Signed bytes) and the key it authorizes.
Result<Signer> verifyDelegation(ByteView delegation, const Keyring& keyring,
                                const VerifyOptions& options);

template <typename T>
struct Verified {
  Parsed<wire::Signed> envelope;
  Parsed<T> message;
  Signer signer;

  typename T::Reader root() const { return message.root(); }
  ByteView payload() const { return message.bytes(); }
};

// Bytes -> verified message of kind T, or the reason it is not one.
template <typename T>
Result<Verified<T>> decodeVerified(ByteView bytes, const Keyring& keyring,
                                   const VerifyOptions& options = {}) {
  auto envelope = parseEnvelope(bytes, options.limits);
  if (!envelope.ok()) return envelope.error();
  auto signer = verifyEnvelope(envelope->root(), kindOf<T>(), keyring, options);
  if (!signer.ok()) return signer.error();
  auto payload = envelope->root().getPayload();
  auto message = parseMessage<T>(ByteView(payload.begin(), payload.size()), options.limits);
  if (!message.ok()) return message.error();
  return Verified<T>{std::move(envelope.value()), std::move(message.value()),
                     std::move(signer.value())};
}

// Reads a whole file for decoding, refusing files larger than `maxBytes`.
Result<Bytes> readFileBytes(const std::string& path, std::size_t maxBytes);

}  // namespace edgefl
