#pragma once
// What the fuzz targets share: the fixed identities of the fleet they
// speak for, an invariant check that stops the run, a reader that splits
// one input into fields, and scratch files for readers that take a path.
//
// Every target is a libFuzzer entry point (LLVMFuzzerTestOneInput) with no
// context argument, so the fleet is built once per process on first use.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "edgefl/shared/envelope.hpp"
#include "edgefl/shared/keys.hpp"

namespace edgefl::fuzz {

inline constexpr const char* kFleet = "demo";
inline constexpr const char* kDevice = "dev-1";
// Unix seconds at which delegations are checked; seeds are valid then.
inline constexpr std::int64_t kNow = 1'750'000'000;
// The round the update target verifies against (seeds match it).
inline constexpr std::uint64_t kRound = 5;
inline constexpr std::uint64_t kBaseVersion = 3;
inline constexpr std::uint8_t kBaseDigestByte = 0xab;

// The keys of a small fleet: a root, a coordinator the root delegated to,
// and one enrolled device. Keys come from fixed seeds, so corpora stay
// valid across runs and machines.
struct Fleet {
  KeyPair root;
  KeyPair coordinator;
  KeyPair device;
  Bytes coordinatorDelegation;  // Signed(keyDelegation): root -> coordinator
  Keyring deviceRing;           // what devices trust: the root
  Keyring serverRing;           // what the coordinator trusts: the device
  VerifyOptions options;        // fleet kFleet, now kNow, default limits
};
const Fleet& fleet();

// KeyPair::fromSeed with byte i of the seed = base + i.
KeyPair fixedKey(std::uint8_t base);

// The bytes of a Data field.
inline ByteView view(capnp::Data::Reader data) {
  return ByteView(data.begin(), data.size());
}

// Signed envelopes as the fleet's senders make them.
Bytes sealByDevice(Kind kind, ByteView payload);
Bytes sealByCoordinator(Kind kind, ByteView payload);

// Who signs a payload: a device (verified against the enrolled device
// key) or the coordinator (verified through its delegation to the root).
enum class Sender { Device, Coordinator };

// A broken invariant is a finding: report it and abort so the fuzzer (or
// the standalone driver) keeps the input.
[[noreturn]] void fail(const char* file, int line, const std::string& what);
#define EDGEFL_FUZZ_CHECK(cond, what)                                         \
  do {                                                                        \
    if (!(cond)) ::edgefl::fuzz::fail(__FILE__, __LINE__, std::string(what)); \
  } while (false)

// A payload decoded on its own and, once signed, through decodeVerified.
template <typename T>
struct SignedCase {
  Result<Parsed<T>> parsed;
  Bytes envelope;
  Result<Verified<T>> verified;
};

// Signing never turns a payload that does not parse into a verified
// message, nor one that parses into a refusal: checked on every input.
template <typename T>
SignedCase<T> signAndDecode(ByteView payload, Sender sender) {
  const Fleet& f = fleet();
  auto parsed = parseMessage<T>(payload);
  Bytes envelope = sender == Sender::Device ? sealByDevice(kindOf<T>(), payload)
                                            : sealByCoordinator(kindOf<T>(), payload);
  auto verified = decodeVerified<T>(
      envelope, sender == Sender::Device ? f.serverRing : f.deviceRing, f.options);
  EDGEFL_FUZZ_CHECK(parsed.ok() == verified.ok(),
                    "a payload that " + std::string(parsed.ok() ? "parses" : "does not parse") +
                        " is " + (verified.ok() ? "verified" : "refused") + " once signed");
  return SignedCase<T>{std::move(parsed), std::move(envelope), std::move(verified)};
}

// Reads fields off the front of an input; past the end it yields zeros and
// empty views, so a target never has to check lengths.
class InputReader {
 public:
  explicit InputReader(ByteView input) : rest_(input) {}
  std::uint8_t u8();
  std::uint16_t u16();  // little-endian
  ByteView take(std::size_t n);
  ByteView rest() const { return rest_; }

 private:
  ByteView rest_;
};

// A private directory under the system temp dir, removed at exit, for
// readers that only take paths (IDX, CSV).
std::filesystem::path scratchFile(std::string_view name, ByteView contents);

}  // namespace edgefl::fuzz
