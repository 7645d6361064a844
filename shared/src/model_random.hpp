#pragma once
// Private to the model engine: the random numbers behind initialization
// and shuffling. They must be the same on every platform and standard
// library (a seed names a model and a training run), which rules out
// std::uniform_*_distribution.

#include <cstdint>

namespace edgefl::detail {

// SplitMix64 (Steele, Lea, Flood 2014).
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 random bits, exact in float.
  float uniform() { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }
  // Uniform in [0, bound) for bound >= 1. The modulo bias is below 2^-32
  // for bounds under 2^32, invisible in a shuffle.
  std::uint64_t below(std::uint64_t bound) { return next() % bound; }

 private:
  std::uint64_t state_;
};

}  // namespace edgefl::detail
