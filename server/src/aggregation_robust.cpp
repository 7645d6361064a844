// Coordinate-wise median and trimmed mean.
//
// Both need order statistics of the n client values of every coordinate.
// Coordinates are processed in blocks: a block gathers the n values of 64
// coordinates into a transposed buffer laid out as groups of kLanes = 16
// coordinates (n rows x 16 lanes), so each client's values are read as whole
// cache lines and every step below is one loop over 16 independent lanes
// that the compiler vectorizes. Per-coordinate std::nth_element costs about
// 10-15 ns per value on random data, almost all of it branch mispredictions;
// the two methods here have no data-dependent branches in their inner loops:
//
// - n <= kNetworkMax: a Batcher odd-even merge sorting network applied to
//   all 16 lanes at once (compare-exchange = min + max on whole rows).
// - larger n: selection by counting. For a target rank r each lane keeps a
//   bracket lo < s_r <= hi with the counts #{x <= lo} <= r < #{x <= hi}; a
//   pass over the block counts the values <= a pivot and narrows it. The
//   first pass counts against two pivots from a normal approximation of the
//   column (its mean and standard deviation, plus and minus a few standard
//   errors of the quantile), which brackets the honest case tightly; later
//   pivots interpolate the rank inside the bracket, and whenever a pass fails
//   to halve the values in the bracket the next one cuts it in thirds in the
//   order-preserving integer image of the floats, so outliers or any other
//   input finish in a bounded number of passes. Refinement passes count
//   against two pivots too, at the interpolated ranks r + 1/2 -+ delta, so
//   both ends of the bracket move at once. Once s_r is among the two
//   smallest or two largest values of its bracket, one last pass collects
//   those (sorted inserts with min and max) and the answer is exact.
//   The even-n median takes the upper middle value this way and the lower
//   one from a single pass for the largest value below it.
//
// The vector code uses GCC's generic 4 x float vectors, which compile to
// plain SSE2 on the project's baseline x86-64 flags (the compiler does not
// if-convert the equivalent scalar ternaries by itself).

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "edgefl/server/aggregation.hpp"

