// Cap'n Proto build and read of an Update by delta size, beside a memcpy of
// the same bytes timed in the same iterations (counter memcpy_ratio).
//
//   bench_wire --benchmark_min_time=0.2
//
// Build is what a device does once per round: a message sized to fit, the
// Update fields, the float32 delta through encodeDelta, then the flat-array
// bytes. Read is what the coordinator does with those bytes: parseMessage
// with the default DecodeLimits (copy, framing checks, the full walk by
// schema) and decodeDelta into the caller's buffer.

#include <benchmark/benchmark.h>
#include <capnp/message.h>

#include <cstring>
#include <random>
#include <vector>

#include "bound.hpp"
#include "edgefl/shared/delta.hpp"
#include "edgefl/shared/envelope.hpp"
#include "random_data.hpp"

namespace edgefl {
namespace {

// 8k (a small logreg), 100k (mlp:784-128-10), 1M floats (a large mlp).
void deltaSizes(benchmark::internal::Benchmark* b) {
  b->ArgName("floats");
  for (std::int64_t n : {8192, 100'000, 1'000'000}) b->Arg(n);
}

Result<Bytes> buildUpdate(std::span<float> delta, std::span<const std::uint32_t> sizes,
                          std::mt19937_64& rng) {
  const std::size_t words = delta.size() * sizeof(float) / sizeof(capnp::word) + 1024;
  capnp::MallocMessageBuilder message(static_cast<unsigned>(words));
  auto u = message.initRoot<wire::Update>();
  const std::array<std::uint8_t, kDigestBytes> base{};
  u.setFleet("bench-fleet");
  u.setDeviceId("device-0001");
  u.setRound(42);
  u.setBaseVersion(41);
  u.setBaseDigest(kj::arrayPtr(base.data(), base.size()));
  u.setSampleCount(600);
  auto info = encodeDelta(delta, sizes, DeltaOptions{}, {}, rng, u.initDelta());
  if (!info.ok()) return info.error();
  u.setLossBefore(0.9f);
  u.setLossAfter(0.6f);
  u.setCreatedAt(1'700'000'000);
  u.setRuntimeVersion("bench");
  return toBytes(message);
}

// One case: a delta of range(0) floats (a weight matrix and its bias, in
// wire order), its Update bytes, and a buffer for the memcpy of them.
struct UpdateCase {
  explicit UpdateCase(const benchmark::State& state)
      : n(static_cast<std::size_t>(state.range(0))),
        delta(bench::normalFloats(n, 0.01f, 7)),
        sizes{static_cast<std::uint32_t>(n - 128), 128},
        bytes(buildUpdate(delta, sizes, rng).value()),
        copy(bytes.size()) {}

  void copyBytes() {
    std::memcpy(copy.data(), bytes.data(), bytes.size());
    benchmark::DoNotOptimize(copy.data());
    benchmark::ClobberMemory();
  }
  void setCounters(benchmark::State& state) const {
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(bytes.size()));
    state.counters["message_bytes"] = static_cast<double>(bytes.size());
  }

  std::size_t n;
  std::mt19937_64 rng{1};
  std::vector<float> delta;
  std::vector<std::uint32_t> sizes;
  Bytes bytes;
  Bytes copy;
};

void BM_Memcpy(benchmark::State& state) {
  UpdateCase c(state);
  for (auto _ : state) c.copyBytes();
  c.setCounters(state);
}
BENCHMARK(BM_Memcpy)->Apply(deltaSizes);

void BM_BuildUpdate(benchmark::State& state) {
  UpdateCase c(state);
  bool failed = false;
  bench::againstBound(
      state, "memcpy_ratio",
      [&] {
        auto bytes = buildUpdate(c.delta, c.sizes, c.rng);
        failed = failed || !bytes.ok();
        benchmark::DoNotOptimize(bytes);
      },
      [&] { c.copyBytes(); });
  if (failed) state.SkipWithError("building the update failed");
  c.setCounters(state);
}
BENCHMARK(BM_BuildUpdate)->Apply(deltaSizes)->UseManualTime();

void BM_ReadUpdate(benchmark::State& state) {
  UpdateCase c(state);
  std::vector<float> out(c.n);
  const DecodeLimits limits;
  Status status;
  bench::againstBound(
      state, "memcpy_ratio",
      [&] {
        auto parsed = parseMessage<wire::Update>(c.bytes, limits);
        status = parsed.ok() ? decodeDelta(parsed->root().getDelta(), c.sizes, out)
                             : Status(parsed.error());
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
      },
      [&] { c.copyBytes(); });
  if (!status.ok()) state.SkipWithError(status.error().toString().c_str());
  c.setCounters(state);
}
BENCHMARK(BM_ReadUpdate)->Apply(deltaSizes)->UseManualTime();

}  // namespace
}  // namespace edgefl

BENCHMARK_MAIN();
