// The median / trimmed-mean kernel, written once for vectors of kWidth
// floats. aggregation_isa.cpp includes it once per instruction set, each
// time inside its own namespace that defines kWidth (4, 8 or 16), after the
// standard headers, "aggregation_robust.hpp" and
// "aggregation_vector_lanes.hpp" and after switching the compiler's target;
// everything here has internal linkage. No include guard on purpose. See
// aggregation_isa.cpp for the algorithms.

namespace {

// Vectors per group, selected together: four independent chains through
// every pass, so one group's pivot arithmetic and sorted inserts overlap
// with the others' instead of waiting on their own latency.
constexpr std::size_t kVectors = 4;
// Coordinates per group: 16, 32 or 64 (one to four cache lines per client).
constexpr std::size_t kLanes = kVectors * kWidth;
// Up to this many values a sorting network in registers beats counting
// passes (bench_aggregation); Batcher's network for 24 has 123
// compare-exchanges.
constexpr std::size_t kNetworkMax = 24;
// Passes per selection before giving up on narrowing. Passes that do not
// halve the bracket lead within three to one that cuts its keys in thirds,
// so any finite input is done within about 4 * (24 + log3(2^32)) = 176
// passes; the cap is only reachable with NaN in the input, which the caller
// reports as NonFinite anyway, and keeps the loop bounded whatever the data.
constexpr std::size_t kMaxPasses = 300;
// Coordinates per block: a block reads four adjacent cache lines per
// client, so the cost of reaching a client's row (a TLB entry, the first
// miss) is shared by 64 coordinates.
constexpr std::size_t kBlockWidth = 64;
constexpr std::size_t kLineFloats = 64 / sizeof(float);
constexpr std::size_t kGroups = kBlockWidth / kLanes;
static_assert(kGroups * kLanes == kBlockWidth);
// How many rows ahead gatherBlock asks for lines: 32 left most of the
// gather waiting on loads at n = 1000, 96 took about a tenth less time
// (bench_aggregation, Median N = 1000, P = 8192).
constexpr std::size_t kPrefetchRows = 96;
// Vector-brackets whose edge values one pass collects together: enough
// independent insert chains to hide their latency, few enough to stay in
// registers (32 of them with AVX-512, 16 below).
constexpr std::size_t kEdgeChains = kWidth == 16 ? 4 : 2;
constexpr float kInf = std::numeric_limits<float>::infinity();

// Square roots of x >= 0 to about 0.2%, in vector instructions (a lane
// loop of std::sqrt stays scalar): half the exponent as the first guess,
// then one Newton step. Only pivots are placed with it; the counts make
// the selection exact whatever the pivots.
V sqrtLanes(V x) {
  const V guess = __builtin_bit_cast(V, (__builtin_bit_cast(VI, x) >> 1) + 0x1fbd1df5);
  return 0.5f * (guess + x / guess);
}

// --- Small n: sorting networks in registers ----------------------------

// Sorts v[0..N) lane by lane. The network and every index are constants, so
// the N vectors stay in registers as far as there are registers.
template <std::size_t N, std::size_t... K>
[[gnu::always_inline]] inline void sortLanes(V (&v)[N], std::index_sequence<K...>) {
  [[maybe_unused]] static constexpr auto kPairs = networkPairs<N>();
  [[maybe_unused]] auto exchange = [](V& a, V& b) {
    const V lo = minLanes(a, b);
    const V hi = maxLanes(a, b);
    a = lo;
    b = hi;
  };
  (exchange(v[kPairs[K][0]], v[kPairs[K][1]]), ...);
}

template <std::size_t N, std::size_t... R>
[[gnu::always_inline]] inline V pick(const V (&v)[N], std::size_t r, std::index_sequence<R...>) {
  V x{};
  ((x = R == r ? v[R] : x), ...);
  return x;
}

// Mean of ranks [r0, r1) of sorted v. The median's pair is added in double,
// like the reference; longer ranges are summed in float lanes, like the
// weighted mean.
template <std::size_t N, std::size_t... R>
[[gnu::always_inline]] inline V rankMean(const V (&v)[N], std::size_t r0, std::size_t r1,
                                         std::index_sequence<R...> ranks) {
  if (r1 - r0 == 1) return pick(v, r0, ranks);
  if (r1 - r0 == 2) {
    const VD a = __builtin_convertvector(pick(v, r0, ranks), VD);
    const VD b = __builtin_convertvector(pick(v, r0 + 1, ranks), VD);
    return __builtin_convertvector((a + b) / 2.0, V);
  }
  V sum{};
  ((sum += R >= r0 && R < r1 ? v[R] : V{}), ...);
  return sum / static_cast<float>(r1 - r0);
}

// v[i] = scale[i] * rows[i][j .. j + kWidth).
template <std::size_t N, std::size_t... I>
[[gnu::always_inline]] inline void loadColumns(const float* const* rows, const V (&scale)[N],
                                               std::size_t j, V (&v)[N],
                                               std::index_sequence<I...>) {
  ((v[I] = scale[I] * load(rows[I] + j)), ...);
}

// rankRangeMean for n = N: kWidth coordinates at a time, read straight from
// the rows and sorted in registers.
template <std::size_t N>
void networkRankMean(std::span<const float* const> rows, std::span<const float> scales,
                     std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out) {
  constexpr auto kNetwork = std::make_index_sequence<networkLength<N>()>();
  constexpr auto kRows = std::make_index_sequence<N>();
  V scale[N];
  for (std::size_t i = 0; i < N; ++i) scale[i] = splat(scales[i]);
  std::size_t j = 0;
  for (; j + kWidth <= p; j += kWidth) {
    V v[N];
    loadColumns(rows.data(), scale, j, v, kRows);
    sortLanes(v, kNetwork);
    store(out.data() + j, rankMean(v, r0, r1, kRows));
  }
  if (j == p) return;
  // The last coordinates, through zero-padded copies of the rows.
  float tail[N][kWidth] = {};
  const float* tailRows[N];
  for (std::size_t i = 0; i < N; ++i) {
    std::memcpy(tail[i], rows[i] + j, (p - j) * sizeof(float));
    tailRows[i] = tail[i];
  }
  V v[N];
  loadColumns(tailRows, scale, 0, v, kRows);
  sortLanes(v, kNetwork);
  float result[kWidth];
  store(result, rankMean(v, r0, r1, kRows));
  std::memcpy(out.data() + j, result, (p - j) * sizeof(float));
}

using NetworkKernel = void (*)(std::span<const float* const>, std::span<const float>, std::size_t,
                               std::size_t, std::size_t, std::span<float>);

template <std::size_t... N>
constexpr std::array<NetworkKernel, sizeof...(N)> networkKernels(std::index_sequence<N...>) {
  return {&networkRankMean<N + 1>...};
}

// kNetworkKernels[n - 1] handles n values.
constexpr auto kNetworkKernels = networkKernels(std::make_index_sequence<kNetworkMax>());

// --- Larger n: selection by counting -----------------------------------

// Per lane of a group: min, max, mean and standard deviation.
struct GroupStats {
  V min[kVectors], max[kVectors], mean[kVectors], std[kVectors];
};

// Copies scales[i] * rows[i][j0 + c] for c < width (<= kBlockWidth) into
// kGroups groups of n rows x kLanes (lanes past width hold 0 and are
// ignored) and takes each group's lane statistics on the way. Every row is
// visited once per block, for four adjacent cache lines, and the lines of
// the next block are asked for on the way.
void gatherBlock(std::span<const float* const> rows, std::span<const float> scales, std::size_t j0,
                 std::size_t width, std::size_t p, float* block, GroupStats (&stats)[kGroups]) {
  const std::size_t n = rows.size();
  constexpr std::size_t kAll = kGroups * kVectors;
  V mn[kAll], mx[kAll], sum[kAll], sq[kAll];
  for (std::size_t k = 0; k < kAll; ++k) {
    mn[k] = splat(kInf);
    mx[k] = splat(-kInf);
    sum[k] = sq[k] = V{};
  }
  // Lines are asked for a fixed number of rows ahead (half the rows when
  // there are fewer), running on into the next block's first rows. Not a
  // whole block ahead: where rows start a multiple of 4 KiB apart (P = 1024
  // k) every line of a block maps to a few cache sets, and lines asked for
  // that early are evicted before they are read.
  const std::size_t distance = std::min(kPrefetchRows, n / 2);
  const std::size_t ahead = j0 + kBlockWidth;
  const std::size_t lines = (width + kLineFloats - 1) / kLineFloats;
  const std::size_t nextLines =
      ahead < p ? std::min(kBlockWidth, p - ahead + kLineFloats - 1) / kLineFloats : 0;
  // The last block's rows go through a copy whose lanes past width stay 0.
  float padded[kBlockWidth] = {};
  for (std::size_t i = 0; i < n; ++i) {
    const float* src = rows[i] + j0;
    if (i + distance < n) {
      for (std::size_t k = 0; k < lines; ++k) {
        __builtin_prefetch(rows[i + distance] + j0 + k * kLineFloats, 0, 2);
      }
    } else {
      for (std::size_t k = 0; k < nextLines; ++k) {
        __builtin_prefetch(rows[i + distance - n] + ahead + k * kLineFloats, 0, 2);
      }
    }
    if (width < kBlockWidth) {
      std::memcpy(padded, src, width * sizeof(float));
      src = padded;
    }
    const V s = splat(scales[i]);
    for (std::size_t k = 0; k < kAll; ++k) {
      const std::size_t g = k / kVectors, w = k % kVectors;
      const V v = s * load(src + k * kWidth);
      store(block + (g * n + i) * kLanes + w * kWidth, v);
      mn[k] = minLanes(mn[k], v);
      mx[k] = maxLanes(mx[k], v);
      sum[k] += v;
      sq[k] += v * v;
    }
  }
  const double count = static_cast<double>(n);
  for (std::size_t k = 0; k < kAll; ++k) {
    GroupStats& st = stats[k / kVectors];
    const std::size_t w = k % kVectors;
    st.min[w] = mn[k];
    st.max[w] = mx[k];
    const VD mean = __builtin_convertvector(sum[k], VD) / count;
    VD var = __builtin_convertvector(sq[k], VD) / count - mean * mean;
    var = var < 0.0 ? VD{} : var;
    st.mean[w] = __builtin_convertvector(mean, V);
    st.std[w] = sqrtLanes(__builtin_convertvector(var, V));
  }
}

// Order-preserving map of floats (no NaN) to unsigned integers and back:
// flip all bits of negatives, set the sign bit of the rest. Consecutive keys
// are consecutive floats, so key arithmetic bisects any range in at most 32
// steps where value arithmetic could need hundreds.
VU floatKey(V x) {
  const auto u = __builtin_bit_cast(VU, x);
  return u ^ __builtin_bit_cast(VU, (__builtin_bit_cast(VI, u) >> 31) | INT32_MIN);
}
V keyFloat(VU key) {
  return __builtin_bit_cast(
      V, key ^ __builtin_bit_cast(VU, (~__builtin_bit_cast(VI, key) >> 31) | INT32_MIN));
}
// The next float above / below x in value: one key away, or two where the
// step lands on the other zero (-0 and +0 compare equal).
V nextUp(V x) {
  const VU k = floatKey(x);
  const V up = keyFloat(k + 1u);
  return up == x ? keyFloat(k + 2u) : up;
}
V nextDown(V x) {
  const VU k = floatKey(x);
  const V down = keyFloat(k - 1u);
  return down == x ? keyFloat(k - 2u) : down;
}

// Values the last pass collects per lane, at the one end of its bracket
// that the lane's ranks are read from (see Edge).
constexpr std::size_t kEdge = 3;

// The selection state of the ranks ra <= rb (equal, or adjacent for the
// even median) in the lanes of one vector. Invariant: #{x <= lo} = cLo <= ra
// < cHi = #{x <= hi}, so lo < s_ra <= hi (s_rb may lie above hi). A lane is
// ready when both ranks are among the kEdge smallest values above lo
// (rb < cLo + kEdge), or among the kEdge largest at most hi (ra >= cHi -
// kEdge and rb < cHi), or when no float lies strictly between lo and hi
// (then s_ra = hi, and so is s_rb unless rb = cHi: see anchorAbove);
// edgeValues then reads them off in one pass. `misses` counts the passes in
// a row that did not halve the values in the bracket.
struct Bracket {
  V lo, hi, cLo, cHi;
  V misses;

