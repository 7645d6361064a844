#include "commands.hpp"
#include "edgefl/shared/keys.hpp"

namespace edgefl::tools {

void addKeyCommands(CLI::App& app, int& exitCode) {
  auto* keygen =
      app.add_subcommand("keygen", "Create an Ed25519 key pair (PREFIX.pub, PREFIX.key)");
  auto prefix = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  keygen->add_option("--out", *prefix, "Path prefix of the key files")->required();
  keygen->add_flag("--json", *json, "Print the result as JSON");
  keygen->callback([prefix, json, &exitCode] {
    KeyPair kp = KeyPair::generate();
    Status st = kp.save(*prefix);
    if (!st.ok()) {
      exitCode = reportError(st.error());
      return;
    }
    if (*json) {
      std::cout << "{\"public\":\"" << *prefix << ".pub\",\"secret\":\"" << *prefix
                << ".key\",\"keyId\":\"" << toHex(kp.keyId()) << "\"}\n";
    } else {
      std::cout << "wrote " << *prefix << ".pub and " << *prefix << ".key (key id "
                << toHex(kp.keyId()) << ")\n";
    }
  });
}

}  // namespace edgefl::tools