namespace edgefl::server::kernels {
namespace {

constexpr std::size_t kLanes = 16;
constexpr std::size_t kGroups = 4;  // 64 coordinates = 4 cache lines per client per block
constexpr std::size_t kBlockWidth = kLanes * kGroups;
// Up to this many values a sorting network beats counting passes (see
// bench_aggregation); Batcher's network for 32 has 191 compare-exchanges.
constexpr std::size_t kNetworkMax = 32;
// Passes per selection before giving up on narrowing. A pass that does not
// halve the bracket is followed by one that cuts its keys in thirds, so any
// finite input is done within about 2 * log3(2^32) = 42 passes; the cap is
// only reachable with NaN in the input, which the caller reports as
// NonFinite anyway, and keeps the loop bounded whatever the data.
constexpr std::size_t kMaxPasses = 200;
constexpr float kInf = std::numeric_limits<float>::infinity();

using Lanes = std::array<float, kLanes>;
using V4 = float __attribute__((vector_size(16)));
constexpr std::size_t kVectors = kLanes / 4;

V4 load(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store(float* p, V4 v) {
  std::memcpy(p, &v, sizeof v);
}
V4 splat(float x) {
  return V4{x, x, x, x};
}

// Batcher's odd-even merge sort for any n (pairs reaching past n pruned),
// as consecutive index pairs (lower, upper).
void buildNetwork(std::size_t n, std::vector<std::uint16_t>& pairs) {
  pairs.clear();
  for (std::size_t p = 1; p < n; p <<= 1) {
    for (std::size_t k = p; k >= 1; k >>= 1) {
      for (std::size_t j = k % p; j + k < n; j += 2 * k) {
        for (std::size_t i = 0; i < std::min(k, n - j - k); ++i) {
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) {
            pairs.push_back(static_cast<std::uint16_t>(i + j));
            pairs.push_back(static_cast<std::uint16_t>(i + j + k));
          }
        }
      }
    }
  }
}

void sortGroup(float* group, const std::vector<std::uint16_t>& pairs) {
  for (std::size_t k = 0; k < pairs.size(); k += 2) {
    float* x = group + pairs[k] * kLanes;
    float* y = group + pairs[k + 1] * kLanes;
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V4 a = load(x + 4 * w), b = load(y + 4 * w);
      store(x + 4 * w, b < a ? b : a);
      store(y + 4 * w, b < a ? a : b);
    }
  }
}

// Gathers scales[i] * rows[i][j0 + c] for c < width (<= kBlockWidth) into
// kGroups groups of n x kLanes; lanes past width hold 0 and are ignored.
void gatherBlock(std::span<const float* const> rows, std::span<const float> scales, std::size_t j0,
                 std::size_t width, float* block) {
  const std::size_t n = rows.size();
  for (std::size_t i = 0; i < n; ++i) {
    const float* src = rows[i] + j0;
    const float s = scales[i];
    if (width == kBlockWidth) {
      for (std::size_t g = 0; g < kGroups; ++g) {
        float* dst = block + (g * n + i) * kLanes;
        for (std::size_t l = 0; l < kLanes; ++l) dst[l] = s * src[g * kLanes + l];
      }
    } else {
      for (std::size_t c = 0; c < kBlockWidth; ++c) {
        block[((c / kLanes) * n + i) * kLanes + c % kLanes] = c < width ? s * src[c] : 0.0f;
      }
    }
  }
}

// Per lane: min, max, mean and standard deviation of the group's values.
struct LaneStats {
  Lanes min{}, max{}, mean{}, std{};
};

void laneStats(const float* group, std::size_t n, LaneStats& stats) {
  V4 mn[kVectors], mx[kVectors], sum[kVectors], sq[kVectors];
  for (std::size_t w = 0; w < kVectors; ++w) {
    mn[w] = mx[w] = load(group + 4 * w);
    sum[w] = sq[w] = splat(0.0f);
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V4 v = load(group + i * kLanes + 4 * w);
      mn[w] = v < mn[w] ? v : mn[w];
      mx[w] = mx[w] < v ? v : mx[w];
      sum[w] += v;
      sq[w] += v * v;
    }
  }
  Lanes s{}, q{};
  for (std::size_t w = 0; w < kVectors; ++w) {
    store(stats.min.data() + 4 * w, mn[w]);
    store(stats.max.data() + 4 * w, mx[w]);
    store(s.data() + 4 * w, sum[w]);
    store(q.data() + 4 * w, sq[w]);
  }
  const double count = static_cast<double>(n);
  for (std::size_t l = 0; l < kLanes; ++l) {
    const double mean = s[l] / count;
    stats.mean[l] = static_cast<float>(mean);
    stats.std[l] = static_cast<float>(std::sqrt(std::max(0.0, q[l] / count - mean * mean)));
  }
}

// count1[l] = #{x <= q1[l]} and count2[l] = #{x <= q2[l]} in one pass. A
// comparison is -1 where true, so subtracting it counts in two operations.
void countPass2(const float* group, std::size_t n, const Lanes& q1, const Lanes& q2, Lanes& count1,
                Lanes& count2) {
  using VI = std::int32_t __attribute__((vector_size(16)));
  V4 p1[kVectors], p2[kVectors];
  VI c1[kVectors], c2[kVectors];
  for (std::size_t w = 0; w < kVectors; ++w) {
    p1[w] = load(q1.data() + 4 * w);
    p2[w] = load(q2.data() + 4 * w);
    c1[w] = c2[w] = VI{};
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V4 v = load(group + i * kLanes + 4 * w);
      c1[w] -= v <= p1[w];
      c2[w] -= v <= p2[w];
    }
  }
  for (std::size_t w = 0; w < kVectors; ++w) {
    store(count1.data() + 4 * w, __builtin_convertvector(c1[w], V4));
    store(count2.data() + 4 * w, __builtin_convertvector(c2[w], V4));
  }
}

