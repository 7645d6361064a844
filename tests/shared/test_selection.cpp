#include <gtest/gtest.h>

#include <string>

#include "edgefl/shared/selection.hpp"

namespace edgefl {
namespace {

TEST(Selection, FractionSelectsAboutThatShareAndIsDeterministic) {
  int selected = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string id = "dev-" + std::to_string(i);
    const bool s = selectedByFraction(7, 3, 0.2f, id);
    EXPECT_EQ(s, selectedByFraction(7, 3, 0.2f, id));
    selected += s;
  }
  // Binomial(10000, 0.2): std 40; 5 std bounds.
  EXPECT_NEAR(selected, 2000, 200);
}

TEST(Selection, RoundsAndSaltsGiveDifferentGroups) {
  int same = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string id = "d";
    id += std::to_string(i);
    same += selectedByFraction(1, 1, 0.5f, id) == selectedByFraction(1, 2, 0.5f, id);
  }
  EXPECT_NEAR(same, 1000, 150);  // independent rounds agree half the time
  EXPECT_TRUE(selectedByFraction(1, 1, 1.0f, "x"));
  EXPECT_FALSE(selectedByFraction(1, 1, 0.0f, "x"));
}

TEST(Selection, CanaryIsNestedAsThePercentGrows) {
  // A device in the 10% canary stays in it at 50%: widening never evicts.
  int in10 = 0;
  for (int i = 0; i < 5000; ++i) {
    const std::string id = "dev-" + std::to_string(i);
    if (inCanary(9, 10, id)) {
      ++in10;
      EXPECT_TRUE(inCanary(9, 50, id));
    }
  }
  EXPECT_NEAR(in10, 500, 100);
  EXPECT_TRUE(inCanary(9, 100, "any"));
  EXPECT_FALSE(inCanary(9, 0, "any"));
  const double s = membershipScore("x", 1, 2, "dev");
  EXPECT_GE(s, 0.0);
  EXPECT_LT(s, 1.0);
}

}  // namespace
}  // namespace edgefl
