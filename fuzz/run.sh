#!/usr/bin/env bash
# Runs the libFuzzer targets of a build (make fuzz) for FUZZ_SECONDS each.
#
#   fuzz/run.sh <build dir> [target...]     (default: every corpus/<target>)
#
# Each target fuzzes <build>/fuzz-work/<target>/corpus: the committed seeds
# are copied in and what the fuzzer adds stays there for the next run, so
# fuzz/corpus/ never changes. Findings (crash-*, leak-*, timeout-*) land in
# <build>/fuzz-work/<target>/artifacts/; to reproduce one, run the target
# binary with the file as its only argument. Prints one line per target and
# exits non-zero when any target found something.
set -euo pipefail

build=${1:?usage: fuzz/run.sh <build dir> [target...]}
shift
seconds=${FUZZ_SECONDS:-60}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$build/fuzz-work

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for dir in "$here"/corpus/*/; do targets+=("$(basename "$dir")"); done
fi

found=0
printf '%-20s %12s %10s %8s  %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
  bin=$build/fuzz/edgefl_fuzz_$t
  dir=$work/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp "$here/corpus/$t"/* "$dir/corpus/"
  log=$dir/fuzz.log
  # -timeout: an input that takes 10 s is a finding (a denial of service).
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
      -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$log" 2>&1; then
    result=ok
  else
    result="FINDING: see $log"
    found=1
  fi
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  files=$(find "$dir/corpus" -type f | wc -l)
  printf '%-20s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$files" "$result"
done
exit $found
