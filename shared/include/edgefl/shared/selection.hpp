#pragma once
// Deterministic membership decisions that devices and the coordinator must
// agree on without talking: round selection by fraction and canary
// membership by percentage. Both hash the device id with BLAKE2b, so they
// are uniform, independent per salt and round, and not steerable by a
// device (its id is bound to its enrolled key).

#include <cstdint>
#include <string_view>

namespace edgefl {

// A number in [0, 1) from BLAKE2b-256(domain || salt || round || deviceId).
double membershipScore(std::string_view domain, std::uint64_t salt, std::uint64_t round,
                       std::string_view deviceId);

// Selected for `round` when score < fraction (fraction >= 1 selects all).
bool selectedByFraction(std::uint64_t salt, std::uint64_t round, float fraction,
                        std::string_view deviceId);

// In the canary group when score < percent / 100. The same salt keeps the
// same devices in the canary across deployments of one rollout.
bool inCanary(std::uint64_t salt, float percent, std::string_view deviceId);

}  // namespace edgefl
