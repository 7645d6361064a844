// Streaming kernels (norms, weighted sums) and the Krum distances.
//
// The streaming kernels are memory-bound for any realistic round, so they
// read every delta exactly once, in blocks of coordinates small enough that
// the running sums stay in L1, and keep kLanes independent float lanes per
// row so the compiler vectorizes the sums of squares without reassociating
// (no -ffast-math needed).

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "edgefl/server/aggregation.hpp"

namespace edgefl::server::kernels {
namespace {

// 4096 floats = 16 KiB of running sums, a third of L1d.
constexpr std::size_t kBlock = 4096;
// Gram columns per Eigen product: n x 1024 floats is 4 MiB at n = 1000,
// enough for Eigen's blocking to reach its peak; the per-block cost of
// adding the float product into the double Gram matrix is n^2, small next
// to the product's n^2 * 1024.
constexpr std::size_t kGramBlock = 1024;

// GCC's generic 4 x float vector: plain SSE2 on the baseline x86-64 flags,
// and explicit, so the per-row norm accumulators stay in registers.
using V4 = float __attribute__((vector_size(16)));

V4 load(const float* p) {
  V4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
void store(float* p, V4 v) {
  std::memcpy(p, &v, sizeof v);
}
double horizontalSum(V4 v) {
  return static_cast<double>(v[0]) + static_cast<double>(v[1]) + static_cast<double>(v[2]) +
         static_cast<double>(v[3]);
}

// acc[b] += sum_k s[k] * r[k][b] over b < len, and sq[k] += r[k][b]^2 when
// kNorms, for R rows at once so acc is loaded and stored once per R rows.
// Two vectors per step give each row two independent square accumulators,
// so the adds do not wait on each other.
template <std::size_t R, bool kNorms>
void addRows(const float* const* r, const float* s, std::size_t len, float* acc, double* sq) {
  V4 scale[R], sq0[R], sq1[R];
  for (std::size_t k = 0; k < R; ++k) {
    scale[k] = V4{s[k], s[k], s[k], s[k]};
    sq0[k] = sq1[k] = V4{};
  }
  std::size_t b = 0;
  for (; b + 8 <= len; b += 8) {
    V4 a0 = load(acc + b), a1 = load(acc + b + 4);
    for (std::size_t k = 0; k < R; ++k) {
      const V4 x0 = load(r[k] + b), x1 = load(r[k] + b + 4);
      a0 += scale[k] * x0;
      a1 += scale[k] * x1;
      if constexpr (kNorms) {
        sq0[k] += x0 * x0;
        sq1[k] += x1 * x1;
      }
    }
    store(acc + b, a0);
    store(acc + b + 4, a1);
  }
  double tail[R] = {};
  for (; b < len; ++b) {
    float sum = acc[b];
    for (std::size_t k = 0; k < R; ++k) {
      const float x = r[k][b];
      sum += s[k] * x;
      if constexpr (kNorms) tail[k] += static_cast<double>(x) * x;
    }
    acc[b] = sum;
  }
  if constexpr (kNorms) {
    for (std::size_t k = 0; k < R; ++k) sq[k] += horizontalSum(sq0[k] + sq1[k]) + tail[k];
  }
}

template <bool kNorms>
void weightedSumImpl(std::span<const float* const> rows, std::span<const float> scales,
                     std::size_t p, float* out, double* sq) {
  const std::size_t n = rows.size();
  const float* r[4];
  auto add = [&]<std::size_t R>(std::size_t i, std::size_t j0, std::size_t len, float* acc) {
    for (std::size_t k = 0; k < R; ++k) r[k] = rows[i + k] + j0;
    addRows<R, kNorms>(r, scales.data() + i, len, acc, kNorms ? sq + i : nullptr);
  };
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, p - j0);
    float* acc = out + j0;
    std::fill(acc, acc + len, 0.0f);
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4) add.template operator()<4>(i, j0, len, acc);
    if (i + 2 <= n) {
      add.template operator()<2>(i, j0, len, acc);
      i += 2;
    }
    if (i < n) add.template operator()<1>(i, j0, len, acc);
  }
}

