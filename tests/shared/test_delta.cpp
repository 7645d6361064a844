// Delta arithmetic and codecs: round trips with stated error bounds, the
// optimized encoders against plain reference versions, and every rejection
// of a crafted (malformed) message.

#include "edgefl/shared/delta.hpp"

#include <capnp/any.h>
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "edgefl/shared/envelope.hpp"

namespace edgefl {
namespace {

// mlp:784-128-10 in wire order: weight, bias per dense layer.
const std::vector<std::uint32_t> kMlpSizes = {784 * 128, 128, 128 * 10, 10};
constexpr std::size_t kMlpParams = 101770;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> randomValues(std::size_t n, std::uint64_t seed, float stddev = 0.01f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

double norm(std::span<const float> v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

template <typename T>
Status statusOf(const Result<T>& result) {
  if (result.ok()) return {};
  return result.error();
}

void expectError(const Status& status, Code code, std::initializer_list<std::string> parts) {
  ASSERT_FALSE(status.ok()) << "expected " << codeName(code);
  EXPECT_EQ(status.code(), code) << status.error().toString();
  for (const std::string& part : parts) {
    EXPECT_NE(status.error().detail.find(part), std::string::npos)
        << "detail \"" << status.error().detail << "\" lacks \"" << part << "\"";
  }
}

// Encodes to bytes, parses them as the coordinator would and decodes.
struct RoundTrip {
  Bytes bytes;
  std::vector<float> decoded;
  float l2Norm = 0.0f;
  float clipNorm = 0.0f;
  float noiseStd = 0.0f;
  DeltaEncoding encoding = DeltaEncoding::FLOAT32;
  std::vector<float> int8Scales;  // per tensor, when int8
};

RoundTrip roundTrip(std::vector<float> delta, std::span<const std::uint32_t> sizes,
                    const DeltaOptions& options, std::span<float> residual,
                    std::uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  RoundTrip out;
  auto bytes = encodeDeltaMessage(delta, sizes, options, residual, rng);
  EXPECT_TRUE(bytes.ok()) << bytes.error().toString();
  if (!bytes.ok()) return out;
  out.bytes = std::move(bytes.value());
  auto parsed = parseMessage<wire::Delta>(out.bytes);
  EXPECT_TRUE(parsed.ok()) << parsed.error().toString();
  if (!parsed.ok()) return out;
  out.decoded.assign(delta.size(), kNaN);
  Status decoded = decodeDelta(parsed->root(), sizes, out.decoded);
  EXPECT_TRUE(decoded.ok()) << decoded.error().toString();
  auto root = parsed->root();
  out.l2Norm = root.getL2Norm();
  out.clipNorm = root.getClipNorm();
  out.noiseStd = root.getNoiseStd();
  out.encoding = root.getEncoding();
  for (auto tensor : root.getTensors()) {
    if (tensor.isInt8()) out.int8Scales.push_back(tensor.getInt8().getScale());
  }
  return out;
}

// --- Arithmetic

TEST(Delta, ComputeAndApply) {
  const std::vector<float> local = {1.5f, -2.0f, 0.25f, 8.0f};
  const std::vector<float> base = {1.0f, 1.0f, 0.5f, 8.0f};
  std::vector<float> delta(4);
  ASSERT_TRUE(computeDelta(local, base, delta).ok());
  EXPECT_EQ(delta, (std::vector<float>{0.5f, -3.0f, -0.25f, 0.0f}));

  std::vector<float> params = base;
  ASSERT_TRUE(applyDelta(params, delta).ok());
  EXPECT_EQ(params, local);  // exact: every value here is a short binary fraction
  ASSERT_TRUE(applyDelta(params, delta, -0.5f).ok());
  EXPECT_EQ(params, (std::vector<float>{1.25f, -0.5f, 0.375f, 8.0f}));

  std::vector<float> shortOut(3);
  expectError(computeDelta(local, base, shortOut), Code::InvalidArgument, {"out 3"});
  expectError(computeDelta(local, std::span<const float>(base).first(2), delta),
              Code::InvalidArgument, {"base 2"});
  expectError(applyDelta(shortOut, delta), Code::InvalidArgument, {"params has 3", "delta 4"});
}

TEST(Delta, L2NormAccumulatesInDouble) {
  EXPECT_DOUBLE_EQ(l2Norm(std::vector<float>{3.0f, -4.0f}), 5.0);
  EXPECT_EQ(l2Norm(std::vector<float>{}), 0.0);
  // Float squares of 3e38 overflow; the double accumulator does not.
  const double big = l2Norm(std::vector<float>{3e38f, 3e38f, 3e38f, 3e38f});
  EXPECT_NEAR(big / 6e38, 1.0, 1e-6);
  EXPECT_FALSE(std::isfinite(l2Norm(std::vector<float>{1.0f, kNaN})));
  EXPECT_FALSE(std::isfinite(l2Norm(std::vector<float>{1.0f, -kInf, 2.0f})));
  // The unrolled sum matches a plain one on a length that is not a multiple of 4.
  const auto values = randomValues(1001, 3, 1.0f);
  EXPECT_NEAR(l2Norm(values), norm(values), 1e-12 * norm(values));
}

TEST(Delta, ClipL2BoundsTheNormAndKeepsTheDirection) {
  const auto original = randomValues(10007, 5, 1.0f);  // norm ~100
  const double before = norm(original);
  for (float maxNorm : {1.0f, 3.7f, 99.0f, 1e-3f}) {
    auto values = original;
    EXPECT_DOUBLE_EQ(clipL2(values, maxNorm), l2Norm(original));
    const double after = norm(values);
    EXPECT_LE(after, maxNorm);
    EXPECT_GE(after, maxNorm * (1.0 - 1e-5));  // clipped to the bound, not far below
    // Same direction: every entry scaled by the same factor.
    const double factor = after / before;
    for (std::size_t i = 0; i < values.size(); i += 97) {
      EXPECT_NEAR(values[i], original[i] * factor, 1e-6 * std::fabs(original[i]) + 1e-30);
    }
  }
  // Within the bound, or disabled: untouched.
  auto values = original;
  EXPECT_DOUBLE_EQ(clipL2(values, 1000.0f), l2Norm(original));
  EXPECT_EQ(values, original);
  EXPECT_DOUBLE_EQ(clipL2(values, 0.0f), l2Norm(original));
  EXPECT_EQ(values, original);
}

TEST(Delta, GaussianNoiseHasTheRequestedStd) {
  // n samples of N(0, s^2): the sample std has relative standard error
  // ~1/sqrt(2n) = 0.16% and the mean standard error s/sqrt(n); bounds at 6
  // standard errors.
  constexpr std::size_t kN = 200000;
  constexpr float kStd = 0.5f;
  std::vector<float> values(kN, 0.0f);
  std::mt19937_64 rng(42);
  addGaussianNoise(values, kStd, rng);
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / kN;
  double squares = 0.0;
  for (float v : values) squares += (v - mean) * (v - mean);
  const double stddev = std::sqrt(squares / (kN - 1));
  EXPECT_NEAR(stddev / kStd, 1.0, 6.0 / std::sqrt(2.0 * kN));
  EXPECT_NEAR(mean, 0.0, 6.0 * kStd / std::sqrt(double{kN}));

  // The caller's generator decides the draw: same seed, same noise.
  std::vector<float> again(kN, 0.0f);
  std::mt19937_64 rng2(42);
  addGaussianNoise(again, kStd, rng2);
  EXPECT_EQ(values, again);

  std::vector<float> untouched = {1.0f, 2.0f};
  addGaussianNoise(untouched, 0.0f, rng);
  EXPECT_EQ(untouched, (std::vector<float>{1.0f, 2.0f}));
}

// --- Options

TEST(Delta, OptionsFromPolicy) {
  capnp::MallocMessageBuilder message;
  auto policy = message.initRoot<wire::DeltaPolicy>();
  DeltaOptions options{.encoding = DeltaEncoding::INT8,
                       .clipNorm = 2.5f,
                       .noiseStd = 0.1f,
                       .topKFraction = 0.05f,
                       .rounding = Rounding::STOCHASTIC};
  writeDeltaPolicy(options, policy);
  auto read = deltaOptionsFromPolicy(policy.asReader());
  ASSERT_TRUE(read.ok()) << read.error().toString();
  EXPECT_EQ(read->encoding, DeltaEncoding::INT8);
  EXPECT_EQ(read->clipNorm, 2.5f);
  EXPECT_EQ(read->noiseStd, 0.1f);
  EXPECT_EQ(read->topKFraction, 0.05f);
  EXPECT_EQ(read->rounding, Rounding::STOCHASTIC);

  // The wire default of topKFraction (0) is not a usable top-k policy.
  policy.setEncoding(DeltaEncoding::TOP_K);
  policy.setTopKFraction(0.0f);
  EXPECT_EQ(deltaOptionsFromPolicy(policy.asReader()).code(), Code::OutOfRange);
  policy.setTopKFraction(1.0f);
  EXPECT_TRUE(deltaOptionsFromPolicy(policy.asReader()).ok());
  policy.setClipNorm(-1.0f);
  EXPECT_EQ(deltaOptionsFromPolicy(policy.asReader()).code(), Code::OutOfRange);
  policy.setClipNorm(0.0f);
  policy.setNoiseStd(kNaN);
  EXPECT_EQ(deltaOptionsFromPolicy(policy.asReader()).code(), Code::OutOfRange);
  policy.setNoiseStd(0.0f);
  policy.setEncoding(static_cast<DeltaEncoding>(9));  // from a newer coordinator
  EXPECT_EQ(deltaOptionsFromPolicy(policy.asReader()).code(), Code::Unsupported);
}

TEST(Delta, ValidateOptions) {
  EXPECT_TRUE(validateDeltaOptions({}).ok());
  auto check = [](DeltaOptions o, Code code, const std::string& part) {
    expectError(validateDeltaOptions(o), code, {part});
  };
  check({.encoding = DeltaEncoding::TOP_K, .topKFraction = 1.5f}, Code::OutOfRange,
        "topKFraction = 1.5");
  check({.encoding = DeltaEncoding::TOP_K, .topKFraction = kNaN}, Code::OutOfRange,
        "topKFraction = nan");
  check({.clipNorm = kInf}, Code::OutOfRange, "clipNorm = inf");
  check({.noiseStd = -0.5f}, Code::OutOfRange, "noiseStd = -0.5");
  check({.encoding = DeltaEncoding::INT8, .rounding = static_cast<Rounding>(5)}, Code::Unsupported,
        "rounding 5");
  // Rounding is ignored where it does not apply.
  EXPECT_TRUE(validateDeltaOptions({.rounding = static_cast<Rounding>(5)}).ok());
}

// --- Encoding round trips

TEST(Delta, Float32RoundTripIsExact) {
  const auto delta = randomValues(kMlpParams, 7);
  std::vector<float> residual(kMlpParams, 1.0f);
  std::vector<float> zeros(kMlpParams, 0.0f);
  // With a zero residual, what is sent is the delta itself.
  auto trip = roundTrip(delta, kMlpSizes, {}, zeros);
  EXPECT_EQ(trip.decoded, delta);
  EXPECT_EQ(trip.encoding, DeltaEncoding::FLOAT32);
  EXPECT_FLOAT_EQ(trip.l2Norm, static_cast<float>(norm(delta)));
  EXPECT_EQ(trip.clipNorm, 0.0f);
  EXPECT_EQ(trip.noiseStd, 0.0f);
  EXPECT_EQ(zeros, std::vector<float>(kMlpParams, 0.0f));
  // 4 bytes per entry plus Cap'n Proto framing.
  EXPECT_LT(trip.bytes.size(), 4 * kMlpParams + 512);
  EXPECT_GE(trip.bytes.size(), 4 * kMlpParams);

  // A carried residual is sent in full and cleared.
  auto carried = roundTrip(delta, kMlpSizes, {}, residual);
  for (std::size_t i = 0; i < kMlpParams; i += 101) EXPECT_EQ(carried.decoded[i], delta[i] + 1.0f);
  EXPECT_EQ(residual, std::vector<float>(kMlpParams, 0.0f));
}

TEST(Delta, EncodeReportsWhatItDid) {
  auto delta = randomValues(kMlpParams, 8);
  const double before = norm(delta);
  std::mt19937_64 rng(1);
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::Delta>();
  const DeltaOptions options{
      .encoding = DeltaEncoding::TOP_K, .clipNorm = 0.5f, .topKFraction = 0.1f};
  auto info = encodeDelta(delta, kMlpSizes, options, {}, rng, root);
  ASSERT_TRUE(info.ok()) << info.error().toString();
  EXPECT_DOUBLE_EQ(info->preClipNorm, l2Norm(randomValues(kMlpParams, 8)));
  EXPECT_NEAR(before, info->preClipNorm, 1e-9 * before);
  // k = ceil(fraction * total) with the float fraction's exact value.
  EXPECT_EQ(info->sentEntries, static_cast<std::uint64_t>(std::ceil(double{0.1f} * kMlpParams)));
  EXPECT_EQ(info->payloadBytes, 8 * info->sentEntries);
  EXPECT_LE(info->sentNorm, 0.5);
  EXPECT_EQ(root.getL2Norm(), static_cast<float>(info->sentNorm));
  EXPECT_EQ(root.getClipNorm(), 0.5f);
  EXPECT_EQ(root.getEncoding(), DeltaEncoding::TOP_K);
}

TEST(Delta, ClippingThroughTheEncoderBoundsTheDecodedNorm) {
  const auto delta = randomValues(kMlpParams, 9, 1.0f);
  auto trip = roundTrip(delta, kMlpSizes, {.clipNorm = 2.0f}, {});
  EXPECT_LE(norm(trip.decoded), 2.0);
  EXPECT_GT(norm(trip.decoded), 2.0 * (1 - 1e-5));
  EXPECT_EQ(trip.clipNorm, 2.0f);
  EXPECT_FLOAT_EQ(trip.l2Norm, static_cast<float>(norm(trip.decoded)));
}

TEST(Delta, NoiseThroughTheEncoderHasTheRequestedStd) {
  // A zero delta isolates the noise; bound as in GaussianNoiseHasTheRequestedStd.
  const std::vector<float> zero(kMlpParams, 0.0f);
  auto trip = roundTrip(zero, kMlpSizes, {.noiseStd = 0.02f}, {});
  const double stddev = norm(trip.decoded) / std::sqrt(double{kMlpParams});
  EXPECT_NEAR(stddev / 0.02, 1.0, 6.0 / std::sqrt(2.0 * kMlpParams));
  EXPECT_EQ(trip.noiseStd, 0.02f);
}

TEST(Delta, Int8NearestErrorIsAtMostHalfAScale) {
  const auto delta = randomValues(kMlpParams, 11);
  auto trip = roundTrip(delta, kMlpSizes, {.encoding = DeltaEncoding::INT8}, {});
  ASSERT_EQ(trip.int8Scales.size(), kMlpSizes.size());
  // One byte per entry and a scale per tensor.
  EXPECT_LT(trip.bytes.size(), kMlpParams + 512);
  std::size_t offset = 0;
  double worst = 0.0;
  for (std::size_t t = 0; t < kMlpSizes.size(); ++t) {
    const float scale = trip.int8Scales[t];
    float maxAbs = 0.0f;
    for (std::size_t i = 0; i < kMlpSizes[t]; ++i)
      maxAbs = std::max(maxAbs, std::fabs(delta[offset + i]));
    EXPECT_EQ(scale, maxAbs / 127.0f);
    for (std::size_t i = 0; i < kMlpSizes[t]; ++i) {
      const float v = delta[offset + i];
      const float got = trip.decoded[offset + i];
      // scale / 2 from rounding, plus float rounding of v / scale and of
      // q * scale (each <= 127 * 2^-24 * scale).
      ASSERT_LE(std::fabs(got - v), scale * (0.5f + 2e-5f)) << "tensor " << t << " entry " << i;
      worst = std::max(worst, double{std::fabs(got - v) / scale});
      // Plain reference: libm's round-to-nearest-even of v / scale.
      const float q = std::clamp(std::nearbyint(v / scale), -127.0f, 127.0f);
      ASSERT_EQ(got, q * scale) << "tensor " << t << " entry " << i;
    }
    offset += kMlpSizes[t];
  }
  // The bound is approached, so the check above is not vacuous.
  EXPECT_GT(worst, 0.45);
}

TEST(Delta, Int8StochasticRoundingIsUnbiased) {
  // Values at 0.3 of a step past a level: nearest rounding is off by 0.3
  // scale every time, stochastic rounding by 0 on average. Over kSeeds
  // independent encodings the mean error of one entry has standard
  // deviation <= scale / (2 sqrt(kSeeds)); the bound is 5 of those.
  constexpr int kSeeds = 4000;
  constexpr float kScale = 0.01f;
  std::vector<float> values;
  values.push_back(127 * kScale);  // pins scale = max|v| / 127 = kScale
  for (int level = -120; level <= 120; level += 15) values.push_back((level + 0.3f) * kScale);
  const std::vector<std::uint32_t> sizes = {static_cast<std::uint32_t>(values.size())};
  const double bound = 5.0 * kScale / (2.0 * std::sqrt(double{kSeeds}));

  auto meanErrors = [&](Rounding rounding) {
    std::vector<double> sum(values.size(), 0.0);
    for (int seed = 0; seed < kSeeds; ++seed) {
      auto trip = roundTrip(values, sizes, {.encoding = DeltaEncoding::INT8, .rounding = rounding},
                            {}, static_cast<std::uint64_t>(seed));
      EXPECT_EQ(trip.int8Scales.at(0), values[0] / 127.0f);
      for (std::size_t i = 0; i < values.size(); ++i) {
        const float err = trip.decoded[i] - values[i];
        EXPECT_LT(std::fabs(err), kScale * (1.0f + 1e-5f));  // one step at most
        sum[i] += err;
      }
    }
    for (double& s : sum) s /= kSeeds;
    return sum;
  };

  const auto stochastic = meanErrors(Rounding::STOCHASTIC);
  for (std::size_t i = 1; i < values.size(); ++i) {
    EXPECT_NEAR(stochastic[i], 0.0, bound) << "entry " << i << " value " << values[i];
  }
  // The same test detects the bias of nearest rounding.
  const auto nearest = meanErrors(Rounding::NEAREST);
  for (std::size_t i = 1; i < values.size(); ++i) {
    EXPECT_NEAR(nearest[i], -0.3 * kScale, 1e-6) << "entry " << i;
    EXPECT_GT(std::fabs(nearest[i]), bound);
  }
}

TEST(Delta, Int8AllZeroTensorSendsZeros) {
  std::vector<float> delta = {0.0f, 0.0f, 0.0f, 1.0f, -0.5f};
  const std::vector<std::uint32_t> sizes = {3, 2};
  auto trip = roundTrip(delta, sizes, {.encoding = DeltaEncoding::INT8}, {});
  ASSERT_EQ(trip.int8Scales.size(), 2u);
  EXPECT_EQ(trip.int8Scales[0], 0.0f);
  EXPECT_EQ(trip.decoded[0], 0.0f);
  EXPECT_EQ(trip.decoded[3], 1.0f);
  EXPECT_NEAR(trip.decoded[4], -0.5f, 0.5f / 127);
}

// Plain reference for top-k: sort positions by magnitude (ties: lower index
// first) and take the first k non-zero ones.
std::vector<std::size_t> referenceTopK(const std::vector<float>& values, std::size_t k) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return std::fabs(values[a]) > std::fabs(values[b]);
  });
  order.resize(std::min(k, order.size()));
  std::erase_if(order, [&](std::size_t i) { return values[i] == 0.0f; });
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<std::size_t> nonZero(const std::vector<float>& values) {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] != 0.0f) out.push_back(i);
  }
  return out;
}

