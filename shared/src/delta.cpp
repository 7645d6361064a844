#include "edgefl/shared/delta.hpp"

#include <capnp/message.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "edgefl/shared/envelope.hpp"

namespace edgefl {
namespace {

// Tensor data is float32/uint32 little-endian on the wire and copied in bulk,
// which is only right on a little-endian host (every target we build for).
static_assert(std::endian::native == std::endian::little,
              "delta codecs copy little-endian wire data as host floats");
static_assert(std::numeric_limits<float>::is_iec559, "wire floats are IEEE-754 binary32");

// Cap'n Proto lists (Data included) hold at most 2^29 - 1 elements; a larger
// tensor cannot be encoded and must be refused before the builder throws.
constexpr std::uint64_t kMaxDataBytes = (std::uint64_t{1} << 29) - 1;

constexpr float kInt8Levels = 127.0f;  // symmetric: -127..127, so 0 is exact

// Adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to
// the nearest integer (ties to even) in the default rounding mode, without a
// call into libm, so the int8 loops stay vectorizable on baseline x86-64
// (no SSE4.1 round instruction). Needs IEEE semantics: no -ffast-math.
constexpr float kRoundMagic = 12582912.0f;

// Cap'n Proto segments hold at most 2^29 - 1 words.
constexpr std::uint64_t kMaxSegmentWords = (std::uint64_t{1} << 29) - 1;

inline bool isFinite(float v) {
  return std::fabs(v) <= std::numeric_limits<float>::max();
}

inline float roundNearest(float x) {
  return (x + kRoundMagic) - kRoundMagic;
}

// Limits a rounded level to the symmetric int8 range. |v / scale| can
// exceed 127 by a rounding error of the division, and stochastic rounding
// can step one level past it. (std::min/max map to SSE min/max.)
inline float clampLevel(float level) {
  return std::min(std::max(level, -kInt8Levels), kInt8Levels);
}

std::string floatText(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string tensorText(std::size_t tensor) {
  return "tensor " + std::to_string(tensor) + ": ";
}

std::string_view encodingName(DeltaEncoding encoding) {
  switch (encoding) {
    case DeltaEncoding::FLOAT32: return "float32";
    case DeltaEncoding::INT8: return "int8";
    case DeltaEncoding::TOP_K: return "topK";
  }
  return "unknown";
}

std::string_view tensorKindName(wire::DeltaTensor::Which kind) {
  switch (kind) {
    case wire::DeltaTensor::DENSE: return "dense";
    case wire::DeltaTensor::INT8: return "int8";
    case wire::DeltaTensor::SPARSE: return "sparse";
  }
  return "unknown";
}

bool knownEncoding(DeltaEncoding encoding) {
  return encoding == DeltaEncoding::FLOAT32 || encoding == DeltaEncoding::INT8 ||
         encoding == DeltaEncoding::TOP_K;
}

// Index of the first NaN or infinity, or values.size() when all are finite.
// The common all-finite case runs as one branch-free pass on the exponent
// bits (all ones for NaN and infinity), which vectorizes where a float
// comparison would not.
std::size_t firstNonFinite(std::span<const float> values) {
  constexpr std::uint32_t kExponent = 0x7f800000u;
  std::uint32_t bad = 0;
  for (float v : values) bad |= (std::bit_cast<std::uint32_t>(v) & kExponent) == kExponent ? 1 : 0;
  if (bad == 0) return values.size();
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!isFinite(values[i])) return i;
  }
  return values.size();
}

// "tensor 2 entry 17 = nan" for a position in the whole delta.
std::string locate(std::span<const std::uint32_t> tensorSizes, std::size_t index, float value) {
  std::size_t tensor = 0;
  std::size_t offset = 0;
  while (tensor < tensorSizes.size() && index >= offset + tensorSizes[tensor]) {
    offset += tensorSizes[tensor];
    ++tensor;
  }
  return "tensor " + std::to_string(tensor) + " entry " + std::to_string(index - offset) + " = " +
         floatText(value);
}

// Sum of squares in double with four accumulators: the chains are
// independent, so the loop is not bound by the latency of one add.
double sumOfSquares(std::span<const float> values) {
  double acc[4] = {0.0, 0.0, 0.0, 0.0};
  const std::size_t n = values.size();
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (std::size_t j = 0; j < 4; ++j) {
      const double v = values[i + j];
      acc[j] += v * v;
    }
  }
  for (; i < n; ++i) {
    const double v = values[i];
    acc[0] += v * v;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

void scaleInPlace(std::span<float> values, double norm, float maxNorm) {
  // Each scaled value is rounded to float (relative error <= 2^-24), as is
  // the factor, so the result could exceed maxNorm by ~2^-23 relative. A
  // margin of 2^-20 keeps the guarantee norm <= maxNorm and changes the
  // update by a millionth.
  constexpr double kMargin = 1.0 - 1.0 / (1 << 20);
  const float factor = static_cast<float>(static_cast<double>(maxNorm) / norm * kMargin);
  for (float& v : values) v *= factor;
}

double clipWithNorm(std::span<float> values, float maxNorm, double norm) {
  if (maxNorm > 0.0f && std::isfinite(norm) && norm > maxNorm) scaleInPlace(values, norm, maxNorm);
  return norm;
}

// Fills `out` with uniform floats in [0, 1), two per 64-bit draw with 24
// bits each: exactly the resolution of a float in [0, 1), and half the
// generator calls. Drawing a block up front keeps the rounding loop free of
// calls, so it vectorizes.
void fillUniform(std::span<float> out, std::mt19937_64& rng) {
  std::size_t i = 0;
  for (; i + 2 <= out.size(); i += 2) {
    const std::uint64_t bits = rng();
    out[i] = static_cast<float>(bits >> 40) * 0x1p-24f;
    out[i + 1] = static_cast<float>(bits & 0xffffffu) * 0x1p-24f;
  }
  if (i < out.size()) out[i] = static_cast<float>(rng() >> 40) * 0x1p-24f;
}

// Magnitude of a finite float as an integer with the same order: for
// non-negative IEEE floats the bit patterns sort like the values. Integer
// max and compare vectorize where float max (NaN rules) does not.
inline std::uint32_t magnitudeKey(float v) {
  return std::bit_cast<std::uint32_t>(v) & 0x7fffffffu;
}

float maxMagnitude(std::span<const float> values) {
  std::uint32_t largest = 0;
  for (float v : values) largest = std::max(largest, magnitudeKey(v));
  return std::bit_cast<float>(largest);
}

// --- Encoders. Inputs were validated by encodeDelta: sizes match and every
// value in `values` is finite.

void encodeFloat32(std::span<const float> values, std::span<const std::uint32_t> tensorSizes,
                   capnp::List<wire::DeltaTensor>::Builder tensors, std::span<float> residual) {
  std::size_t offset = 0;
  for (std::size_t t = 0; t < tensorSizes.size(); ++t) {
    const std::uint32_t n = tensorSizes[t];
    auto tensor = tensors[static_cast<unsigned>(t)];
    tensor.setElementCount(n);
    auto data = tensor.initDense(n * std::size_t{4});
    if (n > 0) std::memcpy(data.begin(), values.data() + offset, n * std::size_t{4});
    offset += n;
  }
  // Everything was sent, so nothing is carried over.
  std::fill(residual.begin(), residual.end(), 0.0f);
}

double encodeInt8(std::span<const float> values, std::span<const std::uint32_t> tensorSizes,
                  Rounding rounding, std::mt19937_64& rng,
                  capnp::List<wire::DeltaTensor>::Builder tensors, std::span<float> residual) {
  // Scratch for the levels of one tensor and one block of uniform draws.
  constexpr std::size_t kUniformBlock = 4096;
  std::uint32_t largest = 0;
  for (std::uint32_t n : tensorSizes) largest = std::max(largest, n);
  std::vector<float> levels(largest);
  std::vector<float> uniform(rounding == Rounding::STOCHASTIC ? kUniformBlock : 0);

  double sentSquares = 0.0;
  std::size_t offset = 0;
  for (std::size_t t = 0; t < tensorSizes.size(); ++t) {
    const std::uint32_t n = tensorSizes[t];
    const std::span<const float> in = values.subspan(offset, n);
    const std::span<float> q = std::span<float>(levels).first(n);
    auto tensor = tensors[static_cast<unsigned>(t)];
    tensor.setElementCount(n);
    auto group = tensor.initInt8();
    const float scale = maxMagnitude(in) / kInt8Levels;
    group.setScale(scale);
    auto bytes = group.initValues(n);

    // The loops below are branch-free (comparisons become 0/1 values) so
    // that they vectorize; a data-dependent branch per entry would be
    // mispredicted half the time under stochastic rounding.
    if (!(scale > 0.0f)) {
      // A scale that underflows to 0 (max|v| below ~1.7e-43) sends zeros;
      // the values stay in the residual instead of being divided by zero.
      std::fill(q.begin(), q.end(), 0.0f);
    } else if (rounding == Rounding::STOCHASTIC) {
      for (std::size_t begin = 0; begin < n; begin += kUniformBlock) {
        const std::size_t count = std::min<std::size_t>(kUniformBlock, n - begin);
        fillUniform(std::span<float>(uniform).first(count), rng);
        for (std::size_t j = 0; j < count; ++j) {
          // q = floor(x) + 1 with probability frac(x), so E[q] = x (up to the
          // 2^-24 resolution of the uniform draw). The comparisons are on
          // bit patterns as int32, which give the same answers here (d > 0
          // iff bits(d) > 0; for u >= 0, u < p iff bits(u) < bits(p)) and,
          // unlike float comparisons, vectorize.
          const float x = in[begin + j] / scale;
          const float nearest = roundNearest(x);
          const std::int32_t roundedUp = std::bit_cast<std::int32_t>(nearest - x) > 0 ? 1 : 0;
          const float floor = nearest - static_cast<float>(roundedUp);
          const std::int32_t up =
              std::bit_cast<std::int32_t>(uniform[j]) < std::bit_cast<std::int32_t>(x - floor) ? 1
                                                                                               : 0;
          q[begin + j] = clampLevel(floor + static_cast<float>(up));
        }
      }
    } else {
      for (std::size_t i = 0; i < n; ++i) q[i] = clampLevel(roundNearest(in[i] / scale));
    }
    for (std::size_t i = 0; i < n; ++i) {
      bytes[i] = static_cast<kj::byte>(static_cast<std::int8_t>(static_cast<std::int32_t>(q[i])));
    }
    // The sum of q^2 is an exact integer, so the sent norm needs no
    // per-entry double arithmetic. Blocks of 2^16 keep the int32 partial
    // sums below 2^16 * 127^2 < 2^31.
    std::int64_t levelSquares = 0;
    for (std::size_t begin = 0; begin < n; begin += 65536) {
      const std::size_t end = std::min<std::size_t>(n, begin + 65536);
      std::int32_t block = 0;
      for (std::size_t i = begin; i < end; ++i) {
        const auto level = static_cast<std::int32_t>(q[i]);
        block += level * level;
      }
      levelSquares += block;
    }
    sentSquares += static_cast<double>(scale) * scale * static_cast<double>(levelSquares);
    if (!residual.empty()) {
      // The receiver decodes q * scale in float; the residual is what that
      // leaves out.
      for (std::size_t i = 0; i < n; ++i) residual[offset + i] = in[i] - q[i] * scale;
    }
    offset += n;
  }
  return sentSquares;
}

struct Threshold {
  std::uint32_t key = 0;   // magnitude key of the k-th largest entry
  std::uint64_t ties = 0;  // how many entries with exactly that key to take
};

// Finds the k-th largest magnitude in two linear passes and no sort of the
// delta: a histogram of the top 11 bits of the 31-bit magnitude keys (the
// exponent and 3 mantissa bits) picks the bucket that holds it, then the
// keys of that one bucket, typically well under 1% of the delta, are
// selected exactly.
Threshold selectThreshold(std::span<const float> values, std::uint64_t k,
                          std::vector<std::uint32_t>& scratch) {
  constexpr int kShift = 20;
  constexpr std::size_t kBins = std::size_t{1} << 11;
  // Four interleaved histograms: neighbouring entries often fall in the
  // same bucket, and a single counter would chain every increment through
  // one memory word. 4 x 2048 counters fit in L1.
  constexpr std::size_t kLanes = 4;
  std::vector<std::uint32_t>& counts = scratch;
  counts.assign(kLanes * kBins, 0);
  const std::size_t n = values.size();
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::size_t lane = 0; lane < kLanes; ++lane) {
      ++counts[lane * kBins + (magnitudeKey(values[i + lane]) >> kShift)];
    }
  }
  for (; i < n; ++i) ++counts[magnitudeKey(values[i]) >> kShift];

