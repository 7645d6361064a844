// edgefl-sim's parts without a fleet: the config file and its limits, delay
// distributions, the attack transformations, the report formats, and when
// a device counts as settled between rounds.

#include <gtest/gtest.h>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/sim/attacks.hpp"
#include "edgefl/sim/config.hpp"
#include "edgefl/sim/report.hpp"
#include "edgefl/sim/simulator.hpp"

namespace edgefl {
namespace {

TEST(SimConfig, ReadsEverySectionAndKeepsDefaultsForTheRest) {
  auto c = sim::parseSimConfig(R"(
[sim]
devices = 250
partition = "dirichlet:0.3"
sample_store = "sqlite"
[availability]
probability = 0.8
day_night_amplitude = 0.5
[stragglers]
fraction = 0.2
delay = "lognormal:0.5:1.0"
[dropouts]
fraction = 0.05
[attackers]
fraction = 0.1
kinds = ["sign_flip", "replay"]
)",
                               "test.toml");
  ASSERT_TRUE(c.ok()) << c.error().toString();
  EXPECT_EQ(c->devices, 250u);
  EXPECT_EQ(c->rounds, sim::SimConfig{}.rounds);
  EXPECT_EQ(c->partition, "dirichlet:0.3");
  EXPECT_EQ(c->sampleStore, "sqlite");
  EXPECT_DOUBLE_EQ(c->availability.probability, 0.8);
  EXPECT_EQ(c->stragglers.delay.kind, sim::Delay::Kind::LogNormal);
  EXPECT_EQ(c->attackers.kinds,
            (std::vector<sim::Attack>{sim::Attack::SignFlip, sim::Attack::Replay}));

  // What render writes, parse reads back to the same values.
  auto again = sim::parseSimConfig(sim::renderSimConfig(*c), "rendered");
  ASSERT_TRUE(again.ok()) << again.error().toString();
  EXPECT_EQ(sim::renderSimConfig(*again), sim::renderSimConfig(*c));
}

TEST(SimConfig, RejectsWhatItCannotHonourWithTheSettingNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"[sim]\ndevices = 0\n", "sim.devices"},
      {"[sim]\ndevices = 1000000\n", "sim.devices"},
      {"[sim]\ndevcies = 3\n", "unknown setting sim.devcies"},
      {"[simulation]\ndevices = 3\n", "unknown section [simulation]"},
      {"[sim]\ndevices = \"ten\"\n", "must be an integer"},
      {"[sim]\nsample_store = \"disk\"\n", "sim.sample_store"},
      {"[sim]\ndataset = \"mnist\"\n", "sim.dataset"},
      {"[sim]\ndevice_prefix = \"../x\"\n", "sim.device_prefix"},
      {"[availability]\nprobability = 1.5\n", "availability.probability"},
      {"[stragglers]\ndelay = \"gamma:1\"\n", "stragglers.delay"},
      {"[stragglers]\ndelay = \"uniform:5:1\"\n", "B must not be below A"},
      {"[attackers]\nkinds = [\"sign_flip\", \"teleport\"]\n", "teleport"},
      {"[attackers]\nfraction = 0.2\nkinds = []\n", "attackers.kinds"},
      {"[sim\n", "test.toml:1"},
  };
  for (const auto& [text, needle] : cases) {
    auto c = sim::parseSimConfig(text, "test.toml");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.code(), Code::BadConfig) << text;
    EXPECT_NE(c.error().detail.find(needle), std::string::npos)
        << text << " -> " << c.error().detail;
  }
  EXPECT_EQ(sim::loadSimConfig("/nonexistent/sim.toml").code(), Code::BadConfig);
  std::string huge(2u << 20, '#');
  EXPECT_EQ(sim::parseSimConfig(huge, "huge.toml").code(), Code::BadConfig);
}