TEST(Delta, TopKKeepsExactlyTheKLargest) {
  for (float fraction : {0.01f, 0.1f, 0.5f, 1.0f}) {
    const auto delta = randomValues(kMlpParams, 13);
    std::vector<float> residual(kMlpParams, 0.0f);
    auto trip = roundTrip(delta, kMlpSizes,
                          {.encoding = DeltaEncoding::TOP_K, .topKFraction = fraction}, residual);
    const auto k = static_cast<std::size_t>(std::ceil(double{fraction} * kMlpParams));
    const auto expected = referenceTopK(delta, k);
    ASSERT_EQ(expected.size(), k);
    EXPECT_EQ(nonZero(trip.decoded), expected) << "fraction " << fraction;
    // Kept entries are exact, the rest is zero and waits in the residual.
    for (std::size_t i = 0; i < kMlpParams; ++i) {
      ASSERT_EQ(trip.decoded[i] + residual[i], delta[i]) << i;
      ASSERT_TRUE(trip.decoded[i] == 0.0f || residual[i] == 0.0f) << i;
    }
    EXPECT_LT(trip.bytes.size(), 8 * k + 512);
  }
}

TEST(Delta, TopKIsGlobalTiesGoToLowerIndicesAndZerosStayHome) {
  // Tensor 0 moves little, tensor 1 a lot: a global budget spends it all on
  // tensor 1, whose sparse lists are then full and tensor 0's empty.
  std::vector<float> delta = {0.01f, -0.02f, 0.03f, 5.0f, -6.0f, 7.0f};
  const std::vector<std::uint32_t> sizes = {3, 3};
  auto trip = roundTrip(delta, sizes, {.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.5f}, {});
  EXPECT_EQ(trip.decoded, (std::vector<float>{0, 0, 0, 5.0f, -6.0f, 7.0f}));

  // Equal magnitudes at the threshold: the lower indices win.
  std::vector<float> ties = {1.0f, -2.0f, 2.0f, -2.0f, 2.0f, 1.0f};
  auto tied = roundTrip(ties, sizes, {.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.5f}, {});
  EXPECT_EQ(tied.decoded, (std::vector<float>{0, -2.0f, 2.0f, -2.0f, 0, 0}));
  EXPECT_EQ(nonZero(tied.decoded), referenceTopK(ties, 3));

  // Fewer non-zero entries than k: only those go out.
  std::vector<float> sparse(1000, 0.0f);
  sparse[10] = -1.0f;
  sparse[999] = 0.5f;
  std::vector<float> zeroMagnitude = {-0.0f, 0.0f};
  std::mt19937_64 rng(1);
  capnp::MallocMessageBuilder message;
  const std::vector<std::uint32_t> one = {1000};
  auto info = encodeDelta(sparse, one, {.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.1f}, {},
                          rng, message.initRoot<wire::Delta>());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->sentEntries, 2u);
  const std::vector<std::uint32_t> two = {2};
  auto none =
      encodeDelta(zeroMagnitude, two, {.encoding = DeltaEncoding::TOP_K, .topKFraction = 1.0f}, {},
                  rng, message.initRoot<wire::Delta>());
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->sentEntries, 0u);
}

