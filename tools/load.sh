#!/usr/bin/env bash
# Sustained ingest load: signed updates at a fixed rate through a real
# mosquitto into edgefl-coordinator running as its own process, for N
# minutes; afterwards every update the broker took must be in the registry,
# accepted or rejected (none lost), at most 1% of them answered
# Overloaded, the registry must pass PRAGMA integrity_check and the
# coordinator must still be running.
#
#   tools/load.sh [minutes] [updates-per-second] [arch]
#                                 (defaults: 10, 250, mlp:784-128-10)
#
# Environment: EDGEFL_BUILD_DIR, the build tree holding the test binaries
# (default: build). The run is the integration test
# Faults.SustainedLoadEveryUpdateIsAccountedFor (tests/integration/
# test_faults.cpp), which the test suite itself runs for 20 s at 100/s with
# an mlp:784-16-10 (~50 KB updates): 20 enrolled devices each send in turn
# one of three trainings of the fleet's model on the open round, each
# publish on schedule without waiting for the last one's PUBACK; each
# device's first update is accepted and the rest are answered Duplicate
# after full verification (signature, decoding, norm), so the whole ingest
# path is loaded for the whole run. The default arch, mlp:784-128-10, makes
# ~400 KB updates, and the default rate is what bench_ingest measures for
# them (bench/results/bench_ingest.json). It prints one line with the rate
# the broker took the updates at, the worst publish lag behind the
# schedule, how long the registry took to record the last update, the
# coordinator's peak resident set and the verdicts by reason.
set -euo pipefail

minutes="${1:-10}"
rate="${2:-250}"
arch="${3:-mlp:784-128-10}"
build="${EDGEFL_BUILD_DIR:-build}"
binary="$build/tests/edgefl_integration_test_faults"

if [[ ! -x "$binary" ]]; then
  echo "load.sh: $binary not found; build the tests first (cmake --build $build)" >&2
  exit 2
fi
if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ && "$rate" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "usage: tools/load.sh [minutes] [updates-per-second] [arch]" >&2
  exit 2
fi

seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
echo "load.sh: ${rate} updates/s of $arch for ${minutes} min (${seconds} s) through $binary"
EDGEFL_LOAD_SECONDS="$seconds" EDGEFL_LOAD_RATE="$rate" EDGEFL_LOAD_ARCH="$arch" \
  exec "$binary" --gtest_filter=Faults.SustainedLoadEveryUpdateIsAccountedFor