  std::uint64_t above = 0;  // entries in buckets above the chosen one
  std::uint64_t inBucket = 0;
  std::uint32_t bucket = kBins - 1;
  for (;; --bucket) {
    inBucket = 0;
    for (std::size_t lane = 0; lane < kLanes; ++lane) inBucket += counts[lane * kBins + bucket];
    // All buckets together hold n >= k entries, so this stops at bucket 0
    // at the latest.
    if (above + inBucket >= k || bucket == 0) break;
    above += inBucket;
  }

  std::vector<std::uint32_t>& keys = scratch;
  keys.clear();
  keys.reserve(static_cast<std::size_t>(inBucket));
  for (float v : values) {
    const std::uint32_t key = magnitudeKey(v);
    if ((key >> kShift) == bucket) keys.push_back(key);
  }
  const std::size_t rank = static_cast<std::size_t>(k - above - 1);  // 0 = largest
  std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(rank), keys.end(),
                   std::greater<>());
  Threshold out;
  out.key = keys[rank];
  const auto larger = static_cast<std::uint64_t>(
      std::count_if(keys.begin(), keys.end(), [&](std::uint32_t key) { return key > out.key; }));
  out.ties = k - above - larger;
  // Zeros carry nothing; sending them would only cost bytes.
  if (out.key == 0) out.ties = 0;
  return out;
}

