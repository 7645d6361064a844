#include "edgefl/shared/keys.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace edgefl {
namespace {

constexpr std::string_view kPublicHeader = "edgefl-ed25519-public ";
constexpr std::string_view kSecretHeader = "edgefl-ed25519-secret ";
// Header + hex + newline; anything longer is not a key file.
constexpr std::size_t kMaxKeyFileBytes = 512;

void initSodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialize");
}

std::uint8_t* allocSecret() {
  initSodium();
  auto* p = static_cast<std::uint8_t*>(sodium_malloc(kSecretKeyBytes));
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

std::string errnoText(const std::filesystem::path& path, std::string_view what) {
  return std::string(what) + " " + path.string() + ": " + std::strerror(errno);
}

// Writes `size` bytes to a new file created with `mode`; fails if it exists.
Status writeNewFile(const std::filesystem::path& path, const char* data, std::size_t size,
                    mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    return makeError(errno == EEXIST ? Code::AlreadyExists : Code::IoError,
                     errnoText(path, "cannot create"));
  }
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Error e = makeError(Code::IoError, errnoText(path, "cannot write"));
      ::close(fd);
      return e;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    return makeError(Code::IoError, errnoText(path, "cannot sync"));
  return {};
}

}  // namespace

KeyId keyIdOf(const PublicKey& publicKey) {
  Digest d = blake2b256(publicKey);
  KeyId id{};
  std::memcpy(id.data(), d.data(), id.size());
  return id;
}

KeyPair::KeyPair() : secret_(allocSecret()) {}

KeyPair::KeyPair(KeyPair&& other) noexcept
    : publicKey_(other.publicKey_), secret_(std::exchange(other.secret_, nullptr)) {}

KeyPair& KeyPair::operator=(KeyPair&& other) noexcept {
  if (this != &other) {
    if (secret_ != nullptr) sodium_free(secret_);
    publicKey_ = other.publicKey_;
    secret_ = std::exchange(other.secret_, nullptr);
  }
  return *this;
}

KeyPair::~KeyPair() {
  if (secret_ != nullptr) sodium_free(secret_);  // wipes before freeing
}

KeyPair KeyPair::generate() {
  KeyPair kp;
  crypto_sign_keypair(kp.publicKey_.data(), kp.secret_);
  return kp;
}

KeyPair KeyPair::fromSeed(std::span<const std::uint8_t, kSeedBytes> seed) {
  KeyPair kp;
  crypto_sign_seed_keypair(kp.publicKey_.data(), kp.secret_, seed.data());
  return kp;
}

Signature KeyPair::sign(ByteView message) const {
  Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_);
  return sig;
}

Result<KeyPair> KeyPair::load(const std::filesystem::path& keyFile) {
  int fd = ::open(keyFile.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return makeError(Code::IoError, errnoText(keyFile, "cannot open"));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return makeError(Code::IoError, errnoText(keyFile, "cannot stat"));
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return makeError(Code::BadKeyFile,
                     keyFile.string() + ": permissions " + mode + " are too open; expected 0600");
  }
  // Read into guarded memory so the secret's hex never sits in the heap.
  initSodium();
  auto* text = static_cast<char*>(sodium_malloc(kMaxKeyFileBytes + 1));
  if (text == nullptr) {
    ::close(fd);
    throw std::bad_alloc();
  }
  std::size_t size = 0;
  while (size <= kMaxKeyFileBytes) {
    ssize_t n = ::read(fd, text + size, kMaxKeyFileBytes + 1 - size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size += static_cast<std::size_t>(n);
  }
  ::close(fd);
  auto fail = [&](std::string why) -> Result<KeyPair> {
    sodium_free(text);
    return makeError(Code::BadKeyFile, keyFile.string() + ": " + why);
  };
  if (size > kMaxKeyFileBytes) return fail("larger than a key file");
  std::string_view view(text, size);
  if (view.substr(0, kSecretHeader.size()) != kSecretHeader) {
    return fail("expected a line starting with 'edgefl-ed25519-secret '");
  }
  view.remove_prefix(kSecretHeader.size());
  while (!view.empty() && (view.back() == '\n' || view.back() == '\r')) view.remove_suffix(1);
  KeyPair kp;
  if (!fromHex(view, std::span<std::uint8_t>(kp.secret_, kSecretKeyBytes))) {
    return fail("expected 128 hex digits after the header");
  }
  sodium_free(text);
  // The Ed25519 secret key embeds its public key; derive it and check it.
  std::memcpy(kp.publicKey_.data(), kp.secret_ + 32, kPublicKeyBytes);
  std::uint8_t seed[kSeedBytes];
  crypto_sign_ed25519_sk_to_seed(seed, kp.secret_);
  PublicKey derived{};
  std::uint8_t* check = allocSecret();
  crypto_sign_seed_keypair(derived.data(), check, seed);
  sodium_memzero(seed, sizeof seed);
  sodium_free(check);
  if (derived != kp.publicKey_) {
    return makeError(Code::BadKeyFile, keyFile.string() + ": public half does not match the seed");
  }
  return kp;
}

Status KeyPair::save(const std::filesystem::path& prefix) const {
  std::filesystem::path pub = prefix;
  pub += ".pub";
  std::filesystem::path key = prefix;
  key += ".key";
  std::error_code ec;
  if (std::filesystem::exists(pub, ec) || std::filesystem::exists(key, ec)) {
    return makeError(Code::AlreadyExists, prefix.string() + ".pub or .key already exists");
  }
  // Secret first, 0600 from creation (no window with wider permissions).
  const std::size_t len = kSecretHeader.size() + 2 * kSecretKeyBytes + 1;
  auto* text = static_cast<char*>(sodium_malloc(len + 1));
  if (text == nullptr) throw std::bad_alloc();
  std::memcpy(text, kSecretHeader.data(), kSecretHeader.size());
  sodium_bin2hex(text + kSecretHeader.size(), 2 * kSecretKeyBytes + 1, secret_, kSecretKeyBytes);
  text[len - 1] = '\n';
  Status st = writeNewFile(key, text, len, 0600);
  sodium_free(text);
  if (!st.ok()) return st;
  return savePublicKey(pub, publicKey_);
}

std::string publicKeyText(const PublicKey& key) {
  return std::string(kPublicHeader) + toHex(key) + "\n";
}

Status savePublicKey(const std::filesystem::path& file, const PublicKey& key) {
  std::string text = publicKeyText(key);
  return writeNewFile(file, text.data(), text.size(), 0644);
}

Result<PublicKey> loadPublicKey(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return makeError(Code::IoError, errnoText(file, "cannot open"));
  std::string text(kMaxKeyFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxKeyFileBytes) {
    return makeError(Code::BadKeyFile, file.string() + ": larger than a key file");
  }
  std::string_view view(text);
  if (view.substr(0, kPublicHeader.size()) != kPublicHeader) {
    return makeError(Code::BadKeyFile,
                     file.string() + ": expected a line starting with 'edgefl-ed25519-public '");
  }
  view.remove_prefix(kPublicHeader.size());
  while (!view.empty() && (view.back() == '\n' || view.back() == '\r')) view.remove_suffix(1);
  auto key = arrayFromHex<kPublicKeyBytes>(view);
  if (!key) return makeError(Code::BadKeyFile, file.string() + ": expected 64 hex digits");
  return *key;
}

}  // namespace edgefl