// Over T rounds with error feedback, sum(sent) + final residual equals
// sum(deltas) up to float rounding: with acc_t = delta_t + residual_{t-1}
// computed in float, the gap is the sum of those roundings (<= 2^-24
// |acc_t| each) and, for int8, of the residual subtraction (<= 2^-24
// |residual_t|). The test tracks that bound per entry.
void checkErrorFeedback(const DeltaOptions& options) {
  const std::vector<std::uint32_t> sizes = {4000, 64, 1000, 10};
  const std::size_t n = 5074;
  constexpr int kRounds = 40;
  std::vector<float> residual(n, 0.0f);
  std::vector<double> sumTrue(n, 0.0), sumSent(n, 0.0), bound(n, 0.0);
  std::mt19937_64 rng(99);
  double residualNorm = 0.0;
  for (int round = 0; round < kRounds; ++round) {
    const auto delta = randomValues(n, 1000 + static_cast<std::uint64_t>(round));
    for (std::size_t i = 0; i < n; ++i) sumTrue[i] += delta[i];
    auto scratch = delta;
    auto bytes = encodeDeltaMessage(scratch, sizes, options, residual, rng);
    ASSERT_TRUE(bytes.ok()) << bytes.error().toString();
    auto parsed = parseMessage<wire::Delta>(*bytes);
    ASSERT_TRUE(parsed.ok());
    std::vector<float> decoded(n);
    ASSERT_TRUE(decodeDelta(parsed->root(), sizes, decoded).ok());
    for (std::size_t i = 0; i < n; ++i) {
      sumSent[i] += decoded[i];
      // `scratch` now holds acc_t = delta_t + residual_{t-1}.
      bound[i] += 0x1p-24 * (std::fabs(scratch[i]) + std::fabs(residual[i]));
    }
    residualNorm = norm(residual);
  }
  EXPECT_GT(residualNorm, 0.0);  // something was held back
  double worstWithout = 0.0;
  double largestBound = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double gap = sumSent[i] + residual[i] - sumTrue[i];
    ASSERT_LE(std::fabs(gap), bound[i] + 1e-12) << "entry " << i;
    worstWithout = std::max(worstWithout, std::fabs(sumSent[i] - sumTrue[i]));
    largestBound = std::max(largestBound, bound[i]);
  }
  // Without the residual term the sums differ by far more than the bound.
  EXPECT_GT(worstWithout, 100 * largestBound);
}

