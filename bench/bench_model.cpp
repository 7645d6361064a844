// Model engine speed, with the physical reference in the same run: a plain
// Eigen float GEMM built with the project's portable flags, and the same
// GEMM through the engine (a 256x256 Dense layer with a regression head, so
// no softmax, on a batch of 256) for every kernel build the CPU supports.
//
// Kernel builds are the benchmark argument: 1 generic, 2 avx2, 3 avx512.
// Counters: us/sample (time per sample) and GFLOP/s where the work is a
// known number of flops.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <optional>
#include <random>

#include "bound.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/train.hpp"
#include "random_data.hpp"

namespace {

using namespace edgefl;

std::vector<float> pixels(std::size_t n) {
  return bench::pixelValues(n);
}
bool selectIsa(benchmark::State& state, KernelIsa& isa) {
  isa = static_cast<KernelIsa>(state.range(0));
  if (!kernelIsaAvailable(isa)) {
    state.SkipWithError("kernel build not available on this CPU");
    return false;
  }
  state.SetLabel(std::string(kernelIsaName(isa)));
  return true;
}

void perSample(benchmark::State& state, std::size_t samplesPerIteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * samplesPerIteration));
  state.counters["us/sample"] =
      benchmark::Counter(static_cast<double>(state.iterations() * samplesPerIteration) / 1e6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_EigenGemm256(benchmark::State& state) {
  constexpr int n = 256;
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n);
  const Eigen::MatrixXf b = Eigen::MatrixXf::Random(n, n);
  Eigen::MatrixXf c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * double(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EigenGemm256);

void BM_EngineGemm256(benchmark::State& state) {
  KernelIsa isa;
  if (!selectIsa(state, isa)) return;
  Model model = createModel("logreg:256-256", {.task = Task::Regression}).value();
  auto scorer = Scorer::prepare(model, {.maxBatch = 256, .isa = isa}).value();
  const auto x = pixels(256 * 256);
  std::vector<float> out(256 * 256);
  for (auto _ : state) {
    scorer.scoreBatch(x, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * 256 * 256 * 256 * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EngineGemm256)->DenseRange(1, 3);

void forward(benchmark::State& state, const char* spec, std::size_t batch) {
  KernelIsa isa;
  if (!selectIsa(state, isa)) return;
  Model model = createModel(spec, {.inputShape = {1, 28, 28}}).value();
  auto scorer = Scorer::prepare(model, {.maxBatch = batch, .isa = isa}).value();
  const auto x = pixels(batch * 784);
  std::vector<float> out(batch * model.outputCount());
  for (auto _ : state) {
    scorer.scoreBatch(x, out);
    benchmark::DoNotOptimize(out.data());
  }
  perSample(state, batch);
}

// A prepared trainer that steps through distinct batches with random
// labels: one batch stepped on forever is fitted to zero loss, and its
// vanishing gradients (denormal squares in Adam) measure something training
// never sees.
class TrainingLoop {
 public:
  TrainingLoop(const char* spec, std::uint32_t batch, OptimizerKind opt, KernelIsa isa)
      : model_(createModel(spec, {.inputShape = {1, 28, 28}}).value()),
        batch_(batch),
        x_(pixels(kBatches * batch * 784)),
        labels_(kBatches * batch) {
    TrainOptions options;
    options.batchSize = batch;
    options.learningRate = 0.01f;
    options.optimizer = opt;
    options.momentum = opt == OptimizerKind::Sgd ? 0.9f : 0.0f;
    options.isa = isa;
    trainer_.emplace(Trainer::prepare(model_, options).value());
    std::mt19937 rng(2);
    for (auto& label : labels_) label = static_cast<std::int32_t>(rng() % 10);
  }
  void step() {
    auto loss =
        trainer_->step(std::span<const float>(x_).subspan(next_ * batch_ * 784, batch_ * 784),
                       std::span<const std::int32_t>(labels_).subspan(next_ * batch_, batch_));
    benchmark::DoNotOptimize(loss);
    next_ = (next_ + 1) % kBatches;
  }

 private:
  static constexpr std::size_t kBatches = 16;
  Model model_;
  std::size_t batch_;
  std::vector<float> x_;
  std::vector<std::int32_t> labels_;
  std::optional<Trainer> trainer_;
  std::size_t next_ = 0;
};

void train(benchmark::State& state, const char* spec, std::uint32_t batch, OptimizerKind opt) {
  KernelIsa isa;
  if (!selectIsa(state, isa)) return;
  TrainingLoop loop(spec, batch, opt, isa);
  for (auto _ : state) loop.step();
  perSample(state, batch);
}

// Training against the matrix product it is made of, same kernel build,
// alternated in the same iterations: one SGD step of mlp:784-128-10 on a
// batch of 64, and a 256x256x256 product through the engine (a 256-256
// Dense layer on a batch of 256; a regression head, so no softmax). gemm_share = training GFLOP/s /
// product GFLOP/s, counting the step's useful flops: forward and weight gradients of both layers
// and the input gradient of the second (the first layer's input gradient is not needed).
// Activations, softmax and the optimizer update are extra work on top, so 1.0 is out of reach.
void BM_MlpTrainVsEngineGemm(benchmark::State& state) {
  KernelIsa isa;
  if (!selectIsa(state, isa)) return;
  constexpr double kBatch = 64;
  TrainingLoop loop("mlp:784-128-10", 64, OptimizerKind::Sgd, isa);
  const double trainFlops =
      2 * kBatch * 784 * 128 * 2 + 2 * kBatch * 128 * 10 * 3;  // 26.2 MFLOP per step
  Model gemm = createModel("logreg:256-256", {.task = Task::Regression}).value();
  auto scorer = Scorer::prepare(gemm, {.maxBatch = 256, .isa = isa}).value();
  const auto x = pixels(256 * 256);
  std::vector<float> out(256 * 256);
  const double gemmFlops = 2.0 * 256 * 256 * 256;
  bench::againstBound(
      state, "time_ratio", [&] { loop.step(); },
      [&] {
        scorer.scoreBatch(x, out);
        benchmark::DoNotOptimize(out.data());
      });
  const double ratio = state.counters["time_ratio"];
  if (ratio > 0) state.counters["gemm_share"] = trainFlops / gemmFlops / ratio;
  state.counters["train_GFLOP/s"] = benchmark::Counter(
      trainFlops * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_MlpForwardBatch1(benchmark::State& s) {
  forward(s, "mlp:784-128-10", 1);
}
void BM_MlpForwardBatch64(benchmark::State& s) {
  forward(s, "mlp:784-128-10", 64);
}
void BM_MlpTrainSgdBatch32(benchmark::State& s) {
  train(s, "mlp:784-128-10", 32, OptimizerKind::Sgd);
}
void BM_MlpTrainSgdBatch64(benchmark::State& s) {
  train(s, "mlp:784-128-10", 64, OptimizerKind::Sgd);
}
void BM_MlpTrainAdamBatch64(benchmark::State& s) {
  train(s, "mlp:784-128-10", 64, OptimizerKind::Adam);
}
void BM_LogregForwardBatch1(benchmark::State& s) {
  forward(s, "logreg:784-10", 1);
}
void BM_LogregForwardBatch64(benchmark::State& s) {
  forward(s, "logreg:784-10", 64);
}
void BM_LenetForwardBatch1(benchmark::State& s) {
  forward(s, "lenet", 1);
}
void BM_LenetForwardBatch64(benchmark::State& s) {
  forward(s, "lenet", 64);
}
void BM_LenetTrainSgdBatch64(benchmark::State& s) {
  train(s, "lenet", 64, OptimizerKind::Sgd);
}

BENCHMARK(BM_MlpForwardBatch1)->DenseRange(1, 3);
BENCHMARK(BM_MlpForwardBatch64)->DenseRange(1, 3);
BENCHMARK(BM_MlpTrainSgdBatch32)->DenseRange(1, 3);
BENCHMARK(BM_MlpTrainSgdBatch64)->DenseRange(1, 3);
BENCHMARK(BM_MlpTrainAdamBatch64)->DenseRange(1, 3);
BENCHMARK(BM_LogregForwardBatch1)->DenseRange(1, 3);
BENCHMARK(BM_LogregForwardBatch64)->DenseRange(1, 3);
BENCHMARK(BM_LenetForwardBatch1)->DenseRange(1, 3);
BENCHMARK(BM_LenetForwardBatch64)->DenseRange(1, 3);
BENCHMARK(BM_LenetTrainSgdBatch64)->DenseRange(1, 3);
BENCHMARK(BM_MlpTrainVsEngineGemm)->DenseRange(1, 3)->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
