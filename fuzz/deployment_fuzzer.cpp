// A Deployment payload, signed by the coordinator with its delegation from
// the root, checked the way a device checks what arrives on its deploy
// topics (checkDeployment: chain to the root, fleet, channel, expiry,
// runtime, budget, the embedded model and its digest). An accepted
// deployment names the model it carries.

#include "edgefl/device/deployment_check.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;

void checkOn(const Bytes& envelope, device::Channel channel, bool checkExpiry) {
  static ModelCache cache;
  static const device::DeploymentVerifier verifier{fuzz::fleet().deviceRing, fuzz::kFleet,
                                                   DeviceLimits{}, cache};
  auto checked = device::checkDeployment(envelope, channel, fuzz::kNow, checkExpiry, verifier);
  if (!checked.ok()) return;
  EDGEFL_FUZZ_CHECK(checked->model != nullptr, "accepted a deployment without a model");
  EDGEFL_FUZZ_CHECK(checked->model->parameterDigest == checked->digest,
                    "accepted a deployment whose model digest differs");
  EDGEFL_FUZZ_CHECK(checked->channel == channel, "accepted a deployment on another channel");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto msg =
      fuzz::signAndDecode<wire::Deployment>(ByteView(data, size), fuzz::Sender::Coordinator);
  if (!msg.parsed.ok()) return 0;
  checkOn(msg.envelope, msg.parsed->root().getChannel(), true);
  checkOn(msg.envelope, device::Channel::STABLE, false);
  return 0;
}
