// Delta codecs: encode (device) and decode (coordinator) throughput for
// float32, int8 and top-k, in bytes of float32 delta per second, beside a
// memcpy of the same bytes in the same run as the bound.
//
// Arg 0: mlp:784-128-10 (101,770 parameters, the reference model).
// Arg 1: mlp:784-1024-256-10 (1,068,810 parameters, the ~1M case).

#include <benchmark/benchmark.h>
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <random>
#include <vector>

#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/envelope.hpp"
#include "random_data.hpp"

namespace edgefl {
namespace {

struct Shape {
  const char* arch;
  std::vector<std::uint32_t> tensorSizes;  // wire order: weight, bias per layer
};

const Shape& shape(std::int64_t which) {
  static const Shape kShapes[] = {
      {"mlp:784-128-10", {784 * 128, 128, 128 * 10, 10}},
      {"mlp:784-1024-256-10", {784 * 1024, 1024, 1024 * 256, 256, 256 * 10, 10}},
  };
  return kShapes[which];
}

std::vector<float> randomDelta(std::size_t n) {
  return bench::normalFloats(n, 0.01f, 7);
}

DeltaOptions optionsFor(std::int64_t codec) {
  switch (codec) {
    case 0: return {.encoding = DeltaEncoding::FLOAT32};
    case 1: return {.encoding = DeltaEncoding::INT8, .rounding = Rounding::NEAREST};
    case 2: return {.encoding = DeltaEncoding::INT8, .rounding = Rounding::STOCHASTIC};
    default: return {.encoding = DeltaEncoding::TOP_K, .topKFraction = 0.01f};
  }
}

const char* codecName(std::int64_t codec) {
  static const char* kNames[] = {"float32", "int8-nearest", "int8-stochastic", "topk-1%"};
  return kNames[codec];
}

void label(benchmark::State& state, const Shape& s, std::size_t n, const char* what) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(n * sizeof(float)));
  state.SetLabel(std::string(s.arch) + " " + what);
}

void BM_Memcpy(benchmark::State& state) {
  const Shape& s = shape(state.range(0));
  const std::size_t n = totalElements(s.tensorSizes);
  const auto src = randomDelta(n);
  std::vector<float> dst(n);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  label(state, s, n, "memcpy (bound)");
}

// Encoding into a fresh message sized for the result, as a device does once
// per round. Top-k runs with error feedback; its delta and residual are
// restored outside the timed region, since encoding folds one into the other.
void BM_Encode(benchmark::State& state) {
  const Shape& s = shape(state.range(0));
  const DeltaOptions options = optionsFor(state.range(1));
  const std::size_t n = totalElements(s.tensorSizes);
  const auto pristine = randomDelta(n);
  auto delta = pristine;
  const bool feedback = options.encoding == DeltaEncoding::TOP_K;
  std::vector<float> residual(feedback ? n : 0, 0.0f);
  std::mt19937_64 rng(1);
  std::size_t wireBytes = 0;
  for (auto _ : state) {
    if (feedback) {
      state.PauseTiming();
      delta = pristine;
      std::fill(residual.begin(), residual.end(), 0.0f);
      state.ResumeTiming();
    }
    capnp::MallocMessageBuilder message(static_cast<unsigned>(n / 2 + 1024));
    auto info =
        encodeDelta(delta, s.tensorSizes, options, residual, rng, message.initRoot<wire::Delta>());
    if (!info.ok()) {
      state.SkipWithError(info.error().toString().c_str());
      break;
    }
    wireBytes = info->payloadBytes;
    benchmark::DoNotOptimize(message);
  }
  label(state, s, n, codecName(state.range(1)));
  state.counters["payload_bytes"] = static_cast<double>(wireBytes);
}

// Decode: decodeDelta alone, from a fresh Cap'n Proto reader over the
// message each iteration (a reader's traversal budget is spent by reading,
// so one reader cannot be decoded from forever). ParseAndDecode adds
// parseMessage: the framing checks and the full walk that every received
// message goes through first.
void decodeBench(benchmark::State& state, bool parse) {
  const Shape& s = shape(state.range(0));
  const DeltaOptions options = optionsFor(state.range(1));
  const std::size_t n = totalElements(s.tensorSizes);
  auto delta = randomDelta(n);
  std::mt19937_64 rng(1);
  auto bytes = encodeDeltaMessage(delta, s.tensorSizes, options, {}, rng);
  if (!bytes.ok()) {
    state.SkipWithError(bytes.error().toString().c_str());
    return;
  }
  auto words = kj::heapArray<capnp::word>(bytes->size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes->data(), bytes->size());
  capnp::ReaderOptions readerOptions;
  readerOptions.traversalLimitInWords = 8 * words.size();
  std::vector<float> out(n);
  for (auto _ : state) {
    Status status;
    if (parse) {
      auto parsed = parseMessage<wire::Delta>(*bytes);
      status =
          parsed.ok() ? decodeDelta(parsed->root(), s.tensorSizes, out) : Status(parsed.error());
    } else {
      capnp::FlatArrayMessageReader reader(words, readerOptions);
      status = decodeDelta(reader.getRoot<wire::Delta>(), s.tensorSizes, out);
    }
    if (!status.ok()) {
      state.SkipWithError(status.error().toString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  label(state, s, n, codecName(state.range(1)));
  state.counters["message_bytes"] = static_cast<double>(bytes->size());
}

void BM_Decode(benchmark::State& state) {
  decodeBench(state, false);
}
void BM_ParseAndDecode(benchmark::State& state) {
  decodeBench(state, true);
}

void encodeCodecs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "codec"});
  for (std::int64_t model : {0, 1}) {
    for (std::int64_t codec : {0, 1, 2, 3}) b->Args({model, codec});
  }
}

// The decoder does not care how int8 was rounded.
void decodeCodecs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"model", "codec"});
  for (std::int64_t model : {0, 1}) {
    for (std::int64_t codec : {0, 1, 3}) b->Args({model, codec});
  }
}

BENCHMARK(BM_Memcpy)->ArgName("model")->Arg(0)->Arg(1);
BENCHMARK(BM_Encode)->Apply(encodeCodecs);
BENCHMARK(BM_Decode)->Apply(decodeCodecs);
BENCHMARK(BM_ParseAndDecode)->Apply(decodeCodecs);

}  // namespace
}  // namespace edgefl

BENCHMARK_MAIN();