double encodeTopK(std::span<const float> values, std::span<const std::uint32_t> tensorSizes,
                  float fraction, capnp::List<wire::DeltaTensor>::Builder tensors,
                  std::span<float> residual, std::uint64_t& sentEntries) {
  const std::uint64_t total = values.size();
  const std::uint64_t k = std::min<std::uint64_t>(
      total, static_cast<std::uint64_t>(
                 std::ceil(static_cast<double>(fraction) * static_cast<double>(total))));
  std::vector<std::uint32_t> scratch;
  Threshold threshold;
  if (k > 0) threshold = selectThreshold(values, k, scratch);

  // Positions in the whole delta, increasing by construction. Ties are
  // taken in index order, so the choice is deterministic.
  std::vector<std::size_t> selected;
  selected.reserve(static_cast<std::size_t>(k));
  if (k > 0) {
    std::uint64_t ties = threshold.ties;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint32_t key = magnitudeKey(values[i]);
      if (key > threshold.key) {
        selected.push_back(i);
      } else if (key == threshold.key && ties > 0) {
        selected.push_back(i);
        --ties;
      }
    }
  }
  assert(selected.size() <= k);

  if (!residual.empty()) std::copy(values.begin(), values.end(), residual.begin());
  double sentSquares = 0.0;
  std::size_t offset = 0;
  std::size_t cursor = 0;
  for (std::size_t t = 0; t < tensorSizes.size(); ++t) {
    const std::uint32_t n = tensorSizes[t];
    std::size_t end = cursor;
    while (end < selected.size() && selected[end] < offset + n) ++end;
    const std::size_t count = end - cursor;
    auto tensor = tensors[static_cast<unsigned>(t)];
    tensor.setElementCount(n);
    auto sparse = tensor.initSparse();
    auto indices = sparse.initIndices(count * 4);
    auto sent = sparse.initValues(count * 4);
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t position = selected[cursor + j];
      const auto local = static_cast<std::uint32_t>(position - offset);
      const float v = values[position];
      std::memcpy(indices.begin() + 4 * j, &local, 4);
      std::memcpy(sent.begin() + 4 * j, &v, 4);
      sentSquares += static_cast<double>(v) * v;
      if (!residual.empty()) residual[position] = 0.0f;
    }
    cursor = end;
    offset += n;
  }
  sentEntries = selected.size();
  return sentSquares;
}

