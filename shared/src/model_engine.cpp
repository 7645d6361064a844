#include "model_engine.hpp"

#include <algorithm>
#include <cassert>

namespace edgefl {
namespace {

bool cpuHasAvx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpuHasAvx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && cpuHasAvx2();
#else
  return false;
#endif
}

}  // namespace

std::string_view kernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::Auto: return "auto";
    case KernelIsa::Generic: return "generic";
    case KernelIsa::Avx2: return "avx2";
    case KernelIsa::Avx512: return "avx512";
  }
  return "unknown";
}

bool kernelIsaAvailable(KernelIsa isa) {
  return isa == KernelIsa::Auto || detail::kernelsFor(isa) != nullptr;
}

KernelIsa resolveKernelIsa(KernelIsa isa) {
  if (isa != KernelIsa::Auto) return isa;
  if (detail::kernelsFor(KernelIsa::Avx512) != nullptr) return KernelIsa::Avx512;
  if (detail::kernelsFor(KernelIsa::Avx2) != nullptr) return KernelIsa::Avx2;
  return KernelIsa::Generic;
}

namespace detail {

const KernelSet* kernelsFor(KernelIsa isa) {
  switch (resolveKernelIsa(isa)) {
    case KernelIsa::Generic: return &genericKernels();
    case KernelIsa::Avx2: return cpuHasAvx2() ? avx2Kernels() : nullptr;
    case KernelIsa::Avx512: return cpuHasAvx512() ? avx512Kernels() : nullptr;
    case KernelIsa::Auto: break;
  }
  return nullptr;
}

Result<std::unique_ptr<Engine>> Engine::create(const Model& model, const EngineOptions& options) {
  if (options.maxBatch == 0 || options.maxBatch > kMaxBatch) {
    return makeError(Code::InvalidArgument, "maxBatch " + std::to_string(options.maxBatch) +
                                                " not in [1, " + std::to_string(kMaxBatch) + "]");
  }
  EDGEFL_TRY(validateModel(model));
  const KernelSet* kernels = kernelsFor(options.isa);
  if (kernels == nullptr) {
    return makeError(Code::InvalidArgument, "kernel ISA " +
                                                std::string(kernelIsaName(options.isa)) +
                                                " is not available in this build on this CPU");
  }
  const bool training = !options.trainable.empty();
  assert(!training || options.trainable.size() == model.tensorSizes().size());

  std::unique_ptr<Engine> e(new Engine());
  e->model_ = &model;
  e->kernels_ = kernels;
  e->isa_ = resolveKernelIsa(options.isa);
  e->maxBatch_ = options.maxBatch;
  e->features_ = model.featureCount();
  e->outputCount_ = model.outputCount();

  const std::size_t batch = options.maxBatch;
  std::size_t cursor = batch * e->features_;  // the input buffer comes first
  std::size_t current = 0;
  std::size_t colSize = 0;
  std::size_t argmaxSize = 0;
  std::size_t tensor = 0;
  const auto offsets = model.tensorOffsets();
  e->ops_.reserve(model.layers().size());
  for (const Layer& layer : model.layers()) {
    PlanOp op;
    op.inSize = layer.inputSize();
    op.outSize = layer.outputSize();
    op.inAct = current;
    bool inPlace = false;
    switch (layer.kind) {
      case LayerKind::Dense:
        op.kind = OpKind::Dense;
        op.inChannels = layer.inputs;
        op.outChannels = layer.outputs;
        op.inHeight = op.inWidth = op.outHeight = op.outWidth = 1;
        break;
      case LayerKind::Relu:
        op.kind = OpKind::Relu;
        inPlace = true;
        break;
      case LayerKind::Flatten:
        op.kind = OpKind::Flatten;
        inPlace = true;
        break;
      case LayerKind::Conv2D:
      case LayerKind::MaxPool2D:
        op.kind = layer.kind == LayerKind::Conv2D ? OpKind::Conv2D : OpKind::MaxPool2D;
        op.inChannels = layer.channels;
        op.outChannels = layer.kind == LayerKind::Conv2D ? layer.outChannels : layer.channels;
        op.inHeight = layer.inHeight;
        op.inWidth = layer.inWidth;
        op.outHeight = layer.outHeight();
        op.outWidth = layer.outWidth();
        op.kernel = layer.kernel;
        op.stride = layer.stride;
        op.padding = layer.padding;
        if (op.kind == OpKind::Conv2D) {
          colSize =
              std::max(colSize, op.inChannels * op.kernel * op.kernel * op.outHeight * op.outWidth);
        } else {
          op.argmaxOffset = argmaxSize;
          argmaxSize += batch * op.outSize;
        }
        break;
    }
    if (inPlace) {
      op.outAct = current;
    } else {
      op.outAct = cursor;
      cursor += batch * op.outSize;
      current = op.outAct;
    }
    if (layer.hasParameters()) {
      op.weightOffset = offsets[tensor];
      op.biasOffset = offsets[tensor + 1];
      if (training) {
        op.weightGrad = options.trainable[tensor] != 0;
        op.biasGrad = options.trainable[tensor + 1] != 0;
      }
      tensor += 2;
    }
    e->ops_.push_back(op);
  }
  e->outputAct_ = current;

  if (training) {
    e->backwardStop_ = e->ops_.size();
    for (std::size_t i = 0; i < e->ops_.size(); ++i) {
      if (e->ops_[i].weightGrad || e->ops_[i].biasGrad) {
        e->backwardStop_ = i;
        break;
      }
    }
    assert(e->backwardStop_ < e->ops_.size());
    for (std::size_t i = e->backwardStop_ + 1; i < e->ops_.size(); ++i) e->ops_[i].inputGrad = true;
    e->grad_.assign(cursor, 0.0f);
    e->colGrad_.assign(colSize, 0.0f);
  } else {
    e->backwardStop_ = e->ops_.size();
  }
  e->act_.assign(cursor, 0.0f);
  e->col_.assign(colSize, 0.0f);
  e->argmax_.assign(argmaxSize, 0);

  const Preprocessing& pre = model.preprocessing();
  e->shift_ = pre.shift.empty() ? std::vector<float>(e->features_, 0.0f) : pre.shift;
  e->scale_ = pre.scale.empty() ? std::vector<float>(e->features_, 1.0f) : pre.scale;
  e->rows_.assign(batch, nullptr);
  return e;
}

std::size_t Engine::workspaceBytes() const {
  return sizeof(float) * (act_.size() + grad_.size() + col_.size() + colGrad_.size() +
                          shift_.size() + scale_.size()) +
         sizeof(std::int32_t) * argmax_.size() + sizeof(const float*) * rows_.size();
}

Buffers Engine::buffers() {
  return Buffers{act_.data(), grad_.data(), col_.data(), colGrad_.data(), argmax_.data()};
}

void Engine::loadRows(const float* const* rows, std::size_t n) {
  assert(n >= 1 && n <= maxBatch_);
  kernels_->preprocess(rows, n, features_, shift_.data(), scale_.data(), act_.data());
}

void Engine::loadContiguous(const float* xs, std::size_t n) {
  assert(n >= 1 && n <= maxBatch_);
  for (std::size_t i = 0; i < n; ++i) rows_[i] = xs + i * features_;
  loadRows(rows_.data(), n);
}

void Engine::forward(std::size_t n) {
  assert(n >= 1 && n <= maxBatch_);
  kernels_->forward(plan(), model_->parameters().data(), buffers(), n);
}

void Engine::backward(std::size_t n, float* paramGrad) {
  assert(n >= 1 && n <= maxBatch_ && !grad_.empty());
  kernels_->backward(plan(), model_->parameters().data(), paramGrad, buffers(), n);
}

}  // namespace detail
}  // namespace edgefl