  VI noneBetween() const { return !(nextUp(lo) < hi); }
  VI ready(V ra, V rb) const {
    return (rb < cLo + static_cast<float>(kEdge)) |
           ((ra >= cHi - static_cast<float>(kEdge)) & (rb < cHi)) | noneBetween();
  }
  // Where s_ra = hi but s_rb lies above hi, re-anchors the bracket at hi:
  // then s_rb is the smallest value above it and s_ra the old hi
  // (rankFromEdges).
  void anchorAbove(V rb) {
    const VI above = noneBetween() & (rb >= cHi);
    lo = above ? hi : lo;
    cLo = above ? cHi : cLo;
  }
  // Narrows with pivot q and c = #{x <= q} where `active`.
  void narrow(V q, V c, V ra, VI active) {
    const VI up = c >= ra + 1.0f;
    const VI lower = active & up & (q < hi);
    const VI raise = active & ~up & (q > lo);
    hi = lower ? q : hi;
    cHi = lower ? c : cHi;
    lo = raise ? q : lo;
    cLo = raise ? c : cLo;
  }
  // Two pivots inside (lo, hi) for lanes that are not ready. Normally at
  // the ranks (ra + rb + 1) / 2 -+ delta interpolated inside the bracket:
  // the count at an interpolated pivot is off by up to about sqrt(m) / 2
  // (one standard deviation) for m values in the bracket, and delta is
  // about that error (0.45 sqrt(m), the fewest passes on bench_aggregation's
  // data among 0.3 to 1.8), so one pass usually leaves about 2 delta values
  // in the bracket. After a pass that missed (did not halve the bracket)
  // delta doubles; after two misses in a row the pivots split the bracket's
  // value range in thirds, after three its keys (which bounds the passes
  // for any input), as they do wherever interpolation fails (a range too
  // wide for float arithmetic, or rounding onto an end).
  void pivots(V ra, V rb, V& low, V& high) const {
    const V m = cHi - cLo;
    V delta = (misses > 0.0f ? splat(1.0f) : splat(0.45f)) * sqrtLanes(m);
    delta = delta < 0.75f ? splat(0.75f) : delta;
    const V centre = (ra + rb + 1.0f) * 0.5f - cLo;
    const VI interpolate = misses < 2.0f;
    const V perValue = 1.0f / m;
    const V fLow = interpolate ? (centre - delta) * perValue : splat(1.0f / 3.0f);
    const V fHigh = interpolate ? (centre + delta) * perValue : splat(2.0f / 3.0f);
    const V iLow = lo + (hi - lo) * fLow, iHigh = lo + (hi - lo) * fHigh;
    const VU kl = floatKey(lo), kh = floatKey(hi);
    // At least one key, so a bracket with a single float inside still gets
    // that float as its pivot.
    VU third = (kh - kl) / 3u;
    third = third == 0u ? third + 1u : third;
    const V kLow = keyFloat(kl + third), kHigh = keyFloat(kh - third);
    const VI byValue = misses < 3.0f;
    const VI useLow = byValue & (iLow > lo) & (iLow < hi);
    const VI useHigh = byValue & (iHigh > lo) & (iHigh < hi);
    low = useLow ? iLow : kLow;
    high = useHigh ? iHigh : kHigh;
  }
  // After a pass: a miss when the bracket kept more than half of `before`.
  void score(V before) {
    const VI missed = (cHi - cLo) * 2.0f > before;
    misses = missed ? misses + 1.0f : V{};
  }
};

// Ranks first <= last (last - first <= 1) to select from one bracket, and
// where the first pass puts its two pivots, in standard deviations from the
// mean (see pivotSpread).
struct Target {
  std::size_t first = 0, last = 0;
  PivotSpread spread;
};

// count[k][u] = #{x <= q[k][u]} per lane of vector which[u] of the group,
// for u < A: K pivots per vector, the A vectors in one pass.
template <std::size_t K, std::size_t A>
void countPass(const float* group, std::size_t n, const std::size_t* which, const V (*q)[kVectors],
               V (*count)[kVectors]) {
  const float* column[A];
  V pivot[K][A];
  VI c[K][A] = {};
  for (std::size_t u = 0; u < A; ++u) {
    column[u] = group + which[u] * kWidth;
    for (std::size_t k = 0; k < K; ++k) pivot[k][u] = q[k][u];
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t u = 0; u < A; ++u) {
      const V v = load(column[u] + i * kLanes);
      for (std::size_t k = 0; k < K; ++k) {
        // A conditional add is one masked add on AVX-512; narrower sets
        // subtract the all-ones compare result instead.
        if constexpr (kWidth == 16) {
          c[k][u] = v <= pivot[k][u] ? c[k][u] + 1 : c[k][u];
        } else {
          c[k][u] -= v <= pivot[k][u];
        }
      }
    }
  }
  for (std::size_t k = 0; k < K; ++k) {
    for (std::size_t u = 0; u < A; ++u) count[k][u] = __builtin_convertvector(c[k][u], V);
  }
}