TEST(Delta, TopKErrorFeedbackConservesTheSum) {
  checkErrorFeedback({.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.05f});
}

TEST(Delta, Int8ErrorFeedbackConservesTheSum) {
  checkErrorFeedback({.encoding = DeltaEncoding::INT8, .rounding = Rounding::NEAREST});
}

TEST(Delta, EncodeRejectsBadArguments) {
  std::mt19937_64 rng(1);
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::Delta>();
  const std::vector<std::uint32_t> sizes = {2, 3};
  std::vector<float> delta = {1, 2, 3, 4, 5};

  std::vector<float> shortDelta = {1, 2, 3, 4};
  expectError(statusOf(encodeDelta(shortDelta, sizes, {}, {}, rng, root)), Code::InvalidArgument,
              {"sum to 5", "has 4"});
  std::vector<float> shortResidual(4);
  EXPECT_EQ(encodeDelta(delta, sizes, {}, shortResidual, rng, root).code(), Code::InvalidArgument);
  EXPECT_EQ(encodeDelta(delta, sizes, {.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.0f}, {},
                        rng, root)
                .code(),
            Code::OutOfRange);

  std::vector<float> withNaN = {1, 2, 3, kNaN, 5};
  auto nan = encodeDelta(withNaN, sizes, {}, {}, rng, root);
  ASSERT_FALSE(nan.ok());
  EXPECT_EQ(nan.code(), Code::NonFinite);
  EXPECT_NE(nan.error().detail.find("tensor 1 entry 1 = nan"), std::string::npos)
      << nan.error().detail;

  // The residual overflows the sum: rejected, and the residual is kept.
  std::vector<float> big = {3e38f, 0, 0, 0, 0};
  std::vector<float> residual = {3e38f, 1, 1, 1, 1};
  const auto residualBefore = residual;
  auto overflow = encodeDelta(big, sizes, {}, residual, rng, root);
  ASSERT_FALSE(overflow.ok());
  EXPECT_EQ(overflow.code(), Code::NonFinite);
  EXPECT_NE(overflow.error().detail.find("tensor 0 entry 0 = inf"), std::string::npos)
      << overflow.error().detail;
  EXPECT_EQ(residual, residualBefore);

  // A tensor larger than a Data field holds (2^29 - 1 bytes) is refused
  // before anything is read; for int8 (one byte per entry) it fits.
  const std::vector<std::uint32_t> huge = {std::uint32_t{1} << 28};
  expectError(statusOf(encodeDelta(std::span<float>(), huge, {}, {}, rng, root)), Code::TooLarge,
              {"tensor 0", "268435456 entries"});
  EXPECT_EQ(encodeDelta(std::span<float>(), huge, {.encoding = DeltaEncoding::INT8}, {}, rng, root)
                .code(),
            Code::InvalidArgument);
}