TEST(SimConfig, DelaysStayInsideTheirDistribution) {
  std::mt19937_64 rng(1);
  auto fixed = sim::parseDelay("fixed:1.5");
  ASSERT_TRUE(fixed.ok());
  EXPECT_DOUBLE_EQ(fixed->sample(rng), 1.5);
  auto uniform = sim::parseDelay("uniform:2:3");
  ASSERT_TRUE(uniform.ok());
  double sum = 0;
  for (int i = 0; i < 1000; ++i) {
    const double d = uniform->sample(rng);
    ASSERT_GE(d, 2.0);
    ASSERT_LE(d, 3.0);
    sum += d;
  }
  EXPECT_NEAR(sum / 1000, 2.5, 0.05);
  auto expo = sim::parseDelay("exponential:2");
  ASSERT_TRUE(expo.ok());
  sum = 0;
  for (int i = 0; i < 4000; ++i) sum += expo->sample(rng);
  EXPECT_NEAR(sum / 4000, 2.0, 0.15);
  // A heavy tail is capped.
  auto heavy = sim::parseDelay("lognormal:8:10");
  ASSERT_TRUE(heavy.ok());
  for (int i = 0; i < 100; ++i) EXPECT_LE(heavy->sample(rng), sim::kMaxDelaySeconds);
  for (const char* bad : {"fixed", "fixed:-1", "fixed:nan", "fixed:1:2", "uniform:1",
                          "exponential:1e9", "lognormal:100:1", "", "fixed:1x"}) {
    EXPECT_FALSE(sim::parseDelay(bad).ok()) << bad;
  }
}

TEST(SimAttacks, NamesRoundTripAndLabelFlipsOnlyForItsKind) {
  for (sim::Attack a : sim::allAttacks()) {
    EXPECT_EQ(sim::attackFromName(sim::attackName(a)), a);
  }
  EXPECT_FALSE(sim::attackFromName("nope").has_value());
  EXPECT_EQ(sim::poisonedLabel(sim::Attack::LabelFlip, 0, 10), 9);
  EXPECT_EQ(sim::poisonedLabel(sim::Attack::LabelFlip, 7, 10), 2);
  EXPECT_EQ(sim::poisonedLabel(sim::Attack::SignFlip, 7, 10), 7);
}

TEST(SimAttacks, DeltaHooksChangeWhatIsSent) {
  sim::SimConfig::Attackers o;
  o.scaleFactor = 10;
  o.noiseStd = 2;
  std::vector<float> d{1, -2, 3};
  auto run = [&](sim::Attack a) {
    std::vector<float> x = d;
    auto hooks = sim::attackHooks(a, o, "victim", 1);
    if (hooks.delta) hooks.delta(1, x);
    return x;
  };
  EXPECT_EQ(run(sim::Attack::SignFlip), (std::vector<float>{-1, 2, -3}));
  EXPECT_EQ(run(sim::Attack::Scale), (std::vector<float>{10, -20, 30}));
  EXPECT_EQ(run(sim::Attack::LabelFlip), d);
  const auto noise = run(sim::Attack::Noise);
  EXPECT_NE(noise, d);
  const auto nonfinite = run(sim::Attack::NonFinite);
  EXPECT_TRUE(std::isnan(nonfinite[0]));
  EXPECT_TRUE(std::isinf(nonfinite[2]));
}

TEST(SimAttacks, EnvelopeAndPayloadRewritesAreWhatTheCoordinatorCatches) {
  KeyPair key = KeyPair::generate();
  capnp::MallocMessageBuilder b;
  auto u = b.initRoot<wire::Update>();
  u.setFleet("f");
  u.setDeviceId("attacker");
  u.setRound(3);
  const Bytes payload = toBytes(b);

  // Impersonation: the payload now claims the victim, nothing else changes.
  const Bytes claimed = sim::withDeviceId(payload, "victim");
  auto parsed = parseMessage<wire::Update>(claimed);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(std::string(parsed->root().getDeviceId().cStr()), "victim");
  EXPECT_EQ(parsed->root().getRound(), 3u);

  // Forgery: still a well-formed envelope, but the signature fails.
  const Bytes envelope = seal(Kind::UPDATE, payload, key);
  Keyring ring;
  ring.add(key.publicKey(), Role::DEVICE, "attacker");
  VerifyOptions vo;
  vo.fleet = "f";
  ASSERT_TRUE(decodeVerified<wire::Update>(envelope, ring, vo).ok());
  const Bytes forged = sim::corruptSignature(envelope);
  ASSERT_TRUE(parseEnvelope(forged).ok());
  auto v = decodeVerified<wire::Update>(forged, ring, vo);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.code(), Code::BadSignature);

  // Replay: the first envelope replaces every later one.
  auto hooks = sim::attackHooks(sim::Attack::Replay, {}, "", 1);
  std::vector<std::uint8_t> first{1, 2, 3}, second{4, 5};
  hooks.updateEnvelope(1, first);
  hooks.updateEnvelope(2, second);
  EXPECT_EQ(second, (std::vector<std::uint8_t>{1, 2, 3}));

  // Garbage passes through unchanged rather than crashing the attacker.
  const Bytes junk{9, 9, 9};
  EXPECT_EQ(sim::corruptSignature(junk), junk);
  EXPECT_EQ(sim::withDeviceId(junk, "x"), junk);
}