// countPass over the `active` (1 to kVectors) vectors listed in `which`.
template <std::size_t K>
void countSome(const float* group, std::size_t n, const std::size_t* which, std::size_t active,
               const V (*q)[kVectors], V (*count)[kVectors]) {
  static_assert(kVectors == 4);
  switch (active) {
    case 1: countPass<K, 1>(group, n, which, q, count); break;
    case 2: countPass<K, 2>(group, n, which, q, count); break;
    case 3: countPass<K, 3>(group, n, which, q, count); break;
    default: countPass<K, 4>(group, n, which, q, count); break;
  }
}

// The end of a ready bracket that a lane reads its ranks from (after
// anchorAbove): the kEdge smallest values above lo where rb < cLo + kEdge,
// else the kEdge largest at most hi. The larger end is read as the smallest
// values of -x above nextDown(-hi) (x <= hi exactly when -x exceeds it), so
// one sorted insert per lane serves either end: `flip` is the sign bit
// where a lane reads its larger end, `floor` what its flipped values must
// exceed.
struct Edge {
  VU flip;
  V floor;
};
V flipped(V x, VU flip) {
  return __builtin_bit_cast(V, __builtin_bit_cast(VU, x) ^ flip);
}
Edge edgeOf(const Bracket& b, V rb) {
  const VI fromLow = rb < b.cLo + static_cast<float>(kEdge);
  Edge e;
  e.flip = fromLow ? VU{} : VU{} + 0x80000000u;
  e.floor = fromLow ? b.lo : nextDown(-b.hi);
  return e;
}

