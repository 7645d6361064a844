// A Telemetry payload, signed by the enrolled device and verified as the
// coordinator's control loop does, then read field by field as the
// rollout controller and triggers read it.

#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto msg = fuzz::signAndDecode<wire::Telemetry>(ByteView(data, size), fuzz::Sender::Device);
  if (!msg.verified.ok()) return 0;
  EDGEFL_FUZZ_CHECK(msg.verified->signer.subject == fuzz::kDevice,
                    "telemetry verified for '" + msg.verified->signer.subject + "'");
  auto t = msg.verified->root();
  std::uint64_t sum = t.getStorage().getNewSamples() + t.getLocal().getLabelled() +
                      t.getActiveVersion() + t.getHealth().getHealthCheckFailures() +
                      t.getShadow().getSamples();
  for (auto r : t.getRejected()) sum += r.getCount() + r.getReason().size();
  for (auto c : t.getLatencyCounts()) sum += c;
  (void)sum;
  return 0;
}