// below[l] = max{x < b[l]} and countBelow[l] = #{x < b[l]}.
void strictlyBelow(const float* group, std::size_t n, const Lanes& b, Lanes& below,
                   Lanes& countBelow) {
  V4 bound[kVectors], down[kVectors], c[kVectors];
  const V4 inf = splat(kInf), one = splat(1.0f), zero = splat(0.0f);
  for (std::size_t w = 0; w < kVectors; ++w) {
    bound[w] = load(b.data() + 4 * w);
    down[w] = -inf;
    c[w] = zero;
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V4 v = load(group + i * kLanes + 4 * w);
      const auto in = v < bound[w];
      const V4 candidate = in ? v : -inf;
      down[w] = down[w] < candidate ? candidate : down[w];
      c[w] += in ? one : zero;
    }
  }
  for (std::size_t w = 0; w < kVectors; ++w) {
    store(below.data() + 4 * w, down[w]);
    store(countBelow.data() + 4 * w, c[w]);
  }
}

// Where the first pass puts its two pivots for rank r of n, in standard
// deviations from the mean: the normal quantile of (r + 0.5) / n, plus and
// minus three standard errors of that empirical quantile
// (sqrt(p (1 - p) / n) / density). Computed once per kernel call.
struct PivotSpread {
  double low = 0.0, high = 0.0;
};

PivotSpread pivotSpread(std::size_t r, std::size_t n) {
  const double p = (static_cast<double>(r) + 0.5) / static_cast<double>(n);
  // Normal quantile by Newton's method on the CDF 0.5 * erfc(-z / sqrt(2)).
  double z = 0.0;
  for (int k = 0; k < 40; ++k) {
    const double cdf = 0.5 * std::erfc(-z / std::sqrt(2.0));
    const double density = std::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.141592653589793);
    const double stepZ = (cdf - p) / std::max(density, 1e-12);
    z -= std::clamp(stepZ, -1.0, 1.0);
    if (std::abs(stepZ) < 1e-9) break;
  }
  const double density = std::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.141592653589793);
  const double error = 3.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)) / density;
  return {z - error, z + error};
}

// Order-preserving map of floats (no NaN) to unsigned integers and back:
// flip all bits of negatives, set the sign bit of the rest. Consecutive keys
// are consecutive floats, so key arithmetic bisects any range in at most 32
// steps where value arithmetic could need hundreds.
using VI = std::int32_t __attribute__((vector_size(16)));
using VU = std::uint32_t __attribute__((vector_size(16)));
constexpr VI kSignBit = {INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN};

VU floatKey(V4 x) {
  const auto u = std::bit_cast<VU>(x);
  return u ^ std::bit_cast<VU>((std::bit_cast<VI>(u) >> 31) | kSignBit);
}
V4 keyFloat(VU key) {
  return std::bit_cast<V4>(key ^ std::bit_cast<VU>((~std::bit_cast<VI>(key) >> 31) | kSignBit));
}
// The next float above / below x in value: one key away, or two where the
// step lands on the other zero (-0 and +0 compare equal).
V4 nextUp(V4 x) {
  const VU k = floatKey(x);
  const V4 up = keyFloat(k + 1u);
  return up == x ? keyFloat(k + 2u) : up;
}
V4 nextDown(V4 x) {
  const VU k = floatKey(x);
  const V4 down = keyFloat(k - 1u);
  return down == x ? keyFloat(k - 2u) : down;
}
bool any(VI mask) {
  return (mask[0] | mask[1] | mask[2] | mask[3]) != 0;
}
V4 sqrtLanes(V4 x) {
  return V4{std::sqrt(x[0]), std::sqrt(x[1]), std::sqrt(x[2]), std::sqrt(x[3])};
}

// The selection state of 4 lanes. Invariant: #{x <= lo} = cLo <= r <
// cHi = #{x <= hi}, so lo < s_r <= hi. A lane is ready when s_r is the
// smallest or second smallest value in (lo, hi] (cLo >= r - 1), the largest
// or second largest (cHi <= r + 2), or when no float lies strictly between
// lo and hi (then s_r = hi); edgeValues then reads it off in one pass.
struct Bracket {
  V4 lo, hi, cLo, cHi;
  VI bisect;