// edge[t][w] = the kEdge smallest flipped values above the floor of
// edges[t][w], ascending and counting repeats, for the W vectors from w0
// and T brackets in one pass (sorted inserts with min and max).
template <std::size_t T, std::size_t W>
void edgeValues(const float* group, std::size_t n, std::size_t w0, const Edge (&edges)[T][kVectors],
                V (&edge)[T][kVectors][kEdge]) {
  const V inf = splat(kInf);
  VU flip[T][W];
  V floor[T][W], s[T][W][kEdge];
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t u = 0; u < W; ++u) {
      flip[t][u] = edges[t][w0 + u].flip;
      floor[t][u] = edges[t][w0 + u].floor;
      for (std::size_t e = 0; e < kEdge; ++e) s[t][u][e] = inf;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t u = 0; u < W; ++u) {
      const V v = load(group + i * kLanes + (w0 + u) * kWidth);
      for (std::size_t t = 0; t < T; ++t) {
        const V x = flipped(v, flip[t][u]);
        V a = floor[t][u] < x ? x : inf;
        for (std::size_t e = 0; e < kEdge; ++e) {
          const V up = maxLanes(a, s[t][u][e]);
          s[t][u][e] = minLanes(s[t][u][e], a);
          a = up;
        }
      }
    }
  }
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t u = 0; u < W; ++u) {
      for (std::size_t e = 0; e < kEdge; ++e) edge[t][w0 + u][e] = s[t][u][e];
    }
  }
}

