// A RoundTask payload, signed by the coordinator, verified and turned into
// a device's round plan (roundPlanFromWire: state, mode, base, fraction,
// training options, delta policy), then asked whether this device takes
// part. A plan that is accepted holds options the trainer accepts.

#include "edgefl/device/update_builder.hpp"
#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto msg =
      fuzz::signAndDecode<wire::RoundTask>(ByteView(data, size), fuzz::Sender::Coordinator);
  if (!msg.verified.ok()) return 0;
  auto plan = device::roundPlanFromWire(msg.verified->root());
  if (!plan.ok()) return 0;
  (void)device::selectedFor(*plan, fuzz::kDevice);
  Status training = checkTrainOptions(plan->training);
  EDGEFL_FUZZ_CHECK(training.ok(),
                    "accepted training options the trainer refuses: " +
                        (training.ok() ? std::string() : training.error().toString()));
  Status delta = validateDeltaOptions(plan->delta);
  EDGEFL_FUZZ_CHECK(delta.ok(), "accepted a delta policy that does not validate: " +
                                    (delta.ok() ? std::string() : delta.error().toString()));
  return 0;
}
