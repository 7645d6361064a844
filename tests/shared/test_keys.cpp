#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "edgefl/shared/keys.hpp"
#include "support/broker.hpp"
#include "support/golden.hpp"

namespace edgefl {
namespace {
namespace fs = std::filesystem;

TEST(Keys, SaveAndLoadRoundTripWithOwnerOnlySecret) {
  test::TempDir dir;
  KeyPair kp = KeyPair::generate();
  ASSERT_TRUE(kp.save(dir.path() / "dev").ok());

  struct stat st {};
  ASSERT_EQ(::stat((dir.path() / "dev.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto loaded = KeyPair::load(dir.path() / "dev.key");
  ASSERT_TRUE(loaded.ok()) << loaded.error().toString();
  EXPECT_EQ(loaded->publicKey(), kp.publicKey());
  auto pub = loadPublicKey(dir.path() / "dev.pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(*pub, kp.publicKey());
  // Same key, same signature: the loaded secret is the saved one.
  const std::uint8_t msg[] = {1, 2, 3};
  EXPECT_EQ(loaded->sign(msg), kp.sign(msg));
}

TEST(Keys, SaveRefusesToOverwrite) {
  test::TempDir dir;
  KeyPair kp = KeyPair::generate();
  ASSERT_TRUE(kp.save(dir.path() / "k").ok());
  Status again = KeyPair::generate().save(dir.path() / "k");
  EXPECT_EQ(again.code(), Code::AlreadyExists);
  EXPECT_EQ(KeyPair::load(dir.path() / "k.key")->publicKey(), kp.publicKey());
}

TEST(Keys, LoadRefusesSecretReadableByOthers) {
  test::TempDir dir;
  ASSERT_TRUE(KeyPair::generate().save(dir.path() / "k").ok());
  fs::permissions(dir.path() / "k.key", fs::perms::owner_read | fs::perms::group_read);
  auto loaded = KeyPair::load(dir.path() / "k.key");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.code(), Code::BadKeyFile);
  EXPECT_NE(loaded.error().detail.find("0440"), std::string::npos) << loaded.error().detail;
}

TEST(Keys, LoadRejectsMalformedFiles) {
  test::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text) {
    fs::path p = dir.path() / name;
    std::ofstream(p) << text;
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    return p;
  };
  EXPECT_EQ(KeyPair::load(write("a.key", "nonsense\n")).code(), Code::BadKeyFile);
  EXPECT_EQ(KeyPair::load(write("b.key", "edgefl-ed25519-secret abcd\n")).code(), Code::BadKeyFile);
  EXPECT_EQ(
      KeyPair::load(write("c.key", "edgefl-ed25519-secret " + std::string(128, 'z') + "\n")).code(),
      Code::BadKeyFile);
  // A secret whose embedded public half was tampered with.
  KeyPair kp = KeyPair::fromSeed(std::span<const std::uint8_t, 32>(test::fixedSeed(1).data(), 32));
  ASSERT_TRUE(kp.save(dir.path() / "d").ok());
  std::string text;
  std::getline(std::ifstream(dir.path() / "d.key"), text);
  text[text.size() - 1] = text[text.size() - 1] == '0' ? '1' : '0';
  EXPECT_EQ(KeyPair::load(write("e.key", text + "\n")).code(), Code::BadKeyFile);
  EXPECT_EQ(KeyPair::load(write("f.key", std::string(4096, 'x'))).code(), Code::BadKeyFile);
  EXPECT_EQ(KeyPair::load(dir.path() / "missing.key").code(), Code::IoError);
  EXPECT_EQ(loadPublicKey(write("g.pub", "edgefl-ed25519-public 12\n")).code(), Code::BadKeyFile);
}

TEST(Keys, KeyIdIsPrefixOfBlake2bOfPublicKey) {
  KeyPair kp = KeyPair::fromSeed(std::span<const std::uint8_t, 32>(test::fixedSeed(1).data(), 32));
  const Digest d = blake2b256(kp.publicKey());
  const KeyId id = kp.keyId();
  EXPECT_TRUE(std::equal(id.begin(), id.end(), d.begin()));
  KeyPair other =
      KeyPair::fromSeed(std::span<const std::uint8_t, 32>(test::fixedSeed(2).data(), 32));
  EXPECT_NE(kp.keyId(), other.keyId());
}

}  // namespace
}  // namespace edgefl