// The value of rank x in a ready bracket, from the edge values of its lane's
// end (hi itself for a rank no edge value holds: the rank just below a
// re-anchored bracket, or a copy of hi where no float lies between lo and
// hi).
V rankFromEdges(const Bracket& b, const Edge& end, V x, const V (&edge)[kEdge]) {
  const V index = end.flip == 0u ? x - b.cLo : b.cHi - 1.0f - x;
  V value = b.hi;
  for (std::size_t e = 0; e < kEdge; ++e) {
    value = index == static_cast<float>(e) ? flipped(edge[e], end.flip) : value;
  }
  return value;
}

// out[t][0] and out[t][1] = the values of ranks targets[t].first and .last
// (< n) in the lanes of the group, for T brackets narrowed in shared passes:
// every pass counts against two pivots per bracket still waiting in any
// lane, over all the group's vectors at once.
template <std::size_t T>
void selectRanks(const float* group, std::size_t n, const Target (&targets)[T],
                 const GroupStats& stats, V (&out)[T][2][kVectors]) {
  assert(n < (std::size_t{1} << 24));
  Bracket b[T][kVectors];
  V ra[T], rb[T];
  V q[2 * T][kVectors], c[2 * T][kVectors];
  for (std::size_t t = 0; t < T; ++t) {
    assert(targets[t].first <= targets[t].last && targets[t].last < n);
    ra[t] = splat(static_cast<float>(targets[t].first));
    rb[t] = splat(static_cast<float>(targets[t].last));
    const auto low = static_cast<float>(targets[t].spread.low);
    const auto high = static_cast<float>(targets[t].spread.high);
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V mn = stats.min[w], mx = stats.max[w];
      b[t][w].lo = nextDown(mn);
      b[t][w].hi = mx;
      b[t][w].cLo = V{};
      b[t][w].cHi = splat(static_cast<float>(n));
      b[t][w].misses = V{};
      const V mean = stats.mean[w], sd = stats.std[w];
      q[2 * t][w] = maxLanes(mn, minLanes(mx, mean + low * sd));
      q[2 * t + 1][w] = maxLanes(mn, minLanes(mx, mean + high * sd));
    }
  }
  constexpr std::size_t kAllVectors[kVectors] = {0, 1, 2, 3};
  countPass<2 * T, kVectors>(group, n, kAllVectors, q, c);
  VI waiting[T][kVectors];
  bool anyWaiting[T];
  for (std::size_t t = 0; t < T; ++t) {
    const VI all = ~VI{};
    VI someWaiting{};
    for (std::size_t w = 0; w < kVectors; ++w) {
      b[t][w].narrow(q[2 * t][w], c[2 * t][w], ra[t], all);
      b[t][w].narrow(q[2 * t + 1][w], c[2 * t + 1][w], ra[t], all);
      waiting[t][w] = ~b[t][w].ready(ra[t], rb[t]);
      someWaiting |= waiting[t][w];
    }
    anyWaiting[t] = any(someWaiting);
  }
  for (std::size_t pass = 0; pass < kMaxPasses; ++pass) {
    // The brackets still waiting, counted together.
    std::size_t active[T], count = 0;
    for (std::size_t t = 0; t < T; ++t) {
      if (anyWaiting[t]) active[count++] = t;
    }
    if (count == 0) break;
    // The vectors with a lane still waiting in any of them: only those are
    // counted, with their pivots packed in the order of `which`.
    std::size_t which[kVectors], vectors = 0;
    for (std::size_t w = 0; w < kVectors; ++w) {
      VI someWaiting{};
      for (std::size_t a = 0; a < count; ++a) someWaiting |= waiting[active[a]][w];
      if (any(someWaiting)) which[vectors++] = w;
    }
    V before[T][kVectors], pq[2 * T][kVectors], pc[2 * T][kVectors];
    for (std::size_t a = 0; a < count; ++a) {
      const std::size_t t = active[a];
      for (std::size_t u = 0; u < vectors; ++u) {
        const std::size_t w = which[u];
        before[t][w] = b[t][w].cHi - b[t][w].cLo;
        b[t][w].pivots(ra[t], rb[t], pq[2 * a][u], pq[2 * a + 1][u]);
      }
    }
    if (count == 2) {
      countSome<4>(group, n, which, vectors, pq, pc);
    } else {
      countSome<2>(group, n, which, vectors, pq, pc);
    }
    for (std::size_t a = 0; a < count; ++a) {
      const std::size_t t = active[a];
      VI someWaiting{};
      for (std::size_t u = 0; u < vectors; ++u) {
        const std::size_t w = which[u];
        b[t][w].narrow(pq[2 * a][u], pc[2 * a][u], ra[t], waiting[t][w]);
        b[t][w].narrow(pq[2 * a + 1][u], pc[2 * a + 1][u], ra[t], waiting[t][w]);
        b[t][w].score(before[t][w]);
        waiting[t][w] = ~b[t][w].ready(ra[t], rb[t]);
        someWaiting |= waiting[t][w];
      }
      anyWaiting[t] = any(someWaiting);
    }
  }
  Edge edges[T][kVectors];
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      b[t][w].anchorAbove(rb[t]);
      edges[t][w] = edgeOf(b[t][w], rb[t]);
    }
  }
  V edge[T][kVectors][kEdge];
  constexpr std::size_t kTogether = std::max<std::size_t>(1, kEdgeChains / T);
  static_assert(kVectors % kTogether == 0);
  for (std::size_t w0 = 0; w0 < kVectors; w0 += kTogether) {
    edgeValues<T, kTogether>(group, n, w0, edges, edge);
  }
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      out[t][0][w] = rankFromEdges(b[t][w], edges[t][w], ra[t], edge[t][w]);
      out[t][1][w] = rankFromEdges(b[t][w], edges[t][w], rb[t], edge[t][w]);
    }
  }
}

