#include "edgefl/shared/signing.hpp"

#include <capnp/serialize.h>
#include <sodium.h>

#include <cstring>

namespace edgefl {
namespace {

struct KindInfo {
  Kind kind;
  std::string_view name;
  std::string_view context;
};

constexpr KindInfo kKinds[] = {
    {Kind::MODEL, "model", "edgefl/v1/model"},
    {Kind::UPDATE, "update", "edgefl/v1/update"},
    {Kind::DEPLOYMENT, "deployment", "edgefl/v1/deployment"},
    {Kind::ROUND_TASK, "roundTask", "edgefl/v1/round-task"},
    {Kind::TELEMETRY, "telemetry", "edgefl/v1/telemetry"},
    {Kind::ACK, "ack", "edgefl/v1/ack"},
    {Kind::KEY_DELEGATION, "keyDelegation", "edgefl/v1/key-delegation"},
};

const KindInfo* findKind(Kind kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return &k;
  }
  return nullptr;
}

}  // namespace

std::string_view kindName(Kind kind) {
  const KindInfo* k = findKind(kind);
  return k != nullptr ? k->name : "unknown";
}

std::optional<Kind> kindFromName(std::string_view name) {
  for (const auto& k : kKinds) {
    if (k.name == name) return k.kind;
  }
  return std::nullopt;
}

std::string_view roleName(Role role) {
  switch (role) {
    case Role::ROOT: return "root";
    case Role::COORDINATOR: return "coordinator";
    case Role::DEPLOYER: return "deployer";
    case Role::DEVICE: return "device";
    case Role::UNKNOWN: break;
  }
  return "unknown";
}

std::optional<Role> roleFromName(std::string_view name) {
  for (Role r : {Role::ROOT, Role::COORDINATOR, Role::DEPLOYER, Role::DEVICE}) {
    if (roleName(r) == name) return r;
  }
  return std::nullopt;
}

bool roleMaySign(Role role, Kind kind) {
  switch (role) {
    case Role::ROOT: return kind == Kind::KEY_DELEGATION;
    case Role::COORDINATOR:
      return kind == Kind::DEPLOYMENT || kind == Kind::ROUND_TASK || kind == Kind::ACK ||
             kind == Kind::MODEL;
    case Role::DEPLOYER: return kind == Kind::DEPLOYMENT || kind == Kind::MODEL;
    case Role::DEVICE: return kind == Kind::UPDATE || kind == Kind::TELEMETRY;
    case Role::UNKNOWN: break;
  }
  return false;
}

std::string_view signingContext(Kind kind) {
  const KindInfo* k = findKind(kind);
  return k != nullptr ? k->context : "edgefl/v1/unknown";
}

Digest signingDigest(Kind kind, ByteView payload) {
  std::string_view context = signingContext(kind);
  const std::uint8_t separator = 0;
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, kDigestBytes);
  crypto_generichash_update(&state, reinterpret_cast<const std::uint8_t*>(context.data()),
                            context.size());
  crypto_generichash_update(&state, &separator, 1);
  crypto_generichash_update(&state, payload.data(), payload.size());
  Digest out{};
  crypto_generichash_final(&state, out.data(), out.size());
  return out;
}

Signature signPayload(const KeyPair& signer, Kind kind, ByteView payload) {
  Digest digest = signingDigest(kind, payload);
  return signer.sign(digest);
}

bool verifyPayload(const PublicKey& key, Kind kind, ByteView payload, const Signature& signature) {
  return verifyDigest(key, signingDigest(kind, payload), signature);
}

bool verifyDigest(const PublicKey& key, const Digest& digest, const Signature& signature) {
  return crypto_sign_verify_detached(signature.data(), digest.data(), digest.size(), key.data()) ==
         0;
}

namespace {
// Appends what Cap'n Proto writes to a Bytes reserved for all of it.
class AppendTo final : public kj::OutputStream {
 public:
  explicit AppendTo(Bytes& out) : out_(out) {}
  using kj::OutputStream::write;
  void write(const void* buffer, size_t size) override {
    const auto* p = static_cast<const std::uint8_t*>(buffer);
    out_.insert(out_.end(), p, p + size);
  }

 private:
  Bytes& out_;
};
}  // namespace

Bytes toBytes(capnp::MessageBuilder& builder) {
  // Segments straight into the result: one copy of a 400 KB update, where
  // messageToFlatArray and a copy out of its array made two.
  const auto segments = builder.getSegmentsForOutput();
  Bytes out;
  out.reserve(capnp::computeSerializedSizeInWords(segments) * sizeof(capnp::word));
  AppendTo stream(out);
  capnp::writeMessage(stream, segments);
  return out;
}

Bytes seal(Kind kind, ByteView payload, const KeyPair& signer, ByteView delegation) {
  return sealDigest(kind, payload, signingDigest(kind, payload), signer, delegation);
}

Bytes sealDigest(Kind kind, ByteView payload, const Digest& digest, const KeyPair& signer,
                 ByteView delegation) {
  Signature sig = signer.sign(digest);
  KeyId id = signer.keyId();
  // Size the first segment to fit everything: one segment, one copy.
  const std::size_t words = (payload.size() + delegation.size()) / 8 + 64;
  capnp::MallocMessageBuilder builder(static_cast<unsigned>(words));
  auto env = builder.initRoot<wire::Signed>();
  env.setKind(kind);
  env.setPayload(kj::arrayPtr(payload.data(), payload.size()));
  env.setSignerKeyId(kj::arrayPtr(id.data(), id.size()));
  env.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  if (!delegation.empty()) env.setDelegation(kj::arrayPtr(delegation.data(), delegation.size()));
  return toBytes(builder);
}

Bytes issueDelegation(const KeyPair& root, const DelegationSpec& spec) {
  capnp::MallocMessageBuilder builder;
  auto d = builder.initRoot<wire::KeyDelegation>();
  d.setFleet(spec.fleet);
  d.setSubjectKey(kj::arrayPtr(spec.subjectKey.data(), spec.subjectKey.size()));
  d.setRole(spec.role);
  d.setNotBefore(spec.notBefore);
  d.setNotAfter(spec.notAfter);
  d.setIssuedAt(spec.issuedAt);
  d.setSerial(spec.serial);
  d.setComment(spec.comment);
  Bytes payload = toBytes(builder);
  return seal(Kind::KEY_DELEGATION, payload, root);
}

}  // namespace edgefl
