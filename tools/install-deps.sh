#!/usr/bin/env bash
# Installs the Debian packages that edgefl's build, tests, demo and
# benchmarks need. Idempotent: installs only what is missing, and does
# nothing (not even `apt-get update`) when everything is present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev clang-format
  libeigen3-dev
  libmosquitto-dev mosquitto mosquitto-clients openssl
  capnproto libcapnp-dev
  libsodium-dev
  libsqlite3-dev sqlite3
  dataset-fashion-mnist
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
  zlib1g-dev
  python3
)
# libtorch, the peer of bench_torch (cmake -DEDGEFL_BENCH_TORCH=ON), is
# large: installed only when asked for with EDGEFL_WITH_TORCH=1.
if [[ "${EDGEFL_WITH_TORCH:-0}" == 1 ]]; then packages+=(libtorch-dev); fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