// --- Decoding crafted messages

// Builds a Delta with `build`, serializes it and parses it back the way the
// coordinator receives it, then decodes against `sizes` (into `out` when
// given).
Status decodeCrafted(std::span<const std::uint32_t> sizes,
                     const std::function<void(wire::Delta::Builder)>& build,
                     std::vector<float>* out = nullptr) {
  capnp::MallocMessageBuilder message;
  build(message.initRoot<wire::Delta>());
  Bytes bytes = toBytes(message);
  auto parsed = parseMessage<wire::Delta>(bytes);
  EXPECT_TRUE(parsed.ok()) << parsed.error().toString();
  if (!parsed.ok()) return parsed.error();
  std::vector<float> scratch;
  if (out == nullptr) out = &scratch;
  out->assign(totalElements(sizes), kNaN);
  return decodeDelta(parsed->root(), sizes, *out);
}

template <typename T>
void setData(capnp::Data::Builder data, const std::vector<T>& values) {
  if (!values.empty()) std::memcpy(data.begin(), values.data(), values.size() * sizeof(T));
}

void setDense(wire::DeltaTensor::Builder tensor, const std::vector<float>& values) {
  tensor.setElementCount(static_cast<std::uint32_t>(values.size()));
  setData(tensor.initDense(static_cast<unsigned>(4 * values.size())), values);
}

