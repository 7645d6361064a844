// End-to-end federated rounds of a simulated fleet, one round per
// iteration, with the time split by phase. 100 and 1,000 virtual devices,
// each a real edgefl::Device run by the simulator library (own enrolled
// key, own MQTT connection, 60 IID Fashion-MNIST samples), against a real
// mosquitto and edgefl-coordinator, each its own process as tools/demo.sh
// runs them. Each round selects `selected` devices (target_updates, no
// over-selection) and closes when all of them are accepted: every device of
// the 100, and 100 of the 1,000 as firmware-sim/configs/scale.toml does (a
// round of all 1,000 takes over a minute on 2 cores). mlp:784-128-10,
// FedAvg, one epoch of batch 32.
//
// An iteration is one round as the simulator measures it: the round-start
// command; devices train, sign and publish; the coordinator verifies and
// records every update, aggregates, validates on the 10,000-sample holdout
// and deploys to a 10% canary; after a 1 s canary window (the sim configs'
// shortened rollout) it promotes, and the round ends when every device runs
// the new stable model. Setup (fleet, broker, coordinator, enrollment,
// devices connected and on the stable model) runs once per case, outside
// the timed part, and so does one warm-up round: the fleet's first round
// is each device's first update (its pending file is created, later ones
// are written over the spare the ack left) and the registry's first round
// rows, a start-up cost that a fleet pays once.
//
// Counters, means over the rounds of a case:
//   round_s        wall time of the round (also the reported time)
//   start_s        round-start command until the coordinator has opened
//                  it, and the simulator's reading of the closed round
//   collect_s      the coordinator's collect phase, in milliseconds of its
//                  own clock: from opening the round until it recorded the
//                  last accepted update (training, signing, upload,
//                  verification, commit)
//   aggregate_s, validate_s, deploy_s
//                  the coordinator's phases (its own millisecond timers)
//   registry_s     the rest of the close: reading the accepted updates back
//                  from the registry, storing the model and its lineage
//   rollout_s      canary window, decision, promotion, until every device
//                  runs the new stable model
//   client_rounds_per_s          accepted updates / collect_s, as the
//                                simulator reports it; _per_core divides by
//                                std::thread::hardware_concurrency(); the
//                                broker and the coordinator share those cores
//   client_rounds_per_s_polled   accepted updates / (open .. closed as the
//                                simulator's polling sees it), which adds
//                                the close and up to ~0.3 s of polling
//   client_rounds_per_s_e2e      accepted updates / round_s
//   cpu_ms_per_client_round      CPU time of this process (devices), the
//                                coordinator and the broker during the
//                                rounds, per accepted update; cpu_ms_sim,
//                                cpu_ms_coordinator, cpu_ms_broker split it
//   warmup_client_rounds_per_s_per_core   the same for the untimed
//                                warm-up round
//   accepted, promoted (rounds whose canary was promoted), setup_s, cores
// This process makes the allocator setting edgefl-sim makes
// (keepFreedMemoryForReuse); the coordinator makes it itself, and the broker
// runs with kBrokerMallocTunables as `edgefl fleet init` prints its command.
// start_s and rollout_s are seen by the simulator's 200 ms polling and the
// coordinator's 100 ms tick, so each carries up to ~0.3 s of wait.

#include <benchmark/benchmark.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "edgefl/server/coordinator_config.hpp"
#include "edgefl/shared/log.hpp"
#include "edgefl/shared/process.hpp"
#include "edgefl/shared/result.hpp"
#include "edgefl/sim/simulator.hpp"
#include "edgefl/tools/fleet.hpp"
#include "support/broker.hpp"
#include "support/process.hpp"

