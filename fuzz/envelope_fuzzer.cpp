// The signed envelope as it arrives from the broker: framing, the verifier
// against both keyrings for every kind, delegation chains, and the full
// bytes-to-verified-message path. A signature that verifies must be a real
// Ed25519 signature over the payload by the key the verifier named.

#include "edgefl/shared/envelope.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;

template <typename T>
void decodeAs(ByteView bytes) {
  const fuzz::Fleet& f = fuzz::fleet();
  auto byDevice = decodeVerified<T>(bytes, f.serverRing, f.options);
  auto byRoot = decodeVerified<T>(bytes, f.deviceRing, f.options);
  if (byDevice.ok()) (void)byDevice->root().totalSize();
  if (byRoot.ok()) (void)byRoot->root().totalSize();
}

void checkSigner(wire::Signed::Reader env, Kind kind, const Result<Signer>& signer) {
  if (!signer.ok()) return;
  auto payload = env.getPayload();
  auto signature = arrayFromBytes<kSignatureBytes>(fuzz::view(env.getSignature()));
  EDGEFL_FUZZ_CHECK(signature.has_value(), "verified envelope without a 64-byte signature");
  EDGEFL_FUZZ_CHECK(verifyPayload(signer->key, kind, fuzz::view(payload), *signature),
                    "verifyEnvelope accepted a signature that does not verify");
  EDGEFL_FUZZ_CHECK(roleMaySign(signer->role, kind), "verifyEnvelope accepted role " +
                                                         std::string(roleName(signer->role)) +
                                                         " for " + std::string(kindName(kind)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::Fleet& f = fuzz::fleet();
  const ByteView bytes(data, size);

  (void)verifyDelegation(bytes, f.deviceRing, f.options);

  auto envelope = parseEnvelope(bytes, f.options.limits);
  if (!envelope.ok()) return 0;
  auto env = envelope->root();
  for (std::uint16_t k = 0; k <= 8; ++k) {
    const auto kind = static_cast<Kind>(k);
    checkSigner(env, kind, verifyEnvelope(env, kind, f.serverRing, f.options));
    checkSigner(env, kind, verifyEnvelope(env, kind, f.deviceRing, f.options));
  }
  switch (env.getKind()) {
    case Kind::MODEL: decodeAs<wire::Model>(bytes); break;
    case Kind::UPDATE: decodeAs<wire::Update>(bytes); break;
    case Kind::DEPLOYMENT: decodeAs<wire::Deployment>(bytes); break;
    case Kind::ROUND_TASK: decodeAs<wire::RoundTask>(bytes); break;
    case Kind::TELEMETRY: decodeAs<wire::Telemetry>(bytes); break;
    case Kind::ACK: decodeAs<wire::Ack>(bytes); break;
    case Kind::KEY_DELEGATION: decodeAs<wire::KeyDelegation>(bytes); break;
    default: break;
  }
  return 0;
}
