// Known-answer tests: the encoded bytes and signatures of fixed messages
// under fixed keys are pinned in tests/golden/. A difference is a wire or
// signature format change, which breaks every deployed device.

#include <gtest/gtest.h>

#include <capnp/serialize.h>

#include <algorithm>
#include <set>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/signing.hpp"
#include "support/golden.hpp"
#include "support/messages.hpp"

namespace edgefl {
namespace {

KeyPair fixedKey(std::uint8_t base) {
  auto seed = test::fixedSeed(base);
  return KeyPair::fromSeed(std::span<const std::uint8_t, 32>(seed.data(), 32));
}

void checkGolden(const std::string& name, const Bytes& bytes) {
  if (test::updatingGolden()) {
    test::writeGolden(name, bytes);
    GTEST_SKIP() << "rewrote golden file " << name;
  }
  Bytes golden = test::readGolden(name);
  ASSERT_FALSE(golden.empty()) << "missing golden file " << name;
  EXPECT_EQ(toHex(bytes), toHex(golden)) << name;
}

std::string text(const std::string& s) {
  return s;
}

Bytes textBytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

TEST(Golden, FixedSeedKeys) {
  KeyPair root = fixedKey(1);
  KeyPair device = fixedKey(2);
  std::string lines = "root.public " + toHex(root.publicKey()) + "\nroot.keyid " +
                      toHex(root.keyId()) + "\ndevice.public " + toHex(device.publicKey()) +
                      "\ndevice.keyid " + toHex(device.keyId()) + "\n";
  checkGolden("keys.txt", textBytes(lines));
}

TEST(Golden, SignatureOverContextDigest) {
  KeyPair device = fixedKey(2);
  Bytes payload = textBytes("edgefl known-answer payload");
  Digest digest = signingDigest(Kind::UPDATE, payload);
  Signature sig = signPayload(device, Kind::UPDATE, payload);
  std::string lines = "update.digest " + toHex(digest) + "\nupdate.signature " + toHex(sig) + "\n";
  checkGolden("signature.txt", textBytes(lines));
}

TEST(Golden, EncodedMessages) {
  checkGolden("round_task.bin", test::sampleRoundTask("demo", 5));
  checkGolden("update.bin", test::sampleUpdate("demo", "dev-1", 5));
  checkGolden("ack.bin", test::sampleAck("demo", "dev-1", 5));
  checkGolden("telemetry.bin", test::sampleTelemetry("demo", "dev-1"));
  checkGolden("deployment.bin", test::sampleDeployment("demo", 9));
}

TEST(Golden, SignedEnvelopeAndDelegation) {
  KeyPair root = fixedKey(1);
  KeyPair coordinator = fixedKey(3);
  DelegationSpec spec;
  spec.fleet = "demo";
  spec.subjectKey = coordinator.publicKey();
  spec.role = Role::COORDINATOR;
  spec.notBefore = 1'700'000'000;
  spec.notAfter = 1'800'000'000;
  spec.issuedAt = 1'700'000'000;
  spec.serial = 1;
  Bytes delegation = issueDelegation(root, spec);
  checkGolden("delegation.signed.bin", delegation);
  checkGolden("round_task.signed.bin",
              seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 5), coordinator, delegation));
  checkGolden("update.signed.bin",
              seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 5), fixedKey(2)));
}

TEST(Signing, ContextSeparatesKinds) {
  KeyPair k = fixedKey(2);
  Bytes payload = textBytes(text("same bytes"));
  Signature sig = signPayload(k, Kind::UPDATE, payload);
  EXPECT_TRUE(verifyPayload(k.publicKey(), Kind::UPDATE, payload, sig));
  for (Kind other : {Kind::MODEL, Kind::DEPLOYMENT, Kind::ROUND_TASK, Kind::TELEMETRY, Kind::ACK,
                     Kind::KEY_DELEGATION}) {
    EXPECT_FALSE(verifyPayload(k.publicKey(), other, payload, sig)) << kindName(other);
  }
  Bytes changed = payload;
  changed[0] ^= 1;
  EXPECT_FALSE(verifyPayload(k.publicKey(), Kind::UPDATE, changed, sig));
  EXPECT_FALSE(verifyPayload(fixedKey(3).publicKey(), Kind::UPDATE, payload, sig));
}

