// Loading Fashion-MNIST's training split (the simulator and the quality runs
// start with it) against its physical bound: zlib inflating the same two
// gzip files into a buffer it reuses, in the same iterations. Counter
// inflate_ratio = load / inflate. What the loader adds: a fresh 188 MB
// float array for the 47 M pixels (zeroed and first touched, page faults
// included, which is most of the difference on the 2-core VM), widening
// every pixel to float, and checking the IDX headers and every label.
//
//   bench_datasets --benchmark_min_time=2
//
// Needs the Debian package dataset-fashion-mnist; skipped without it.

#include <benchmark/benchmark.h>
#include <zlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "bound.hpp"
#include "edgefl/shared/datasets.hpp"

namespace {

const std::filesystem::path kDir = "/usr/share/datasets/fashion-mnist";

// Inflates a whole gzip file into `buffer` (grown as needed); the byte
// count, or -1 when the file cannot be read.
long long inflateFile(const std::filesystem::path& file, std::vector<unsigned char>& buffer) {
  gzFile in = gzopen(file.c_str(), "rb");
  if (in == nullptr) return -1;
  gzbuffer(in, 1 << 17);
  long long total = 0;
  for (;;) {
    if (buffer.size() < static_cast<std::size_t>(total) + (1 << 20))
      buffer.resize(total + (4 << 20));
    const int n = gzread(in, buffer.data() + total, 1 << 20);
    if (n < 0) {
      gzclose(in);
      return -1;
    }
    if (n == 0) break;
    total += n;
  }
  gzclose(in);
  return total;
}

void loadTrainVsInflate(benchmark::State& state) {
  const auto images = kDir / "train-images-idx3-ubyte.gz";
  const auto labels = kDir / "train-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(images) || !std::filesystem::exists(labels)) {
    state.SkipWithError("dataset-fashion-mnist is not installed");
    return;
  }
  std::vector<unsigned char> buffer;
  std::string error;
  long long inflated = 0;
  edgefl::bench::againstBound(
      state, "inflate_ratio",
      [&] {
        auto data = edgefl::loadFashionMnist("train");
        if (!data.ok() && error.empty()) error = data.error().toString();
        benchmark::DoNotOptimize(data);
      },
      [&] {
        inflated = inflateFile(images, buffer) + inflateFile(labels, buffer);
        benchmark::DoNotOptimize(buffer.data());
      });
  if (!error.empty()) state.SkipWithError(error.c_str());
  state.counters["samples"] = 60000;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * inflated);
}
BENCHMARK(loadTrainVsInflate)->Unit(benchmark::kMillisecond)->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
