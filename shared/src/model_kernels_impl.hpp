// The model math (forward, backward, optimizer updates) with Eigen. This
// file is compiled once per instruction set: a model_kernels_*.cpp defines
// EDGEFL_KERNEL_NS and EDGEFL_KERNEL_NAME, includes model_plan.hpp and the
// standard headers, optionally switches the target ISA and renames Eigen's
// namespace, and then includes this file. No include guard on purpose.
//
// Nothing here allocates: every buffer comes from the caller (model_plan.hpp
// Buffers), and GEMMs are split so that Eigen packs their blocks on the
// stack (see gemm below). Every loop is bounded by sizes fixed when the
// plan was built.

#include <Eigen/Core>

namespace edgefl::detail::EDGEFL_KERNEL_NS {
namespace {

using Index = Eigen::Index;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
using RowVectorMap = Eigen::Map<Eigen::RowVectorXf>;
using ConstRowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

inline Index ix(std::size_t v) {
  return static_cast<Index>(v);
}

// Eigen packs the operands of a matrix product into blocks of at most
// depth x rows and depth x cols floats, on the stack when a block fits in
// EIGEN_STACK_ALLOCATION_LIMIT bytes and on the heap otherwise. Splitting
// the product so that depth * rows and depth * cols fit keeps every block
// on the stack (at most 2 x 128 KiB) and the hot path allocation-free. A
// 256-deep chunk is about what Eigen's own blocking picks for L1, so the
// split costs little.
constexpr Index kStackBlockFloats = EIGEN_STACK_ALLOCATION_LIMIT / sizeof(float);
constexpr Index kDepthChunk = 256;

// dst = lhs * rhs, or dst += lhs * rhs when `accumulate`.
template <typename Dst, typename Lhs, typename Rhs>
void gemm(Dst dst, const Lhs& lhs, const Rhs& rhs, bool accumulate) {
  const Index rows = dst.rows();
  const Index cols = dst.cols();
  const Index depth = lhs.cols();
  if (rows == 1 || cols == 1) {
    // Matrix-vector products pack nothing; a strided vector is copied to a
    // stack buffer of `depth` floats, far under the limit.
    if (accumulate) {
      dst.noalias() += lhs * rhs;
    } else {
      dst.noalias() = lhs * rhs;
    }
    return;
  }
  const Index kc = depth < kDepthChunk ? depth : kDepthChunk;
  const Index span = kStackBlockFloats / kc;
  for (Index k0 = 0; k0 < depth; k0 += kc) {
    const Index kk = depth - k0 < kc ? depth - k0 : kc;
    const bool add = accumulate || k0 > 0;
    for (Index i0 = 0; i0 < rows; i0 += span) {
      const Index mm = rows - i0 < span ? rows - i0 : span;
      for (Index j0 = 0; j0 < cols; j0 += span) {
        const Index nn = cols - j0 < span ? cols - j0 : span;
        auto block = dst.block(i0, j0, mm, nn);
        if (add) {
          block.noalias() += lhs.block(i0, k0, mm, kk) * rhs.block(k0, j0, kk, nn);
        } else {
          block.noalias() = lhs.block(i0, k0, mm, kk) * rhs.block(k0, j0, kk, nn);
        }
      }
    }
  }
}

void preprocess(const float* const* rows, std::size_t n, std::size_t features, const float* shift,
                const float* scale, float* out) {
  const ConstArrayMap sh(shift, ix(features));
  const ConstArrayMap sc(scale, ix(features));
  for (std::size_t i = 0; i < n; ++i) {
    ArrayMap(out + i * features, ix(features)) = (ConstArrayMap(rows[i], ix(features)) - sh) * sc;
  }
}

// ---------------------------------------------------------------------------
// Dense: y = x W^T + b, x [n, in], W [out, in], y [n, out].

void denseForward(const PlanOp& op, const float* params, const float* in, float* out, Index n) {
  const ConstMatrixMap x(in, n, ix(op.inSize));
  const ConstMatrixMap w(params + op.weightOffset, ix(op.outSize), ix(op.inSize));
  const ConstRowVectorMap b(params + op.biasOffset, ix(op.outSize));
  MatrixMap y(out, n, ix(op.outSize));
  gemm(y, x, w.transpose(), false);
  y.rowwise() += b;
}

void denseBackward(const PlanOp& op, const float* params, float* paramGrad, const float* in,
                   const float* gradOut, float* gradIn, Index n) {
  const ConstMatrixMap x(in, n, ix(op.inSize));
  const ConstMatrixMap dy(gradOut, n, ix(op.outSize));
  if (op.weightGrad) {
    gemm(MatrixMap(paramGrad + op.weightOffset, ix(op.outSize), ix(op.inSize)), dy.transpose(), x,
         false);
  }
  if (op.biasGrad) {
    RowVectorMap db(paramGrad + op.biasOffset, ix(op.outSize));
    db = dy.row(0);
    for (Index i = 1; i < n; ++i) db += dy.row(i);
  }
  if (op.inputGrad) {
    const ConstMatrixMap w(params + op.weightOffset, ix(op.outSize), ix(op.inSize));
    gemm(MatrixMap(gradIn, n, ix(op.inSize)), dy, w, false);
  }
}

// ---------------------------------------------------------------------------
// Conv2D per sample via im2col: col [C*k*k, OH*OW], row (c, ky, kx) holds
// the input pixel each output position sees through that kernel tap (0 in
// the padding); then y [oc, OH*OW] = W [oc, C*k*k] col + b.

// Output columns [lo, hi) whose input column ox * stride + offset lies in
// [0, width); the others read padding. Hoisting this out of the copy loops
// leaves them branch-free (and a plain copy for stride 1).
struct ColumnRange {
  std::size_t lo, hi;
};

ColumnRange validColumns(std::ptrdiff_t offset, std::ptrdiff_t stride, std::ptrdiff_t width,
                         std::size_t outWidth) {
  const std::ptrdiff_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const std::ptrdiff_t end = width - offset <= 0 ? 0 : (width - offset + stride - 1) / stride;
  const auto out = static_cast<std::ptrdiff_t>(outWidth);
  const std::ptrdiff_t hi = end < out ? end : out;
  return lo >= hi ? ColumnRange{0, 0}
                  : ColumnRange{static_cast<std::size_t>(lo), static_cast<std::size_t>(hi)};
}

void im2col(const PlanOp& op, const float* x, float* col) {
  const std::size_t k = op.kernel;
  const std::size_t positions = op.outHeight * op.outWidth;
  const auto height = static_cast<std::ptrdiff_t>(op.inHeight);
  const auto width = static_cast<std::ptrdiff_t>(op.inWidth);
  const auto pad = static_cast<std::ptrdiff_t>(op.padding);
  const auto stride = static_cast<std::ptrdiff_t>(op.stride);
  for (std::size_t c = 0; c < op.inChannels; ++c) {
    const float* plane = x + c * op.inHeight * op.inWidth;
    for (std::size_t ky = 0; ky < k; ++ky) {
      for (std::size_t kx = 0; kx < k; ++kx) {
        float* dst = col + ((c * k + ky) * k + kx) * positions;
        const std::ptrdiff_t offset = static_cast<std::ptrdiff_t>(kx) - pad;
        const ColumnRange valid = validColumns(offset, stride, width, op.outWidth);
        for (std::size_t oy = 0; oy < op.outHeight; ++oy) {
          float* row = dst + oy * op.outWidth;
          const std::ptrdiff_t iy =
              static_cast<std::ptrdiff_t>(oy) * stride + static_cast<std::ptrdiff_t>(ky) - pad;
          if (iy < 0 || iy >= height) {
            for (std::size_t ox = 0; ox < op.outWidth; ++ox) row[ox] = 0.0f;
            continue;
          }
          const float* src = plane + iy * width;
          for (std::size_t ox = 0; ox < valid.lo; ++ox) row[ox] = 0.0f;
          if (stride == 1) {
            for (std::size_t ox = valid.lo; ox < valid.hi; ++ox) {
              row[ox] = src[static_cast<std::ptrdiff_t>(ox) + offset];
            }
          } else {
            for (std::size_t ox = valid.lo; ox < valid.hi; ++ox) {
              row[ox] = src[static_cast<std::ptrdiff_t>(ox) * stride + offset];
            }
          }
          for (std::size_t ox = valid.hi; ox < op.outWidth; ++ox) row[ox] = 0.0f;
        }
      }
    }
  }
}

// The adjoint of im2col: adds each column entry back onto the input pixel
// it was copied from.
void col2imAdd(const PlanOp& op, const float* col, float* x) {
  const std::size_t k = op.kernel;
  const std::size_t positions = op.outHeight * op.outWidth;
  const auto height = static_cast<std::ptrdiff_t>(op.inHeight);
  const auto width = static_cast<std::ptrdiff_t>(op.inWidth);
  const auto pad = static_cast<std::ptrdiff_t>(op.padding);
  const auto stride = static_cast<std::ptrdiff_t>(op.stride);
  for (std::size_t c = 0; c < op.inChannels; ++c) {
    float* plane = x + c * op.inHeight * op.inWidth;
    for (std::size_t ky = 0; ky < k; ++ky) {
      for (std::size_t kx = 0; kx < k; ++kx) {
        const float* src = col + ((c * k + ky) * k + kx) * positions;
        const std::ptrdiff_t offset = static_cast<std::ptrdiff_t>(kx) - pad;
        const ColumnRange valid = validColumns(offset, stride, width, op.outWidth);
        for (std::size_t oy = 0; oy < op.outHeight; ++oy) {
          const std::ptrdiff_t iy =
              static_cast<std::ptrdiff_t>(oy) * stride + static_cast<std::ptrdiff_t>(ky) - pad;
          if (iy < 0 || iy >= height) continue;
          float* dst = plane + iy * width;
          const float* row = src + oy * op.outWidth;
          if (stride == 1) {
            for (std::size_t ox = valid.lo; ox < valid.hi; ++ox) {
              dst[static_cast<std::ptrdiff_t>(ox) + offset] += row[ox];
            }
          } else {
            for (std::size_t ox = valid.lo; ox < valid.hi; ++ox) {
              dst[static_cast<std::ptrdiff_t>(ox) * stride + offset] += row[ox];
            }
          }
        }
      }
    }
  }
}

void convForward(const PlanOp& op, const float* params, const float* in, float* out, float* col,
                 Index n) {
  const Index taps = ix(op.inChannels * op.kernel * op.kernel);
  const Index positions = ix(op.outHeight * op.outWidth);
  const ConstMatrixMap w(params + op.weightOffset, ix(op.outChannels), taps);
  const ConstVectorMap b(params + op.biasOffset, ix(op.outChannels));
  const ConstMatrixMap patches(col, taps, positions);
  for (Index s = 0; s < n; ++s) {
    im2col(op, in + static_cast<std::size_t>(s) * op.inSize, col);
    MatrixMap y(out + static_cast<std::size_t>(s) * op.outSize, ix(op.outChannels), positions);
    gemm(y, w, patches, false);
    y.colwise() += b;
  }
}

void convBackward(const PlanOp& op, const float* params, float* paramGrad, const float* in,
                  const float* gradOut, float* gradIn, float* col, float* colGrad, Index n) {
  const Index taps = ix(op.inChannels * op.kernel * op.kernel);
  const Index positions = ix(op.outHeight * op.outWidth);
  const ConstMatrixMap w(params + op.weightOffset, ix(op.outChannels), taps);
  const ConstMatrixMap patches(col, taps, positions);
  MatrixMap dw(paramGrad + op.weightOffset, ix(op.outChannels), taps);
  VectorMap db(paramGrad + op.biasOffset, ix(op.outChannels));
  MatrixMap dpatches(colGrad, taps, positions);
  for (Index s = 0; s < n; ++s) {
    const ConstMatrixMap dy(gradOut + static_cast<std::size_t>(s) * op.outSize, ix(op.outChannels),
                            positions);
    if (op.weightGrad) {
      im2col(op, in + static_cast<std::size_t>(s) * op.inSize, col);
      gemm(dw, dy, patches.transpose(), s > 0);
    }
    if (op.biasGrad) {
      if (s == 0) {
        db = dy.rowwise().sum();
      } else {
        db += dy.rowwise().sum();
      }
    }
    if (op.inputGrad) {
      gemm(dpatches, w.transpose(), dy, false);
      float* dx = gradIn + static_cast<std::size_t>(s) * op.inSize;
      ArrayMap(dx, ix(op.inSize)).setZero();
      col2imAdd(op, colGrad, dx);
    }
  }
}

// ---------------------------------------------------------------------------
// MaxPool2D: windows of side `kernel` every `stride` pixels, no padding; the
// index of each window's maximum (first on ties) is kept for backward.

void maxPoolForward(const PlanOp& op, const float* in, float* out, std::int32_t* argmax, Index n) {
  const std::size_t plane = op.inHeight * op.inWidth;
  for (Index s = 0; s < n; ++s) {
    const float* x = in + static_cast<std::size_t>(s) * op.inSize;
    float* y = out + static_cast<std::size_t>(s) * op.outSize;
    std::int32_t* where = argmax + static_cast<std::size_t>(s) * op.outSize;
    for (std::size_t c = 0; c < op.outChannels; ++c) {
      for (std::size_t oy = 0; oy < op.outHeight; ++oy) {
        for (std::size_t ox = 0; ox < op.outWidth; ++ox) {
          std::size_t best = c * plane + oy * op.stride * op.inWidth + ox * op.stride;
          for (std::size_t ky = 0; ky < op.kernel; ++ky) {
            const std::size_t rowStart =
                c * plane + (oy * op.stride + ky) * op.inWidth + ox * op.stride;
            for (std::size_t kx = 0; kx < op.kernel; ++kx) {
              if (x[rowStart + kx] > x[best]) best = rowStart + kx;
            }
          }
          const std::size_t o = (c * op.outHeight + oy) * op.outWidth + ox;
          y[o] = x[best];
          where[o] = static_cast<std::int32_t>(best);
        }
      }
    }
  }
}

void maxPoolBackward(const PlanOp& op, const float* gradOut, float* gradIn,
                     const std::int32_t* argmax, Index n) {
  ArrayMap(gradIn, n * ix(op.inSize)).setZero();
  for (Index s = 0; s < n; ++s) {
    const float* dy = gradOut + static_cast<std::size_t>(s) * op.outSize;
    float* dx = gradIn + static_cast<std::size_t>(s) * op.inSize;
    const std::int32_t* where = argmax + static_cast<std::size_t>(s) * op.outSize;
    for (std::size_t o = 0; o < op.outSize; ++o) dx[where[o]] += dy[o];
  }
}

// ---------------------------------------------------------------------------

void forward(const Plan& plan, const float* params, const Buffers& buffers, std::size_t n) {
  const Index batch = ix(n);
  for (std::size_t i = 0; i < plan.opCount; ++i) {
    const PlanOp& op = plan.ops[i];
    const float* in = buffers.act + op.inAct;
    float* out = buffers.act + op.outAct;
    switch (op.kind) {
      case OpKind::Dense: denseForward(op, params, in, out, batch); break;
      case OpKind::Relu: {
        ArrayMap a(out, batch * ix(op.outSize));
        a = a.max(0.0f);
        break;
      }
      case OpKind::Conv2D: convForward(op, params, in, out, buffers.col, batch); break;
      case OpKind::MaxPool2D:
        maxPoolForward(op, in, out, buffers.argmax + op.argmaxOffset, batch);
        break;
      case OpKind::Flatten: break;
    }
  }
}

void backward(const Plan& plan, const float* params, float* paramGrad, const Buffers& buffers,
              std::size_t n) {
  const Index batch = ix(n);
  for (std::size_t i = plan.opCount; i-- > plan.backwardStop;) {
    const PlanOp& op = plan.ops[i];
    const float* in = buffers.act + op.inAct;
    const float* gradOut = buffers.grad + op.outAct;
    float* gradIn = buffers.grad + op.inAct;
    switch (op.kind) {
      case OpKind::Dense: denseBackward(op, params, paramGrad, in, gradOut, gradIn, batch); break;
      case OpKind::Relu:
        if (op.inputGrad) {
          // In place: the activation holds max(x, 0), which is > 0 exactly
          // where x > 0.
          const ConstArrayMap a(buffers.act + op.outAct, batch * ix(op.outSize));
          ArrayMap g(gradIn, batch * ix(op.outSize));
          g = (a > 0.0f).select(g, 0.0f);
        }
        break;
      case OpKind::Conv2D:
        convBackward(op, params, paramGrad, in, gradOut, gradIn, buffers.col, buffers.colGrad,
                     batch);
        break;
      case OpKind::MaxPool2D:
        if (op.inputGrad) {
          maxPoolBackward(op, gradOut, gradIn, buffers.argmax + op.argmaxOffset, batch);
        }
        break;
      case OpKind::Flatten: break;
    }
  }
}

// The optimizers touch every parameter and four or five state arrays once
// per step: memory-bound on models larger than L2. Working in chunks that
// stay in L1 across the expressions reads and writes each array once.
constexpr std::size_t kUpdateChunk = 1024;

// g + weightDecay * w + proximalMu * (w - ref) for one chunk, into `out`.
void regularizedGradient(const float* w, const float* g, const float* ref, Index len,
                         float weightDecay, float proximalMu, float* out) {
  ArrayMap total(out, len);
  const ConstArrayMap grad(g, len);
  if (weightDecay == 0.0f && proximalMu == 0.0f) {
    total = grad;
    return;
  }
  const ConstArrayMap weights(w, len);
  // ref is null without a proximal term (the trainer keeps no reference).
  if (proximalMu == 0.0f) {
    total = grad + weightDecay * weights;
    return;
  }
  total = grad + weightDecay * weights + proximalMu * (weights - ConstArrayMap(ref, len));
}

void sgd(float* w, const float* g, float* velocity, const float* ref, std::size_t count,
         const SgdStep& step) {
  alignas(64) float total[kUpdateChunk];
  for (std::size_t start = 0; start < count; start += kUpdateChunk) {
    const Index len = ix(count - start < kUpdateChunk ? count - start : kUpdateChunk);
    // ref is null without a proximal term: no offset on it then.
    regularizedGradient(w + start, g + start, ref == nullptr ? nullptr : ref + start, len,
                        step.weightDecay, step.proximalMu, total);
    ArrayMap weights(w + start, len);
    const ConstArrayMap update(total, len);
    if (step.momentum > 0.0f) {
      ArrayMap v(velocity + start, len);
      v = step.momentum * v + update;
      weights -= step.learningRate * v;
    } else {
      weights -= step.learningRate * update;
    }
  }
}

void adam(float* w, const float* g, float* m, float* v, const float* ref, std::size_t count,
          const AdamStep& step) {
  alignas(64) float total[kUpdateChunk];
  const float rate1 = 1.0f / step.correction1;
  const float rate2 = 1.0f / step.correction2;
  for (std::size_t start = 0; start < count; start += kUpdateChunk) {
    const Index len = ix(count - start < kUpdateChunk ? count - start : kUpdateChunk);
    // ref is null without a proximal term: no offset on it then.
    regularizedGradient(w + start, g + start, ref == nullptr ? nullptr : ref + start, len,
                        step.weightDecay, step.proximalMu, total);
    const ConstArrayMap grad(total, len);
    ArrayMap first(m + start, len);
    ArrayMap second(v + start, len);
    first = step.beta1 * first + (1.0f - step.beta1) * grad;
    second = step.beta2 * second + (1.0f - step.beta2) * grad.square();
    ArrayMap(w + start, len) -=
        step.learningRate * (first * rate1) / ((second * rate2).sqrt() + step.epsilon);
  }
}

}  // namespace

constexpr KernelSet kKernels{EDGEFL_KERNEL_NAME, &preprocess, &forward, &backward, &sgd, &adam};

}  // namespace edgefl::detail::EDGEFL_KERNEL_NS
