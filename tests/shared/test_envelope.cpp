// Every way bytes from outside can fail to become a verified message, each
// with its specific reason; and the delegation chain root -> key -> message.

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <random>

#include "edgefl/shared/envelope.hpp"
#include "support/golden.hpp"
#include "support/messages.hpp"

namespace edgefl {
namespace {

KeyPair fixedKey(std::uint8_t base) {
  auto seed = test::fixedSeed(base);
  return KeyPair::fromSeed(std::span<const std::uint8_t, 32>(seed.data(), 32));
}

constexpr std::int64_t kNow = 1'750'000'000;

class EnvelopeTest : public ::testing::Test {
 protected:
  KeyPair root = fixedKey(1);
  KeyPair device = fixedKey(2);
  KeyPair coordinator = fixedKey(3);
  Keyring deviceRing;  // what a device trusts: the root only
  Keyring serverRing;  // what the coordinator trusts: enrolled devices
  VerifyOptions options;

  void SetUp() override {
    deviceRing.add(root.publicKey(), Role::ROOT, "root");
    serverRing.add(device.publicKey(), Role::DEVICE, "dev-1");
    options.fleet = "demo";
    options.now = kNow;
  }

  Bytes delegate(const KeyPair& subject, Role role, std::int64_t notBefore = kNow - 100,
                 std::int64_t notAfter = kNow + 100, const std::string& fleet = "demo",
                 const KeyPair* signer = nullptr) {
    DelegationSpec spec;
    spec.fleet = fleet;
    spec.subjectKey = subject.publicKey();
    spec.role = role;
    spec.notBefore = notBefore;
    spec.notAfter = notAfter;
    spec.issuedAt = kNow;
    return issueDelegation(signer != nullptr ? *signer : root, spec);
  }

  Bytes update() { return seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 5), device); }
  void expectChainRejections();
};

// Every way a delegation chain is refused; with a DelegationCache set,
// each message is verified twice, the second time from the cache, and must
// get the same answer.
void EnvelopeTest::expectChainRejections() {
  Bytes task = test::sampleRoundTask("demo", 5);
  auto verify = [&](const Bytes& delegation, const KeyPair& signer, Kind kind = Kind::ROUND_TASK) {
    Bytes payload = kind == Kind::ROUND_TASK ? task : test::sampleDeployment("demo", 3);
    Bytes env = seal(kind, payload, signer, delegation);
    auto once = [&] {
      return kind == Kind::ROUND_TASK
                 ? decodeVerified<wire::RoundTask>(env, deviceRing, options).code()
                 : decodeVerified<wire::Deployment>(env, deviceRing, options).code();
    };
    const Code first = once();
    if (options.delegations != nullptr) {
      EXPECT_EQ(once(), first) << "verified again";
    }
    return first;
  };
  // No delegation at all: the device does not know the coordinator key.
  EXPECT_EQ(verify({}, coordinator), Code::UnknownKey);
  // Expired and not yet valid.
  EXPECT_EQ(verify(delegate(coordinator, Role::COORDINATOR, kNow - 200, kNow - 100), coordinator),
            Code::Expired);
  EXPECT_EQ(verify(delegate(coordinator, Role::COORDINATOR, kNow + 100, kNow + 200), coordinator),
            Code::NotYetValid);
  // Another fleet's delegation.
  EXPECT_EQ(verify(delegate(coordinator, Role::COORDINATOR, kNow - 100, kNow + 100, "other"),
                   coordinator),
            Code::WrongFleet);
  // Signed by a key that is not the root (self-issued).
  EXPECT_EQ(
      verify(delegate(coordinator, Role::COORDINATOR, kNow - 100, kNow + 100, "demo", &coordinator),
             coordinator),
      Code::DelegationInvalid);
  // A delegation for one key used by another.
  KeyPair attacker = fixedKey(9);
  EXPECT_EQ(verify(delegate(coordinator, Role::COORDINATOR), attacker), Code::KeyIdMismatch);
  // A deployer may sign deployments but not round tasks.
  Bytes deployer = delegate(coordinator, Role::DEPLOYER);
  EXPECT_EQ(verify(deployer, coordinator, Kind::DEPLOYMENT), Code::Ok);
  EXPECT_EQ(verify(deployer, coordinator), Code::RoleNotAllowed);
  // Delegating the root role is refused.
  EXPECT_EQ(verify(delegate(coordinator, Role::ROOT), coordinator), Code::DelegationInvalid);
  // Garbage in the delegation field.
  EXPECT_EQ(verify(Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9}, coordinator), Code::DelegationInvalid);
  // The root itself may only sign delegations.
  EXPECT_EQ(verify({}, root), Code::RoleNotAllowed);
}

