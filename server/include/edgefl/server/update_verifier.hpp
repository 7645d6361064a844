#pragma once
// Verification of one incoming update: the checks that need no shared
// state beyond the round being verified against, so several threads can
// run them at once. Duplicates and round capacity are decided afterwards,
// serially, by the coordinator against its registry.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "edgefl/shared/envelope.hpp"

namespace edgefl::server {

// What an update is verified against: the open round and its base model.
struct RoundContext {
  std::uint64_t round = 0;  // 0: no round open
  std::uint64_t baseVersion = 0;
  Digest baseDigest{};
  std::vector<std::uint32_t> tensorSizes;  // the base model's layout
  // Asynchronous rounds also take updates trained on earlier stable models:
  // olderBases[i] is i + 1 models behind (its staleness).
  std::vector<Digest> olderBases;
  // Asynchronous rounds are buffers: an update answering an earlier buffer's
  // task (from firstRound on) joins the open one.
  bool asynchronous = false;
  std::uint64_t firstRound = 0;
  // Selection: listed devices, or hash(salt, round, id) < fraction when the
  // list is empty.
  std::unordered_set<std::string> selected;
  float fraction = 1.0f;
  std::uint64_t selectionSalt = 0;
};

struct VerifierOptions {
  std::string fleet;
  DecodeLimits limits;
  // Largest delta L2 norm accepted. A norm bomb is rejected before it can
  // reach any aggregate, whatever the strategy.
  double maxUpdateNorm = 100.0;
  // A device claiming more samples than this is lying or misconfigured;
  // sample counts weight FedAvg, so an unbounded claim is an attack.
  std::uint32_t maxSampleCount = 1'000'000;
  bool enforceSelection = true;
};

// The verdict on one message, with what the coordinator needs to record it.
struct Verdict {
  Code code = Code::Ok;  // Ok = accepted so far
  std::string detail;
  std::string deviceId;            // from the topic (who the broker says sent it)
  std::uint64_t round = 0;         // the round it is recorded under
  std::uint64_t claimedRound = 0;  // Update.round (differs in asynchronous buffers)
  std::uint32_t sampleCount = 0;
  std::uint32_t staleness = 0;  // stable models between its base and the round's
  double norm = 0;
  Digest digest{};  // BLAKE2b-256 of the Update payload (of the raw bytes when no envelope parses)
  std::vector<float> delta;  // decoded, for accepted updates
  float lossBefore = 0, lossAfter = 0, accuracyBefore = 0, accuracyAfter = 0;

  bool accepted() const { return code == Code::Ok; }
};

// The fleet's device keys: enrolled (by device id) and revoked. Replaced as
// a whole when enrollment changes, so verifiers read a consistent snapshot.
struct DeviceKeys {
  Keyring enrolled;  // Role::DEVICE, subject = device id
  std::unordered_set<KeyId, KeyIdHash> revoked;
};

class UpdateVerifier {
 public:
  explicit UpdateVerifier(VerifierOptions options);

  void setKeys(std::shared_ptr<const DeviceKeys> keys);
  std::shared_ptr<const DeviceKeys> keys() const;

  // Checks, in order, each failure with its code: the topic names a device
  // update (BadTopic); envelope framing and limits (decoder codes); a
  // revoked signer (Revoked); signature by an enrolled device key
  // (UnknownKey, BadSignature, RoleNotAllowed, ...); the key, the topic and
  // Update.deviceId name the same device (Impersonation); the fleet
  // (WrongFleet); the round is the open one (RoundClosed); the device was
  // selected (NotSelected); base digest (BaseMismatch); sample count
  // (BadField); the delta's layout and values (ShapeMismatch, BadField,
  // NonFinite); its norm (NormTooLarge).
  Verdict verify(std::string_view topic, ByteView payload, const RoundContext& round) const;

  const VerifierOptions& options() const { return options_; }

 private:
  VerifierOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<const DeviceKeys> keys_;
};

}  // namespace edgefl::server
