#include "edgefl/shared/envelope.hpp"

#include <capnp/any.h>
#include <kj/debug.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <fstream>

namespace edgefl {
namespace detail {
namespace {

// The reader's traversal budget for a message of `words` words.
std::uint64_t traversalBudget(std::uint64_t words, const DecodeLimits& limits) {
  return std::max<std::uint64_t>(1024, words * limits.traversalFactor);
}

}  // namespace

Result<std::unique_ptr<MessageHolder>> openMessage(ByteView bytes, const DecodeLimits& limits) {
  if (bytes.empty()) return makeError(Code::Empty, "no bytes");
  if (bytes.size() > limits.maxBytes) {
    return makeError(Code::TooLarge, "message is " + std::to_string(bytes.size()) +
                                         " bytes; limit is " + std::to_string(limits.maxBytes));
  }
  if (bytes.size() < 8) {
    return makeError(Code::Truncated,
                     "message is " + std::to_string(bytes.size()) + " bytes; a frame needs 8");
  }
  auto readU32 = [&](std::size_t offset) {
    std::uint32_t v;
    std::memcpy(&v, bytes.data() + offset, 4);
    return v;  // Cap'n Proto framing is little-endian, as is every target we build for
  };
  const std::uint64_t segments = static_cast<std::uint64_t>(readU32(0)) + 1;
  if (segments > limits.maxSegments) {
    return makeError(Code::NotCapnp, "segment table claims " + std::to_string(segments) +
                                         " segments; limit is " +
                                         std::to_string(limits.maxSegments));
  }
  const std::uint64_t tableWords = segments / 2 + 1;
  if (bytes.size() < tableWords * 8) {
    return makeError(Code::Truncated, "segment table needs " + std::to_string(tableWords * 8) +
                                          " bytes; have " + std::to_string(bytes.size()));
  }
  std::uint64_t dataWords = 0;
  for (std::uint64_t i = 0; i < segments; ++i) dataWords += readU32(4 + 4 * i);
  const std::uint64_t expected = (tableWords + dataWords) * 8;
  if (expected > limits.maxBytes) {
    return makeError(Code::TooLarge, "frame claims " + std::to_string(expected) +
                                         " bytes; limit is " + std::to_string(limits.maxBytes));
  }
  if (bytes.size() < expected) {
    return makeError(Code::Truncated, "frame claims " + std::to_string(expected) + " bytes; have " +
                                          std::to_string(bytes.size()));
  }
  if (bytes.size() > expected) {
    return makeError(Code::NotCapnp, "frame claims " + std::to_string(expected) + " bytes; have " +
                                         std::to_string(bytes.size()) + " (trailing bytes)");
  }

  // Always an owned, aligned copy: a decoded message must not depend on the
  // lifetime of the caller's buffer (a temporary would leave it dangling).
  // The copy costs far less than the BLAKE2b pass over the same bytes.
  auto holder = std::make_unique<MessageHolder>();
  holder->copy = kj::heapArray<capnp::word>(bytes.size() / 8);
  std::memcpy(holder->copy.begin(), bytes.data(), bytes.size());
  const capnp::word* words = holder->copy.begin();
  holder->bytes = ByteView(reinterpret_cast<const std::uint8_t*>(words), bytes.size());
  capnp::ReaderOptions options;
  options.traversalLimitInWords = traversalBudget(bytes.size() / 8, limits);
  options.nestingLimit = limits.nestingLimit;
  Status made = guardedWalk([&] {
    holder->reader = std::make_unique<capnp::FlatArrayMessageReader>(
        kj::ArrayPtr<const capnp::word>(words, bytes.size() / 8), options);
  });
  if (!made.ok()) return made.error();
  return holder;
}

namespace {

void walkValue(capnp::DynamicValue::Reader value);

void walkList(capnp::DynamicList::Reader list) {
  switch (list.getSchema().whichElementType()) {
    case capnp::schema::Type::STRUCT:
      // Structs with neither data nor pointers take no bytes but cost a word
      // each to traverse, so such a list is amplification: the walk passes
      // and a later read trips the traversal limit. Our builders always
      // write the schema's sections, so only a crafted message has one.
      if (list.size() > 0) {
        const capnp::AnyStruct::Reader first = list[0].as<capnp::DynamicStruct>();
        KJ_REQUIRE(first.getDataSection().size() > 0 || first.getPointerSection().size() > 0,
                   "a list of empty structs", list.size());
      }
      for (auto element : list) walkValue(element);
      break;
    case capnp::schema::Type::LIST:
    case capnp::schema::Type::TEXT:
    case capnp::schema::Type::DATA:
      for (auto element : list) walkValue(element);
      break;
    default: break;  // primitives: the list pointer itself was checked by get()
  }
}

void walkValue(capnp::DynamicValue::Reader value) {
  switch (value.getType()) {
    case capnp::DynamicValue::STRUCT: walkBySchema(value.as<capnp::DynamicStruct>()); break;
    case capnp::DynamicValue::LIST: walkList(value.as<capnp::DynamicList>()); break;
    case capnp::DynamicValue::TEXT: (void)value.as<capnp::Text>(); break;
    case capnp::DynamicValue::DATA: (void)value.as<capnp::Data>(); break;
    default: break;
  }
}

void walkField(capnp::DynamicStruct::Reader s, capnp::StructSchema::Field field) {
  const auto type = field.getType();
  if (type.isStruct() || type.isList() || type.isText() || type.isData()) {
    if (!type.isStruct() && !s.has(field)) return;
    walkValue(s.get(field));
  }
}

}  // namespace

void walkBySchema(capnp::DynamicStruct::Reader root) {
  for (auto field : root.getSchema().getNonUnionFields()) walkField(root, field);
  KJ_IF_MAYBE (active, root.which()) {
    walkField(root, *active);
  }
}

Status checkBySchema(const MessageHolder& holder, capnp::StructSchema schema,
                     const DecodeLimits& limits) {
  capnp::ReaderOptions options;
  // The segment table is counted too, and never traversed: a little slack.
  // A configured budget that is smaller still applies.
  options.traversalLimitInWords =
      std::min<std::uint64_t>(holder.copy.size() + 8, traversalBudget(holder.copy.size(), limits));
  options.nestingLimit = limits.nestingLimit;
  return guardedWalk([&] {
    capnp::FlatArrayMessageReader reader(holder.copy.asPtr(), options);
    walkBySchema(reader.getRoot<capnp::DynamicStruct>(schema));
  });
}

Status guardedWalk(const std::function<void()>& walk) {
  // KJ reports malformed input as kj::Exception; map it to a code here so no
  // exception leaves the decoder.
  kj::Maybe<kj::Exception> failure = kj::runCatchingExceptions([&] { walk(); });
  KJ_IF_MAYBE (e, failure) {
    std::string text(e->getDescription().cStr());
    if (text.find("traversal limit") != std::string::npos) {
      return makeError(Code::TraversalLimit, text);
    }
    if (text.find("too deeply-nested") != std::string::npos ||
        text.find("nesting limit") != std::string::npos) {
      return makeError(Code::TooDeep, text);
    }
    return makeError(Code::NotCapnp, text);
  }
  return {};
}

}  // namespace detail

void Keyring::add(const PublicKey& key, Role role, std::string subject) {
  entries_[keyIdOf(key)] = Entry{key, role, std::move(subject)};
}

bool Keyring::remove(const KeyId& id) {
  return entries_.erase(id) > 0;
}

const Keyring::Entry* Keyring::find(const KeyId& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second;
}

Result<Parsed<wire::Signed>> parseEnvelope(ByteView bytes, const DecodeLimits& limits) {
  auto parsed = parseMessage<wire::Signed>(bytes, limits);
  if (!parsed.ok()) return parsed.error();
  auto env = parsed->root();
  if (kindName(env.getKind()) == "unknown") {
    return makeError(Code::BadField, "envelope kind " +
                                         std::to_string(static_cast<int>(env.getKind())) +
                                         " is not a known message kind");
  }
  if (!env.hasPayload() || env.getPayload().size() == 0) {
    return makeError(Code::MissingField, "envelope has no payload");
  }
  if (env.getSignerKeyId().size() != kKeyIdBytes) {
    return makeError(
        Code::BadField,
        "signerKeyId is " + std::to_string(env.getSignerKeyId().size()) + " bytes; expected 8");
  }
  if (env.getSignature().size() != kSignatureBytes) {
    return makeError(Code::BadField, "signature is " + std::to_string(env.getSignature().size()) +
                                         " bytes; expected 64");
  }
  return parsed;
}

namespace {

std::int64_t nowOr(std::int64_t now) {
  return now != 0 ? now : static_cast<std::int64_t>(std::time(nullptr));
}

ByteView view(capnp::Data::Reader data) {
  return ByteView(data.begin(), data.size());
}

Result<Signer> checkSignature(wire::Signed::Reader envelope, Signer signer) {
  Signature sig{};
  std::memcpy(sig.data(), envelope.getSignature().begin(), sig.size());
  signer.payloadDigest = signingDigest(envelope.getKind(), view(envelope.getPayload()));
  if (!verifyDigest(signer.key, signer.payloadDigest, sig)) {
    return makeError(Code::BadSignature, std::string(kindName(envelope.getKind())) +
                                             " signature does not verify with key " +
                                             toHex(signer.keyId));
  }
  return signer;
}

}  // namespace

std::optional<DelegationCache::Entry> DelegationCache::find(const Digest& digest) const {
  std::lock_guard lock(mu_);
  for (const auto& [d, entry] : entries_) {
    if (d == digest) return entry;
  }
  return std::nullopt;
}

void DelegationCache::insert(const Digest& digest, Entry entry) {
  std::lock_guard lock(mu_);
  if (capacity_ == 0) return;
  for (auto& [d, e] : entries_) {
    if (d == digest) {
      e = std::move(entry);
      return;
    }
  }
  if (entries_.size() == capacity_) entries_.erase(entries_.begin());
  entries_.emplace_back(digest, std::move(entry));
}

namespace {

// The checks of a delegation's content that depend on the verifier: its
// fleet and its validity window at `options.now`.
Result<Signer> delegatedSigner(const DelegationCache::Entry& d, const VerifyOptions& options) {
  if (!options.fleet.empty() && d.fleet != options.fleet) {
    return makeError(Code::WrongFleet,
                     "delegation is for fleet '" + d.fleet + "'; expected '" + options.fleet + "'");
  }
  const std::int64_t now = nowOr(options.now);
  if (now < d.notBefore) {
    return makeError(Code::NotYetValid, "delegation valid from " + std::to_string(d.notBefore) +
                                            "; now is " + std::to_string(now));
  }
  if (d.notAfter != 0 && now > d.notAfter) {
    return makeError(Code::Expired, "delegation expired at " + std::to_string(d.notAfter) +
                                        "; now is " + std::to_string(now));
  }
  Signer subject;
  subject.key = d.subjectKey;
  subject.keyId = keyIdOf(d.subjectKey);
  subject.role = d.role;
  subject.subject = d.fleet;
  subject.delegated = true;
  return subject;
}

}  // namespace

Result<Signer> verifyDelegation(ByteView delegation, const Keyring& keyring,
                                const VerifyOptions& options) {
  Digest digest{};
  if (options.delegations != nullptr) {
    digest = blake2b256(delegation);
    if (auto known = options.delegations->find(digest)) {
      // Still signed by a root key of this keyring: only the checks that
      // depend on the verifier remain.
      const Keyring::Entry* root = keyring.find(known->rootKeyId);
      if (root != nullptr && root->role == Role::ROOT && root->key == known->rootKey) {
        options.delegations->countHit();
        return delegatedSigner(*known, options);
      }
    }
  }
  auto env = parseEnvelope(delegation, options.limits);
  if (!env.ok()) {
    return makeError(Code::DelegationInvalid, "delegation envelope: " + env.error().toString());
  }
  auto outer = verifyEnvelope(env->root(), Kind::KEY_DELEGATION, keyring, options);
  if (!outer.ok())
    return makeError(Code::DelegationInvalid, "delegation: " + outer.error().toString());
  if (outer->role != Role::ROOT || outer->delegated) {
    return makeError(Code::DelegationInvalid, "delegation is not signed by a fleet root key");
  }
  auto parsed = parseMessage<wire::KeyDelegation>(view(env->root().getPayload()), options.limits);
  if (!parsed.ok())
    return makeError(Code::DelegationInvalid, "delegation: " + parsed.error().toString());
  auto d = parsed->root();
  auto key = arrayFromBytes<kPublicKeyBytes>(view(d.getSubjectKey()));
  if (!key) {
    return makeError(
        Code::DelegationInvalid,
        "subjectKey is " + std::to_string(d.getSubjectKey().size()) + " bytes; expected 32");
  }
  if (d.getRole() == Role::ROOT || roleName(d.getRole()) == "unknown") {
    return makeError(
        Code::DelegationInvalid,
        "delegated role '" + std::string(roleName(d.getRole())) + "' cannot be delegated");
  }
  DelegationCache::Entry entry;
  entry.rootKeyId = outer->keyId;
  entry.rootKey = outer->key;
  entry.subjectKey = *key;
  entry.role = d.getRole();
  entry.fleet = d.getFleet();
  entry.notBefore = d.getNotBefore();
  entry.notAfter = d.getNotAfter();
  // Cached once its signature and fields verify, before the checks that
  // depend on when and by whom it is used.
  if (options.delegations != nullptr) options.delegations->insert(digest, entry);
  return delegatedSigner(entry, options);
}

Result<Signer> verifyEnvelope(wire::Signed::Reader envelope, Kind expected, const Keyring& keyring,
                              const VerifyOptions& options) {
  if (envelope.getKind() != expected) {
    return makeError(Code::WrongKind, "expected " + std::string(kindName(expected)) + ", got " +
                                          std::string(kindName(envelope.getKind())));
  }
  auto id = arrayFromBytes<kKeyIdBytes>(view(envelope.getSignerKeyId()));
  if (!id) return makeError(Code::BadField, "signerKeyId is not 8 bytes");

  Signer signer;
  if (const Keyring::Entry* entry = keyring.find(*id)) {
    signer.keyId = *id;
    signer.key = entry->key;
    signer.role = entry->role;
    signer.subject = entry->subject;
  } else if (envelope.hasDelegation() && envelope.getDelegation().size() > 0) {
    if (expected == Kind::KEY_DELEGATION) {
      return makeError(Code::DelegationInvalid, "a delegation cannot itself be delegated");
    }
    auto delegated = verifyDelegation(view(envelope.getDelegation()), keyring, options);
    if (!delegated.ok()) return delegated.error();
    if (delegated->keyId != *id) {
      return makeError(
          Code::KeyIdMismatch,
          "envelope signer " + toHex(*id) + " is not the delegated key " + toHex(delegated->keyId));
    }
    signer = std::move(delegated.value());
  } else {
    return makeError(Code::UnknownKey, "signer key " + toHex(*id) + " is not trusted");
  }
  if (!roleMaySign(signer.role, expected)) {
    return makeError(Code::RoleNotAllowed, "a " + std::string(roleName(signer.role)) +
                                               " key may not sign " +
                                               std::string(kindName(expected)));
  }
  return checkSignature(envelope, signer);
}

Result<Bytes> readFileBytes(const std::string& path, std::size_t maxBytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return makeError(Code::IoError, "cannot open " + path);
  const auto size = static_cast<std::uint64_t>(in.tellg());
  if (size > maxBytes) {
    return makeError(Code::TooLarge, path + " is " + std::to_string(size) + " bytes; limit is " +
                                         std::to_string(maxBytes));
  }
  Bytes bytes(size);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in) return makeError(Code::IoError, "cannot read " + path);
  return bytes;
}

}  // namespace edgefl
