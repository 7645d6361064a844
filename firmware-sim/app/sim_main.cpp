// edgefl-sim --fleet DIR --devices N --rounds R --dataset fashion-mnist
//            --partition iid|dirichlet:A|labels:K|shards:S [--seed S]
//            [--config sim.toml] --summary-json PATH

#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <iostream>
#include <mutex>

#include "edgefl/shared/process.hpp"
#include "edgefl/sim/simulator.hpp"

namespace {
std::atomic<bool> stopRequested{false};
extern "C" void onSignal(int) {
  stopRequested.store(true);
}
}  // namespace

int main(int argc, char** argv) {
  using namespace edgefl;
  CLI::App app{
      "edgefl-sim: a fleet of virtual devices (each a real edgefl::Device on the fleet's broker) "
      "training with a running edgefl-coordinator"};
  sim::SimConfig cli;
  std::string configPath, level = "info", fleet, summary;
  std::optional<std::uint32_t> devices, rounds;
  std::optional<std::string> dataset, partitionSpec;
  std::optional<std::uint64_t> seed;
  bool printConfig = false;
  app.add_option("--fleet", fleet, "fleet directory made by `edgefl fleet init`");
  app.add_option("--devices", devices, "virtual devices");
  app.add_option("--rounds", rounds, "rounds to run");
  app.add_option("--dataset", dataset, "fashion-mnist or csv:PATH");
  app.add_option("--partition", partitionSpec, "iid | dirichlet:ALPHA | labels:K | shards:S");
  app.add_option("--seed", seed, "seed of every random choice");
  app.add_option("--config", configPath, "sim.toml with the behaviours (see --print-config)");
  app.add_option("--summary-json", summary,
                 "JSON summary; the per-round CSV and the accuracy plot (SVG) go beside it");
  app.add_option("--log-level", level, "debug | info | warn | error")->capture_default_str();
  app.add_flag("--print-config", printConfig, "print the full configuration as TOML and exit");
  CLI11_PARSE(app, argc, argv);

  sim::SimConfig config;
  if (!configPath.empty()) {
    auto loaded = sim::loadSimConfig(configPath);
    if (!loaded.ok()) {
      std::cerr << "edgefl-sim: " << loaded.error().toString() << "\n";
      return 2;
    }
    config = std::move(loaded.value());
  }
  // The command line overrides the file.
  if (devices) config.devices = *devices;
  if (rounds) config.rounds = *rounds;
  if (dataset) config.dataset = *dataset;
  if (partitionSpec) config.partition = *partitionSpec;
  if (seed) config.seed = *seed;
  config.fleet = fleet;
  config.summaryJson = summary;
  if (printConfig) {
    std::cout << sim::renderSimConfig(config);
    return 0;
  }
  if (fleet.empty() || summary.empty()) {
    std::cerr << "edgefl-sim: --fleet and --summary-json are required\n";
    return 2;
  }
  if (auto st = sim::validateSimConfig(config); !st.ok()) {
    std::cerr << "edgefl-sim: " << st.error().toString() << "\n";
    return 2;
  }

  LogLevel min = LogLevel::Info;
  if (level == "debug") min = LogLevel::Debug;
  if (level == "warn") min = LogLevel::Warn;
  if (level == "error") min = LogLevel::Error;

  // Each virtual device holds a socket and its state database: a thousand
  // of them need more descriptors than the usual soft limit of 1024.
  if (rlimit files{}; ::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &files);
  }

  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  // A live line on a terminal; on a pipe or file, a progress line every
  // 10 seconds instead.
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::mutex outMu;
  bool lineOpen = false;
  auto endLine = [&] {
    if (lineOpen) std::cerr << "\r\033[K";
    lineOpen = false;
  };
  auto lastProgress = std::chrono::steady_clock::now();
  sim::RunHooks hooks;
  hooks.stop = &stopRequested;
  LogSink sink = stderrSink(min);
  hooks.log = [&](LogLevel l, std::string_view line) {
    std::lock_guard lock(outMu);
    endLine();
    sink(l, line);
  };
  hooks.progress = [&](const std::string& line) {
    std::lock_guard lock(outMu);
    if (tty) {
      if (line.empty()) {
        endLine();
      } else {
        std::cerr << "\r\033[K" << line << std::flush;
        lineOpen = true;
      }
    } else if (!line.empty() &&
               std::chrono::steady_clock::now() - lastProgress > std::chrono::seconds(10)) {
      std::cerr << line << "\n";
      lastProgress = std::chrono::steady_clock::now();
    }
  };
  bool headerShown = false;
  hooks.row = [&](const sim::RoundRow& row) {
    std::lock_guard lock(outMu);
    endLine();
    if (!headerShown) std::cout << sim::rowHeader() << "\n";
    headerShown = true;
    std::cout << sim::rowText(row) << std::endl;
  };

  // Each virtual device builds, signs and stores an update of the model's
  // size every round: from the heap, not from new pages each time.
  hooks.log(LogLevel::Info, keepFreedMemoryForReuse());
  auto result = sim::runSimulation(config, hooks);
  if (!result.ok()) {
    std::cerr << "edgefl-sim: " << result.error().toString() << "\n";
    return 1;
  }
  std::cout << sim::summaryText(*result);
  if (auto st = sim::writeReports(*result); !st.ok()) {
    std::cerr << "edgefl-sim: " << st.error().toString() << "\n";
    return 1;
  }
  std::cout << "Wrote " << config.summaryJson.string() << ", "
            << sim::csvPathFor(config.summaryJson).string() << " and "
            << sim::svgPathFor(config.summaryJson).string() << "\n";
  return result->stopReason.empty() ? 0 : 3;
}
