#pragma once
// Aggregation: how the coordinator turns a round's client updates into the
// next global model.
//
// Model parameters are one contiguous float buffer of P values; a client
// update is a delta of the same size (local - base), already decoded and
// verified by ingest, with a weight (its sample count). A Strategy combines
// the deltas into one aggregate delta and applies it to the global buffer
// through a server optimizer:
//
//   1. validate every update (sizes, finiteness, weights);
//   2. effective weight_i = weight_i / (1 + staleness_i)^stalenessExponent;
//   3. clip each delta to L2 norm clipNorm (0 = off), without copying it:
//      delta_i is read as scale_i * delta_i with scale_i = min(1, C/||delta_i||);
//   4. combine (rule chosen by the strategy name):
//        mean          sum_i w_i scale_i delta_i / sum_i w_i
//        median        per coordinate, the median of scale_i s_i delta_i
//        trimmed_mean  per coordinate, the mean after dropping the
//                      floor(trimFraction * n) lowest and highest values
//        krum          the delta with the lowest Krum score (Blanchard et al.
//                      2017): the sum of squared distances to its n - f - 2
//                      nearest neighbours; needs n > 2f + 2
//        multi_krum    the unweighted mean of the m lowest-scoring deltas
//      Rank- and distance-based rules ignore sample weights: a Byzantine
//      client can claim any sample count, so letting it move the median or
//      win Krum by weight would undo the rule. For them the staleness
//      factor s_i = 1/(1 + staleness_i)^e scales the delta instead (FedBuff's
//      form), so a stale update still counts for less.
//   5. central DP (dpNoiseMultiplier > 0): add N(0, sigma^2) to each
//      coordinate of the aggregate, sigma = dpNoiseMultiplier * clipNorm / n
//      with n the number of deltas combined. This is the sensitivity of an
//      unweighted mean of clipped deltas; a sample-weighted mean has
//      sensitivity clipNorm * max_i w_i / sum_i w_i, so for a formal privacy
//      guarantee give every update the same weight.
//   6. server optimizer on the aggregate Delta (signs: Delta points from the
//      global model towards the clients, so the pseudo-gradient is g = -Delta
//      and every optimizer below descends along -g; Reddi et al. 2021,
//      "Adaptive Federated Optimization", Algorithm 2, written in terms of g):
//        sgd       (fedavg and the robust rules)  x += eta * Delta
//        momentum  (fedavgm, Hsu et al. 2019)     m = mu*m + g;  x -= eta*m
//        adam      (fedadam)  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//                             x -= eta * m / (sqrt(v) + tau)
//        yogi      (fedyogi)  m as adam; v = v - (1-b2)*g^2*sign(v - g^2);
//                             x -= eta * m / (sqrt(v) + tau)
//      m starts at 0 and v at tau^2 (the paper's v_{-1} >= tau^2); there is
//      no bias correction, as in the paper.
//
// A strategy keeps its optimizer state across rounds; saveState() gives a
// flat byte snapshot for the registry and restoreState() resumes from one,
// so a restarted coordinator continues bit-identically.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/result.hpp"

