#include "edgefl/shared/selection.hpp"

#include <sodium.h>

#include <cstring>

namespace edgefl {

double membershipScore(std::string_view domain, std::uint64_t salt, std::uint64_t round,
                       std::string_view deviceId) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  const std::uint8_t sep = 0;
  crypto_generichash_update(&st, reinterpret_cast<const std::uint8_t*>(domain.data()),
                            domain.size());
  crypto_generichash_update(&st, &sep, 1);
  std::uint8_t le[16];
  for (int i = 0; i < 8; ++i) {
    le[i] = static_cast<std::uint8_t>(salt >> (8 * i));
    le[8 + i] = static_cast<std::uint8_t>(round >> (8 * i));
  }
  crypto_generichash_update(&st, le, sizeof le);
  crypto_generichash_update(&st, reinterpret_cast<const std::uint8_t*>(deviceId.data()),
                            deviceId.size());
  std::uint8_t out[32];
  crypto_generichash_final(&st, out, sizeof out);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | out[i];
  // Top 53 bits -> a double in [0, 1) without rounding up to 1.
  return static_cast<double>(v >> 11) * 0x1.0p-53;
}

bool selectedByFraction(std::uint64_t salt, std::uint64_t round, float fraction,
                        std::string_view deviceId) {
  if (!(fraction > 0)) return false;
  if (fraction >= 1) return true;
  return membershipScore("edgefl/v1/select", salt, round, deviceId) < fraction;
}

bool inCanary(std::uint64_t salt, float percent, std::string_view deviceId) {
  if (!(percent > 0)) return false;
  if (percent >= 100) return true;
  return membershipScore("edgefl/v1/canary", salt, 0, deviceId) < percent / 100.0;
}

}  // namespace edgefl