namespace {
namespace fs = std::filesystem;
using edgefl::Code;
using edgefl::makeError;
using edgefl::Result;
using edgefl::Status;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kSamplesPerDevice = 60;
// A safety bound on one round (1,000 devices take tens of seconds); the
// coordinator's deadline is below it, so a stuck round fails rather than
// hangs.
constexpr double kRoundTimeoutSeconds = 300;
constexpr std::int64_t kDeadlineSeconds = 240;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double processCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// The last `chars` characters of a log file.
std::string tailOf(const fs::path& file, std::size_t chars) {
  const std::string s = edgefl::test::readTextFile(file);
  return s.size() > chars ? s.substr(s.size() - chars) : s;
}

// A process of the fleet (the broker, the coordinator), its output in a log
// file. It gets SIGTERM when this process dies, so even a killed benchmark
// leaves none behind; the destructor stops it with SIGTERM, then SIGKILL.
class Child {
 public:
  // The child's environment is this process's plus each `extraEnv` entry
  // ("NAME=value") whose NAME this process does not set.
  Child(std::vector<std::string> argv, const fs::path& log,
        const std::vector<std::string>& extraEnv = {}) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    edgefl::test::ChildEnvironment env(extraEnv);
    const std::string logPath = log.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls between fork and exec.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execve(args[0], args.data(), env.envp());
      ::_exit(127);
    }
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }
  bool running() {
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }
  // User and system CPU seconds so far (0 once it has exited).
  double cpuSeconds() const {
    if (pid_ <= 0) return 0;
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Fields after the parenthesised command name: state is field 3, utime
    // and stime are fields 14 and 15.
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream fields(stat.substr(close + 2));
    std::string skip;
    for (int i = 3; i < 14; ++i) fields >> skip;
    unsigned long long utime = 0, stime = 0;
    fields >> utime >> stime;
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (Clock::now() >= deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

struct CpuMark {
  double sim = 0, coordinator = 0, broker = 0;
};

// One case's fleet: directory, broker, coordinator and the simulator on a
// thread of its own, paced one round at a time through
// RunHooks::beforeRound. Members are destroyed in reverse order: the
// simulator's devices close while the broker still runs, then the
// coordinator and the broker stop, then the directory goes.
class FleetRun {
 public:
  FleetRun() = default;
  ~FleetRun() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
      stopFlag_ = true;  // also ends a round in progress
    }
    cv_.notify_all();
    if (sim_.joinable()) sim_.join();
  }
  FleetRun(const FleetRun&) = delete;
  FleetRun& operator=(const FleetRun&) = delete;

  // Brings the fleet up and returns once every device is connected and on
  // the stable model, with the simulator waiting to start round 1.
  Status start(std::uint32_t devices, std::uint32_t selected, std::uint32_t rounds) {
    int port = 0;
    try {
      dir_.emplace("edgefl-bench-round");
      port = edgefl::test::freeLoopbackPort();
    } catch (const std::exception& e) {
      return makeError(Code::IoError, e.what());
    }
    fleet_ = dir_->path() / "fleet";

    edgefl::tools::FleetInitOptions init;
    init.directory = fleet_;
    init.name = "bench";
    init.brokerPort = port;
    init.arch = "mlp:784-128-10";
    init.seed = 7;
    EDGEFL_TRY(edgefl::tools::initFleet(init));
    auto loaded = edgefl::server::loadCoordinatorConfig(fleet_ / "coordinator.toml");
    if (!loaded.ok()) return loaded.error();
    edgefl::server::CoordinatorConfig c = std::move(loaded.value());
    // `selected` devices per round; it closes when all have been accepted.
    c.rounds.targetUpdates = selected;
    c.rounds.overSelection = 1.0;
    c.rounds.minUpdates = selected;
    c.rounds.maxUpdates = selected;
    c.rounds.deadlineSeconds = kDeadlineSeconds;
    c.rounds.minSamples = 16;
    // The demo's training and validation settings.
    c.training.learningRate = 0.01;
    c.training.momentum = 0.9;
    c.training.batchSize = 32;
    c.training.epochs = 1;
    c.aggregation.strategy = "fedavg";
    c.validation.sliceTolerance = 0.15;
    c.validation.sliceMinStableAccuracy = 0.80;
    // The sim configs' shortened canary.
    c.rollout.canaryPercent = 10;
    c.rollout.windowSeconds = 1;
    c.rollout.minReports = 3;
    c.rollout.maxAccuracyDrop = 0.05;
    {
      std::ofstream out(fleet_ / "coordinator.toml");
      out << edgefl::server::renderCoordinatorConfig(c);
      if (!out) return makeError(Code::IoError, "cannot write coordinator.toml");
    }

    // Run as `edgefl fleet init` prints the broker's command line.
    broker_.emplace(
        std::vector<std::string>{EDGEFL_MOSQUITTO, "-c",
                                 (fleet_ / "broker" / "mosquitto.conf").string()},
        dir_->path() / "broker.log",
        std::vector<std::string>{std::string("GLIBC_TUNABLES=") + edgefl::kBrokerMallocTunables});
    for (int i = 0; i < 500 && !edgefl::test::portAccepts(port); ++i) {
      if (!broker_->running()) {
        return makeError(Code::IoError,
                         "mosquitto exited: " + tailOf(dir_->path() / "broker.log", 400));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!edgefl::test::portAccepts(port))
      return makeError(Code::IoError, "mosquitto does not listen");
    coordinator_.emplace(std::vector<std::string>{EDGEFL_COORDINATOR, "--config",
                                                  (fleet_ / "coordinator.toml").string()},
                         coordinatorLog());

    edgefl::sim::SimConfig s;
    s.fleet = fleet_;
    s.summaryJson = dir_->path() / "summary.json";
    s.devices = devices;
    s.rounds = rounds;
    s.dataset = "fashion-mnist";
    s.partition = "iid";
    s.seed = 11;
    s.samplesPerDevice = kSamplesPerDevice;
    s.trainSamples = std::min<std::uint32_t>(60'000, devices * kSamplesPerDevice);
    // No streamed samples: every round trains on the same 60 per device,
    // and the canary is judged on health and report count.
    s.streamPerSecond = 0;
    s.telemetrySeconds = 2;
    s.roundTimeoutSeconds = kRoundTimeoutSeconds;
    s.setupTimeoutSeconds = 300;
    s.waitForRollout = true;

    edgefl::sim::RunHooks hooks;
    hooks.log = edgefl::stderrSink(edgefl::LogLevel::Warn);
    hooks.stop = &stopFlag_;
    hooks.beforeRound = [this](std::uint32_t done) {
      std::unique_lock lock(mu_);
      waiting_ = done + 1;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_ > done || stop_; });
      if (stop_) stopFlag_ = true;
    };
    hooks.row = [this](const edgefl::sim::RoundRow& row) {
      std::lock_guard lock(mu_);
      rows_.push_back(row);
      cv_.notify_all();
    };
    const auto t0 = Clock::now();
    sim_ = std::thread([this, s, hooks] {
      auto result = edgefl::sim::runSimulation(s, hooks);
      std::lock_guard lock(mu_);
      if (!result.ok()) {
        failure_ = result.error().toString();
      } else if (!result->stopReason.empty()) {
        failure_ = result->stopReason;
      }
      finished_ = true;
      cv_.notify_all();
    });
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return waiting_ > 0 || finished_; });
    setupSeconds_ = secondsSince(t0);
    if (waiting_ == 0) return makeError(Code::IoError, "setup: " + failure_ + context());
    return {};
  }

  // Runs the next round; its row once every device is on the new model.
  Result<edgefl::sim::RoundRow> round() {
    std::unique_lock lock(mu_);
    ++released_;
    cv_.notify_all();
    const bool done = cv_.wait_for(lock, std::chrono::duration<double>(2 * kRoundTimeoutSeconds),
                                   [&] { return !rows_.empty() || finished_; });
    if (rows_.empty()) {
      return makeError(
          Code::IoError,
          (done ? "the simulation ended: " + failure_ : std::string("no round row")) + context());
    }
    auto row = std::move(rows_.front());
    rows_.pop_front();
    return row;
  }

  CpuMark cpu() const {
    return {processCpuSeconds(), coordinator_ ? coordinator_->cpuSeconds() : 0,
            broker_ ? broker_->cpuSeconds() : 0};
  }
  double setupSeconds() const { return setupSeconds_; }
  std::string context() const { return "; coordinator log: " + tailOf(coordinatorLog(), 400); }

 private:
  fs::path coordinatorLog() const { return dir_->path() / "coordinator.log"; }

  std::optional<edgefl::test::TempDir> dir_;
  fs::path fleet_;
  std::optional<Child> broker_;
  std::optional<Child> coordinator_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint32_t released_ = 0;  // rounds the benchmark has let start
  std::uint32_t waiting_ = 0;   // the simulator waits to start round waiting_
  bool stop_ = false;
  std::atomic<bool> stopFlag_{false};
  std::deque<edgefl::sim::RoundRow> rows_;
  bool finished_ = false;
  std::string failure_;
  double setupSeconds_ = 0;
  std::thread sim_;
};