// --- Decoders. Each reads its Data fields once: a parsed message's
// traversal budget allows only a few reads of each. Lengths and scales are
// checked before anything is written; values are checked as they are
// written (dense: copied in bulk, then scanned).

Status decodeDense(std::size_t t, capnp::Data::Reader data, std::span<float> out) {
  const std::size_t n = out.size();
  if (data.size() != 4 * n) {
    return makeError(Code::BadField, tensorText(t) + "dense data is " +
                                         std::to_string(data.size()) + " bytes; expected 4 * " +
                                         std::to_string(n) + " = " + std::to_string(4 * n));
  }
  if (n > 0) std::memcpy(out.data(), data.begin(), 4 * n);
  const std::size_t bad = firstNonFinite(out);
  if (bad < n) {
    return makeError(Code::NonFinite,
                     tensorText(t) + "entry " + std::to_string(bad) + " = " + floatText(out[bad]));
  }
  return {};
}

Status decodeInt8(std::size_t t, wire::DeltaTensor::Int8::Reader group, std::span<float> out) {
  const std::size_t n = out.size();
  const float scale = group.getScale();
  const capnp::Data::Reader values = group.getValues();
  if (values.size() != n) {
    return makeError(Code::BadField, tensorText(t) + "int8 values are " +
                                         std::to_string(values.size()) + " bytes; expected " +
                                         std::to_string(n));
  }
  if (!isFinite(scale)) {
    return makeError(Code::NonFinite, tensorText(t) + "int8 scale = " + floatText(scale));
  }
  if (scale < 0.0f) {
    return makeError(Code::BadField,
                     tensorText(t) + "int8 scale = " + floatText(scale) + "; must be >= 0");
  }
  // |q| <= 128, so this one check keeps every decoded value finite.
  if (!isFinite(scale * 128.0f)) {
    return makeError(Code::OutOfRange, tensorText(t) + "int8 scale = " + floatText(scale) +
                                           "; 128 * scale overflows float");
  }
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(static_cast<std::int8_t>(values[i])) * scale;
  }
  return {};
}

