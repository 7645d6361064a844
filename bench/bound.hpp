#pragma once
// Side-by-side ratios for benchmarks: a subject and its bound (a peer or a
// physical limit) timed alternately in the same iterations, so the ratio
// compares runs made under the same machine conditions (load, frequency,
// cache state) rather than two runs seconds apart.

#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

namespace edgefl::bench {

template <typename F>
double secondsOf(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times `subject` as the iteration (register the benchmark with
// UseManualTime()) and, in the same iteration, `bound`; reports
// counters[name] = total subject time / total bound time.
template <typename Subject, typename Bound>
void againstBound(benchmark::State& state, const std::string& name, Subject&& subject,
                  Bound&& bound) {
  double subjectSeconds = 0.0, boundSeconds = 0.0;
  for (auto _ : state) {
    const double s = secondsOf(subject);
    state.SetIterationTime(s);
    subjectSeconds += s;
    boundSeconds += secondsOf(bound);
  }
  if (boundSeconds > 0.0) state.counters[name] = subjectSeconds / boundSeconds;
}

}  // namespace edgefl::bench
