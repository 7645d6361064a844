// A model delta as a device encodes it (wire::Delta), decoded the way the
// coordinator does: against a fixed layout, and against the layout the
// message itself claims so that shape checks pass and the value checks are
// reached. A delta that decodes must hold only finite values, and a
// float32 delta must survive encoding and decoding unchanged.

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/envelope.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;

// Largest layout taken from a message: decodeDelta writes every element,
// and a claimed size needs no bytes behind it.
constexpr std::uint64_t kMaxClaimedElements = 1u << 20;

Status decodeInto(wire::Delta::Reader delta, const std::vector<std::uint32_t>& sizes,
                  std::vector<float>& out) {
  out.assign(totalElements(sizes), 0.0f);
  Status s = decodeDelta(delta, sizes, out);
  if (s.ok()) {
    for (float v : out) EDGEFL_FUZZ_CHECK(std::isfinite(v), "decodeDelta returned a non-finite");
  }
  return s;
}

void checkFloat32RoundTrip(const std::vector<std::uint32_t>& sizes,
                           const std::vector<float>& decoded) {
  std::vector<float> scratch = decoded;
  std::mt19937_64 rng(1);
  auto bytes = encodeDeltaMessage(scratch, sizes, DeltaOptions{}, {}, rng);
  EDGEFL_FUZZ_CHECK(bytes.ok(), "a decoded delta does not encode: " +
                                    (bytes.ok() ? std::string() : bytes.error().toString()));
  auto parsed = parseMessage<wire::Delta>(*bytes);
  EDGEFL_FUZZ_CHECK(parsed.ok(), "an encoded delta does not parse");
  std::vector<float> again;
  Status s = decodeInto(parsed->root(), sizes, again);
  EDGEFL_FUZZ_CHECK(s.ok(), "an encoded delta does not decode: " +
                                (s.ok() ? std::string() : s.error().toString()));
  EDGEFL_FUZZ_CHECK(again.size() == decoded.size() &&
                        (decoded.empty() || std::memcmp(again.data(), decoded.data(),
                                                        decoded.size() * sizeof(float)) == 0),
                    "float32 round trip changed a value");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto parsed = parseMessage<wire::Delta>(ByteView(data, size));
  if (!parsed.ok()) return 0;
  auto delta = parsed->root();
  std::vector<float> out;

  (void)decodeInto(delta, {4, 2}, out);

  std::vector<std::uint32_t> claimed;
  std::uint64_t total = 0;
  for (auto t : delta.getTensors()) {
    claimed.push_back(t.getElementCount());
    total += t.getElementCount();
  }
  if (total > kMaxClaimedElements) return 0;
  if (decodeInto(delta, claimed, out).ok() && delta.getEncoding() == DeltaEncoding::FLOAT32) {
    checkFloat32RoundTrip(claimed, out);
  }
  return 0;
}
