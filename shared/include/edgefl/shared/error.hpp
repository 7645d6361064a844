#pragma once
// Error codes for input that comes from outside the process. Every code has
// a stable name (codeName) that is recorded in logs, registries and Acks, so
// names never change once released; new codes are appended.

#include <cstdint>
#include <string>
#include <string_view>

namespace edgefl {

enum class Code : std::uint16_t {
  Ok = 0,
  // Decoding untrusted bytes
  Empty,           // zero-length input
  Truncated,       // shorter than its own framing says
  TooLarge,        // over a configured size limit
  NotCapnp,        // not a well-formed Cap'n Proto message
  TooDeep,         // over the nesting limit
  TraversalLimit,  // over the traversal (amplification) limit
  MissingField,    // a required field is absent or empty
  BadField,        // a field has an invalid value
  WrongKind,       // a different message kind than expected
  // Keys and signatures
  UnknownKey,      // signer is not in the keyring and no valid delegation
  KeyIdMismatch,   // key id does not match the key
  BadSignature,    // signature does not verify
  RoleNotAllowed,  // the signer's role may not sign this kind
  DelegationInvalid,
  Expired,  // outside a validity window
  NotYetValid,
  WrongFleet,
  // Files and configuration
  IoError,
  BadKeyFile,
  BadConfig,
  InvalidArgument,
  AlreadyExists,
  NotFound,
  // Models, data and updates
  BadModel,       // a model message or file that cannot be prepared
  BadArch,        // an architecture spec that cannot be parsed
  BadDataset,     // a dataset file that cannot be read
  ShapeMismatch,  // tensor or feature counts differ from what is expected
  NonFinite,      // NaN or infinity where finite values are required
  OutOfRange,     // a value outside its valid range
  NormTooLarge,   // an update's L2 norm over the bound
  Unsupported,    // a valid but unsupported option or encoding
  // Federated rounds (verdicts on updates)
  BadTopic,       // a message on a topic outside the fleet's scheme
  Revoked,        // signed by a key that was revoked
  Impersonation,  // the key, the topic and the message name different devices
  RoundClosed,    // for a round that is not open (closed, unknown or future)
  BaseMismatch,   // trained from a different base model than the round's
  NotSelected,    // the device was not selected for the round
  Duplicate,      // already received for this (round, device)
  Overloaded,     // the ingest queue was full; the device should retry
  RateLimited,    // the device sent more than its share
};

std::string_view codeName(Code code);

// The reason travels with the rejection: a code for machines and a detail
// with the offending values for people.
struct Error {
  Code code = Code::Ok;
  std::string detail;

  std::string toString() const;
};

}  // namespace edgefl
