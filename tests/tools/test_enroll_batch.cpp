// Batch enrollment: many devices with one password-file rewrite, checked
// as a whole before anything is written.

#include <gtest/gtest.h>

#include <sstream>

#include "edgefl/shared/keys.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

std::size_t linesStartingWith(const std::string& text, const std::string& prefix) {
  std::size_t n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

class EnrollBatchTest : public ::testing::Test {
 protected:
  test::TempDir tmp;
  fs::path dir;
  void SetUp() override {
    dir = tmp.path() / "fleet";
    tools::FleetInitOptions o;
    o.directory = dir;
    o.name = "batch";
    o.arch = "logreg:784-10";
    ASSERT_TRUE(tools::initFleet(o).ok());
  }
};

TEST_F(EnrollBatchTest, EnrollsAllWithOneRewriteAndIsIdempotent) {
  std::vector<tools::DeviceToEnroll> batch;
  for (int i = 0; i < 5; ++i) {
    batch.push_back({"d-" + std::to_string(i), KeyPair::generate().publicKey()});
  }
  auto enrolled = tools::enrollDevices(dir, batch);
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().toString();
  ASSERT_EQ(enrolled->size(), 5u);
  const std::string passwd = test::readTextFile(dir / "broker" / "passwd");
  for (int i = 0; i < 5; ++i) {
    const std::string id = "d-" + std::to_string(i);
    EXPECT_EQ((*enrolled)[static_cast<std::size_t>(i)].id, id);
    EXPECT_TRUE(fs::exists(dir / "devices" / (id + ".pub")));
    EXPECT_EQ(linesStartingWith(passwd, id + ":$7$"), 1u) << id;
    auto key = loadPublicKey(dir / "devices" / (id + ".pub"));
    ASSERT_TRUE(key.ok());
    EXPECT_EQ(*key, batch[static_cast<std::size_t>(i)].key);
  }
  // The fleet's own users are kept.
  EXPECT_EQ(linesStartingWith(passwd, "coordinator:"), 1u);
  EXPECT_EQ(linesStartingWith(passwd, "observer:"), 1u);

  // Again with one new device: the enrolled ones keep their passwords.
  const std::string pw0 = test::readTextFile(dir / "devices" / "d-0.mqtt-password");
  batch.push_back({"d-new", KeyPair::generate().publicKey()});
  ASSERT_TRUE(tools::enrollDevices(dir, batch).ok());
  EXPECT_EQ(test::readTextFile(dir / "devices" / "d-0.mqtt-password"), pw0);
  const std::string after = test::readTextFile(dir / "broker" / "passwd");
  EXPECT_EQ(linesStartingWith(after, "d-0:"), 1u);
  EXPECT_EQ(linesStartingWith(after, "d-new:"), 1u);
}

TEST_F(EnrollBatchTest, OneBadEntryWritesNothing) {
  ASSERT_TRUE(tools::enrollDevice(dir, "taken", KeyPair::generate().publicKey()).ok());
  const std::string before = test::readTextFile(dir / "broker" / "passwd");

  std::vector<tools::DeviceToEnroll> clash{{"fresh-1", KeyPair::generate().publicKey()},
                                           {"taken", KeyPair::generate().publicKey()}};
  auto r = tools::enrollDevices(dir, clash);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Code::AlreadyExists);
  EXPECT_FALSE(fs::exists(dir / "devices" / "fresh-1.pub"));
  EXPECT_EQ(test::readTextFile(dir / "broker" / "passwd"), before);

  const PublicKey k = KeyPair::generate().publicKey();
  std::vector<tools::DeviceToEnroll> twice{{"dup", k}, {"dup", k}};
  auto d = tools::enrollDevices(dir, twice);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.code(), Code::InvalidArgument);

  std::vector<tools::DeviceToEnroll> reserved{{"ok-1", k}, {"coordinator", k}};
  auto c = tools::enrollDevices(dir, reserved);
  ASSERT_FALSE(c.ok());
  EXPECT_FALSE(fs::exists(dir / "devices" / "ok-1.pub"));

  std::vector<tools::DeviceToEnroll> badName{{"../x", k}};
  EXPECT_FALSE(tools::enrollDevices(dir, badName).ok());
  EXPECT_EQ(test::readTextFile(dir / "broker" / "passwd"), before);
}

}  // namespace
}  // namespace edgefl
