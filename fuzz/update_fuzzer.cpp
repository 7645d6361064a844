// An Update payload from a device, signed with the enrolled device's key
// and verified the way the coordinator's ingest does (UpdateVerifier: topic,
// envelope, signer, fleet, round, selection, base, sample count, delta
// layout and values, norm), against a synchronous and an asynchronous
// round. An accepted update carries a finite delta of the round's layout.

#include <cmath>

#include "edgefl/server/update_verifier.hpp"
#include "edgefl/shared/topics.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;
using server::RoundContext;
using server::UpdateVerifier;

server::VerifierOptions verifierOptions() {
  server::VerifierOptions options;
  options.fleet = fuzz::kFleet;
  return options;
}

const UpdateVerifier& verifier() {
  static UpdateVerifier v(verifierOptions());
  static const bool keyed = [] {
    auto keys = std::make_shared<server::DeviceKeys>();
    keys->enrolled = fuzz::fleet().serverRing;
    v.setKeys(keys);
    return true;
  }();
  (void)keyed;
  return v;
}

RoundContext roundContext(bool asynchronous) {
  RoundContext round;
  round.round = fuzz::kRound;
  round.baseVersion = fuzz::kBaseVersion;
  round.baseDigest.fill(fuzz::kBaseDigestByte);
  round.tensorSizes = {4, 2};
  round.asynchronous = asynchronous;
  if (asynchronous) {
    round.firstRound = fuzz::kRound - 2;
    round.olderBases.push_back(Digest{});
  } else {
    round.selected.insert(fuzz::kDevice);
  }
  return round;
}

void verifyOn(const Bytes& envelope, bool asynchronous) {
  static const std::string topic = deviceTopic(fuzz::kFleet, fuzz::kDevice, "update");
  const RoundContext round = roundContext(asynchronous);
  auto verdict = verifier().verify(topic, envelope, round);
  if (!verdict.accepted()) return;
  EDGEFL_FUZZ_CHECK(verdict.delta.size() == 6, "accepted delta of " +
                                                   std::to_string(verdict.delta.size()) +
                                                   " values for a 6-parameter model");
  for (float v : verdict.delta) EDGEFL_FUZZ_CHECK(std::isfinite(v), "accepted a non-finite delta");
  EDGEFL_FUZZ_CHECK(
      std::isfinite(verdict.norm) && verdict.norm <= verifier().options().maxUpdateNorm,
      "accepted norm " + std::to_string(verdict.norm));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto msg = fuzz::signAndDecode<wire::Update>(ByteView(data, size), fuzz::Sender::Device);
  verifyOn(msg.envelope, false);
  verifyOn(msg.envelope, true);
  return 0;
}