namespace edgefl::server {

// Mirrors the [aggregation] section of coordinator.toml plus the staleness
// exponent of [rounds]; see coordinator_config.cpp for each setting's range.
struct AggregationOptions {
  // One of strategyNames().
  std::string strategy = "fedavg";
  // eta above. 1 makes fedavg the plain sample-weighted mean (McMahan et al.
  // 2017); adaptive optimizers usually want 0.01-0.1 (Reddi et al. 2021).
  double serverLearningRate = 1.0;
  // fedavgm mu, in [0, 1); 0.9 is Hsu et al.'s recommended value.
  double serverMomentum = 0.9;
  // fedadam/fedyogi decays, each in [0, 1).
  double beta1 = 0.9;
  double beta2 = 0.99;
  // fedadam/fedyogi adaptivity, > 0; 1e-3 is the paper's best overall.
  double tau = 1e-3;
  // trimmed_mean: share of the values dropped at each end, in [0, 0.5).
  double trimFraction = 0.1;
  // krum/multi_krum: Byzantine updates tolerated (f), >= 0.
  std::int64_t krumByzantine = 1;
  // multi_krum: deltas averaged (m); 0 means n - f.
  std::int64_t multiKrumSelect = 0;
  // Per-update L2 clip C; 0 disables. Required (> 0) by central DP.
  double clipNorm = 0.0;
  // Central DP noise multiplier z; 0 disables.
  double dpNoiseMultiplier = 0.0;
  // Asynchronous staleness discount exponent e, >= 0; 0 ignores staleness.
  double stalenessExponent = 0.0;
};

// The options a coordinator.toml asks for.
AggregationOptions aggregationOptionsFromConfig(const CoordinatorConfig& config);

// The strategy names makeStrategy accepts, in table order.
std::span<const std::string_view> strategyNames();

// One verified client update. The delta must stay alive and unchanged for the
// duration of Strategy::aggregate; nothing is kept after it returns.
struct ClientUpdate {
  std::span<const float> delta;  // local - base, P values
  double weight = 0.0;           // sample count, finite and >= 0
  std::string_view id;           // device id, copied into the report
  double staleness = 0.0;        // rounds behind the global model; 0 when synchronous
};

// Why an update took no part in the aggregate.
enum class Exclusion : std::uint8_t {
  KrumOutlier,  // not selected by krum/multi_krum (its score was too high)
};
std::string_view exclusionName(Exclusion exclusion);

struct ExcludedUpdate {
  std::size_t index = 0;  // position in the updates span
  std::string id;
  Exclusion reason = Exclusion::KrumOutlier;
};

// What one aggregation did, for the registry and the operator.
struct AggregationReport {
  std::string strategy;
  std::size_t inputs = 0;
  // Updates that took part, ascending; the rest are in `excluded`.
  std::vector<std::size_t> used;
  std::vector<ExcludedUpdate> excluded;
  // Per input: weight after the staleness discount, and the staleness
  // factor itself (1 when synchronous).
  std::vector<double> effectiveWeights;
  std::vector<double> stalenessFactors;
  // Per input: L2 norm before clipping, and how many exceeded clipNorm.
  // Empty for the mean rules without clipping: their math does not need the
  // norms, and computing them would double the arithmetic of the one pass
  // over the deltas (ingest has already checked every update's norm).
  std::vector<double> preClipNorms;
  std::size_t clipped = 0;
  double clipNorm = 0.0;
  // trimmed_mean drops values per coordinate, not whole updates: how many
  // at each end of every coordinate, and how many values in total.
  std::size_t trimmedPerEnd = 0;
  std::uint64_t trimmedValues = 0;
  // krum/multi_krum: per input score (sum of squared distances to its
  // n - f - 2 nearest neighbours); empty for other rules.
  std::vector<double> krumScores;
  // Central DP: the multiplier z and the noise std actually added (0 when off).
  double noiseMultiplier = 0.0;
  double noiseStd = 0.0;
  // ||Delta|| of the aggregate after noise, and ||x_new - x_old|| of the step
  // the optimizer applied to the global model.
  double aggregateNorm = 0.0;
  double stepNorm = 0.0;
  // Aggregations this strategy has applied, this one included (survives
  // saveState/restoreState).
  std::uint64_t round = 0;
};

class Strategy {
 public:
  virtual ~Strategy() = default;

  // The name it was made with (one of strategyNames()) and its P.
  virtual std::string_view name() const = 0;
  virtual std::size_t parameterCount() const = 0;

  // Combines `updates` and applies the result to `global` (P values) in
  // place; `rng` draws the DP noise, so a seeded engine reproduces a round.
  // On error neither `global` nor the optimizer state changes. Errors:
  //   InvalidArgument  no updates; a weight or staleness negative or not
  //                    finite; total effective weight <= 0; krum/multi_krum
  //                    with n <= 2f + 2; multi_krum selecting more than n
  //   ShapeMismatch    a delta or `global` whose size is not P
  //   NonFinite        NaN or infinity in a delta or in `global`, or an
  //                    aggregate or new model that overflowed
  virtual Result<AggregationReport> aggregate(std::span<const ClientUpdate> updates,
                                              std::span<float> global, std::mt19937_64& rng) = 0;

