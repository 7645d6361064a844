// The streaming kernels, written once for vectors of kWidth floats.
// aggregation_isa.cpp includes it once per instruction set, each time
// inside its own namespace that defines kWidth (4, 8 or 16), after the
// standard headers, "aggregation_stream.hpp" and
// "aggregation_vector_lanes.hpp" and after switching the compiler's target;
// everything here has internal linkage. No include guard on purpose.
//
// The kernels are memory-bound for any realistic round, so they read every
// delta exactly once, in blocks of coordinates small enough that the running
// sums stay in L1.

namespace {

// 4096 floats = 16 KiB of running sums, a third of L1d.
constexpr std::size_t kBlock = 4096;
// Float lanes per row for sums of squares, at every width: the same lanes
// see the same values in the same order, so every build gets the same sums.
constexpr std::size_t kSquareLanes = 16;
constexpr std::size_t kSquareVectors = kSquareLanes / kWidth;
static_assert(kSquareVectors * kWidth == kSquareLanes);

// The 16 lanes folded as the baseline build folds its four 4-float vectors:
// vector-wise in float, ((l0 + l1) + (l2 + l3)), then its 4 floats in double.
double foldLanes(const V (&lanes)[kSquareVectors]) {
  float l[kSquareLanes];
  for (std::size_t w = 0; w < kSquareVectors; ++w) {
    std::memcpy(l + w * kWidth, &lanes[w], sizeof(V));
  }
  double sum = 0.0;
  for (std::size_t k = 0; k < 4; ++k) {
    sum += static_cast<double>((l[k] + l[4 + k]) + (l[8 + k] + l[12 + k]));
  }
  return sum;
}

// Floats per step of the weighted sum and the step check, at every width:
// which values fall in the scalar tail must not depend on the width.
constexpr std::size_t kStep = 32;
constexpr std::size_t kStepVectors = kStep / kWidth;
static_assert(kStepVectors * kWidth == kStep && kStep % kSquareLanes == 0 && kBlock % kStep == 0);
// Rows added per pass over a block of running sums, at most.
constexpr std::size_t kMaxRows = 16;

// The step check's running sums over one block: 16 float lanes each for
// ||delta||^2 and ||new - old||^2, and double for the tail.
struct CheckSums {
  V aggregate[kSquareVectors] = {}, step[kSquareVectors] = {};
  double aggregateTail = 0.0, stepTail = 0.0;
};

// kPoison: also a sum that turns NaN when anything is not finite (x - x is
// NaN exactly when x is infinite or NaN). Without it a value that is not
// finite still makes a sum of squares infinite or NaN (d through d * d; old
// or the new x through x - old, which is then infinite or NaN), as do
// float squares past ~1.8e19, so finite sums are conclusive and anything
// else needs the check with it.
template <bool kPoison>
[[gnu::always_inline]] inline void checkVector(V d, V o, V x, std::size_t w, CheckSums& sums,
                                               V& poison) {
  const V s = x - o;
  sums.aggregate[w % kSquareVectors] += d * d;
  sums.step[w % kSquareVectors] += s * s;
  if constexpr (kPoison) poison += (d - d) + (x - x);
}

template <bool kPoison>
[[gnu::always_inline]] inline void checkScalar(float d, float o, float x, CheckSums& sums,
                                               V& poison) {
  sums.aggregateTail += static_cast<double>(d) * d;
  sums.stepTail += static_cast<double>(x - o) * (x - o);
  if constexpr (kPoison) poison[0] += (d - d) + (x - x);
}

void flush(const CheckSums& sums, StepCheck& check) {
  check.aggregateSquares += sums.aggregateTail + foldLanes(sums.aggregate);
  check.stepSquares += sums.stepTail + foldLanes(sums.step);
}

bool allFinite(V poison) {
  float bad = 0.0f;
  for (std::size_t l = 0; l < kWidth; ++l) bad += poison[l];
  return bad == 0.0f;
}

// acc[b] = (kFirst ? 0 : acc[b]) + sum_k s[k] * r[k][b] over b < len, for R
// rows at once, so acc is loaded and stored once per R rows. kCheck: these
// are the last rows, so acc is the aggregate; the new model old + lr * acc
// is checked in the same pass while the values are in registers.
template <std::size_t R, bool kFirst, bool kCheck>
void addRows(const float* const* r, const float* s, std::size_t len, float* acc, const float* old,
             float lr, CheckSums& sumsOut) {
  CheckSums sums = sumsOut;  // a local copy stays in registers
  V unused{};
  V scale[R];
  for (std::size_t k = 0; k < R; ++k) scale[k] = splat(s[k]);
  const V rate = splat(lr);
  std::size_t b = 0;
  for (; b + kStep <= len; b += kStep) {
    V a[kStepVectors];
    for (std::size_t w = 0; w < kStepVectors; ++w) a[w] = kFirst ? V{} : load(acc + b + w * kWidth);
    for (std::size_t k = 0; k < R; ++k) {
      for (std::size_t w = 0; w < kStepVectors; ++w) {
        a[w] += scale[k] * load(r[k] + b + w * kWidth);
      }
    }
    for (std::size_t w = 0; w < kStepVectors; ++w) {
      store(acc + b + w * kWidth, a[w]);
      if constexpr (kCheck) {
        const V o = load(old + b + w * kWidth);
        checkVector<false>(a[w], o, o + rate * a[w], w, sums, unused);
      }
    }
  }
  for (; b < len; ++b) {
    float sum = kFirst ? 0.0f : acc[b];
    for (std::size_t k = 0; k < R; ++k) sum += s[k] * r[k][b];
    acc[b] = sum;
    if constexpr (kCheck) checkScalar<false>(sum, old[b], old[b] + lr * sum, sums, unused);
  }
  if constexpr (kCheck) sumsOut = sums;
}

StepCheck checkStep(const float* delta, const float* old, const float* next, float lr,
                    std::size_t p);

// Calls add.operator()<R>() for R = count, 1 <= count <= kMaxRows.
template <std::size_t R = 1, typename Add>
void addExactly(std::size_t count, Add& add) {
  if constexpr (R <= kMaxRows) {
    if (count == R) {
      add.template operator()<R>();
    } else {
      addExactly<R + 1>(count, add);
    }
  }
}

// The weighted sum, block by block; with `old` (not nullptr) also the sums
// of the SGD step check of old + lr * out, which it returns (finite when
// both sums are).
StepCheck weightedSumImpl(std::span<const float* const> rows, std::span<const float> scales,
                          std::size_t p, float* out, const float* old, float lr) {
  const std::size_t n = rows.size();
  StepCheck check;
  const float* r[kMaxRows];
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, p - j0);
    CheckSums sums;
    std::size_t i = 0;
    auto add = [&]<std::size_t R>() {
      for (std::size_t k = 0; k < R; ++k) r[k] = rows[i + k] + j0;
      const float* s = scales.data() + i;
      float* acc = out + j0;
      const float* o = old == nullptr ? nullptr : old + j0;
      const bool first = i == 0, last = i + R == n && old != nullptr;
      if (first && last) {
        addRows<R, true, true>(r, s, len, acc, o, lr, sums);
      } else if (first) {
        addRows<R, true, false>(r, s, len, acc, o, lr, sums);
      } else if (last) {
        addRows<R, false, true>(r, s, len, acc, o, lr, sums);
      } else {
        addRows<R, false, false>(r, s, len, acc, o, lr, sums);
      }
      i += R;
    };
    // Eight rows a pass while more than kMaxRows are left, then the rest in
    // one pass, so a small round's sums are stored once.
    while (n - i > kMaxRows) add.template operator()<8>();
    addExactly(n - i, add);
    if (old != nullptr) flush(sums, check);
  }
  check.finite = std::isfinite(check.aggregateSquares) && std::isfinite(check.stepSquares);
  return check;
}

