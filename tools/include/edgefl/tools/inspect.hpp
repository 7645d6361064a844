#pragma once
// `edgefl inspect`: decode any signed message or model file into a tree of
// fields, verifying it when keys are given, and print it as text or JSON.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "edgefl/shared/envelope.hpp"

namespace edgefl::tools {

// A decoded value: scalars, text, or ordered objects and arrays.
struct Node {
  using Object = std::vector<std::pair<std::string, Node>>;
  using Array = std::vector<Node>;
  std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Object,
               Array>
      value;

  Node() = default;
  template <typename T>
  Node(T v) : value(std::move(v)) {}                          // NOLINT
  Node(const char* s) : value(std::string(s)) {}              // NOLINT
  Node(int v) : value(static_cast<std::int64_t>(v)) {}        // NOLINT
  Node(unsigned v) : value(static_cast<std::uint64_t>(v)) {}  // NOLINT
};

std::string toJson(const Node& node);
std::string toText(const Node& node);

struct InspectResult {
  Node tree;
  bool verified = false;
  std::string reason;  // why verification failed or was not attempted
};

// Decodes `bytes`: a Signed envelope of any kind (payload, nested model and
// delegation decoded too) or a bare Model. Verifies against `keyring` when it
// is not empty. Fails only when the bytes are neither.
Result<InspectResult> inspectBytes(ByteView bytes, const Keyring& keyring,
                                   const VerifyOptions& options);

}  // namespace edgefl::tools