  VI ready(V4 r) const {
    const VI noneBetween = !(nextUp(lo) < hi);
    return (cLo >= r - 1.0f) | (cHi <= r + 2.0f) | noneBetween;
  }
  // Narrows with pivot q and c = #{x <= q} where `active`.
  void narrow(V4 q, V4 c, V4 r, VI active) {
    const VI up = c >= r + 1.0f;
    const VI lower = active & up & (q < hi);
    const VI raise = active & ~up & (q > lo);
    hi = lower ? q : hi;
    cHi = lower ? c : cHi;
    lo = raise ? q : lo;
    cLo = raise ? c : cLo;
  }
  // Two pivots inside (lo, hi) for lanes that are not ready, at the ranks
  // r + 1/2 -+ delta interpolated inside the bracket, with delta about the
  // interpolation's own error (half the square root of the values in the
  // bracket), so one pass usually moves both ends past r's neighbours. When
  // the last pass did not halve the bracket, or interpolation fails (a range
  // too wide for float arithmetic, or rounding onto an end), they split the
  // bracket's keys in thirds instead.
  void pivots(V4 r, V4& low, V4& high) const {
    const V4 m = cHi - cLo;
    V4 delta = 0.5f * sqrtLanes(m);
    delta = delta < 0.75f ? splat(0.75f) : delta;
    const V4 fLow = (r + 0.5f - delta - cLo) / m, fHigh = (r + 0.5f + delta - cLo) / m;
    const V4 iLow = lo + (hi - lo) * fLow, iHigh = lo + (hi - lo) * fHigh;
    const VU kl = floatKey(lo), kh = floatKey(hi);
    // At least one key, so a bracket with a single float inside still gets
    // that float as its pivot.
    VU third = (kh - kl) / 3u;
    third = third == 0u ? third + 1u : third;
    const V4 kLow = keyFloat(kl + third), kHigh = keyFloat(kh - third);
    const VI useLow = ~bisect & (iLow > lo) & (iLow < hi);
    const VI useHigh = ~bisect & (iHigh > lo) & (iHigh < hi);
    low = useLow ? iLow : kLow;
    high = useHigh ? iHigh : kHigh;
  }
};

// For the 4 lanes of vector w: the two smallest values above lo and the two
// largest at most hi, counting repeats (sorted inserts with min and max).
// One vector at a time keeps the eight accumulators in registers.
void edgeValues(const float* group, std::size_t n, std::size_t w, V4 lo, V4 hi, V4 (&small)[2],
                V4 (&large)[2]) {
  const V4 inf = splat(kInf);
  V4 s0 = inf, s1 = inf, l0 = -inf, l1 = -inf;
  for (std::size_t i = 0; i < n; ++i) {
    const V4 v = load(group + i * kLanes + 4 * w);
    const V4 a = lo < v ? v : inf;
    const V4 aUp = a < s0 ? s0 : a;
    s0 = a < s0 ? a : s0;
    s1 = aUp < s1 ? aUp : s1;
    const V4 b = v <= hi ? v : -inf;
    const V4 bDown = l0 < b ? l0 : b;
    l0 = l0 < b ? b : l0;
    l1 = l1 < bDown ? bDown : l1;
  }
  small[0] = s0;
  small[1] = s1;
  large[0] = l0;
  large[1] = l1;
}