void weightedSum(std::span<const float* const> rows, std::span<const float> scales, std::size_t p,
                 float* out) {
  if (rows.empty()) {
    std::fill(out, out + p, 0.0f);
    return;
  }
  weightedSumImpl(rows, scales, p, out, nullptr, 0.0f);
}

StepCheck weightedSumSgd(std::span<const float* const> rows, std::span<const float> scales,
                         std::size_t p, float* out, const float* old, float lr) {
  if (rows.empty()) {
    std::fill(out, out + p, 0.0f);
    return checkStep(out, old, nullptr, lr, p);
  }
  return weightedSumImpl(rows, scales, p, out, old, lr);
}

// Sums of squares of R rows side by side, each with exactly the arithmetic
// of a row alone: reading several rows at once keeps as many streams in
// flight as weightedSum does.
template <std::size_t R>
void sumSquaresRows(const float* const* rows, std::size_t p, double* out) {
  double total[R] = {};
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t len = std::min(kBlock, p - j0);
    V lanes[R][kSquareVectors] = {};
    std::size_t b = 0;
    for (; b + kSquareLanes <= len; b += kSquareLanes) {
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t w = 0; w < kSquareVectors; ++w) {
          const V x = load(rows[r] + j0 + b + kWidth * w);
          lanes[r][w] += x * x;
        }
      }
    }
    for (std::size_t r = 0; r < R; ++r) {
      for (std::size_t t = b; t < len; ++t) {
        total[r] += static_cast<double>(rows[r][j0 + t]) * rows[r][j0 + t];
      }
      total[r] += foldLanes(lanes[r]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) out[r] = total[r];
}

