// edgefl-coordinator --config coordinator.toml

#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <iostream>

#include "edgefl/server/coordinator.hpp"
#include "edgefl/shared/process.hpp"

namespace {
std::atomic<bool> stopRequested{false};
extern "C" void onSignal(int) {
  stopRequested.store(true);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"edgefl-coordinator: verifies, aggregates, validates and rolls out fleet models"};
  std::string configPath;
  std::string level = "info";
  app.add_option("--config", configPath, "coordinator.toml written by `edgefl fleet init`")
      ->required();
  app.add_option("--log-level", level, "debug | info | warn | error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  edgefl::LogLevel min = edgefl::LogLevel::Info;
  if (level == "debug") min = edgefl::LogLevel::Debug;
  if (level == "warn") min = edgefl::LogLevel::Warn;
  if (level == "error") min = edgefl::LogLevel::Error;

  auto config = edgefl::server::loadCoordinatorConfig(configPath);
  if (!config.ok()) {
    std::cerr << "edgefl-coordinator: " << config.error().toString() << "\n";
    return 2;
  }
  const edgefl::LogSink log = edgefl::stderrSink(min);
  // Every update is copied into fresh buffers of its size (400 KB for an
  // mlp): from the heap, not from new pages each time.
  log(edgefl::LogLevel::Info, edgefl::keepFreedMemoryForReuse());
  auto coordinator = edgefl::server::Coordinator::open(*config, log);
  if (!coordinator.ok()) {
    std::cerr << "edgefl-coordinator: " << coordinator.error().toString() << "\n";
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  edgefl::Status started = (*coordinator)->start();
  if (!started.ok()) {
    std::cerr << "edgefl-coordinator: " << started.error().toString() << "\n";
    return 1;
  }
  (*coordinator)->run(stopRequested);
  (*coordinator)->stop();
  std::cerr << "edgefl-coordinator: stopped\n";
  return 0;
}