// Sum of the values of ranks [r0, r1) given a = s_r0 and b = s_{r1-1}: the
// values strictly between a and b, plus as many copies of a and b as fall
// inside the rank range. The in-between sum is in float lanes, like the
// weighted mean's; the copies are added in double.
void rankRangeSum(const float* group, std::size_t n, std::size_t r0, std::size_t r1,
                  const V (&a)[kVectors], const V (&b)[kVectors], VD (&sum)[kVectors]) {
  const V one = splat(1.0f), zero = V{};
  V leA[kVectors], ltB[kVectors], inner[kVectors];
  for (std::size_t w = 0; w < kVectors; ++w) leA[w] = ltB[w] = inner[w] = zero;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t w = 0; w < kVectors; ++w) {
      const V v = load(group + i * kLanes + w * kWidth);
      const auto le = v <= a[w];
      const auto lt = v < b[w];
      leA[w] += le ? one : zero;
      ltB[w] += lt ? one : zero;
      inner[w] += (lt & ~le) ? v : zero;
    }
  }
  for (std::size_t w = 0; w < kVectors; ++w) {
    const VD da = __builtin_convertvector(a[w], VD), db = __builtin_convertvector(b[w], VD);
    const VD copiesA = __builtin_convertvector(leA[w], VD) - static_cast<double>(r0);
    const VD copiesB = static_cast<double>(r1) - __builtin_convertvector(ltB[w], VD);
    const VD between = __builtin_convertvector(inner[w], VD) + copiesA * da + copiesB * db;
    const auto same = __builtin_convertvector(a[w] == b[w], decltype(da < db));
    sum[w] = same ? static_cast<double>(r1 - r0) * da : between;
  }
}