void sumSquares(std::span<const float* const> rows, std::size_t p, double* out) {
  std::size_t i = 0;
  for (; i + 4 <= rows.size(); i += 4) sumSquaresRows<4>(rows.data() + i, p, out + i);
  for (; i < rows.size(); ++i) sumSquaresRows<1>(rows.data() + i, p, out + i);
}

// The step check on its own, for a new model computed elsewhere (next) or
// SGD's old + lr * delta (next == nullptr, the expression applySgd uses).
template <bool kSgd>
StepCheck checkStepImpl(const float* delta, const float* old, const float* next, float lr,
                        std::size_t p) {
  StepCheck check;
  const V rate = splat(lr);
  V poison{};
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t end = std::min(p, j0 + kBlock);
    CheckSums sums;
    std::size_t j = j0;
    for (; j + kStep <= end; j += kStep) {
      for (std::size_t w = 0; w < kStepVectors; ++w) {
        const V d = load(delta + j + w * kWidth), o = load(old + j + w * kWidth);
        checkVector<true>(d, o, kSgd ? o + rate * d : load(next + j + w * kWidth), w, sums, poison);
      }
    }
    for (; j < end; ++j) {
      checkScalar<true>(delta[j], old[j], kSgd ? old[j] + lr * delta[j] : next[j], sums, poison);
    }
    flush(sums, check);
  }
  check.finite = allFinite(poison);
  return check;
}

StepCheck checkStep(const float* delta, const float* old, const float* next, float lr,
                    std::size_t p) {
  return next == nullptr ? checkStepImpl<true>(delta, old, nullptr, lr, p)
                         : checkStepImpl<false>(delta, old, next, lr, p);
}

void applySgd(float* global, const float* delta, float lr, std::size_t p) {
  const V rate = splat(lr);
  std::size_t j = 0;
  for (; j + kWidth <= p; j += kWidth) store(global + j, load(global + j) + rate * load(delta + j));
  for (; j < p; ++j) global[j] = global[j] + lr * delta[j];
}

constexpr StreamKernels kStream{&weightedSum, &weightedSumSgd, &sumSquares, &checkStep, &applySgd};

}  // namespace
