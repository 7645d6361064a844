// From a round task to signed update bytes, step by step.

#include "edgefl/device/update_builder.hpp"

#include <gtest/gtest.h>

#include "device/device_fixture.hpp"
#include "edgefl/shared/selection.hpp"

namespace edgefl::device {
namespace {

Result<RoundPlan> planOf(const Bytes& sealed, const test::TestFleet& fleet) {
  Keyring ring;
  ring.add(fleet.root.publicKey(), Role::ROOT);
  auto v = decodeVerified<wire::RoundTask>(sealed, ring);
  EXPECT_TRUE(v.ok());
  return roundPlanFromWire(v->root());
}

TEST(RoundPlan, CopiesAndValidatesTheTask) {
  test::TestFleet fleet;
  const Model model = test::smallModel();
  auto plan = planOf(fleet.roundTask({.round = 5,
                                      .baseDigest = parameterDigest(model),
                                      .devices = {"a", "b"},
                                      .minSamples = 12,
                                      .encoding = wire::DeltaEncoding::INT8}),
                     fleet);
  ASSERT_TRUE(plan.ok()) << plan.error().toString();
  EXPECT_EQ(plan->round, 5u);
  EXPECT_EQ(plan->baseDigest, parameterDigest(model));
  EXPECT_EQ(plan->devices, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(plan->minSamples, 12u);
  EXPECT_EQ(plan->training.epochs, 2u);
  EXPECT_FLOAT_EQ(plan->training.learningRate, 0.1f);
  EXPECT_EQ(plan->delta.encoding, wire::DeltaEncoding::INT8);
  EXPECT_TRUE(selectedFor(plan.value(), "a"));
  EXPECT_FALSE(selectedFor(plan.value(), "c"));

  // Round 0, a short digest, a bad training config.
  auto bad = [](const std::function<void(wire::RoundTask::Builder)>& edit) {
    capnp::MallocMessageBuilder b;
    auto t = b.initRoot<wire::RoundTask>();
    t.setRound(1);
    Digest d{};
    t.setBaseDigest(kj::arrayPtr(d.data(), d.size()));
    t.initTraining();
    t.initDelta();
    edit(t);
    return roundPlanFromWire(t.asReader()).code();
  };
  EXPECT_EQ(bad([](auto) {}), Code::Ok);
  EXPECT_EQ(bad([](auto t) { t.setRound(0); }), Code::BadField);
  EXPECT_EQ(bad([](auto t) {
              t.setBaseDigest(kj::arrayPtr(reinterpret_cast<const kj::byte*>("ab"), 2));
            }),
            Code::BadField);
  EXPECT_EQ(bad([](auto t) { t.getTraining().setLearningRate(-1.0f); }), Code::BadField);
  EXPECT_EQ(bad([](auto t) { t.setFraction(NAN); }), Code::BadField);
  EXPECT_NE(bad([](auto t) {
              t.getDelta().setEncoding(wire::DeltaEncoding::TOP_K);
              t.getDelta().setTopKFraction(0.0f);
            }),
            Code::Ok);
}

TEST(RoundPlan, FractionSelectionAgreesWithTheCoordinatorsFunction) {
  RoundPlan plan;
  plan.round = 9;
  plan.selectionSalt = 1234;
  plan.fraction = 0.3f;
  int selected = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = "dev-" + std::to_string(i);
    EXPECT_EQ(selectedFor(plan, id), selectedByFraction(1234, 9, 0.3f, id));
    selected += selectedFor(plan, id) ? 1 : 0;
  }
  EXPECT_NEAR(selected, 300, 60);
}

class BuilderTest : public ::testing::Test {
 protected:
  test::TestFleet fleet;
  KeyPair key = KeyPair::generate();
  Model base = test::smallModel();
  Dataset data = test::syntheticData(8, 3, 64, 3);

