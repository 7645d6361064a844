#pragma once
// Each group of `edgefl` subcommands registers itself on the app; its
// callback runs the command and stores the process exit code in `exitCode`.

#include <CLI/CLI.hpp>

#include <iostream>

#include "edgefl/shared/error.hpp"

namespace edgefl::tools {

inline int reportError(const Error& e) {
  std::cerr << "edgefl: " << e.toString() << "\n";
  return 1;
}

void addKeyCommands(CLI::App& app, int& exitCode);     // keygen
void addFleetCommands(CLI::App& app, int& exitCode);   // fleet init, device enroll|revoke
void addInspectCommand(CLI::App& app, int& exitCode);  // inspect
// registry models|rounds|updates|deployments|devices|events, rollout ..., round start
void addRegistryCommands(CLI::App& app, int& exitCode);
void addModelCommands(CLI::App& app, int& exitCode);  // model init|train|eval

}  // namespace edgefl::tools
