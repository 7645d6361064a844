#include "fuzz_support.hpp"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <fstream>
#include <system_error>

#include "edgefl/shared/signing.hpp"

namespace edgefl::fuzz {
namespace {

Fleet makeFleet() {
  Fleet f{fixedKey(1), fixedKey(3), fixedKey(2), {}, {}, {}, {}};
  DelegationSpec spec;
  spec.fleet = kFleet;
  spec.subjectKey = f.coordinator.publicKey();
  spec.role = Role::COORDINATOR;
  spec.notBefore = kNow - 3600;
  spec.notAfter = kNow + 3600;
  spec.issuedAt = kNow - 3600;
  f.coordinatorDelegation = issueDelegation(f.root, spec);
  f.deviceRing.add(f.root.publicKey(), Role::ROOT, "root");
  f.serverRing.add(f.device.publicKey(), Role::DEVICE, kDevice);
  f.options.fleet = kFleet;
  f.options.now = kNow;
  return f;
}

// Removes the scratch directory when the process exits normally; after a
// crash the directory is left for the input's reproduction.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    // Memory-backed when the system has it: targets rewrite these files
    // on every input, and a disk under load makes that the bottleneck.
    const bool shm = std::getenv("TMPDIR") == nullptr && std::filesystem::is_directory("/dev/shm");
    path = (shm ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path()) /
           ("edgefl-fuzz-" + std::to_string(static_cast<long>(::getpid())));
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace

KeyPair fixedKey(std::uint8_t base) {
  std::array<std::uint8_t, kSeedBytes> seed{};
  for (std::size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<std::uint8_t>(base + i);
  return KeyPair::fromSeed(seed);
}

const Fleet& fleet() {
  static const Fleet f = makeFleet();
  return f;
}

Bytes sealByDevice(Kind kind, ByteView payload) {
  return seal(kind, payload, fleet().device);
}

Bytes sealByCoordinator(Kind kind, ByteView payload) {
  return seal(kind, payload, fleet().coordinator, fleet().coordinatorDelegation);
}

void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::uint8_t InputReader::u8() {
  ByteView b = take(1);
  return b.empty() ? 0 : b[0];
}

std::uint16_t InputReader::u16() {
  const std::uint16_t lo = u8();
  const std::uint16_t hi = u8();
  return static_cast<std::uint16_t>(lo | hi << 8);
}

ByteView InputReader::take(std::size_t n) {
  n = std::min(n, rest_.size());
  ByteView out = rest_.first(n);
  rest_ = rest_.subspan(n);
  return out;
}

std::filesystem::path scratchFile(std::string_view name, ByteView contents) {
  static const ScratchDir dir;
  std::filesystem::path path = dir.path / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(contents.data()),
            static_cast<std::streamsize>(contents.size()));
  EDGEFL_FUZZ_CHECK(out.good(), "cannot write scratch file " + path.string());
  return path;
}

}  // namespace edgefl::fuzz
