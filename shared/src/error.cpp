#include "edgefl/shared/error.hpp"

namespace edgefl {

std::string_view codeName(Code code) {
  switch (code) {
    case Code::Ok: return "Ok";
    case Code::Empty: return "Empty";
    case Code::Truncated: return "Truncated";
    case Code::TooLarge: return "TooLarge";
    case Code::NotCapnp: return "NotCapnp";
    case Code::TooDeep: return "TooDeep";
    case Code::TraversalLimit: return "TraversalLimit";
    case Code::MissingField: return "MissingField";
    case Code::BadField: return "BadField";
    case Code::WrongKind: return "WrongKind";
    case Code::UnknownKey: return "UnknownKey";
    case Code::KeyIdMismatch: return "KeyIdMismatch";
    case Code::BadSignature: return "BadSignature";
    case Code::RoleNotAllowed: return "RoleNotAllowed";
    case Code::DelegationInvalid: return "DelegationInvalid";
    case Code::Expired: return "Expired";
    case Code::NotYetValid: return "NotYetValid";
    case Code::WrongFleet: return "WrongFleet";
    case Code::IoError: return "IoError";
    case Code::BadKeyFile: return "BadKeyFile";
    case Code::BadConfig: return "BadConfig";
    case Code::InvalidArgument: return "InvalidArgument";
    case Code::AlreadyExists: return "AlreadyExists";
    case Code::NotFound: return "NotFound";
    case Code::BadModel: return "BadModel";
    case Code::BadArch: return "BadArch";
    case Code::BadDataset: return "BadDataset";
    case Code::ShapeMismatch: return "ShapeMismatch";
    case Code::NonFinite: return "NonFinite";
    case Code::OutOfRange: return "OutOfRange";
    case Code::NormTooLarge: return "NormTooLarge";
    case Code::Unsupported: return "Unsupported";
    case Code::BadTopic: return "BadTopic";
    case Code::Revoked: return "Revoked";
    case Code::Impersonation: return "Impersonation";
    case Code::RoundClosed: return "RoundClosed";
    case Code::BaseMismatch: return "BaseMismatch";
    case Code::NotSelected: return "NotSelected";
    case Code::Duplicate: return "Duplicate";
    case Code::Overloaded: return "Overloaded";
    case Code::RateLimited: return "RateLimited";
  }
  return "Unknown";
}

std::string Error::toString() const {
  std::string out(codeName(code));
  if (!detail.empty()) {
    out += ": ";
    out += detail;
  }
  return out;
}

}  // namespace edgefl