Status decodeSparse(std::size_t t, wire::DeltaTensor::Sparse::Reader group, std::span<float> out) {
  const std::size_t n = out.size();
  const capnp::Data::Reader indices = group.getIndices();
  const capnp::Data::Reader values = group.getValues();
  if (indices.size() % 4 != 0) {
    return makeError(Code::BadField, tensorText(t) + "sparse indices are " +
                                         std::to_string(indices.size()) +
                                         " bytes; not a multiple of 4");
  }
  if (values.size() % 4 != 0) {
    return makeError(Code::BadField, tensorText(t) + "sparse values are " +
                                         std::to_string(values.size()) +
                                         " bytes; not a multiple of 4");
  }
  const std::size_t count = indices.size() / 4;
  if (values.size() / 4 != count) {
    return makeError(Code::BadField, tensorText(t) + std::to_string(count) +
                                         " sparse indices but " +
                                         std::to_string(values.size() / 4) + " values");
  }
  if (count > n) {
    return makeError(Code::BadField, tensorText(t) + std::to_string(count) +
                                         " sparse entries; elementCount is " + std::to_string(n));
  }
  std::fill(out.begin(), out.end(), 0.0f);
  std::uint32_t previous = 0;
  for (std::size_t j = 0; j < count; ++j) {
    std::uint32_t index;
    float value;
    std::memcpy(&index, indices.begin() + 4 * j, 4);
    std::memcpy(&value, values.begin() + 4 * j, 4);
    if (index >= n) {
      return makeError(Code::BadField, tensorText(t) + "sparse index " + std::to_string(j) + " = " +
                                           std::to_string(index) + "; elementCount is " +
                                           std::to_string(n));
    }
    if (j > 0 && index <= previous) {
      return makeError(Code::BadField, tensorText(t) + "sparse index " + std::to_string(j) + " = " +
                                           std::to_string(index) + " follows " +
                                           std::to_string(previous) +
                                           "; indices must strictly increase");
    }
    if (!isFinite(value)) {
      return makeError(Code::NonFinite, tensorText(t) + "entry " + std::to_string(index) +
                                            " (sparse " + std::to_string(j) +
                                            ") = " + floatText(value));
    }
    out[index] = value;
    previous = index;
  }
  return {};
}