TEST(SimReport, RowsCsvJsonAndPlotCarryTheRoundFigures) {
  sim::SimSummary s;
  s.fleetName = "f";
  s.arch = "mlp:784-8-10";
  s.initialAccuracy = 0.1;
  for (std::uint64_t r = 1; r <= 3; ++r) {
    sim::RoundRow row;
    row.round = r;
    row.state = "closed";
    row.selected = 10;
    row.received = 9;
    row.accepted = 7;
    row.rejectedByReason = {{"BadSignature", 2}, {"KrumOutlier", 1}};
    row.excluded = 1;
    row.accuracy = 0.5 + 0.1 * static_cast<double>(r);
    row.stableAccuracy = row.accuracy;
    row.bytesUp = 1000 * r;
    row.phaseMillis = {{"collect", 4000.0}, {"aggregate", 30.0}, {"validate", 410.0}};
    s.rounds.push_back(row);
  }
  const std::string json = sim::summaryJson(s);
  EXPECT_NE(json.find("\"rounds\":[{\"round\":1,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"rejected_by_reason\":{\"BadSignature\":2,\"KrumOutlier\":1}"),
            std::string::npos);
  EXPECT_NE(json.find("\"accuracy\":0.8"), std::string::npos);
  EXPECT_NE(json.find("\"rejected\":3"), std::string::npos);  // 2 at ingest + 1 excluded
  const std::string csv = sim::roundsCsv(s);
  EXPECT_NE(csv.find("\n3,closed,0,10,9,7,3,1,\"BadSignature=2;KrumOutlier=1\""), std::string::npos)
      << csv;
  const std::string svg = sim::accuracySvg(s);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(sim::rowText(s.rounds[0]).find("BadSignature=2"), std::string::npos);
  // Phases in seconds; the round never reached deploy.
  EXPECT_NE(sim::rowText(s.rounds[0]).find("4.00/0.03/0.41/-"), std::string::npos)
      << sim::rowText(s.rounds[0]);
  EXPECT_NE(sim::summaryText(s).find("10.00% -> 60.00% -> 70.00% -> 80.00%"), std::string::npos)
      << sim::summaryText(s);
  for (int v = 12; v >= 1; --v) s.lineage.push_back("v" + std::to_string(v));
  const std::string text = sim::summaryText(s);
  EXPECT_NE(text.find("lineage v12 <- v11 <- v10 <- v9 <- v8 <- v7 <- ... (5 more) <- v1"),
            std::string::npos)
      << text;
  EXPECT_EQ(sim::csvPathFor("/a/b/summary.json"), std::filesystem::path("/a/b/summary.csv"));
  EXPECT_EQ(sim::svgPathFor("/a/b/summary.json"), std::filesystem::path("/a/b/summary.svg"));
}

TEST(SimIdle, ADeviceSettlesOnceItRunsTheStableModelAndHasTakenItsDeployment) {
  DeviceStatus s;
  s.activeVersion = 4;
  s.stableSequence = 9;
  EXPECT_TRUE(sim::settledOnStable(s, 4, 9));
  EXPECT_TRUE(sim::settledOnStable(s, 4, 8));
  // A canary member runs version 5 before the stable deployment of it
  // (sequence 10) has reached it: not settled.
  s.activeVersion = 5;
  EXPECT_FALSE(sim::settledOnStable(s, 5, 10));
  s.stableSequence = 10;
  EXPECT_TRUE(sim::settledOnStable(s, 5, 10));
  // Deployment taken but another model running (a failed health check).
  s.activeVersion = 4;
  EXPECT_FALSE(sim::settledOnStable(s, 5, 10));
}

}  // namespace
}  // namespace edgefl
