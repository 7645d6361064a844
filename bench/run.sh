#!/usr/bin/env bash
# Runs every benchmark binary of a build directory and writes
# bench/results/<bench>.json, then the ratio table bench/results/README.md.
#
#   bash bench/run.sh [build-dir] [min-time-seconds]
set -euo pipefail

build_dir=${1:-build-bench}
min_time=${2:-0.1}
root=$(cd "$(dirname "$0")/.." && pwd)
results="$root/bench/results"
mkdir -p "$results"

shopt -s nullglob
benches=("$build_dir"/bench/bench_*)
if [[ ${#benches[@]} -eq 0 ]]; then
  echo "bench/run.sh: no bench_* binaries in $build_dir/bench" >&2
  exit 1
fi
for bin in "${benches[@]}"; do
  [[ -x "$bin" && -f "$bin" ]] || continue
  name=$(basename "$bin")
  echo "== $name"
  "$bin" --benchmark_min_time="$min_time" \
    --benchmark_out="$results/$name.json" --benchmark_out_format=json
done

compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
machine="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores, $("${compiler:-c++}" --version | head -1)"
# Other work on the machine skews every ratio: record how busy it was.
machine="$machine; load average over 1, 5, 15 min at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -x "$build_dir/bench/bench_torch" ]]; then
  # libtorch's matrix products go through the system BLAS (Debian
  # alternatives): name it, since it decides the peer's speed.
  machine="$machine; libtorch BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)"
fi
python3 "$root/bench/results_table.py" --machine "$machine" \
  --commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$results" > "$results/README.md"
echo "bench/run.sh: wrote $results/README.md"