  // The optimizer state as bytes (little-endian): a header naming the
  // strategy, P and the round count, then the state vectors (none for the
  // stateless strategies, m for fedavgm, m and v for fedadam/fedyogi).
  virtual std::vector<std::byte> saveState() const = 0;
  // Resumes from saveState() of a strategy with the same name and P. Errors:
  // Truncated, BadField (magic, version, length, negative v), WrongKind
  // (another strategy's snapshot), ShapeMismatch (another P), NonFinite.
  // On error the state is unchanged.
  virtual Status restoreState(std::span<const std::byte> snapshot) = 0;

 protected:
  Strategy() = default;
  Strategy(const Strategy&) = default;
  Strategy& operator=(const Strategy&) = default;
};

// Builds the strategy named by options.strategy for models of
// `parameterCount` values, with scratch buffers for P values allocated here
// rather than per round. InvalidArgument for an unknown name, P == 0, or an
// option outside its range for that strategy (dpNoiseMultiplier > 0 needs
// clipNorm > 0).
Result<std::unique_ptr<Strategy>> makeStrategy(const AggregationOptions& options,
                                               std::size_t parameterCount);

// --- Kernels --------------------------------------------------------------
// The arithmetic behind the rules, on their own so that tests check each one
// against plain reference loops and the benchmark times them. They do no
// validation: Strategy::aggregate checks sizes and values first. `rows` are
// n pointers to P floats each; row i is read as scales[i] * rows[i].
namespace kernels {

// Buffers the kernels reuse from call to call; they grow to the largest n.
struct Scratch {
  std::vector<float> block;  // transposed coordinate block / packed Gram columns
  std::vector<float> gramBlock;
  std::vector<double> gram;
  std::vector<double> distances;
  std::vector<std::uint16_t> network;  // compare-exchange pairs for networkSize
  std::size_t networkSize = 0;
};

// out[i] = sum_j rows[i][j]^2 for P values per row. Float lanes per block of
// coordinates, flushed into double: not finite if a value is not finite or
// a square overflows float (|x| > ~1.8e19); sumSquaresExact tells which.
void sumSquares(std::span<const float* const> rows, std::size_t p, std::span<double> out);
double sumSquaresExact(std::span<const float> values);

// out[j] = sum_i scales[i] * rows[i][j], summed in row order in float.
void weightedSum(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::span<float> out);

// The instruction set the streaming and robust kernels run with on this CPU:
// "baseline", "avx2" or "avx512". Every build returns the same bits.
const char* instructionSet();

// Per coordinate j, the median of {scales[i] * rows[i][j]} (the mean of the
// two middle values when n is even) and the mean after dropping the
// `trimPerEnd` lowest and highest values (2 * trimPerEnd < n). Small n is
// sorted with a Batcher network, one vector of coordinates at a time; for
// larger n, coordinates are gathered in blocks of 64 into a transposed
// buffer of n x 64 floats, so each client's values are read as whole cache
// lines, and selected by counting passes over the block (see
// aggregation_isa.cpp).
void coordinateMedian(std::span<const float* const> rows, std::span<const float> scales,
                      std::size_t p, std::span<float> out, Scratch& scratch);
void trimmedMean(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::size_t trimPerEnd, std::span<float> out, Scratch& scratch);

// Krum scores: for each i, the sum of the `neighbours` smallest squared
// distances ||s_i r_i - s_j r_j||^2 over j != i (neighbours <= n - 1), from
// the Gram matrix: ||a - b||^2 = ||a||^2 + ||b||^2 - 2<a, b>. The Gram matrix
// is built with Eigen over blocks of columns, each block's product in float
// and the sum over blocks in double.
void krumScores(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                std::size_t neighbours, std::span<double> scores, Scratch& scratch);

}  // namespace kernels

}  // namespace edgefl::server
