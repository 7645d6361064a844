// coordinator.toml text: parsed and validated, and for a config that
// loads, rendered back to text (what `edgefl fleet init` writes), which
// must load to the same rendering.

#include <string_view>

#include "edgefl/server/coordinator_config.hpp"
#include "fuzz_support.hpp"

using namespace edgefl;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = server::parseCoordinatorConfig(text, "fuzz.toml");
  if (!config.ok()) return 0;
  const std::string rendered = server::renderCoordinatorConfig(*config);
  auto again = server::parseCoordinatorConfig(rendered, "rendered.toml");
  EDGEFL_FUZZ_CHECK(again.ok(), "a rendered config does not load: " +
                                    (again.ok() ? std::string() : again.error().toString()));
  EDGEFL_FUZZ_CHECK(server::renderCoordinatorConfig(*again) == rendered,
                    "rendering is not stable:\n" + rendered);
  return 0;
}
