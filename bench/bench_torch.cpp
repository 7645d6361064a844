// The model engine beside libtorch (C++, one thread each) on the same
// shapes: batch-1 and batch-64 scoring of logreg:784-10, mlp:784-128-10 and
// lenet, and an SGD training step (momentum 0.9, batch 64). Each case times
// libtorch and the engine alternately in the same iterations (bound.hpp);
// the reported time is libtorch's and the counter
// torch_speedup = libtorch time / engine time. Budget: batch-1 mlp scoring
// >= 2.
//
// Built only with -DEDGEFL_BENCH_TORCH=ON (Debian libtorch-dev).
//
//   bench_torch --benchmark_min_time=0.2

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <random>
#include <vector>

#include "bound.hpp"
#include "edgefl/shared/arch.hpp"
#include "edgefl/shared/model_scorer.hpp"
#include "edgefl/shared/train.hpp"
#include "random_data.hpp"

namespace {

using namespace edgefl;

// The engine's architectures, layer for layer, as libtorch modules.
torch::nn::Sequential torchModel(const std::string& spec) {
  namespace nn = torch::nn;
  if (spec == "logreg:784-10") return nn::Sequential(nn::Linear(784, 10));
  if (spec == "mlp:784-128-10") {
    return nn::Sequential(nn::Linear(784, 128), nn::ReLU(), nn::Linear(128, 10));
  }
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 6, 5)), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Conv2d(nn::Conv2dOptions(6, 16, 5)), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Flatten(), nn::Linear(16 * 4 * 4, 120), nn::ReLU(), nn::Linear(120, 84),
                        nn::ReLU(), nn::Linear(84, 10));
}

std::vector<float> pixels(std::size_t n) {
  return bench::pixelValues(n);
}
torch::Tensor torchInput(std::vector<float>& x, const std::string& spec, std::int64_t batch) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat32);
  if (spec == "lenet") return torch::from_blob(x.data(), {batch, 1, 28, 28}, options);
  return torch::from_blob(x.data(), {batch, 784}, options);
}

// Scoring: the engine's probabilities against libtorch's forward and
// softmax, without autograd.
void scoring(benchmark::State& state, const std::string& spec, std::size_t batch) {
  torch::set_num_threads(1);
  Model model = createModel(spec, {.inputShape = {1, 28, 28}}).value();
  auto scorer = Scorer::prepare(model, {.maxBatch = batch}).value();
  auto net = torchModel(spec);
  net->eval();
  auto x = pixels(batch * 784);
  std::vector<float> out(batch * model.outputCount());
  const torch::Tensor input = torchInput(x, spec, static_cast<std::int64_t>(batch));
  torch::InferenceMode inference;
  edgefl::bench::againstBound(
      state, "torch_speedup",
      [&] {
        torch::Tensor p = torch::softmax(net->forward(input), 1);
        benchmark::DoNotOptimize(p.data_ptr());
      },
      [&] {
        scorer.scoreBatch(x, out);
        benchmark::DoNotOptimize(out.data());
      });
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
  state.SetLabel(spec + " (time: libtorch)");
}

// One SGD step (lr 0.01, momentum 0.9) on a batch of 64 with random labels,
// cycling through 16 batches so neither side fits one batch to zero loss.
void training(benchmark::State& state, const std::string& spec) {
  torch::set_num_threads(1);
  constexpr std::size_t kBatch = 64, kBatches = 16;
  Model model = createModel(spec, {.inputShape = {1, 28, 28}}).value();
  TrainOptions options;
  options.batchSize = kBatch;
  options.learningRate = 0.01f;
  options.optimizer = OptimizerKind::Sgd;
  options.momentum = 0.9f;
  auto trainer = Trainer::prepare(model, options).value();
  auto net = torchModel(spec);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  auto x = pixels(kBatches * kBatch * 784);
  std::vector<std::int32_t> labels(kBatches * kBatch);
  std::mt19937 rng(2);
  for (auto& label : labels) label = static_cast<std::int32_t>(rng() % 10);
  std::vector<torch::Tensor> inputs, targets;
  for (std::size_t b = 0; b < kBatches; ++b) {
    std::vector<float> slice(x.begin() + static_cast<std::ptrdiff_t>(b * kBatch * 784),
                             x.begin() + static_cast<std::ptrdiff_t>((b + 1) * kBatch * 784));
    inputs.push_back(torchInput(slice, spec, kBatch).clone());
    std::vector<std::int64_t> t(labels.begin() + static_cast<std::ptrdiff_t>(b * kBatch),
                                labels.begin() + static_cast<std::ptrdiff_t>((b + 1) * kBatch));
    targets.push_back(torch::tensor(t));
  }
  std::size_t next = 0;
  edgefl::bench::againstBound(
      state, "torch_speedup",
      [&] {
        sgd.zero_grad();
        torch::Tensor loss =
            torch::nn::functional::cross_entropy(net->forward(inputs[next]), targets[next]);
        loss.backward();
        sgd.step();
        benchmark::DoNotOptimize(loss.data_ptr());
      },
      [&] {
        auto loss =
            trainer.step(std::span<const float>(x).subspan(next * kBatch * 784, kBatch * 784),
                         std::span<const std::int32_t>(labels).subspan(next * kBatch, kBatch));
        benchmark::DoNotOptimize(loss);
        next = (next + 1) % kBatches;
      });
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
  state.SetLabel(spec + " (time: libtorch)");
}

BENCHMARK_CAPTURE(scoring, MlpBatch1, "mlp:784-128-10", 1)->UseManualTime();
BENCHMARK_CAPTURE(scoring, MlpBatch64, "mlp:784-128-10", 64)->UseManualTime();
BENCHMARK_CAPTURE(scoring, LogregBatch1, "logreg:784-10", 1)->UseManualTime();
BENCHMARK_CAPTURE(scoring, LogregBatch64, "logreg:784-10", 64)->UseManualTime();
BENCHMARK_CAPTURE(scoring, LenetBatch1, "lenet", 1)->UseManualTime();
BENCHMARK_CAPTURE(scoring, LenetBatch64, "lenet", 64)->UseManualTime();
BENCHMARK_CAPTURE(training, MlpSgdBatch64, "mlp:784-128-10")->UseManualTime();
BENCHMARK_CAPTURE(training, LenetSgdBatch64, "lenet")->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
