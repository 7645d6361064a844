#pragma once
// The signing side of the wire protocol: per-kind contexts, digests and
// sealed envelopes. The signature is Ed25519 over
// BLAKE2b-256(context || payload): hashing first keeps large updates cheap
// (BLAKE2b is about twice as fast as the SHA-512 inside Ed25519), and the
// per-kind context means a payload signed as one kind never verifies as
// another.

#include <capnp/message.h>

#include <optional>
#include <string>
#include <vector>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/wire/edgefl.capnp.h"

namespace edgefl {

using Kind = wire::Kind;
using Role = wire::Role;
using Bytes = std::vector<std::uint8_t>;

std::string_view kindName(Kind kind);
std::optional<Kind> kindFromName(std::string_view name);
std::string_view roleName(Role role);
std::optional<Role> roleFromName(std::string_view name);

// Which roles may sign which kinds (root: delegations; coordinator:
// deployments, round tasks, acks, models; deployer: deployments, models;
// device: updates, telemetry).
bool roleMaySign(Role role, Kind kind);

// The domain-separation context of a kind, e.g. "edgefl/v1/update". The
// digest hashes the context, one zero byte, then the payload.
std::string_view signingContext(Kind kind);
Digest signingDigest(Kind kind, ByteView payload);
// The name of an Update payload: its signing digest, so that naming and
// signing (and verifying) it is one pass over up to megabytes.
inline Digest updateDigest(ByteView payload) {
  return signingDigest(Kind::UPDATE, payload);
}
Signature signPayload(const KeyPair& signer, Kind kind, ByteView payload);
[[nodiscard]] bool verifyPayload(const PublicKey& key, Kind kind, ByteView payload,
                                 const Signature& signature);
// The signature check alone, over a signingDigest the caller computed.
[[nodiscard]] bool verifyDigest(const PublicKey& key, const Digest& digest,
                                const Signature& signature);

// Flat-array bytes of a built message (one segment when the builder was
// sized to fit).
Bytes toBytes(capnp::MessageBuilder& builder);

// A Signed envelope around `payload`, signed by `signer`. `delegation` is an
// optional Signed(keyDelegation) that authorizes the signer's key.
Bytes seal(Kind kind, ByteView payload, const KeyPair& signer, ByteView delegation = {});
// The same, for a caller that already holds signingDigest(kind, payload)
// (an Update's digest is also its name): one pass over the payload, not two.
Bytes sealDigest(Kind kind, ByteView payload, const Digest& digest, const KeyPair& signer,
                 ByteView delegation = {});

struct DelegationSpec {
  std::string fleet;
  PublicKey subjectKey{};
  Role role = Role::COORDINATOR;
  std::int64_t notBefore = 0;
  std::int64_t notAfter = 0;
  std::int64_t issuedAt = 0;
  std::uint64_t serial = 1;
  std::string comment;
};

// A KeyDelegation signed by `root`, as Signed(keyDelegation) bytes.
Bytes issueDelegation(const KeyPair& root, const DelegationSpec& spec);

}  // namespace edgefl
