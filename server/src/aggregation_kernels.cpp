// The public streaming kernels (their builds per instruction set are in
// aggregation_isa.cpp) and the Krum distances.

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <cmath>
#include <span>

#include "aggregation_stream.hpp"
#include "edgefl/server/aggregation.hpp"

namespace edgefl::server::kernels {
namespace {

// Gram columns per Eigen product: n x 1024 floats is 4 MiB at n = 1000,
// enough for Eigen's blocking to reach its peak; the per-block cost of
// adding the float product into the double Gram matrix is n^2, small next
// to the product's n^2 * 1024.
constexpr std::size_t kGramBlock = 1024;

}  // namespace

void sumSquares(std::span<const float* const> rows, std::size_t p, std::span<double> out) {
  assert(out.size() == rows.size());
  streamKernels().sumSquares(rows, p, out.data());
}

double sumSquaresExact(std::span<const float> values) {
  double total = 0.0;
  for (float x : values) total += static_cast<double>(x) * x;
  return total;
}

void weightedSum(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 std::span<float> out) {
  assert(scales.size() == rows.size() && out.size() == p);
  streamKernels().weightedSum(rows, scales, p, out.data());
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