void setInt8(wire::DeltaTensor::Builder tensor, float scale, const std::vector<std::int8_t>& q) {
  tensor.setElementCount(static_cast<std::uint32_t>(q.size()));
  auto group = tensor.initInt8();
  group.setScale(scale);
  setData(group.initValues(static_cast<unsigned>(q.size())), q);
}

void setSparse(wire::DeltaTensor::Builder tensor, std::uint32_t n,
               const std::vector<std::uint32_t>& indices, const std::vector<float>& values) {
  tensor.setElementCount(n);
  auto group = tensor.initSparse();
  setData(group.initIndices(static_cast<unsigned>(4 * indices.size())), indices);
  setData(group.initValues(static_cast<unsigned>(4 * values.size())), values);
}

const std::vector<std::uint32_t> kSizes = {3, 2};

TEST(DeltaDecode, AcceptsEachEncoding) {
  std::vector<float> out;
  auto dense = [](wire::Delta::Builder d) {
    auto t = d.initTensors(2);
    setDense(t[0], {1, 2, 3});
    setDense(t[1], {-4, 5});
  };
  ASSERT_TRUE(decodeCrafted(kSizes, dense, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{1, 2, 3, -4, 5}));

  auto int8 = [](wire::Delta::Builder d) {
    d.setEncoding(DeltaEncoding::INT8);
    auto t = d.initTensors(2);
    setInt8(t[0], 0.5f, {1, -128, 127});  // -128 is a valid int8
    setInt8(t[1], 0.0f, {3, 4});
  };
  ASSERT_TRUE(decodeCrafted(kSizes, int8, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{0.5f, -64.0f, 63.5f, 0, 0}));

  auto sparse = [](wire::Delta::Builder d) {
    d.setEncoding(DeltaEncoding::TOP_K);
    auto t = d.initTensors(2);
    setSparse(t[0], 3, {0, 2}, {1.5f, -2.5f});
    setSparse(t[1], 2, {}, {});
  };
  ASSERT_TRUE(decodeCrafted(kSizes, sparse, &out).ok());
  EXPECT_EQ(out, (std::vector<float>{1.5f, 0, -2.5f, 0, 0}));
}

