// Model engine speed, with the physical reference in the same run: a plain
// Eigen float GEMM built with the project's portable flags, and the same
// GEMM through the engine (a 256x256 Dense layer on a batch of 256) for
// every kernel build the CPU supports.
//
// Kernel builds are the benchmark argument: 1 generic, 2 avx2, 3 avx512.
// Counters: us/sample (time per sample) and GFLOP/s where the work is a
// known number of flops.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <random>

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
  Model model = createModel("logreg:256-256").value();
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

void train(benchmark::State& state, const char* spec, std::uint32_t batch, OptimizerKind opt) {
  KernelIsa isa;
  if (!selectIsa(state, isa)) return;
  Model model = createModel(spec, {.inputShape = {1, 28, 28}}).value();
  TrainOptions options;
  options.batchSize = batch;
  options.learningRate = 0.01f;
  options.optimizer = opt;
  options.momentum = opt == OptimizerKind::Sgd ? 0.9f : 0.0f;
  options.isa = isa;
  auto trainer = Trainer::prepare(model, options).value();
  // Distinct batches with random labels: one batch stepped on forever is
  // fitted to zero loss, and its vanishing gradients (denormal squares in
  // Adam) measure something training never sees.
  constexpr std::size_t kBatches = 16;
  const auto x = pixels(kBatches * batch * 784);
  std::vector<std::int32_t> labels(kBatches * batch);
  std::mt19937 rng(2);
  for (auto& label : labels) label = static_cast<std::int32_t>(rng() % 10);
  std::size_t next = 0;
  for (auto _ : state) {
    auto loss = trainer.step(std::span<const float>(x).subspan(next * batch * 784, batch * 784),
                             std::span<const std::int32_t>(labels).subspan(next * batch, batch));
    benchmark::DoNotOptimize(loss);
    next = (next + 1) % kBatches;
  }
  perSample(state, batch);
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

}  // namespace

BENCHMARK_MAIN();