// The ranks [r0, r1) to average and their brackets' targets, the same for
// every group: the median's one or two middle ranks share one bracket, the
// trimmed mean's two ends get one each.
struct RankRange {
  std::size_t n, r0, r1;
  Target middle[1];
  Target ends[2];

  RankRange(std::size_t n_, std::size_t r0_, std::size_t r1_)
      : n(n_),
        r0(r0_),
        r1(r1_),
        middle{{r0_, r1_ - 1, pivotSpread(r0_, r1_, n_)}},
        ends{{r0_, r0_, pivotSpread(r0_, r0_ + 1, n_)},
             {r1_ - 1, r1_ - 1, pivotSpread(r1_ - 1, r1_, n_)}} {}
};

// Mean of ranks [r0, r1) of each lane of a gathered group: the median's one
// or two middle ranks from one bracket, the trimmed mean's two ends from
// two brackets narrowed together and one pass summing what lies between.
void groupRankMean(const float* group, const RankRange& range, const GroupStats& stats,
                   V (&result)[kVectors]) {
  const std::size_t n = range.n, r0 = range.r0, r1 = range.r1;
  if (r1 - r0 <= 2) {
    V ab[1][2][kVectors];
    selectRanks<1>(group, n, range.middle, stats, ab);
    for (std::size_t w = 0; w < kVectors; ++w) {
      const VD s =
          __builtin_convertvector(ab[0][0][w], VD) + __builtin_convertvector(ab[0][1][w], VD);
      result[w] = r1 - r0 == 1 ? ab[0][0][w] : __builtin_convertvector(s / 2.0, V);
    }
    return;
  }
  V ab[2][2][kVectors];
  selectRanks<2>(group, n, range.ends, stats, ab);
  VD sum[kVectors];
  rankRangeSum(group, n, r0, r1, ab[0][0], ab[1][0], sum);
  const double divisor = static_cast<double>(r1 - r0);
  for (std::size_t w = 0; w < kVectors; ++w) {
    result[w] = __builtin_convertvector(sum[w] / divisor, V);
  }
}

