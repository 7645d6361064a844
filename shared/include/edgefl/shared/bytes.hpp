#pragma once
// Fixed-size byte types used by keys, digests and signatures, and hex text.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace edgefl {

inline constexpr std::size_t kPublicKeyBytes = 32;
inline constexpr std::size_t kSecretKeyBytes = 64;
inline constexpr std::size_t kSeedBytes = 32;
inline constexpr std::size_t kSignatureBytes = 64;
inline constexpr std::size_t kKeyIdBytes = 8;
inline constexpr std::size_t kDigestBytes = 32;

using ByteView = std::span<const std::uint8_t>;
using PublicKey = std::array<std::uint8_t, kPublicKeyBytes>;
using Signature = std::array<std::uint8_t, kSignatureBytes>;
using KeyId = std::array<std::uint8_t, kKeyIdBytes>;
using Digest = std::array<std::uint8_t, kDigestBytes>;

std::string toHex(ByteView bytes);
// Decodes exactly `out.size()` bytes of hex; nullopt-like false on any
// other length or a non-hex character.
[[nodiscard]] bool fromHex(std::string_view hex, std::span<std::uint8_t> out);

template <std::size_t N>
std::optional<std::array<std::uint8_t, N>> arrayFromHex(std::string_view hex) {
  std::array<std::uint8_t, N> out{};
  if (!fromHex(hex, out)) return std::nullopt;
  return out;
}

template <std::size_t N>
std::optional<std::array<std::uint8_t, N>> arrayFromBytes(ByteView bytes) {
  if (bytes.size() != N) return std::nullopt;
  std::array<std::uint8_t, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = bytes[i];
  return out;
}

// BLAKE2b-256 of `bytes`.
Digest blake2b256(ByteView bytes);

}  // namespace edgefl
