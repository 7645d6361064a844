#pragma once
// An in-memory labelled dataset: the common currency of the dataset readers,
// partitioners, training and validation.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace edgefl {

struct Dataset {
  std::size_t featureCount = 0;
  std::vector<float> features;            // size() * featureCount, row-major
  std::vector<std::int32_t> labels;       // class index per sample (classification)
  std::vector<float> targets;             // target per sample (regression); empty otherwise
  std::vector<std::string> featureNames;  // optional, featureCount entries
  std::vector<std::string> classNames;    // optional
  std::uint32_t classCount = 0;
  std::string name;  // e.g. "fashion-mnist:train"

  std::size_t size() const { return featureCount == 0 ? 0 : features.size() / featureCount; }
  std::span<const float> sample(std::size_t i) const {
    return std::span<const float>(features).subspan(i * featureCount, featureCount);
  }
};

}  // namespace edgefl