  RoundPlan plan(wire::DeltaEncoding encoding = wire::DeltaEncoding::FLOAT32) {
    auto p = planOf(fleet.roundTask({.round = 2,
                                     .baseDigest = parameterDigest(base),
                                     .epochs = 3,
                                     .encoding = encoding,
                                     .topKFraction = 0.1f}),
                    fleet);
    EXPECT_TRUE(p.ok());
    return p.value();
  }
  Keyring ring() const {
    Keyring r;
    r.add(key.publicKey(), Role::DEVICE, "dev-1");
    return r;
  }
};

TEST_F(BuilderTest, StepsComposeIntoAVerifiableUpdate) {
  UpdateBuilder builder(key, "demo", "dev-1");
  const RoundPlan p = plan();
  auto trained = builder.train(base, data, p);
  ASSERT_TRUE(trained.ok()) << trained.error().toString();
  EXPECT_LT(trained->after.loss, trained->before.loss);
  EXPECT_EQ(trained->before.sampleCount, 64u);
  auto delta = builder.delta(base, trained->local, p.round);
  ASSERT_TRUE(delta.ok());
  // local = base + delta, exactly as the coordinator will apply it.
  std::vector<float> rebuilt(base.parameters().begin(), base.parameters().end());
  ASSERT_TRUE(applyDelta(rebuilt, delta.value()).ok());
  for (std::size_t i = 0; i < rebuilt.size(); ++i) {
    ASSERT_NEAR(rebuilt[i], trained->local.parameters()[i], 1e-6f);
  }
  std::mt19937_64 rng(1);
  std::vector<float> scratch = delta.value();
  DeltaEncodeInfo info;
  auto payload = builder.encode(base, scratch, p, trained.value(), 64, {}, rng, 1234, &info);
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(info.sentEntries, base.parameterCount());
  const Bytes envelope = builder.seal(payload.value(), p.round);
  auto v = decodeVerified<wire::Update>(envelope, ring());
  ASSERT_TRUE(v.ok()) << v.error().toString();
  EXPECT_EQ(v->root().getCreatedAt(), 1234);
  EXPECT_EQ(v->root().getSampleCount(), 64u);
  EXPECT_FLOAT_EQ(v->root().getLossAfter(), trained->after.loss);
  const auto decoded = test::decodeUpdateDelta(v->root(), base);
  EXPECT_EQ(decoded, delta.value());

  // build() does the same in one call.
  std::mt19937_64 rng2(1);
  auto built = builder.build(base, data, p, {}, rng2, 1234);
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(built->payloadDigest, updateDigest(built->payload));
  EXPECT_NE(built->payloadDigest, blake2b256(built->payload)) << "the kind's context is hashed too";
  // Sealing with the digest it already has signs the same bytes as seal().
  EXPECT_EQ(built->envelope, builder.seal(built->payload, p.round));
  auto v2 = decodeVerified<wire::Update>(built->envelope, ring());
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->signer.payloadDigest, built->payloadDigest);
  EXPECT_EQ(test::decodeUpdateDelta(v2->root(), base), delta.value());
  const Digest baseDigest = parameterDigest(base);
  auto named = [](const Bytes& bytes) {
    auto u = parseMessage<wire::Update>(bytes);
    EXPECT_TRUE(u.ok());
    return Bytes(u->root().getBaseDigest().begin(), u->root().getBaseDigest().end());
  };
  EXPECT_EQ(named(built->payload), Bytes(baseDigest.begin(), baseDigest.end()));
  // The digest a caller keeps (a cached model) is what the update names;
  // it is not recomputed.
  Digest kept{};
  kept[0] = 7;
  std::mt19937_64 rng3(1);
  auto withKept = builder.build(base, data, p, {}, rng3, 1234, &kept);
  ASSERT_TRUE(withKept.ok());
  EXPECT_EQ(named(withKept->payload), Bytes(kept.begin(), kept.end()));
}

TEST_F(BuilderTest, Int8AndTopKEncodings) {
  UpdateBuilder builder(key, "demo", "dev-1");
  std::mt19937_64 rng(3);
  auto int8 = builder.build(base, data, plan(wire::DeltaEncoding::INT8), {}, rng, 1);
  ASSERT_TRUE(int8.ok());
  EXPECT_EQ(decodeVerified<wire::Update>(int8->envelope, ring())->root().getDelta().getEncoding(),
            wire::DeltaEncoding::INT8);

  std::vector<float> residual(base.parameterCount(), 0.0f);
  auto topK = builder.build(base, data, plan(wire::DeltaEncoding::TOP_K), residual, rng, 1);
  ASSERT_TRUE(topK.ok());
  EXPECT_EQ(topK->encoding.sentEntries,
            static_cast<std::uint64_t>(std::ceil(0.1 * base.parameterCount())));
  // Error feedback: what was not sent is in the residual.
  EXPECT_GT(l2Norm(residual), 0.0);
}

TEST_F(BuilderTest, TrainingErrorsComeBackWithTheirReason) {
  UpdateBuilder builder(key, "demo", "dev-1");
  std::mt19937_64 rng(3);
  Dataset empty;
  empty.featureCount = 8;
  EXPECT_FALSE(builder.build(base, empty, plan(), {}, rng, 1).ok());
  Dataset wrongLabels = data;
  wrongLabels.labels[0] = 9;
  EXPECT_EQ(builder.build(base, wrongLabels, plan(), {}, rng, 1).code(), Code::OutOfRange);
}

}  // namespace
}  // namespace edgefl::device