// out[l] = the value of rank r (0-based, r < n) in lane l of the group.
void selectRank(const float* group, std::size_t n, std::size_t r, const LaneStats& stats,
                const PivotSpread& spread, Lanes& out) {
  assert(r < n && n < (std::size_t{1} << 24));
  const V4 rank = splat(static_cast<float>(r));
  Bracket b[kVectors];
  Lanes q1{}, q2{}, c1{}, c2{};
  for (std::size_t w = 0; w < kVectors; ++w) {
    const V4 mn = load(stats.min.data() + 4 * w), mx = load(stats.max.data() + 4 * w);
    b[w].lo = nextDown(mn);
    b[w].hi = mx;
    b[w].cLo = splat(0.0f);
    b[w].cHi = splat(static_cast<float>(n));
    b[w].bisect = VI{};
    const V4 mean = load(stats.mean.data() + 4 * w), sd = load(stats.std.data() + 4 * w);
    V4 a = mean + static_cast<float>(spread.low) * sd,
       c = mean + static_cast<float>(spread.high) * sd;
    a = a < mn ? mn : (a > mx ? mx : a);
    c = c < mn ? mn : (c > mx ? mx : c);
    store(q1.data() + 4 * w, a);
    store(q2.data() + 4 * w, c);
  }
  countPass2(group, n, q1, q2, c1, c2);
  VI waiting[kVectors];
  bool anyWaiting = false;
  for (std::size_t w = 0; w < kVectors; ++w) {
    const VI all = ~VI{};
    b[w].narrow(load(q1.data() + 4 * w), load(c1.data() + 4 * w), rank, all);
    b[w].narrow(load(q2.data() + 4 * w), load(c2.data() + 4 * w), rank, all);
    waiting[w] = ~b[w].ready(rank);
    anyWaiting = anyWaiting || any(waiting[w]);
  }

  for (std::size_t pass = 0; anyWaiting && pass < kMaxPasses; ++pass) {
    V4 before[kVectors];
    for (std::size_t w = 0; w < kVectors; ++w) {
      before[w] = b[w].cHi - b[w].cLo;
      V4 low, high;
      b[w].pivots(rank, low, high);
      store(q1.data() + 4 * w, low);
      store(q2.data() + 4 * w, high);
    }
    countPass2(group, n, q1, q2, c1, c2);
    anyWaiting = false;
    for (std::size_t w = 0; w < kVectors; ++w) {
      b[w].narrow(load(q1.data() + 4 * w), load(c1.data() + 4 * w), rank, waiting[w]);
      b[w].narrow(load(q2.data() + 4 * w), load(c2.data() + 4 * w), rank, waiting[w]);
      b[w].bisect = (b[w].cHi - b[w].cLo) * 2.0f > before[w];
      waiting[w] = ~b[w].ready(rank);
      anyWaiting = anyWaiting || any(waiting[w]);
    }
  }

  for (std::size_t w = 0; w < kVectors; ++w) {
    V4 small[2], large[2];
    edgeValues(group, n, w, b[w].lo, b[w].hi, small, large);
    const V4 fromLow = b[w].cLo == rank ? small[0] : small[1];
    const V4 fromHigh = b[w].cHi == rank + 1.0f ? large[0] : large[1];
    const V4 result = b[w].cLo >= rank - 1.0f   ? fromLow
                      : b[w].cHi <= rank + 2.0f ? fromHigh
                                                : b[w].hi;
    store(out.data() + 4 * w, result);
  }
}

// out[l] = s_{r-1} given b[l] = s_r: b itself when it is repeated below
// rank r, otherwise the largest value below it.
void predecessor(const float* group, std::size_t n, std::size_t r, const Lanes& b, Lanes& out) {
  Lanes below{}, countBelow{};
  strictlyBelow(group, n, b, below, countBelow);
  for (std::size_t l = 0; l < kLanes; ++l) {
    out[l] = static_cast<std::size_t>(countBelow[l]) <= r - 1 ? b[l] : below[l];
  }
}