// sealDigest is seal with the signing digest computed by the caller: the
// same envelope, and the verified signer names the payload by that digest.
TEST(Signing, SealWithPrecomputedDigestIsSeal) {
  KeyPair k = fixedKey(2);
  Bytes payload = textBytes(text("an update payload"));
  const Digest d = updateDigest(payload);
  EXPECT_EQ(d, signingDigest(Kind::UPDATE, payload));
  EXPECT_EQ(sealDigest(Kind::UPDATE, payload, d, k), seal(Kind::UPDATE, payload, k));
  Keyring ring;
  ring.add(k.publicKey(), Role::DEVICE, "d1");
  auto env = parseEnvelope(sealDigest(Kind::UPDATE, payload, d, k));
  ASSERT_TRUE(env.ok());
  auto signer = verifyEnvelope(env->root(), Kind::UPDATE, ring, {});
  ASSERT_TRUE(signer.ok()) << signer.error().toString();
  EXPECT_EQ(signer->payloadDigest, d);
  EXPECT_TRUE(verifyDigest(k.publicKey(), d, k.sign(d)));
  Digest other = d;
  other[31] ^= 1;
  EXPECT_FALSE(verifyDigest(k.publicKey(), other, k.sign(d)));
  // A digest that is not the payload's makes a signature that does not verify.
  auto forged = parseEnvelope(sealDigest(Kind::UPDATE, payload, other, k));
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(verifyEnvelope(forged->root(), Kind::UPDATE, ring, {}).code(), Code::BadSignature);
}

TEST(Signing, DistinctContextsAndRoleTable) {
  std::set<std::string_view> contexts;
  for (Kind k : {Kind::MODEL, Kind::UPDATE, Kind::DEPLOYMENT, Kind::ROUND_TASK, Kind::TELEMETRY,
                 Kind::ACK, Kind::KEY_DELEGATION}) {
    contexts.insert(signingContext(k));
    EXPECT_EQ(kindFromName(kindName(k)), k);
  }
  EXPECT_EQ(contexts.size(), 7u);
  EXPECT_TRUE(roleMaySign(Role::ROOT, Kind::KEY_DELEGATION));
  EXPECT_FALSE(roleMaySign(Role::ROOT, Kind::DEPLOYMENT));
  EXPECT_TRUE(roleMaySign(Role::COORDINATOR, Kind::ROUND_TASK));
  EXPECT_FALSE(roleMaySign(Role::COORDINATOR, Kind::UPDATE));
  EXPECT_TRUE(roleMaySign(Role::DEPLOYER, Kind::DEPLOYMENT));
  EXPECT_FALSE(roleMaySign(Role::DEPLOYER, Kind::ROUND_TASK));
  EXPECT_TRUE(roleMaySign(Role::DEVICE, Kind::UPDATE));
  EXPECT_FALSE(roleMaySign(Role::DEVICE, Kind::DEPLOYMENT));
}

// toBytes writes the segments straight into its result: the same bytes as
// Cap'n Proto's own flat array, for one segment and for many.
TEST(ToBytes, MatchesTheFlatArrayOfOneSegmentAndOfMany) {
  for (const unsigned firstSegmentWords : {65536u, 8u}) {
    capnp::MallocMessageBuilder builder(firstSegmentWords, capnp::AllocationStrategy::FIXED_SIZE);
    auto env = builder.initRoot<wire::Signed>();
    env.setKind(Kind::UPDATE);
    Bytes payload(100000);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::uint8_t>(i * 7);
    env.setPayload(kj::arrayPtr(payload.data(), payload.size()));
    env.setSignerKeyId(kj::arrayPtr(payload.data(), 8));
    env.setSignature(kj::arrayPtr(payload.data() + 8, 64));
    const std::size_t segments = builder.getSegmentsForOutput().size();
    EXPECT_EQ(segments > 1, firstSegmentWords == 8u) << segments << " segments";
    const auto flat = capnp::messageToFlatArray(builder);
    const Bytes bytes = toBytes(builder);
    ASSERT_EQ(bytes.size(), flat.asBytes().size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), flat.asBytes().begin()));
  }
}

}  // namespace
}  // namespace edgefl
