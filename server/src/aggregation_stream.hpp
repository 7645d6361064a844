#pragma once
// Private to the aggregation: the streaming kernels (weighted sums, sums of
// squares, the step check and the SGD step), built in aggregation_isa.cpp
// once per instruction set (baseline, AVX2, AVX-512) from the same
// width-generic code in aggregation_stream_lanes.hpp, and the instruction
// set the robust kernels use too. Every build returns the same bits: the
// arithmetic per coordinate is vertical (the same order at any width), sums
// of squares keep 16 float lanes per row at every width, and
// aggregation_isa.cpp is built with -ffp-contract=off so that no build fuses
// a multiply and an add the baseline rounds twice.

#include <cstddef>
#include <span>

namespace edgefl::server::kernels {

enum class Isa { Baseline, Avx2, Avx512 };

// The widest instruction set this CPU runs among those the library was built
// for (AVX-512 needs F, DQ, BW and VL).
Isa widestIsa();
bool isaRuns(Isa isa);
const char* isaName(Isa isa);

// One pass over the aggregate, the old and the new model: squared norms for
// the report and whether every value is finite.
struct StepCheck {
  double aggregateSquares = 0.0;
  double stepSquares = 0.0;
  bool finite = true;
};

struct StreamKernels {
  // out[j] = sum_i scales[i] * rows[i][j], summed in row order in float.
  void (*weightedSum)(std::span<const float* const> rows, std::span<const float> scales,
                      std::size_t p, float* out);
  // The weighted sum and, in the same pass, the sums of checkStep(out, old,
  // nullptr, lr, p): what FedAvg's SGD step needs, reading the deltas once.
  // `finite` here means both sums are finite; when they are not (a value
  // that is not finite, or float squares past ~1.8e19) checkStep decides.
  StepCheck (*weightedSumSgd)(std::span<const float* const> rows, std::span<const float> scales,
                              std::size_t p, float* out, const float* old, float lr);
  // out[i] = ||rows[i]||^2: 16 float lanes per row per block of coordinates,
  // flushed into double.
  void (*sumSquares)(std::span<const float* const> rows, std::size_t p, double* out);
  // next == nullptr: the new model is old + lr * delta (SGD), computed here
  // with the float expression applySgd uses.
  StepCheck (*checkStep)(const float* delta, const float* old, const float* next, float lr,
                         std::size_t p);
  // global[j] = global[j] + lr * delta[j].
  void (*applySgd)(float* global, const float* delta, float lr, std::size_t p);
};

// The build for `isa`; nullptr when the library has none for it (not x86-64
// GCC) or the CPU does not run it.
const StreamKernels* streamKernels(Isa isa);
// The build for widestIsa().
const StreamKernels& streamKernels();

}  // namespace edgefl::server::kernels