// Builds an envelope with arbitrary fields (for malformed cases).
Bytes rawEnvelope(Kind kind, const Bytes& payload, std::size_t keyIdBytes, std::size_t sigBytes) {
  capnp::MallocMessageBuilder b;
  auto env = b.initRoot<wire::Signed>();
  env.setKind(kind);
  if (!payload.empty()) env.setPayload(kj::arrayPtr(payload.data(), payload.size()));
  std::vector<std::uint8_t> id(keyIdBytes, 1), sig(sigBytes, 2);
  env.setSignerKeyId(kj::arrayPtr(id.data(), id.size()));
  env.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return toBytes(b);
}

TEST_F(EnvelopeTest, HonestUpdateVerifies) {
  auto v = decodeVerified<wire::Update>(update(), serverRing, options);
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_EQ(v->signer.subject, "dev-1");
  EXPECT_EQ(v->signer.role, Role::DEVICE);
  EXPECT_FALSE(v->signer.delegated);
  EXPECT_EQ(std::string(v->root().getDeviceId().cStr()), "dev-1");
  EXPECT_EQ(v->root().getRound(), 5u);
  EXPECT_EQ(v->root().getDelta().getTensors().size(), 2u);
}

TEST_F(EnvelopeTest, FramingErrors) {
  Bytes good = update();
  EXPECT_EQ(decodeVerified<wire::Update>(Bytes{}, serverRing, options).code(), Code::Empty);
  EXPECT_EQ(decodeVerified<wire::Update>(Bytes(good.begin(), good.begin() + 5), serverRing, options)
                .code(),
            Code::Truncated);
  EXPECT_EQ(
      decodeVerified<wire::Update>(Bytes(good.begin(), good.end() - 8), serverRing, options).code(),
      Code::Truncated);
  Bytes trailing = good;
  trailing.insert(trailing.end(), 8, 0);
  EXPECT_EQ(decodeVerified<wire::Update>(trailing, serverRing, options).code(), Code::NotCapnp);

  VerifyOptions small = options;
  small.limits.maxBytes = good.size() - 1;
  auto tooLarge = decodeVerified<wire::Update>(good, serverRing, small);
  EXPECT_EQ(tooLarge.code(), Code::TooLarge);
  EXPECT_NE(tooLarge.error().detail.find(std::to_string(good.size())), std::string::npos);

  // A frame header claiming a huge segment: refused before any allocation.
  Bytes claims = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(decodeVerified<wire::Update>(claims, serverRing, options).code(), Code::TooLarge);
  Bytes manySegments = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(decodeVerified<wire::Update>(manySegments, serverRing, options).code(), Code::NotCapnp);
}

TEST_F(EnvelopeTest, GarbageIsNotCapnp) {
  // One segment of 2 words whose root pointer points far out of bounds.
  Bytes bad = {0, 0, 0, 0, 2, 0, 0, 0, 0xfc, 0xff, 0xff, 0x7f, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  auto r = decodeVerified<wire::Update>(bad, serverRing, options);
  EXPECT_EQ(r.code(), Code::NotCapnp) << (r.ok() ? "" : r.error().toString());
}

TEST_F(EnvelopeTest, RandomBytesNeverCrashAndNeverVerify) {
  std::mt19937_64 rng(7);
  Bytes good = update();
  for (int i = 0; i < 3000; ++i) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f)
      b[rng() % b.size()] ^= static_cast<std::uint8_t>(1 + rng() % 255);
    auto r = decodeVerified<wire::Update>(b, serverRing, options);
    if (r.ok()) {
      // Only flips in bytes the signature does not cover may still verify:
      // the payload itself must be byte-identical.
      auto g = decodeVerified<wire::Update>(good, serverRing, options);
      EXPECT_EQ(toHex(r->payload()), toHex(g->payload()));
    }
  }
  for (int i = 0; i < 3000; ++i) {
    Bytes b(rng() % 200);
    for (auto& x : b) x = static_cast<std::uint8_t>(rng());
    EXPECT_FALSE(decodeVerified<wire::Update>(b, serverRing, options).ok());
  }
}

TEST_F(EnvelopeTest, FieldErrors) {
  Bytes payload = test::sampleUpdate("demo", "dev-1", 5);
  EXPECT_EQ(decodeVerified<wire::Update>(rawEnvelope(Kind::UPDATE, {}, 8, 64), serverRing, options)
                .code(),
            Code::MissingField);
  EXPECT_EQ(
      decodeVerified<wire::Update>(rawEnvelope(Kind::UPDATE, payload, 7, 64), serverRing, options)
          .code(),
      Code::BadField);
  EXPECT_EQ(
      decodeVerified<wire::Update>(rawEnvelope(Kind::UPDATE, payload, 8, 63), serverRing, options)
          .code(),
      Code::BadField);
  EXPECT_EQ(decodeVerified<wire::Update>(rawEnvelope(static_cast<Kind>(999), payload, 8, 64),
                                         serverRing, options)
                .code(),
            Code::BadField);
}

