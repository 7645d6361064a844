#include "support/golden.hpp"

#include <cstdlib>
#include <fstream>
#include <iterator>

namespace edgefl::test {

bool updatingGolden() {
  const char* v = std::getenv("EDGEFL_UPDATE_GOLDEN");
  return v != nullptr && std::string(v) == "1";
}

std::vector<std::uint8_t> readGolden(const std::string& name) {
  std::ifstream in(std::string(EDGEFL_GOLDEN_DIR) + "/" + name, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void writeGolden(const std::string& name, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(std::string(EDGEFL_GOLDEN_DIR) + "/" + name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> fixedSeed(std::uint8_t base) {
  std::vector<std::uint8_t> seed(32);
  for (std::size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<std::uint8_t>(base + i);
  return seed;
}

}  // namespace edgefl::test