wire::DeltaTensor::Which kindFor(DeltaEncoding encoding) {
  switch (encoding) {
    case DeltaEncoding::INT8: return wire::DeltaTensor::INT8;
    case DeltaEncoding::TOP_K: return wire::DeltaTensor::SPARSE;
    case DeltaEncoding::FLOAT32: break;
  }
  return wire::DeltaTensor::DENSE;
}

Status decodeChecked(wire::Delta::Reader delta, std::span<const std::uint32_t> expectedTensorSizes,
                     std::span<float> out) {
  const DeltaEncoding encoding = delta.getEncoding();
  if (!knownEncoding(encoding)) {
    return makeError(Code::Unsupported,
                     "Delta.encoding = " + std::to_string(static_cast<unsigned>(encoding)));
  }
  const wire::DeltaTensor::Which expectedKind = kindFor(encoding);
  const auto tensors = delta.getTensors();
  if (tensors.size() != expectedTensorSizes.size()) {
    return makeError(Code::ShapeMismatch, "delta has " + std::to_string(tensors.size()) +
                                              " tensors; model has " +
                                              std::to_string(expectedTensorSizes.size()));
  }
  std::size_t offset = 0;
  for (std::size_t t = 0; t < expectedTensorSizes.size(); ++t) {
    const auto tensor = tensors[static_cast<unsigned>(t)];
    const std::uint32_t n = expectedTensorSizes[t];
    if (tensor.getElementCount() != n) {
      return makeError(Code::ShapeMismatch, tensorText(t) + "elementCount = " +
                                                std::to_string(tensor.getElementCount()) +
                                                "; model has " + std::to_string(n));
    }
    const auto kind = tensor.which();
    if (kind != wire::DeltaTensor::DENSE && kind != wire::DeltaTensor::INT8 &&
        kind != wire::DeltaTensor::SPARSE) {
      return makeError(Code::Unsupported, tensorText(t) + "unknown tensor kind " +
                                              std::to_string(static_cast<unsigned>(kind)));
    }
    if (kind != expectedKind) {
      return makeError(Code::BadField, tensorText(t) + "is " + std::string(tensorKindName(kind)) +
                                           " but Delta.encoding is " +
                                           std::string(encodingName(encoding)));
    }
    const std::span<float> slot = out.subspan(offset, n);
    Status status;
    switch (kind) {
      case wire::DeltaTensor::DENSE: status = decodeDense(t, tensor.getDense(), slot); break;
      case wire::DeltaTensor::INT8: status = decodeInt8(t, tensor.getInt8(), slot); break;
      case wire::DeltaTensor::SPARSE: status = decodeSparse(t, tensor.getSparse(), slot); break;
    }
    if (!status.ok()) return status;
    offset += n;
  }
  return {};
}

}  // namespace

Status validateDeltaOptions(const DeltaOptions& options) {
  if (!knownEncoding(options.encoding)) {
    return makeError(Code::Unsupported,
                     "delta encoding " + std::to_string(static_cast<unsigned>(options.encoding)));
  }
  // Rounding only matters for int8; other encodings ignore an unknown value
  // from a newer coordinator.
  if (options.encoding == DeltaEncoding::INT8 && options.rounding != Rounding::NEAREST &&
      options.rounding != Rounding::STOCHASTIC) {
    return makeError(Code::Unsupported,
                     "int8 rounding " + std::to_string(static_cast<unsigned>(options.rounding)));
  }
  if (!(isFinite(options.clipNorm) && options.clipNorm >= 0.0f)) {
    return makeError(Code::OutOfRange,
                     "clipNorm = " + floatText(options.clipNorm) + "; must be finite and >= 0");
  }
  if (!(isFinite(options.noiseStd) && options.noiseStd >= 0.0f)) {
    return makeError(Code::OutOfRange,
                     "noiseStd = " + floatText(options.noiseStd) + "; must be finite and >= 0");
  }
  if (options.encoding == DeltaEncoding::TOP_K &&
      !(options.topKFraction > 0.0f && options.topKFraction <= 1.0f)) {
    return makeError(Code::OutOfRange,
                     "topKFraction = " + floatText(options.topKFraction) + "; must be in (0, 1]");
  }
  return {};
}