TEST_F(EnvelopeTest, WrongKindUnknownKeyBadSignature) {
  Bytes u = update();
  auto wrong = decodeVerified<wire::Deployment>(u, serverRing, options);
  EXPECT_EQ(wrong.code(), Code::WrongKind);
  EXPECT_NE(wrong.error().detail.find("expected deployment, got update"), std::string::npos);

  Keyring empty;
  EXPECT_EQ(decodeVerified<wire::Update>(u, empty, options).code(), Code::UnknownKey);

  // Same envelope, payload changed after signing.
  Bytes tampered = seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 6), device);
  auto env = parseEnvelope(tampered);
  ASSERT_TRUE(env.ok());
  capnp::MallocMessageBuilder b;
  b.setRoot(env->root());
  auto forged = b.getRoot<wire::Signed>();
  Bytes otherSig = seal(Kind::UPDATE, test::sampleUpdate("demo", "dev-1", 5), device);
  auto env2 = parseEnvelope(otherSig);
  forged.setSignature(env2->root().getSignature());  // signature of round 5 on payload of round 6
  auto r = decodeVerified<wire::Update>(toBytes(b), serverRing, options);
  EXPECT_EQ(r.code(), Code::BadSignature);

  // A device key signing a deployment: role check before anything else.
  Bytes dep = seal(Kind::DEPLOYMENT, test::sampleDeployment("demo", 1), device);
  EXPECT_EQ(decodeVerified<wire::Deployment>(dep, serverRing, options).code(),
            Code::RoleNotAllowed);
}

TEST_F(EnvelopeTest, PayloadThatIsNotCapnp) {
  // Signed correctly, but the payload is not a Cap'n Proto message.
  Bytes junk = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(
      decodeVerified<wire::Update>(seal(Kind::UPDATE, junk, device), serverRing, options).code(),
      Code::NotCapnp);
  Bytes cut = test::sampleUpdate("demo", "dev-1", 5);
  cut.resize(cut.size() - 16);
  EXPECT_EQ(
      decodeVerified<wire::Update>(seal(Kind::UPDATE, cut, device), serverRing, options).code(),
      Code::Truncated);
}

TEST_F(EnvelopeTest, NestingAndTraversalLimits) {
  // A model nests Model > layers > Layer > Dense > Tensor > shape.
  capnp::MallocMessageBuilder b;
  auto model = b.initRoot<wire::Model>();
  auto dense = model.initLayers(1)[0].initDense();
  dense.initWeight().initShape(2);
  Bytes bytes = toBytes(b);
  DecodeLimits shallow;
  shallow.nestingLimit = 2;
  EXPECT_EQ(parseMessage<wire::Model>(bytes, shallow).code(), Code::TooDeep);
  EXPECT_TRUE(parseMessage<wire::Model>(bytes).ok());

  Bytes big = seal(Kind::UPDATE, Bytes(64 * 1024, 0), device);
  DecodeLimits stingy;
  stingy.traversalFactor = 0;  // floor of 1024 words < the 8192-word payload
  EXPECT_EQ(parseMessage<wire::Signed>(big, stingy).code(), Code::TraversalLimit);
}

TEST_F(EnvelopeTest, UnalignedInputIsHandled) {
  Bytes u = update();
  std::vector<std::uint8_t> shifted(u.size() + 1);
  std::copy(u.begin(), u.end(), shifted.begin() + 1);
  auto r =
      decodeVerified<wire::Update>(ByteView(shifted.data() + 1, u.size()), serverRing, options);
  EXPECT_TRUE(r.ok()) << r.error().toString();
}

TEST_F(EnvelopeTest, DelegationChainAccepts) {
  Bytes d = delegate(coordinator, Role::COORDINATOR);
  Bytes task = seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 5), coordinator, d);
  auto v = decodeVerified<wire::RoundTask>(task, deviceRing, options);
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_TRUE(v->signer.delegated);
  EXPECT_EQ(v->signer.role, Role::COORDINATOR);
  EXPECT_EQ(v->signer.keyId, coordinator.keyId());
}

TEST_F(EnvelopeTest, DelegationChainRejects) {
  expectChainRejections();
}

TEST_F(EnvelopeTest, DelegationChainRejectsWithACache) {
  DelegationCache cache;
  options.delegations = &cache;
  expectChainRejections();
  // The refused-for-content delegations (expired, another fleet, a role
  // that may not sign the kind) were verified once and then reused.
  EXPECT_GE(cache.hits(), 3u);
}