// Sum of the values of ranks [r0, r1) per lane, given a = s_r0 and
// b = s_{r1-1}: the values strictly between a and b, plus as many copies of
// a and b as fall inside the rank range. The in-between sum is in float
// lanes, like the weighted mean's.
void rankRangeSum(const float* group, std::size_t n, std::size_t r0, std::size_t r1, const Lanes& a,
                  const Lanes& b, std::array<double, kLanes>& sum) {
  V4 va[kVectors], vb[kVectors], leA[kVectors], ltB[kVectors], inner[kVectors];
  const V4 one = splat(1.0f), zero = splat(0.0f);
  for (std::size_t w = 0; w < kVectors; ++w) {
    va[w] = load(a.data() + 4 * w);
    vb[w] = load(b.data() + 4 * w);
    leA[w] = ltB[w] = inner[w] = zero;
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V4 v = load(group + i * kLanes + 4 * w);
      const auto le = v <= va[w];
      const auto lt = v < vb[w];
      leA[w] += le ? one : zero;
      ltB[w] += lt ? one : zero;
      inner[w] += (lt & ~le) ? v : zero;
    }
  }
  Lanes countLeA{}, countLtB{}, innerSum{};
  for (std::size_t w = 0; w < kVectors; ++w) {
    store(countLeA.data() + 4 * w, leA[w]);
    store(countLtB.data() + 4 * w, ltB[w]);
    store(innerSum.data() + 4 * w, inner[w]);
  }
  for (std::size_t l = 0; l < kLanes; ++l) {
    if (a[l] == b[l]) {
      sum[l] = static_cast<double>(r1 - r0) * a[l];
    } else {
      const double copiesA = countLeA[l] - static_cast<double>(r0);
      const double copiesB = static_cast<double>(r1) - countLtB[l];
      sum[l] = innerSum[l] + copiesA * a[l] + copiesB * b[l];
    }
  }
}

// Mean of ranks [r0, r1) of every coordinate: the median is [n/2 - 1, n/2 + 1)
// for even n and [(n-1)/2, (n+1)/2) for odd n; the trimmed mean [t, n - t).
void rankRangeMean(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                   std::size_t r0, std::size_t r1, std::span<float> out, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(r0 < r1 && r1 <= n && out.size() == p);
  scratch.block.resize(kGroups * n * kLanes);
  const bool network = n <= kNetworkMax;
  if (network && scratch.networkSize != n) {
    buildNetwork(n, scratch.network);
    scratch.networkSize = n;
  }
  const double divisor = static_cast<double>(r1 - r0);
  LaneStats stats;
  Lanes a{}, b{};
  const PivotSpread spreadLow = pivotSpread(r0, n), spreadHigh = pivotSpread(r1 - 1, n);
  std::array<double, kLanes> sum{};
  for (std::size_t j0 = 0; j0 < p; j0 += kBlockWidth) {
    const std::size_t width = std::min(kBlockWidth, p - j0);
    gatherBlock(rows, scales, j0, width, scratch.block.data());
    for (std::size_t g = 0; g * kLanes < width; ++g) {
      float* group = scratch.block.data() + g * n * kLanes;
      if (network) {
        sortGroup(group, scratch.network);
        sum.fill(0.0);
        for (std::size_t r = r0; r < r1; ++r) {
          const float* x = group + r * kLanes;
          for (std::size_t l = 0; l < kLanes; ++l) sum[l] += x[l];
        }
      } else {
        laneStats(group, n, stats);
        selectRank(group, n, r1 - 1, stats, spreadHigh, b);
        if (r1 - 1 == r0) {
          a = b;
        } else if (r1 - 2 == r0) {
          predecessor(group, n, r1 - 1, b, a);
        } else {
          selectRank(group, n, r0, stats, spreadLow, a);
        }
        if (r1 - r0 <= 2) {
          for (std::size_t l = 0; l < kLanes; ++l) {
            sum[l] = r1 - r0 == 1 ? static_cast<double>(a[l])
                                  : static_cast<double>(a[l]) + static_cast<double>(b[l]);
          }
        } else {
          rankRangeSum(group, n, r0, r1, a, b, sum);
        }
      }
      const std::size_t lanes = std::min(kLanes, width - g * kLanes);
      for (std::size_t l = 0; l < lanes; ++l) {
        out[j0 + g * kLanes + l] = static_cast<float>(sum[l] / divisor);
      }
    }
  }
}

}  // namespace

void coordinateMedian(std::span<const float* const> rows, std::span<const float> scales,
                      std::size_t p, std::span<float> out, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(n > 0);
  const std::size_t r0 = (n - 1) / 2;
  rankRangeMean(rows, scales, p, r0, n / 2 + 1, out, scratch);
}

void trimmedMean(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::size_t trimPerEnd, std::span<float> out, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(2 * trimPerEnd < n);
  rankRangeMean(rows, scales, p, trimPerEnd, n - trimPerEnd, out, scratch);
}

}  // namespace edgefl::server::kernels
