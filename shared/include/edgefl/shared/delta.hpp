#pragma once
// Model deltas for federated updates: the arithmetic a device does before it
// sends (difference, clipping, noise) and the codecs that put a delta on the
// wire (wire::Delta) and take it off again.
//
// A model's parameters are one contiguous float buffer plus the sizes of its
// tensors in wire order; a delta (local - base) has the same layout. Every
// function here works on that layout: `std::span<const float>` for the
// values and `std::span<const std::uint32_t>` for the tensor sizes, whose sum
// must equal the span's size.
//
// Devices encode (encodeDelta); the coordinator decodes (decodeDelta), which
// treats the message as untrusted and checks every field before a value
// reaches the caller's buffer.

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>

#include "edgefl/shared/result.hpp"
#include "edgefl/shared/signing.hpp"
#include "edgefl/wire/edgefl.capnp.h"

namespace edgefl {

using DeltaEncoding = wire::DeltaEncoding;
using Rounding = wire::Rounding;

// How a device prepares and encodes its delta; the in-process form of
// wire::DeltaPolicy (see deltaOptionsFromPolicy / writeDeltaPolicy).
struct DeltaOptions {
  // float32 is lossless and the reference the others are measured against.
  DeltaEncoding encoding = DeltaEncoding::FLOAT32;
  // L2 bound applied to the delta before noise and encoding; 0 disables.
  float clipNorm = 0.0f;
  // Standard deviation of the Gaussian noise added after clipping; 0
  // disables. Local differential privacy needs both clipNorm and noiseStd.
  float noiseStd = 0.0f;
  // Share of entries sent by top-k, in (0, 1]. 1% keeps the message at ~8%
  // of float32 (each kept entry costs 8 bytes) while error feedback makes up
  // for what is held back; the wire default of 0 is invalid for topK, so a
  // coordinator must set it explicitly.
  float topKFraction = 0.01f;
  // Rounding of int8: stochastic is unbiased, so errors average out over
  // devices and rounds; nearest has half the worst-case error per entry.
  Rounding rounding = Rounding::NEAREST;
};

// Checks options from outside (a RoundTask's policy): a known encoding and
// rounding (Unsupported), clipNorm and noiseStd finite and >= 0, and for
// topK a fraction in (0, 1] (OutOfRange).
Status validateDeltaOptions(const DeltaOptions& options);

// Reads and validates a policy received in a RoundTask; errors as
// validateDeltaOptions.
Result<DeltaOptions> deltaOptionsFromPolicy(wire::DeltaPolicy::Reader policy);
void writeDeltaPolicy(const DeltaOptions& options, wire::DeltaPolicy::Builder policy);

// Sum of the tensor sizes; 64-bit so that no list of uint32 sizes overflows.
std::uint64_t totalElements(std::span<const std::uint32_t> tensorSizes);

// out = local - base. InvalidArgument unless the three sizes are equal.
Status computeDelta(std::span<const float> local, std::span<const float> base,
                    std::span<float> out);

// params += scale * delta (scale = 1 applies a delta, a server learning rate
// or an averaging weight otherwise). InvalidArgument on different sizes.
Status applyDelta(std::span<float> params, std::span<const float> delta, float scale = 1.0f);

// Euclidean norm, accumulated in double: no overflow for any float input,
// and a non-finite result exactly when some value is NaN or infinite.
double l2Norm(std::span<const float> values);

// Scales `values` so that their L2 norm is at most `maxNorm` and returns the
// norm before clipping. maxNorm must be finite and >= 0; 0 disables
// clipping. When the norm is not finite nothing is scaled (the returned norm
// tells the caller why).
double clipL2(std::span<float> values, float maxNorm);

// Adds independent N(0, stddev^2) noise to every value, drawing from `rng`
// (the caller owns the generator and its seed, so runs are reproducible).
// stddev must be finite and >= 0; 0 leaves the values unchanged.
void addGaussianNoise(std::span<float> values, float stddev, std::mt19937_64& rng);

// What encodeDelta did, for logs and telemetry.
struct DeltaEncodeInfo {
  double preClipNorm = 0.0;        // norm of the delta as passed in
  double sentNorm = 0.0;           // norm of what the receiver decodes (= Delta.l2Norm)
  std::uint64_t sentEntries = 0;   // entries on the wire (k for topK, all otherwise)
  std::uint64_t payloadBytes = 0;  // bytes of tensor data (indices, values, scales)
};

// Encodes a delta into `out`: clip to options.clipNorm, add noise
// (options.noiseStd), add the residual, then encode with options.encoding:
//
// - float32: DeltaTensor.dense, raw float32 LE, one copy per tensor.
// - int8: per tensor, scale = max|v| / 127 and q = round(v / scale) in
//   [-127, 127], nearest or stochastic (E[q * scale] = v) per
//   options.rounding.
// - topK: k = ceil(topKFraction * total) entries of largest magnitude over
//   the whole delta, not per tensor: for a fixed budget that minimizes the
//   L2 error of what is sent, and tensors differ in scale (a bias vector
//   moves more per entry than a large weight matrix), so a per-tensor quota
//   would spend entries where little changed. A tensor may send nothing in
//   a round; error feedback carries its share to later rounds. Ties at the
//   threshold go to the lower index; entries equal to zero are never sent,
//   so fewer than k go out when fewer than k are non-zero.
//
// Error feedback: `residual` is empty (none) or has the delta's layout. It
// is added to the delta before encoding and receives exactly what was not
// sent (value - decoded value), so over rounds the sum of what was sent
// equals the sum of the deltas minus the current residual. It works with
// every encoding; with float32 it is left at zero. Because the residual is
// added after clipping, Delta.l2Norm may exceed clipNorm when error feedback
// is on.
//
// `delta` is scratch: on return it holds the clipped, noised delta plus the
// residual. `rng` drives noise and stochastic rounding only. `tensorSizes`
// must sum to delta.size() (InvalidArgument), `residual` must be empty or as
// large (InvalidArgument); options as validateDeltaOptions; NonFinite when
// the delta or delta + residual holds NaN or infinity; TooLarge when a
// tensor does not fit a Cap'n Proto Data field. On error `residual` is
// unchanged and `out` may be partly written.
Result<DeltaEncodeInfo> encodeDelta(std::span<float> delta,
                                    std::span<const std::uint32_t> tensorSizes,
                                    const DeltaOptions& options, std::span<float> residual,
                                    std::mt19937_64& rng, wire::Delta::Builder out);

// encodeDelta into a message whose root is a wire::Delta, as flat-array
// bytes (what parseMessage<wire::Delta> reads); for tests, benchmarks and
// tools. Same arguments and errors as encodeDelta.
Result<Bytes> encodeDeltaMessage(std::span<float> delta, std::span<const std::uint32_t> tensorSizes,
                                 const DeltaOptions& options, std::span<float> residual,
                                 std::mt19937_64& rng);

// Decodes a delta received from a device into `out` (size = sum of
// expectedTensorSizes, the receiver's model layout). The message is
// untrusted; nothing is assumed about it beyond having been walked by
// parseMessage. Errors, each naming the tensor and the offending values:
// - InvalidArgument: out.size() differs from the sum of expectedTensorSizes.
// - Unsupported: an encoding or tensor kind this build does not know.
// - ShapeMismatch: tensor count or an elementCount differs from expected.
// - BadField: a tensor's kind differs from Delta.encoding; dense bytes not
//   4 * n; int8 bytes not n or a negative scale; sparse byte lengths not
//   multiples of 4, index and value counts differ or exceed n, indices not
//   strictly increasing or not below n.
// - NonFinite: a decoded value (or an int8 scale) is NaN or infinite.
// - OutOfRange: an int8 scale so large that q * scale could overflow.
// - TraversalLimit / NotCapnp: only for a reader that parseMessage did not
//   walk, when reading it trips Cap'n Proto's own checks.
// On error `out` is partly written and must not be used. Never throws.
Status decodeDelta(wire::Delta::Reader delta, std::span<const std::uint32_t> expectedTensorSizes,
                   std::span<float> out);

}  // namespace edgefl
