#include "edgefl/server/update_verifier.hpp"

#include <algorithm>
#include <cmath>

#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/selection.hpp"
#include "edgefl/shared/topics.hpp"

namespace edgefl::server {

UpdateVerifier::UpdateVerifier(VerifierOptions options)
    : options_(std::move(options)), keys_(std::make_shared<DeviceKeys>()) {}

void UpdateVerifier::setKeys(std::shared_ptr<const DeviceKeys> keys) {
  std::lock_guard lock(mu_);
  keys_ = std::move(keys);
}

std::shared_ptr<const DeviceKeys> UpdateVerifier::keys() const {
  std::lock_guard lock(mu_);
  return keys_;
}

Verdict UpdateVerifier::verify(std::string_view topic, ByteView payload,
                               const RoundContext& round) const {
  Verdict v;
  v.round = round.round;
  auto reject = [&](Code code, std::string detail) -> Verdict& {
    v.code = code;
    v.detail = std::move(detail);
    v.delta.clear();
    return v;
  };

  auto where = parseDeviceTopic(options_.fleet, topic);
  if (!where || where->leaf != "update") {
    std::string detail(1, '\'');  // built by appends: GCC 12 -Wrestrict misfires on "'" + s
    detail.append(topic).append("' is not a device update topic");
    v.digest = blake2b256(payload);
    return reject(Code::BadTopic, std::move(detail));
  }
  v.deviceId = where->deviceId;

  auto envelope = parseEnvelope(payload, options_.limits);
  if (!envelope.ok()) {
    v.digest = blake2b256(payload);  // no envelope: the raw bytes are all there is to name
    return reject(envelope.code(), envelope.error().detail);
  }
  // From here on the digest names the signed Update payload as the device
  // that built it does: signingDigest(UPDATE, payload), the hash the
  // signature covers, so a valid update is hashed once (the envelope around
  // it may be re-sealed and is not hashed).
  const auto signedPayload = envelope->root().getPayload();
  auto nameRejected = [&] {
    v.digest = signingDigest(Kind::UPDATE, ByteView(signedPayload.begin(), signedPayload.size()));
  };
  auto keys = this->keys();
  auto id = arrayFromBytes<kKeyIdBytes>(ByteView(envelope->root().getSignerKeyId().begin(),
                                                 envelope->root().getSignerKeyId().size()));
  if (id && keys->revoked.count(*id) > 0) {
    nameRejected();
    return reject(Code::Revoked, "signer key " + toHex(*id) + " was revoked");
  }
  VerifyOptions vo;
  vo.limits = options_.limits;
  vo.fleet = options_.fleet;
  auto signer = verifyEnvelope(envelope->root(), Kind::UPDATE, keys->enrolled, vo);
  if (!signer.ok()) {
    nameRejected();
    return reject(signer.code(), signer.error().detail);
  }
  v.digest = signer->payloadDigest;
  auto inner = envelope->root().getPayload();
  auto parsed = parseMessage<wire::Update>(ByteView(inner.begin(), inner.size()), options_.limits);
  if (!parsed.ok()) return reject(parsed.code(), "update payload: " + parsed.error().detail);
  auto u = parsed->root();

  const std::string claimed = u.getDeviceId();
  if (signer->subject != v.deviceId || claimed != v.deviceId) {
    return reject(Code::Impersonation, "topic names '" + v.deviceId + "', key belongs to '" +
                                           signer->subject + "', update claims '" + claimed + "'");
  }
  if (std::string_view(u.getFleet().cStr()) != options_.fleet) {
    return reject(Code::WrongFleet, "update is for fleet '" + std::string(u.getFleet().cStr()) +
                                        "'; this is '" + options_.fleet + "'");
  }
  v.claimedRound = u.getRound();
  v.round = u.getRound();
  const bool inBuffer = round.asynchronous && round.round != 0 &&
                        u.getRound() >= round.firstRound && u.getRound() <= round.round;
  if (inBuffer) v.round = round.round;
  if (round.round == 0 || (u.getRound() != round.round && !inBuffer)) {
    return reject(Code::RoundClosed,
                  "update is for round " + std::to_string(u.getRound()) +
                      (round.round == 0 ? "; no round is open"
                                        : "; the open round is " + std::to_string(round.round)));
  }
  if (options_.enforceSelection) {
    const bool listed = !round.selected.empty() && round.selected.count(v.deviceId) > 0;
    const bool byFraction =
        round.selected.empty() &&
        selectedByFraction(round.selectionSalt, v.claimedRound, round.fraction, v.deviceId);
    if (!listed && !byFraction) {
      return reject(Code::NotSelected,
                    v.deviceId + " was not selected for round " + std::to_string(round.round));
    }
  }
  auto base = ByteView(u.getBaseDigest().begin(), u.getBaseDigest().size());
  auto sameAs = [&](const Digest& d) {
    return base.size() == kDigestBytes && std::equal(base.begin(), base.end(), d.begin());
  };
  if (!sameAs(round.baseDigest)) {
    auto older = std::find_if(round.olderBases.begin(), round.olderBases.end(), sameAs);
    if (older == round.olderBases.end()) {
      return reject(Code::BaseMismatch, "base digest " + toHex(base) + " is not the round's " +
                                            toHex(round.baseDigest));
    }
    v.staleness = static_cast<std::uint32_t>(older - round.olderBases.begin()) + 1;
  }
  v.sampleCount = u.getSampleCount();
  if (v.sampleCount == 0 || v.sampleCount > options_.maxSampleCount) {
    return reject(Code::BadField, "sampleCount " + std::to_string(v.sampleCount) +
                                      " is outside [1, " + std::to_string(options_.maxSampleCount) +
                                      "]");
  }
  std::uint64_t total = totalElements(round.tensorSizes);
  v.delta.assign(total, 0.0f);
  Status decoded = decodeDelta(u.getDelta(), round.tensorSizes, v.delta);
  if (!decoded.ok()) return reject(decoded.code(), decoded.error().detail);
  v.norm = l2Norm(v.delta);
  if (!std::isfinite(v.norm)) return reject(Code::NonFinite, "delta norm is not finite");
  if (v.norm > options_.maxUpdateNorm) {
    return reject(Code::NormTooLarge, "delta L2 norm " + std::to_string(v.norm) + " exceeds " +
                                          std::to_string(options_.maxUpdateNorm));
  }
  v.lossBefore = u.getLossBefore();
  v.lossAfter = u.getLossAfter();
  v.accuracyBefore = u.getAccuracyBefore();
  v.accuracyAfter = u.getAccuracyAfter();
  return v;
}

}  // namespace edgefl::server