TEST(DeltaDecode, RejectsShapeMismatch) {
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              setDense(d.initTensors(1)[0], {1, 2, 3});
                            }),
              Code::ShapeMismatch, {"1 tensors", "model has 2"});
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              auto t = d.initTensors(2);
                              setDense(t[0], {1, 2, 3});
                              setDense(t[1], {1, 2, 3});
                            }),
              Code::ShapeMismatch, {"tensor 1", "elementCount = 3", "model has 2"});
}

TEST(DeltaDecode, RejectsBadDense) {
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              auto t = d.initTensors(2);
                              setDense(t[0], {1, 2, 3});
                              t[1].setElementCount(2);
                              t[1].initDense(7);
                            }),
              Code::BadField, {"tensor 1", "7 bytes", "4 * 2 = 8"});
  // An unset union reads as dense with no data.
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              auto t = d.initTensors(2);
                              t[0].setElementCount(3);
                              setDense(t[1], {1, 2});
                            }),
              Code::BadField, {"tensor 0", "0 bytes"});
  for (float bad : {kNaN, kInf, -kInf}) {
    expectError(decodeCrafted(kSizes,
                              [bad](wire::Delta::Builder d) {
                                auto t = d.initTensors(2);
                                setDense(t[0], {1, 2, 3});
                                setDense(t[1], {4, bad});
                              }),
                Code::NonFinite, {"tensor 1", "entry 1"});
  }
}

TEST(DeltaDecode, RejectsBadInt8) {
  std::vector<float> out;
  auto with = [&out](float scale, std::vector<std::int8_t> q) {
    return decodeCrafted(
        kSizes,
        [=](wire::Delta::Builder d) {
          d.setEncoding(DeltaEncoding::INT8);
          auto t = d.initTensors(2);
          setInt8(t[0], 1.0f, {1, 2, 3});
          setInt8(t[1], scale, q);
          t[1].setElementCount(2);  // the count the model expects, whatever the bytes
        },
        &out);
  };
  expectError(with(1.0f, {1, 2, 3}), Code::BadField, {"tensor 1", "3 bytes", "expected 2"});
  expectError(with(kNaN, {1, 2}), Code::NonFinite, {"tensor 1", "scale = nan"});
  expectError(with(kInf, {1, 2}), Code::NonFinite, {"tensor 1", "scale = inf"});
  expectError(with(-0.5f, {1, 2}), Code::BadField, {"tensor 1", "scale = -0.5"});
  expectError(with(3e36f, {1, 2}), Code::OutOfRange, {"tensor 1", "128 * scale overflows"});
  EXPECT_TRUE(with(2e36f, {-128, 127}).ok());  // large scales that stay finite decode
  EXPECT_EQ(out[3], -128 * 2e36f);
  EXPECT_TRUE(std::isfinite(out[3]));
}

TEST(DeltaDecode, RejectsBadSparse) {
  auto with = [](const std::function<void(wire::DeltaTensor::Builder)>& second) {
    return decodeCrafted(kSizes, [&](wire::Delta::Builder d) {
      d.setEncoding(DeltaEncoding::TOP_K);
      auto t = d.initTensors(2);
      setSparse(t[0], 3, {1}, {1.0f});
      second(t[1]);
    });
  };
  expectError(with([](auto t) {
                t.setElementCount(2);
                auto g = t.initSparse();
                g.initIndices(6);
                g.initValues(8);
              }),
              Code::BadField, {"tensor 1", "indices are 6 bytes"});
  expectError(with([](auto t) {
                t.setElementCount(2);
                auto g = t.initSparse();
                g.initIndices(8);
                g.initValues(5);
              }),
              Code::BadField, {"tensor 1", "values are 5 bytes"});
  expectError(with([](auto t) {
                setSparse(t, 2, {0, 1}, {1.0f});
              }),
              Code::BadField, {"tensor 1", "2 sparse indices but 1 values"});
  expectError(with([](auto t) {
                setSparse(t, 2, {0, 1, 1}, {1.0f, 2.0f, 3.0f});
              }),
              Code::BadField, {"tensor 1", "3 sparse entries", "elementCount is 2"});
  expectError(with([](auto t) { setSparse(t, 2, {2}, {1.0f}); }), Code::BadField,
              {"tensor 1", "sparse index 0 = 2", "elementCount is 2"});
  expectError(with([](auto t) { setSparse(t, 2, {0xffffffffu}, {1.0f}); }), Code::BadField,
              {"sparse index 0 = 4294967295"});
  expectError(with([](auto t) {
                setSparse(t, 2, {1, 0}, {1.0f, 2.0f});
              }),
              Code::BadField, {"tensor 1", "sparse index 1 = 0 follows 1"});
  expectError(with([](auto t) {
                setSparse(t, 2, {1, 1}, {1.0f, 2.0f});
              }),
              Code::BadField, {"sparse index 1 = 1 follows 1"});
  expectError(with([](auto t) {
                setSparse(t, 2, {0, 1}, {1.0f, kNaN});
              }),
              Code::NonFinite, {"tensor 1", "entry 1 (sparse 1) = nan"});
}