Result<DeltaOptions> deltaOptionsFromPolicy(wire::DeltaPolicy::Reader policy) {
  DeltaOptions options;
  options.encoding = policy.getEncoding();
  options.clipNorm = policy.getClipNorm();
  options.noiseStd = policy.getNoiseStd();
  options.topKFraction = policy.getTopKFraction();
  options.rounding = policy.getRounding();
  EDGEFL_TRY(validateDeltaOptions(options));
  return options;
}

void writeDeltaPolicy(const DeltaOptions& options, wire::DeltaPolicy::Builder policy) {
  policy.setEncoding(options.encoding);
  policy.setClipNorm(options.clipNorm);
  policy.setNoiseStd(options.noiseStd);
  policy.setTopKFraction(options.topKFraction);
  policy.setRounding(options.rounding);
}

std::uint64_t totalElements(std::span<const std::uint32_t> tensorSizes) {
  std::uint64_t total = 0;
  for (std::uint32_t n : tensorSizes) total += n;
  return total;
}

Status computeDelta(std::span<const float> local, std::span<const float> base,
                    std::span<float> out) {
  if (local.size() != base.size() || out.size() != local.size()) {
    return makeError(Code::InvalidArgument,
                     "computeDelta: local has " + std::to_string(local.size()) + " values, base " +
                         std::to_string(base.size()) + ", out " + std::to_string(out.size()));
  }
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = local[i] - base[i];
  return {};
}

Status applyDelta(std::span<float> params, std::span<const float> delta, float scale) {
  if (params.size() != delta.size()) {
    return makeError(Code::InvalidArgument, "applyDelta: params has " +
                                                std::to_string(params.size()) + " values, delta " +
                                                std::to_string(delta.size()));
  }
  for (std::size_t i = 0; i < params.size(); ++i) params[i] += scale * delta[i];
  return {};
}

double l2Norm(std::span<const float> values) {
  return std::sqrt(sumOfSquares(values));
}

double clipL2(std::span<float> values, float maxNorm) {
  assert(isFinite(maxNorm) && maxNorm >= 0.0f);
  return clipWithNorm(values, maxNorm, l2Norm(values));
}

void addGaussianNoise(std::span<float> values, float stddev, std::mt19937_64& rng) {
  assert(isFinite(stddev) && stddev >= 0.0f);
  if (!(stddev > 0.0f)) return;
  std::normal_distribution<float> noise(0.0f, stddev);
  for (float& v : values) v += noise(rng);
}

