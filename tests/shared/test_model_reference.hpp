#pragma once
// Plain-loop reference of the model math for the model tests: direct
// convolution (no im2col), no GEMM, no Eigen, templated on the scalar so
// that finite differences can run in double. Kept as literal as possible;
// speed does not matter here.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "edgefl/shared/model.hpp"

namespace edgefl::testing {

template <typename T>
std::vector<T> referenceForward(const Model& model, std::span<const T> params,
                                std::span<const float> raw) {
  const std::size_t features = model.featureCount();
  std::vector<T> x(features);
  for (std::size_t f = 0; f < features; ++f) {
    const T shift = model.preprocessing().shift.empty() ? T(0) : T(model.preprocessing().shift[f]);
    const T scale = model.preprocessing().scale.empty() ? T(1) : T(model.preprocessing().scale[f]);
    x[f] = (T(raw[f]) - shift) * scale;
  }
  std::size_t tensor = 0;
  for (const Layer& l : model.layers()) {
    std::vector<T> y;
    switch (l.kind) {
      case LayerKind::Dense: {
        const T* w = params.data() + model.tensorOffsets()[tensor];
        const T* b = params.data() + model.tensorOffsets()[tensor + 1];
        y.assign(l.outputs, T(0));
        for (std::size_t o = 0; o < l.outputs; ++o) {
          T sum = b[o];
          for (std::size_t i = 0; i < l.inputs; ++i) sum += w[o * l.inputs + i] * x[i];
          y[o] = sum;
        }
        tensor += 2;
        break;
      }
      case LayerKind::Relu:
        y = x;
        for (T& v : y) v = v > T(0) ? v : T(0);
        break;
      case LayerKind::Flatten: y = x; break;
      case LayerKind::Conv2D: {
        const T* w = params.data() + model.tensorOffsets()[tensor];
        const T* b = params.data() + model.tensorOffsets()[tensor + 1];
        const auto oh = static_cast<std::size_t>(l.outHeight());
        const auto ow = static_cast<std::size_t>(l.outWidth());
        const std::size_t k = l.kernel;
        y.assign(l.outChannels * oh * ow, T(0));
        for (std::size_t oc = 0; oc < l.outChannels; ++oc) {
          for (std::size_t oy = 0; oy < oh; ++oy) {
            for (std::size_t ox = 0; ox < ow; ++ox) {
              T sum = b[oc];
              for (std::size_t c = 0; c < l.channels; ++c) {
                for (std::size_t ky = 0; ky < k; ++ky) {
                  for (std::size_t kx = 0; kx < k; ++kx) {
                    const long iy = long(oy * l.stride + ky) - long(l.padding);
                    const long ix = long(ox * l.stride + kx) - long(l.padding);
                    if (iy < 0 || ix < 0 || iy >= long(l.inHeight) || ix >= long(l.inWidth)) {
                      continue;
                    }
                    sum += w[((oc * l.channels + c) * k + ky) * k + kx] *
                           x[(c * l.inHeight + std::size_t(iy)) * l.inWidth + std::size_t(ix)];
                  }
                }
              }
              y[(oc * oh + oy) * ow + ox] = sum;
            }
          }
        }
        tensor += 2;
        break;
      }
      case LayerKind::MaxPool2D: {
        const auto oh = static_cast<std::size_t>(l.outHeight());
        const auto ow = static_cast<std::size_t>(l.outWidth());
        y.assign(l.channels * oh * ow, T(0));
        for (std::size_t c = 0; c < l.channels; ++c) {
          for (std::size_t oy = 0; oy < oh; ++oy) {
            for (std::size_t ox = 0; ox < ow; ++ox) {
              T best = -std::numeric_limits<T>::infinity();
              for (std::size_t ky = 0; ky < l.kernel; ++ky) {
                for (std::size_t kx = 0; kx < l.kernel; ++kx) {
                  best = std::max(
                      best,
                      x[(c * l.inHeight + oy * l.stride + ky) * l.inWidth + ox * l.stride + kx]);
                }
              }
              y[(c * oh + oy) * ow + ox] = best;
            }
          }
        }
        break;
      }
    }
    x = std::move(y);
  }
  return x;
}

// Mean loss over the samples: cross-entropy of softmax (labels) or mean
// squared error over outputs (targets).
template <typename T>
T referenceLoss(const Model& model, std::span<const T> params, std::span<const float> features,
                std::span<const std::int32_t> labels, std::span<const float> targets) {
  const std::size_t f = model.featureCount();
  const std::size_t k = model.outputCount();
  const std::size_t n = features.size() / f;
  T total = 0;
  for (std::size_t s = 0; s < n; ++s) {
    const std::vector<T> y = referenceForward<T>(model, params, features.subspan(s * f, f));
    if (model.task() == Task::Classification) {
      T top = *std::max_element(y.begin(), y.end());
      T sum = 0;
      for (T v : y) sum += std::exp(v - top);
      total += top + std::log(sum) - y[static_cast<std::size_t>(labels[s])];
    } else {
      for (std::size_t j = 0; j < k; ++j) {
        const T d = y[j] - T(targets[s * k + j]);
        total += d * d / T(k);
      }
    }
  }
  return total / T(n);
}

template <typename T>
std::vector<T> softmax(const std::vector<T>& logits) {
  const T top = *std::max_element(logits.begin(), logits.end());
  std::vector<T> out(logits.size());
  T sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) sum += out[i] = std::exp(logits[i] - top);
  for (T& v : out) v /= sum;
  return out;
}

}  // namespace edgefl::testing