void raiseFileLimit() {
  // Each virtual device holds a socket and files, and the broker (which
  // inherits the limit) a socket per device.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &files);
  }
}

double phaseSeconds(const edgefl::sim::RoundRow& row, const char* name) {
  const auto it = row.phaseMillis.find(name);
  return it == row.phaseMillis.end() ? 0.0 : it->second / 1000.0;
}

void Round(benchmark::State& state) {
  const auto devices = static_cast<std::uint32_t>(state.range(0));
  const auto selected = static_cast<std::uint32_t>(state.range(1));
  raiseFileLimit();
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 3 * devices + 256) {
    state.SkipWithError(("RLIMIT_NOFILE " + std::to_string(files.rlim_cur) + " is too low for " +
                         std::to_string(devices) + " devices")
                            .c_str());
    return;
  }
  FleetRun fleet;
  if (Status st =
          fleet.start(devices, selected, static_cast<std::uint32_t>(state.max_iterations) + 1);
      !st.ok()) {
    state.SkipWithError(st.error().toString().c_str());
    return;
  }
  auto warmUp = fleet.round();
  if (!warmUp.ok() || warmUp->state != "closed") {
    state.SkipWithError(
        ("warm-up round: " +
         (warmUp.ok() ? warmUp->state + " " + warmUp->outcome : warmUp.error().toString()) +
         fleet.context())
            .c_str());
    return;
  }

  double wall = 0, start = 0, collect = 0, aggregate = 0, validate = 0, deploy = 0, registry = 0,
         rollout = 0, openToClosed = 0, accepted = 0, promoted = 0;
  CpuMark used;
  for (auto _ : state) {
    const CpuMark before = fleet.cpu();
    const auto t0 = Clock::now();
    auto row = fleet.round();
    const double seconds = secondsSince(t0);
    const CpuMark after = fleet.cpu();
    if (!row.ok()) {
      state.SkipWithError(row.error().toString().c_str());
      break;
    }
    if (row->state != "closed" || row->accepted != selected) {
      state.SkipWithError(("round " + std::to_string(row->round) + " " + row->state + " with " +
                           std::to_string(row->accepted) + " of " + std::to_string(selected) +
                           " accepted: " + row->outcome + fleet.context())
                              .c_str());
      break;
    }
    state.SetIterationTime(seconds);
    const double close = phaseSeconds(*row, "total_close");
    const double agg = phaseSeconds(*row, "aggregate");
    const double val = phaseSeconds(*row, "validate");
    const double dep = phaseSeconds(*row, "deploy");
    wall += seconds;
    start += std::max(0.0, seconds - row->seconds - row->rolloutSeconds);
    collect += phaseSeconds(*row, "collect");
    aggregate += agg;
    validate += val;
    deploy += dep;
    registry += std::max(0.0, close - agg - val - dep);
    rollout += row->rolloutSeconds;
    openToClosed += row->seconds;
    accepted += static_cast<double>(row->accepted);
    promoted += row->rollout == "promoted";
    used.sim += after.sim - before.sim;
    used.coordinator += after.coordinator - before.coordinator;
    used.broker += after.broker - before.broker;
  }

  if (state.error_occurred()) return;
  const double n = static_cast<double>(state.iterations());
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  state.counters["round_s"] = wall / n;
  state.counters["start_s"] = start / n;
  state.counters["collect_s"] = collect / n;
  state.counters["aggregate_s"] = aggregate / n;
  state.counters["validate_s"] = validate / n;
  state.counters["deploy_s"] = deploy / n;
  state.counters["registry_s"] = registry / n;
  state.counters["rollout_s"] = rollout / n;
  state.counters["client_rounds_per_s"] = accepted / collect;
  state.counters["client_rounds_per_s_per_core"] = accepted / collect / cores;
  state.counters["client_rounds_per_s_polled"] = accepted / openToClosed;
  state.counters["client_rounds_per_s_e2e"] = accepted / wall;
  // The untimed first round, for comparison.
  state.counters["warmup_client_rounds_per_s_per_core"] =
      static_cast<double>(warmUp->accepted) / std::max(1e-9, phaseSeconds(*warmUp, "collect")) /
      cores;
  const double perUpdate = 1000.0 / accepted;
  state.counters["cpu_ms_per_client_round"] =
      (used.sim + used.coordinator + used.broker) * perUpdate;
  state.counters["cpu_ms_sim"] = used.sim * perUpdate;
  state.counters["cpu_ms_coordinator"] = used.coordinator * perUpdate;
  state.counters["cpu_ms_broker"] = used.broker * perUpdate;
  state.counters["accepted"] = accepted / n;
  state.counters["promoted"] = promoted;
  state.counters["setup_s"] = fleet.setupSeconds();
  state.counters["cores"] = cores;
}

}  // namespace

// Iterations are rounds; a case runs exactly that many after its setup and
// warm-up round. Five rounds each: a single round's collect phase moves by
// 20-30% from round to round on the 2-core VM, and the setup (13 s for
// 1,000 devices) is paid once.
BENCHMARK(Round)
    ->ArgNames({"devices", "selected"})
    ->Args({100, 100})
    ->Iterations(5)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);
BENCHMARK(Round)
    ->ArgNames({"devices", "selected"})
    ->Args({1000, 100})
    ->Iterations(5)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

int main(int argc, char** argv) {
  // The simulator runs in this process, set up as edgefl-sim sets up its own.
  const std::string allocator = edgefl::keepFreedMemoryForReuse();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("allocator", allocator);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