Result<DeltaEncodeInfo> encodeDelta(std::span<float> delta,
                                    std::span<const std::uint32_t> tensorSizes,
                                    const DeltaOptions& options, std::span<float> residual,
                                    std::mt19937_64& rng, wire::Delta::Builder out) {
  EDGEFL_TRY(validateDeltaOptions(options));
  const std::uint64_t bytesPerEntry = options.encoding == DeltaEncoding::INT8 ? 1 : 4;
  for (std::size_t t = 0; t < tensorSizes.size(); ++t) {
    if (tensorSizes[t] * bytesPerEntry > kMaxDataBytes) {
      return makeError(Code::TooLarge, tensorText(t) + std::to_string(tensorSizes[t]) +
                                           " entries do not fit a Data field (" +
                                           std::to_string(kMaxDataBytes) + " bytes)");
    }
  }

  const std::uint64_t total = totalElements(tensorSizes);
  if (total != delta.size()) {
    return makeError(Code::InvalidArgument, "tensor sizes sum to " + std::to_string(total) +
                                                "; delta has " + std::to_string(delta.size()) +
                                                " values");
  }
  if (!residual.empty() && residual.size() != delta.size()) {
    return makeError(Code::InvalidArgument, "residual has " + std::to_string(residual.size()) +
                                                " values; delta has " +
                                                std::to_string(delta.size()));
  }
  DeltaEncodeInfo info;
  info.preClipNorm = l2Norm(delta);
  if (!std::isfinite(info.preClipNorm)) {
    // A double sum of float squares cannot overflow, so some value is bad.
    const std::size_t bad = firstNonFinite(delta);
    assert(bad < delta.size());
    return makeError(Code::NonFinite, "delta " + locate(tensorSizes, bad, delta[bad]));
  }
  const bool unchanged = !(options.clipNorm > 0.0f && info.preClipNorm > options.clipNorm) &&
                         !(options.noiseStd > 0.0f) && residual.empty();
  clipWithNorm(delta, options.clipNorm, info.preClipNorm);
  addGaussianNoise(delta, options.noiseStd, rng);
  if (!residual.empty()) {
    for (std::size_t i = 0; i < delta.size(); ++i) delta[i] += residual[i];
  }
  // Clipping only shrinks, but noise or the residual can overflow a value.
  if (options.noiseStd > 0.0f || !residual.empty()) {
    const std::size_t bad = firstNonFinite(delta);
    if (bad < delta.size()) {
      return makeError(Code::NonFinite,
                       "delta after noise and residual: " + locate(tensorSizes, bad, delta[bad]));
    }
  }

  auto tensors = out.initTensors(static_cast<unsigned>(tensorSizes.size()));
  double sentSquares = 0.0;
  switch (options.encoding) {
    case DeltaEncoding::FLOAT32:
      encodeFloat32(delta, tensorSizes, tensors, residual);
      // Sent as is: unless clipping, noise or the residual changed the
      // delta, its norm is the one already known.
      sentSquares = unchanged ? info.preClipNorm * info.preClipNorm : sumOfSquares(delta);
      info.sentEntries = total;
      info.payloadBytes = 4 * total;
      break;
    case DeltaEncoding::INT8:
      sentSquares = encodeInt8(delta, tensorSizes, options.rounding, rng, tensors, residual);
      info.sentEntries = total;
      info.payloadBytes = total + 4 * tensorSizes.size();
      break;
    case DeltaEncoding::TOP_K:
      sentSquares =
          encodeTopK(delta, tensorSizes, options.topKFraction, tensors, residual, info.sentEntries);
      info.payloadBytes = 8 * info.sentEntries;
      break;
  }
  info.sentNorm = std::sqrt(sentSquares);
  out.setEncoding(options.encoding);
  out.setL2Norm(static_cast<float>(info.sentNorm));
  out.setClipNorm(options.clipNorm);
  out.setNoiseStd(options.noiseStd);
  return info;
}

Result<Bytes> encodeDeltaMessage(std::span<float> delta, std::span<const std::uint32_t> tensorSizes,
                                 const DeltaOptions& options, std::span<float> residual,
                                 std::mt19937_64& rng) {
  // Size the first segment for the whole message so it stays one segment:
  // payload, plus per tensor a struct (4 words), list tag and data padding.
  std::uint64_t payload = 4 * delta.size();
  if (options.encoding == DeltaEncoding::INT8) payload = delta.size();
  if (options.encoding == DeltaEncoding::TOP_K) {
    payload = 8 * static_cast<std::uint64_t>(
                      std::ceil(static_cast<double>(options.topKFraction) * delta.size()));
  }
  const std::uint64_t words = 16 + payload / 8 + 8 * tensorSizes.size();
  capnp::MallocMessageBuilder builder(
      static_cast<unsigned>(std::min<std::uint64_t>(words, kMaxSegmentWords)));
  auto root = builder.initRoot<wire::Delta>();
  auto info = encodeDelta(delta, tensorSizes, options, residual, rng, root);
  if (!info.ok()) return info.error();
  return toBytes(builder);
}

Status decodeDelta(wire::Delta::Reader delta, std::span<const std::uint32_t> expectedTensorSizes,
                   std::span<float> out) {
  const std::uint64_t total = totalElements(expectedTensorSizes);
  if (total != out.size()) {
    return makeError(Code::InvalidArgument, "expected tensor sizes sum to " +
                                                std::to_string(total) + "; out has " +
                                                std::to_string(out.size()) + " values");
  }
  // A reader that parseMessage walked does not throw; one from elsewhere
  // might (traversal limit), and an exception must not reach the caller.
  Status decoded;
  Status walked =
      detail::guardedWalk([&] { decoded = decodeChecked(delta, expectedTensorSizes, out); });
  if (!walked.ok()) return walked;
  return decoded;
}

}  // namespace edgefl
