#pragma once
// Architectures named by spec strings, and deterministic initialization.
//
//   logreg:IN-OUT          one Dense layer (softmax regression, or linear
//                          regression for Task::Regression)
//   mlp:IN-H1-...-OUT      Dense layers with ReLU between them (>= 1 hidden)
//   lenet                  the NIID-Bench CNN for 28x28x1 images: conv 5x5
//                          6ch, relu, maxpool 2, conv 5x5 16ch, relu,
//                          maxpool 2, flatten, fc 120, relu, fc 84, relu,
//                          fc 10 (44,426 parameters)
//
// Sizes are decimal integers from 1 to 2^20, no signs, spaces or leading
// zeros, so one architecture has exactly one spec string (the digest covers
// it).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "edgefl/shared/model.hpp"

namespace edgefl {

struct Architecture {
  std::string spec;
  std::vector<Layer> layers;
  std::vector<std::uint32_t> inputShape;  // [C, H, W] for lenet, [IN] otherwise
  std::uint32_t outputCount = 0;
};

// BadArch with the spec and what is wrong with it.
Result<Architecture> parseArch(std::string_view spec);

struct ModelOptions {
  Task task = Task::Classification;
  std::uint64_t seed = 1;
  // Overrides the input shape (same element count), e.g. {1, 28, 28} to
  // mark an mlp's 784 inputs as an image. A 3-dimensional [C, H, W] shape is
  // an image: raw pixel values in [0, 255], preprocessing scale 1/255 and
  // shift 0. Other inputs get identity preprocessing and the range
  // [-FLT_MAX, FLT_MAX]; see fitStandardization.
  std::vector<std::uint32_t> inputShape{};
  std::vector<std::string> classNames{};  // empty or outputCount entries
};

// parseArch, then a model with the input schema and preprocessing described
// in ModelOptions and parameters from initializeParameters(seed);
// meta.seed = seed. BadArch for a bad spec, an inputShape whose product
// differs from the input size, classNames of the wrong count, or a
// classification head with fewer than 2 outputs.
Result<Model> createModel(std::string_view spec, const ModelOptions& options = {});

// Deterministic initialization, identical on every platform: each weight is
// uniform in [-b, b] with b = sqrt(6 / fanIn) (He/Kaiming uniform, for the
// ReLU that follows) for hidden layers, and b = sqrt(6 / (fanIn + fanOut))
// (Glorot uniform, so the initial logits are small) for the last Dense
// layer; fanIn = inputs (Dense) or inChannels * kernel^2 (Conv2D). Biases
// are zero. Uniforms come from SplitMix64 seeded with (seed, tensor index):
// u = (next() >> 40) * 2^-24, value = (2u - 1) * b.
void initializeParameters(Model& model, std::uint64_t seed);

}  // namespace edgefl
