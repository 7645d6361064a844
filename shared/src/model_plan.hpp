#pragma once
// Private to the model engine: the prepared form of a model that the math
// kernels run on, and the table of one kernel build.
//
// Everything here is plain data (no Eigen, no std containers) because the
// same kernel source is compiled once per instruction set, each copy with
// its own renamed Eigen (model_kernels_*.cpp); only these types cross
// between the copies and the rest of the library.

#include <cstddef>
#include <cstdint>

namespace edgefl::detail {

enum class OpKind : std::uint8_t { Dense, Relu, Conv2D, MaxPool2D, Flatten };

// One layer with every size resolved and every buffer placed. Activation
// buffers are batch-major: sample s of a buffer starts at s * size.
struct PlanOp {
  OpKind kind = OpKind::Dense;
  std::size_t inSize = 0;  // elements per sample
  std::size_t outSize = 0;
  // Dense: inChannels = inputs, outChannels = outputs, sides 1.
  std::size_t inChannels = 0, inHeight = 0, inWidth = 0;
  std::size_t outChannels = 0, outHeight = 0, outWidth = 0;
  std::size_t kernel = 0, stride = 0, padding = 0;
  std::size_t weightOffset = 0, biasOffset = 0;  // into the parameter buffer
  std::size_t inAct = 0, outAct = 0;             // into the activation (and gradient) arena
  std::size_t argmaxOffset = 0;                  // MaxPool2D: into the argmax arena
  // Backward: what this op computes. Relu runs in place (outAct == inAct)
  // and Flatten is an alias, so neither copies.
  bool weightGrad = false;
  bool biasGrad = false;
  bool inputGrad = false;
};

struct Plan {
  const PlanOp* ops = nullptr;
  std::size_t opCount = 0;
  std::size_t backwardStop = 0;  // lowest op that backward visits
};

// Workspace of a prepared engine; every pointer has room for maxBatch
// samples (scratch: one sample).
struct Buffers {
  float* act = nullptr;
  float* grad = nullptr;     // same layout as act; training only
  float* col = nullptr;      // im2col of one sample: max over Conv2D of C*k*k x OH*OW
  float* colGrad = nullptr;  // same size; training only
  std::int32_t* argmax = nullptr;
};

struct SgdStep {
  float learningRate, momentum, weightDecay, proximalMu;
};

struct AdamStep {
  float learningRate, beta1, beta2, epsilon, weightDecay, proximalMu;
  float correction1, correction2;  // 1 - beta^t
};

struct KernelSet {
  const char* name;
  // out[i, :] = (rows[i][:] - shift) * scale for i < n.
  void (*preprocess)(const float* const* rows, std::size_t n, std::size_t features,
                     const float* shift, const float* scale, float* out);
  // Runs every op on n samples whose preprocessed input is at act + ops[0].inAct.
  void (*forward)(const Plan& plan, const float* params, const Buffers& buffers, std::size_t n);
  // Given dLoss/dOutput at grad + ops[last].outAct, writes the gradients the
  // ops ask for (overwriting paramGrad entries of those tensors).
  void (*backward)(const Plan& plan, const float* params, float* paramGrad, const Buffers& buffers,
                   std::size_t n);
  // Updates `count` parameters from their gradient, state and reference.
  void (*sgd)(float* w, const float* g, float* velocity, const float* ref, std::size_t count,
              const SgdStep& step);
  void (*adam)(float* w, const float* g, float* m, float* v, const float* ref, std::size_t count,
               const AdamStep& step);
};

// The builds in this binary; nullptr when a build is not compiled for this
// target. Callers check the CPU before using one (model_engine.cpp).
const KernelSet& genericKernels();
const KernelSet* avx2Kernels();
const KernelSet* avx512Kernels();

}  // namespace edgefl::detail
