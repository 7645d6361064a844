// A KeyDelegation payload, signed by the fleet root, checked on its own
// (verifyDelegation: fleet, subject key, role, validity window) and as the
// chain that authorizes a coordinator-signed RoundTask for a device that
// trusts only the root. A chain verifies only through a delegation that
// verifies, and the signer gets exactly the delegated key and role.

#include <capnp/message.h>

#include "edgefl/shared/signing.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace edgefl;

const Bytes& roundTaskPayload() {
  static const Bytes payload = [] {
    capnp::MallocMessageBuilder builder;
    auto task = builder.initRoot<wire::RoundTask>();
    task.setFleet(fuzz::kFleet);
    task.setRound(fuzz::kRound);
    return toBytes(builder);
  }();
  return payload;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const fuzz::Fleet& f = fuzz::fleet();
  const Bytes delegation = seal(Kind::KEY_DELEGATION, ByteView(data, size), f.root);
  auto delegated = verifyDelegation(delegation, f.deviceRing, f.options);

  const Bytes envelope = seal(Kind::ROUND_TASK, roundTaskPayload(), f.coordinator, delegation);
  auto chained = decodeVerified<wire::RoundTask>(envelope, f.deviceRing, f.options);
  if (!chained.ok()) return 0;
  EDGEFL_FUZZ_CHECK(delegated.ok(),
                    "a chain verified through a delegation that does not: " +
                        (delegated.ok() ? std::string() : delegated.error().toString()));
  EDGEFL_FUZZ_CHECK(chained->signer.key == f.coordinator.publicKey() &&
                        delegated->key == f.coordinator.publicKey(),
                    "the chain authorized another key than the delegation names");
  EDGEFL_FUZZ_CHECK(chained->signer.role == delegated->role &&
                        roleMaySign(chained->signer.role, Kind::ROUND_TASK),
                    "the chain gave role " + std::string(roleName(chained->signer.role)));
  return 0;
}
