// edgefl: the operator's command line.

#include "commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"edgefl: keys, fleets, models, registry and rollouts of an edgefl fleet"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "edgefl 0.1.0");
  int exitCode = 0;
  edgefl::tools::addKeyCommands(app, exitCode);
  edgefl::tools::addFleetCommands(app, exitCode);
  edgefl::tools::addInspectCommand(app, exitCode);
  edgefl::tools::addRegistryCommands(app, exitCode);
  edgefl::tools::addModelCommands(app, exitCode);
  CLI11_PARSE(app, argc, argv);
  return exitCode;
}
