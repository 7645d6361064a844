#pragma once
// Ed25519 key pairs and key files.
//
// Key files are one line of text: "edgefl-ed25519-public <64 hex>" for
// PREFIX.pub and "edgefl-ed25519-secret <128 hex>" for PREFIX.key. The
// secret file is created with mode 0600 and refused when group or others
// can read it. Secret keys live in sodium_malloc memory (guard pages,
// locked, wiped on free) and never pass through ordinary heap buffers.

#include <filesystem>
#include <memory>

#include "edgefl/shared/bytes.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl {

// Key id = first 8 bytes of BLAKE2b-256(public key).
KeyId keyIdOf(const PublicKey& publicKey);

class KeyPair {
 public:
  static KeyPair generate();
  // Deterministic key pair from a 32-byte seed (tests, known answers).
  static KeyPair fromSeed(std::span<const std::uint8_t, kSeedBytes> seed);
  // Loads a secret key file; fails with BadKeyFile (format, permissions) or
  // IoError.
  static Result<KeyPair> load(const std::filesystem::path& keyFile);

  KeyPair(KeyPair&&) noexcept;
  KeyPair& operator=(KeyPair&&) noexcept;
  ~KeyPair();

  // Writes PREFIX.pub and PREFIX.key; AlreadyExists if either exists.
  Status save(const std::filesystem::path& prefix) const;

  const PublicKey& publicKey() const { return publicKey_; }
  KeyId keyId() const { return keyIdOf(publicKey_); }

  // Ed25519 signature over `message` (the callers sign 32-byte digests).
  Signature sign(ByteView message) const;

 private:
  KeyPair();
  PublicKey publicKey_{};
  std::uint8_t* secret_ = nullptr;  // kSecretKeyBytes in sodium_malloc memory
};

Result<PublicKey> loadPublicKey(const std::filesystem::path& file);
Status savePublicKey(const std::filesystem::path& file, const PublicKey& key);
std::string publicKeyText(const PublicKey& key);

}  // namespace edgefl
