#include "edgefl/device/deployment_check.hpp"

#include <cmath>

namespace edgefl::device {
namespace {

std::string str(std::uint64_t v) {
  return std::to_string(v);
}

}  // namespace

Result<CheckedDeployment> checkDeployment(ByteView envelope, Channel expected, std::int64_t now,
                                          bool checkExpiry, const DeploymentVerifier& verifier) {
  VerifyOptions options;
  options.fleet = verifier.fleet;
  options.now = now;
  options.limits.maxBytes = verifier.limits.maxMessageBytes;
  options.delegations = verifier.delegations;
  auto verified = decodeVerified<wire::Deployment>(envelope, verifier.keyring, options);
  if (!verified.ok()) return verified.error();
  auto d = verified->root();

  CheckedDeployment out;
  const std::string fleet = d.getFleet();
  if (fleet != verifier.fleet) {
    return makeError(Code::WrongFleet, "deployment for fleet '" + fleet + "'; this device is in '" +
                                           verifier.fleet + "'");
  }
  out.sequence = d.getSequence();
  if (out.sequence == 0) return makeError(Code::BadField, "deployment sequence 0");
  out.channel = d.getChannel();
  if (out.channel != Channel::STABLE && out.channel != Channel::CANARY) {
    return makeError(Code::Unsupported,
                     "deployment channel " + str(static_cast<std::uint16_t>(out.channel)));
  }
  if (out.channel != expected) {
    return makeError(Code::BadTopic, "a " + std::string(channelName(out.channel)) +
                                         " deployment arrived on deploy/" +
                                         std::string(channelName(expected)));
  }
  out.mode = d.getMode();
  if (out.mode != DeployMode::ACTIVATE && out.mode != DeployMode::SHADOW) {
    return makeError(Code::Unsupported,
                     "deployment mode " + str(static_cast<std::uint16_t>(out.mode)));
  }
  out.percent = d.getPercent();
  if (!std::isfinite(out.percent) || out.percent < 0 || out.percent > 100) {
    return makeError(Code::BadField,
                     "deployment percent " + std::to_string(out.percent) + " outside [0, 100]");
  }
  out.salt = d.getRolloutSalt();
  out.expiresAt = d.getExpiresAt();
  if (checkExpiry && out.expiresAt != 0 && out.expiresAt <= now) {
    return makeError(Code::Expired, "deployment " + str(out.sequence) + " expired at " +
                                        std::to_string(out.expiresAt) + "; now " +
                                        std::to_string(now));
  }
  if (d.getMinRuntimeVersion() > kRuntimeVersion) {
    return makeError(Code::Unsupported, "deployment needs runtime version " +
                                            str(d.getMinRuntimeVersion()) + "; this runtime is " +
                                            str(kRuntimeVersion));
  }
  const std::uint64_t parameterCount = d.getParameterCount();
  const std::uint64_t modelBytes = d.getModelBytes();
  auto model = d.getModel();
  if (parameterCount > verifier.limits.maxModelParameters) {
    return makeError(Code::TooLarge, "model has " + str(parameterCount) +
                                         " parameters; this device takes up to " +
                                         str(verifier.limits.maxModelParameters));
  }
  if (model.size() > verifier.limits.maxModelBytes || modelBytes > verifier.limits.maxModelBytes) {
    return makeError(Code::TooLarge,
                     "model is " + str(std::max<std::uint64_t>(model.size(), modelBytes)) +
                         " bytes; this device takes up to " + str(verifier.limits.maxModelBytes));
  }
  if (model.size() != modelBytes) {
    return makeError(Code::BadField, "modelBytes says " + str(modelBytes) + "; the model is " +
                                         str(model.size()) + " bytes");
  }
  auto digest =
      arrayFromBytes<kDigestBytes>(ByteView(d.getModelDigest().begin(), d.getModelDigest().size()));
  if (!digest) {
    return makeError(Code::BadField,
                     "modelDigest has " + str(d.getModelDigest().size()) + " bytes; expected 32");
  }
  out.digest = *digest;

  DecodeLimits decode;
  decode.maxBytes = static_cast<std::size_t>(verifier.limits.maxModelBytes);
  ModelLimits limits;
  limits.maxParameters = verifier.limits.maxModelParameters;
  auto cached = verifier.cache.impl().get(verified->signer.payloadDigest,
                                          ByteView(model.begin(), model.size()), decode, limits);
  if (!cached.ok()) return cached.error();
  out.model = std::move(cached.value());
  const Model& m = out.model->model;
  if (m.parameterCount() != parameterCount) {
    return makeError(Code::BadField, "parameterCount says " + str(parameterCount) +
                                         "; the model has " + str(m.parameterCount()));
  }
  if (out.model->parameterDigest != out.digest) {
    return makeError(Code::BadModel, "modelDigest " + toHex(out.digest) +
                                         " is not the model's parameter digest " +
                                         toHex(out.model->parameterDigest));
  }
  out.modelVersion = d.getModelVersion();
  if (m.meta().version != 0 && m.meta().version != out.modelVersion) {
    return makeError(Code::BadField, "modelVersion says " + str(out.modelVersion) +
                                         "; the model's metadata says " + str(m.meta().version));
  }
  out.isRollback = d.getIsRollback();
  out.reason = d.getReason();
  return out;
}

}  // namespace edgefl::device
