#!/usr/bin/env bash
# The edgefl demo: a fleet under build/demo/, its mosquitto broker and
# coordinator, and edgefl-sim driving ~100 virtual devices (Dirichlet 0.5
# Fashion-MNIST shards, stragglers, dropouts, 10% attackers) through 20
# rounds of federated training with canary rollouts. Every process it
# starts is stopped when it ends, also on Ctrl-C.
#
# Environment: BUILD_DIR (default build); DEMO_DIR (default $BUILD_DIR/demo);
# DEMO_SIM_CONFIG (default firmware-sim/configs/demo.toml); DEMO_DEVICES,
# DEMO_ROUNDS, DEMO_PARTITION (override the sim config); DEMO_ARCH (default
# mlp:784-128-10); DEMO_STRATEGY (default multi_krum); DEMO_SET: more
# coordinator.toml settings, "section.key=value ..." (applied last). The
# same script runs the scale and NIID-Bench experiments (see README).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-build}
[[ "$build" = /* ]] || build="$root/$build"
demo=${DEMO_DIR:-$build/demo}
[[ "$demo" = /* ]] || demo="$root/$demo"
sim_config=${DEMO_SIM_CONFIG:-$root/firmware-sim/configs/demo.toml}
fleet="$demo/fleet"
arch=${DEMO_ARCH:-mlp:784-128-10}
strategy=${DEMO_STRATEGY:-multi_krum}

edgefl="$build/tools/edgefl"
coordinator="$build/server/edgefl-coordinator"
sim="$build/firmware-sim/edgefl-sim"
for bin in "$edgefl" "$coordinator" "$sim"; do
  [[ -x "$bin" ]] || { echo "demo: $bin is missing; run 'make demo'" >&2; exit 2; }
done

pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A loopback port nobody listens on.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "demo: no free loopback port found" >&2
  exit 1
}

# set_option FILE SECTION KEY VALUE: replaces KEY's value inside [SECTION].
set_option() {
  local file=$1 section=$2 key=$3 value=$4
  awk -v section="[$section]" -v key="$key" -v value="$value" '
    /^\[/ { current = $0 }
    current == section && $1 == key && $2 == "=" { print key " = " value; found = 1; next }
    { print }
    END { if (!found) { print "demo: no " key " in " section > "/dev/stderr"; exit 1 } }
  ' "$file" >"$file.new"
  mv "$file.new" "$file"
}

# Start from scratch, but only ever delete an earlier run's directory.
if [[ -e "$demo" && -n "$(ls -A "$demo")" && ! -f "$demo/fleet/coordinator.toml" ]]; then
  echo "demo: $demo exists and is not an earlier demo run; not deleting it" >&2
  exit 2
fi
rm -rf "$demo"
mkdir -p "$demo"
port=$(free_port)
echo "== edgefl demo: fleet in $fleet, broker on 127.0.0.1:$port"
"$edgefl" fleet init "$fleet" --name demo --broker-port "$port" --arch "$arch" --seed 7 >"$demo/fleet-init.log"

# Short rounds and canary windows, so 20 rounds with their canaries fit in
# a few minutes; robust aggregation against the attackers.
conf="$fleet/coordinator.toml"
set_option "$conf" rounds target_updates 30
set_option "$conf" rounds over_selection 1.3
set_option "$conf" rounds min_updates 5
set_option "$conf" rounds deadline_seconds 25
set_option "$conf" rounds min_samples 16
set_option "$conf" training learning_rate 0.01
set_option "$conf" training momentum 0.9
set_option "$conf" training batch_size 32
set_option "$conf" training epochs 1
set_option "$conf" aggregation strategy "\"$strategy\""
set_option "$conf" aggregation krum_byzantine 3
set_option "$conf" ingest max_update_norm 50.0
set_option "$conf" rollout canary_percent 20.0
set_option "$conf" rollout window_seconds 5
set_option "$conf" rollout min_reports 3
set_option "$conf" rollout max_accuracy_drop 0.05
# Per-class checks once the stable model is good: early in non-IID training
# per-class accuracy swings by tens of points while the overall rises.
set_option "$conf" validation slice_tolerance 0.15
set_option "$conf" validation slice_min_stable_accuracy 0.80

for setting in ${DEMO_SET:-}; do
  name=${setting%%=*}
  set_option "$conf" "${name%%.*}" "${name#*.}" "${setting#*=}"
done

# A thousand virtual devices need a few thousand descriptors, in the
# simulator and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# glibc keeps the broker's freed packet buffers (as `edgefl fleet init`
# prints the command), unless the environment already sets its tunables.
GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456} \
  mosquitto -c "$fleet/broker/mosquitto.conf" >"$demo/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
"$coordinator" --config "$conf" >"$demo/coordinator.log" 2>&1 &
pids+=($!)

echo "== coordinator log: $demo/coordinator.log; broker log: $demo/broker.log"
sim_args=(--fleet "$fleet" --config "$sim_config" --summary-json "$demo/summary.json")
[[ -n "${DEMO_DEVICES:-}" ]] && sim_args+=(--devices "$DEMO_DEVICES")
[[ -n "${DEMO_ROUNDS:-}" ]] && sim_args+=(--rounds "$DEMO_ROUNDS")
[[ -n "${DEMO_PARTITION:-}" ]] && sim_args+=(--partition "$DEMO_PARTITION")
"$sim" "${sim_args[@]}" &
sim_pid=$!
pids+=("$sim_pid")
status=0
wait "$sim_pid" || status=$?

echo
echo "== Registry (edgefl registry models --db $fleet/registry.db):"
"$edgefl" registry models --db "$fleet/registry.db" | tail -n 8 || true
echo "== Plot: $demo/summary.svg   Per-round CSV: $demo/summary.csv"
exit "$status"
