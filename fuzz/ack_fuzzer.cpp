// An Ack payload, signed by the coordinator and verified by a device that
// trusts only the fleet root (the delegation chain is checked on every
// input), then read as the device records it.

#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto msg = fuzz::signAndDecode<wire::Ack>(ByteView(data, size), fuzz::Sender::Coordinator);
  if (!msg.verified.ok()) return 0;
  EDGEFL_FUZZ_CHECK(msg.verified->signer.delegated, "an ack verified without the delegation");
  auto ack = msg.verified->root();
  const std::string record = std::string(ack.getFleet()) + "/" + std::string(ack.getDeviceId()) +
                             " " + std::to_string(ack.getRound()) + " " +
                             std::to_string(static_cast<int>(ack.getVerdict())) + " " +
                             std::string(ack.getReason()) + " " + std::string(ack.getDetail());
  (void)record;
  (void)fuzz::view(ack.getUpdateDigest());
  return 0;
}