// Sums of squares of R rows side by side, each with exactly the arithmetic
// of a row alone: reading several rows at once keeps as many streams in
// flight as weightedSum does.
template <std::size_t R>
void sumSquaresRows(const float* const* rows, std::size_t p, double* out) {
  double total[R] = {};
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, p - j0);
    V4 lanes[R][4] = {};
    std::size_t b = 0;
    for (; b + 16 <= len; b += 16) {
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t w = 0; w < 4; ++w) {
          const V4 x = load(rows[r] + j0 + b + 4 * w);
          lanes[r][w] += x * x;
        }
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      for (std::size_t t = b; t < len; ++t) {
        total[r] += static_cast<double>(rows[r][j0 + t]) * rows[r][j0 + t];
      }
      total[r] += horizontalSum((lanes[r][0] + lanes[r][1]) + (lanes[r][2] + lanes[r][3]));
    }
  }
  for (std::size_t r = 0; r < R; ++r) out[r] = total[r];
}

}  // namespace

void sumSquares(std::span<const float* const> rows, std::size_t p, std::span<double> out) {
  assert(out.size() == rows.size());
  std::size_t i = 0;
  for (; i + 4 <= rows.size(); i += 4) sumSquaresRows<4>(rows.data() + i, p, out.data() + i);
  for (; i < rows.size(); ++i) sumSquaresRows<1>(rows.data() + i, p, out.data() + i);
}

double sumSquaresExact(std::span<const float> values) {
  double total = 0.0;
  for (float x : values) total += static_cast<double>(x) * x;
  return total;
}

void weightedSum(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::span<float> out, std::span<double> sumSquares) {
  assert(scales.size() == rows.size() && out.size() == p);
  if (sumSquares.empty()) {
    weightedSumImpl<false>(rows, scales, p, out.data(), nullptr);
  } else {
    assert(sumSquares.size() == rows.size());
    std::fill(sumSquares.begin(), sumSquares.end(), 0.0);
    weightedSumImpl<true>(rows, scales, p, out.data(), sumSquares.data());
  }
}

void krumScores(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                std::size_t neighbours, std::span<double> scores, Scratch& scratch) {
  const std::size_t n = rows.size();
  assert(scales.size() == n && scores.size() == n && neighbours < n);
  const auto ni = static_cast<Eigen::Index>(n);
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  scratch.gram.assign(n * n, 0.0);
  scratch.gramBlock.resize(n * n);
  scratch.block.resize(n * std::min(p, kGramBlock));
  Eigen::Map<Eigen::MatrixXd> gram(scratch.gram.data(), ni, ni);
  Eigen::Map<Eigen::MatrixXf> partial(scratch.gramBlock.data(), ni, ni);
  for (std::size_t j0 = 0; j0 < p; j0 += kGramBlock) {
    const std::size_t len = std::min(kGramBlock, p - j0);
    // Packing makes the block one matrix for Eigen; the deltas themselves
    // live in separate buffers.
    for (std::size_t i = 0; i < n; ++i) {
      std::copy_n(rows[i] + j0, len, scratch.block.data() + i * len);
    }
    Eigen::Map<const RowMajor> x(scratch.block.data(), ni, static_cast<Eigen::Index>(len));
    partial.setZero();
    partial.selfadjointView<Eigen::Lower>().rankUpdate(x);
    gram.triangularView<Eigen::Lower>() += partial.cast<double>();
  }

  // Squared distances between the scaled rows; rounding can make a distance
  // between near-identical rows slightly negative, which is clamped to 0.
  scratch.distances.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double si = scales[i];
    const double gii = gram(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(i));
    std::size_t count = 0;
    for (std::size_t j = 0; j < n; ++j) {
      if (j == i) continue;
      const auto a = static_cast<Eigen::Index>(std::max(i, j));
      const auto b = static_cast<Eigen::Index>(std::min(i, j));
      const double sj = scales[j];
      const double gjj = gram(static_cast<Eigen::Index>(j), static_cast<Eigen::Index>(j));
      const double d = si * si * gii + sj * sj * gjj - 2.0 * si * sj * gram(a, b);
      scratch.distances[count++] = std::max(d, 0.0);
    }
    auto first = scratch.distances.begin();
    auto last = first + static_cast<std::ptrdiff_t>(count);
    auto nth = first + static_cast<std::ptrdiff_t>(neighbours);
    if (neighbours < count) std::nth_element(first, nth, last);
    double score = 0.0;
    for (auto it = first; it != nth; ++it) score += *it;
    scores[i] = score;
  }
}

}  // namespace edgefl::server::kernels