// A delegation verified once is reused for the next message it covers, and
// what depends on the verifier is still checked every time: the validity
// window, the fleet, and that the keyring still trusts the root that signed
// it. Other bytes never hit.
TEST_F(EnvelopeTest, CachedDelegationsAreStillCheckedOnEveryUse) {
  DelegationCache cache;
  options.delegations = &cache;
  const Bytes d = delegate(coordinator, Role::COORDINATOR);
  const Bytes task = seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 5), coordinator, d);
  const Bytes deployment =
      seal(Kind::DEPLOYMENT, test::sampleDeployment("demo", 3), coordinator, d);
  auto first = decodeVerified<wire::RoundTask>(task, deviceRing, options);
  ASSERT_TRUE(first.ok()) << first.error().toString();
  EXPECT_EQ(cache.hits(), 0u);
  auto second = decodeVerified<wire::Deployment>(deployment, deviceRing, options);
  ASSERT_TRUE(second.ok()) << second.error().toString();
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(second->signer.keyId, coordinator.keyId());
  EXPECT_EQ(second->signer.role, Role::COORDINATOR);
  EXPECT_TRUE(second->signer.delegated);
  EXPECT_EQ(second->signer.subject, first->signer.subject);

  options.now = kNow + 101;
  EXPECT_EQ(decodeVerified<wire::RoundTask>(task, deviceRing, options).code(), Code::Expired);
  options.now = kNow - 101;
  EXPECT_EQ(decodeVerified<wire::RoundTask>(task, deviceRing, options).code(), Code::NotYetValid);
  options.now = kNow;
  options.fleet = "other";
  EXPECT_EQ(decodeVerified<wire::RoundTask>(task, deviceRing, options).code(), Code::WrongFleet);
  options.fleet = "demo";
  EXPECT_EQ(cache.hits(), 4u);
  // The message's own signature is always checked.
  Bytes forged = task;
  forged[forged.size() / 2] ^= 1;
  EXPECT_NE(decodeVerified<wire::RoundTask>(forged, deviceRing, options).code(), Code::Ok);

  // The same delegation with one bit of its root signature flipped: other
  // bytes, so it is verified in full, and fails.
  Bytes tampered = d;
  tampered[tampered.size() - 3] ^= 1;
  const std::uint64_t before = cache.hits();
  EXPECT_EQ(decodeVerified<wire::RoundTask>(
                seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 5), coordinator, tampered),
                deviceRing, options)
                .code(),
            Code::DelegationInvalid);
  EXPECT_EQ(cache.hits(), before);

  // The root is no longer trusted: the entry is not used.
  Keyring otherRoot;
  otherRoot.add(fixedKey(7).publicKey(), Role::ROOT, "another root");
  EXPECT_EQ(decodeVerified<wire::RoundTask>(task, otherRoot, options).code(),
            Code::DelegationInvalid);
  ASSERT_TRUE(deviceRing.remove(root.keyId()));
  EXPECT_EQ(decodeVerified<wire::RoundTask>(task, deviceRing, options).code(),
            Code::DelegationInvalid);
  EXPECT_EQ(cache.hits(), before);
}

// The cache holds the last `capacity` delegations.
TEST_F(EnvelopeTest, TheDelegationCacheKeepsTheLatest) {
  DelegationCache cache(1);
  options.delegations = &cache;
  const Bytes a = delegate(coordinator, Role::COORDINATOR);
  const Bytes b = delegate(coordinator, Role::COORDINATOR, kNow - 50);
  auto verify = [&](const Bytes& d) {
    return decodeVerified<wire::RoundTask>(
               seal(Kind::ROUND_TASK, test::sampleRoundTask("demo", 5), coordinator, d), deviceRing,
               options)
        .code();
  };
  EXPECT_EQ(verify(a), Code::Ok);
  EXPECT_EQ(verify(b), Code::Ok);  // replaces a
  EXPECT_EQ(verify(a), Code::Ok);
  EXPECT_EQ(cache.hits(), 0u);
  EXPECT_EQ(verify(a), Code::Ok);
  EXPECT_EQ(cache.hits(), 1u);
}

TEST_F(EnvelopeTest, RevokedKeyIsUnknown) {
  Bytes u = update();
  ASSERT_TRUE(decodeVerified<wire::Update>(u, serverRing, options).ok());
  ASSERT_TRUE(serverRing.remove(device.keyId()));
  EXPECT_EQ(decodeVerified<wire::Update>(u, serverRing, options).code(), Code::UnknownKey);
}

}  // namespace
}  // namespace edgefl
