# Thin wrapper over CMake. `make test` works on a fresh Debian 12 machine:
# it installs what is missing, builds (Release, build/) and runs every test.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test clean format

all: build

deps:
	@bash tools/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (clang, ASan + UBSan) in $(FUZZ_DIR), each run for
# FUZZ_SECONDS on a copy of its corpus: see fuzz/run.sh.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: deps
	@CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DEDGEFL_BUILD_FUZZ=ON -DEDGEFL_SANITIZE=address,undefined \
	  -DEDGEFL_BUILD_TESTS=OFF -DEDGEFL_BUILD_BENCH=OFF
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target edgefl_fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh $(FUZZ_DIR)

# The demo: builds the CLI, the coordinator and the simulator, then runs a
# fleet of 100 virtual devices through 20 rounds (tools/demo.sh).
.PHONY: demo
demo: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS) --target edgefl edgefl-coordinator edgefl-sim
	@BUILD_DIR=$(BUILD_DIR) bash tools/demo.sh

format:
	@git ls-files '*.cpp' '*.hpp' '*.h' '*.c' | xargs clang-format -i

clean:
	@rm -rf $(BUILD_DIR)

# Benchmarks (Release, $(BENCH_DIR)): builds and runs every bench binary, each
# for BENCH_MIN_TIME seconds a case, writing bench/results/<bench>.json and
# the ratio table bench/results/README.md (bench/run.sh).
BENCH_DIR ?= build-bench
BENCH_MIN_TIME ?= 0.1
.PHONY: bench
bench: deps
	@cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release -DEDGEFL_BUILD_BENCH=ON \
	  -DEDGEFL_BUILD_TESTS=OFF $(CMAKE_FLAGS)
	@cmake --build $(BENCH_DIR) -j $(JOBS) --target edgefl_bench
	@bash bench/run.sh $(BENCH_DIR) $(BENCH_MIN_TIME)
