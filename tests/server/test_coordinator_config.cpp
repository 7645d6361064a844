#include <gtest/gtest.h>

#include <sstream>

#include "edgefl/server/coordinator_config.hpp"

namespace edgefl::server {
namespace {

TEST(CoordinatorConfig, RenderedDefaultsParseBackIdentically) {
  CoordinatorConfig c;
  c.fleet.name = "demo";
  c.broker.port = 18830;
  c.aggregation.strategy = "trimmed_mean";
  c.rollout.autoPromote = false;
  c.validation.tolerance = 0.025;
  const std::string text = renderCoordinatorConfig(c);
  auto parsed = parseCoordinatorConfig(text, "test.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.error().toString();
  EXPECT_EQ(parsed->fleet.name, "demo");
  EXPECT_EQ(parsed->broker.port, 18830);
  EXPECT_EQ(parsed->aggregation.strategy, "trimmed_mean");
  EXPECT_FALSE(parsed->rollout.autoPromote);
  EXPECT_DOUBLE_EQ(parsed->validation.tolerance, 0.025);
  // Rendering the parsed config gives the same text: nothing lost.
  EXPECT_EQ(renderCoordinatorConfig(*parsed), text);
}

TEST(CoordinatorConfig, EverySettingIsDocumented) {
  const std::string text = renderCoordinatorConfig(CoordinatorConfig{});
  std::size_t settings = 0, comments = 0;
  std::istringstream in(text);
  std::string prev, line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#' && line[0] != '[') {
      ++settings;
      if (!prev.empty() && prev[0] == '#') ++comments;
    }
    prev = line;
  }
  EXPECT_GT(settings, 50u);
  EXPECT_EQ(settings, comments);
}

TEST(CoordinatorConfig, RejectsWithTheKeyNamed) {
  auto expectError = [](const std::string& text, const std::string& needle) {
    auto r = parseCoordinatorConfig(text, "c.toml");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.code(), Code::BadConfig);
    EXPECT_NE(r.error().detail.find(needle), std::string::npos) << r.error().detail;
  };
  expectError("[fleet]\nnmae = \"x\"\n", "fleet.nmae");
  expectError("[nope]\nx = 1\n", "[nope]");
  expectError("[broker]\nport = \"1883\"\n", "broker.port must be an integer");
  expectError("[broker]\nport = 70000\n", "broker.port = 70000");
  expectError("[aggregation]\nstrategy = \"fedsgd\"\n", "not one of");
  expectError("[rounds]\nfraction = 1.5\n", "rounds.fraction");
  expectError("[rounds]\nmin_updates = 10\nmax_updates = 5\n", "min_updates");
  expectError("[fleet]\nname = \"a/b\"\n", "fleet.name");
  expectError("[fleet\nname = 1\n", "c.toml:1");
  expectError("[rollout]\nauto_promote = 1\n", "true or false");
}

TEST(CoordinatorConfig, EmptyFileGivesDefaultsAndPathsResolve) {
  auto r = parseCoordinatorConfig("", "empty.toml");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->aggregation.strategy, "fedavg");
  r->fleet.directory = "/srv/fleet";
  EXPECT_EQ(r->resolve("registry.db"), "/srv/fleet/registry.db");
  EXPECT_EQ(r->resolve("/abs/x"), "/abs/x");
}

}  // namespace
}  // namespace edgefl::server