TEST(DeltaDecode, RejectsEncodingsItDoesNotKnowOrThatDisagree) {
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              d.setEncoding(DeltaEncoding::INT8);
                              auto t = d.initTensors(2);
                              setInt8(t[0], 1.0f, {1, 2, 3});
                              setDense(t[1], {1, 2});
                            }),
              Code::BadField, {"tensor 1", "is dense but Delta.encoding is int8"});
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              d.setEncoding(static_cast<DeltaEncoding>(7));
                              auto t = d.initTensors(2);
                              setDense(t[0], {1, 2, 3});
                              setDense(t[1], {1, 2});
                            }),
              Code::Unsupported, {"Delta.encoding = 7"});
  // A tensor kind from a newer schema: the union discriminant is the
  // uint16 at data-section element 2 (bytes 4-5) of DeltaTensor.
  expectError(decodeCrafted(kSizes,
                            [](wire::Delta::Builder d) {
                              auto t = d.initTensors(2);
                              setDense(t[0], {1, 2, 3});
                              setDense(t[1], {1, 2});
                              auto section = capnp::AnyStruct::Builder(t[1]).getDataSection();
                              const std::uint16_t kind = 9;
                              std::memcpy(section.begin() + 4, &kind, 2);
                              EXPECT_EQ(static_cast<unsigned>(t[1].which()), 9u);
                            }),
              Code::Unsupported, {"tensor 1", "unknown tensor kind 9"});
}

TEST(DeltaDecode, RejectsAnOutputOfTheWrongSize) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::Delta>();
  std::vector<float> out(4);
  expectError(decodeDelta(root.asReader(), kSizes, out), Code::InvalidArgument,
              {"sum to 5", "out has 4"});
}

// Each read of a parsed message spends its traversal budget (8 x its size):
// decoding the same message over and over must end in an error, not in an
// exception from Cap'n Proto.
TEST(DeltaDecode, ExhaustedTraversalBudgetIsAnErrorNotAnException) {
  auto delta = randomValues(kMlpParams, 21);
  std::mt19937_64 rng(1);
  auto bytes = encodeDeltaMessage(delta, kMlpSizes, {}, {}, rng);
  ASSERT_TRUE(bytes.ok());
  auto parsed = parseMessage<wire::Delta>(*bytes);
  ASSERT_TRUE(parsed.ok());
  std::vector<float> out(kMlpParams);
  int decoded = 0;
  Status status;
  for (int attempt = 0; attempt < 32 && status.ok(); ++attempt) {
    status = decodeDelta(parsed->root(), kMlpSizes, out);
    if (status.ok()) ++decoded;
  }
  EXPECT_GE(decoded, 2);  // the budget allows a few reads after the walk
  EXPECT_EQ(status.code(), Code::TraversalLimit);
}

// Random corruption of valid messages: whatever parses must decode to an
// error or to finite values, never crash (run under the sanitizer build to
// make "no UB" checkable).
TEST(DeltaDecode, SurvivesCorruptedMessages) {
  const std::vector<std::uint32_t> sizes = {40, 8, 16, 3};
  const std::size_t n = 67;
  std::mt19937_64 rng(2024);
  int parsedCount = 0;
  int rejected = 0;
  for (DeltaEncoding encoding :
       {DeltaEncoding::FLOAT32, DeltaEncoding::INT8, DeltaEncoding::TOP_K}) {
    auto delta = randomValues(n, 5, 1.0f);
    auto valid =
        encodeDeltaMessage(delta, sizes, {.encoding = encoding, .topKFraction = 0.3f}, {}, rng);
    ASSERT_TRUE(valid.ok());
    for (int trial = 0; trial < 3000; ++trial) {
      Bytes bytes = *valid;
      const int flips = 1 + static_cast<int>(rng() % 6);
      for (int f = 0; f < flips; ++f) {
        bytes[rng() % bytes.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      }
      auto parsed = parseMessage<wire::Delta>(bytes);
      if (!parsed.ok()) continue;
      ++parsedCount;
      std::vector<float> out(n, 0.0f);
      Status status = decodeDelta(parsed->root(), sizes, out);
      if (!status.ok()) {
        ++rejected;
        continue;
      }
      for (std::size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(out[i])) << i;
    }
  }
  // Most corruptions still parse (they hit data bytes) and some are caught
  // by the decoder itself, so both paths were exercised.
  EXPECT_GT(parsedCount, 1000);
  EXPECT_GT(rejected, 100);
}

}  // namespace
}  // namespace edgefl
