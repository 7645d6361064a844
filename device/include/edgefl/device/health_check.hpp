#pragma once
// The check a model passes before it serves: it scores a set of probe
// inputs drawn from its own input schema (ranges) and reference statistics
// (mean, std), and every output must be finite (and, for a classifier, a
// probability distribution). Catches models that decode but blow up: NaN
// or infinite weights that overflow, preprocessing that divides by zero.

#include <cstdint>
#include <vector>

#include "edgefl/shared/model.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl::device {

// Probe inputs for `model` (count rows of featureCount values): the
// reference mean (or range midpoint), both range ends, and uniform draws
// over the range; ranges that are unbounded (the schema default) fall back
// to mean +- 3 std, then to [-1, 1]. Deterministic for a given `seed`.
std::vector<float> probeInputs(const Model& model, std::size_t count, std::uint64_t seed = 1);

// Scores the probes with `scorer` (prepared for `model`). NonFinite with
// the probe and output index, or BadModel for probabilities that do not
// sum to 1.
Status healthCheck(const Model& model, Scorer& scorer, std::size_t probes = 8);

}  // namespace edgefl::device
