#pragma once
// Deterministic inputs for the benchmarks: every run and every binary sees
// the same values for the same seed.

#include <cstdint>
#include <random>
#include <vector>

namespace edgefl::bench {

// n draws of N(0, stddev^2), like a model delta after a few local steps.
inline std::vector<float> normalFloats(std::size_t n, float stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

// n pixel values uniform in [0, 255), like raw image input.
inline std::vector<float> pixelValues(std::size_t n) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(0.0f, 255.0f);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

inline std::vector<std::uint8_t> randomBytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

}  // namespace edgefl::bench