// Mean of ranks [r0, r1) of every coordinate, by blocks of kBlockWidth.
void countingRankMean(std::span<const float* const> rows, std::span<const float> scales,
                      std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                      Scratch& scratch) {
  const std::size_t n = rows.size();
  const RankRange range(n, r0, r1);
  scratch.block.resize(kGroups * n * kLanes);
  GroupStats stats[kGroups];
  for (std::size_t j0 = 0; j0 < p; j0 += kBlockWidth) {
    const std::size_t blockWidth = std::min(kBlockWidth, p - j0);
    gatherBlock(rows, scales, j0, blockWidth, p, scratch.block.data(), stats);
    for (std::size_t g = 0; g * kLanes < blockWidth; ++g) {
      const float* group = scratch.block.data() + g * n * kLanes;
      const std::size_t width = std::min(kLanes, blockWidth - g * kLanes);
      V result[kVectors];
      groupRankMean(group, range, stats[g], result);
      float values[kLanes];
      for (std::size_t w = 0; w < kVectors; ++w) store(values + w * kWidth, result[w]);
      std::memcpy(out.data() + j0 + g * kLanes, values, width * sizeof(float));
    }
  }
}

// The kernel of this build: a network for small n, counting otherwise.
void rankRangeMeanLanes(std::span<const float* const> rows, std::span<const float> scales,
                        std::size_t p, std::size_t r0, std::size_t r1, std::span<float> out,
                        Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(r0 < r1 && r1 <= n && out.size() == p);
  if (n <= kNetworkMax) {
    kNetworkKernels[n - 1](rows, scales, p, r0, r1, out);
  } else {
    countingRankMean(rows, scales, p, r0, r1, out, scratch);
  }
}

}  // namespace
