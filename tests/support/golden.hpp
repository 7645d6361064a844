#pragma once
// Known-answer files under tests/golden/. A test compares bytes it produces
// with the committed file; EDGEFL_UPDATE_GOLDEN=1 rewrites the files instead
// (review the diff: a change there is a wire-format or signature change).

#include <cstdint>
#include <string>
#include <vector>

namespace edgefl::test {

bool updatingGolden();
std::vector<std::uint8_t> readGolden(const std::string& name);
void writeGolden(const std::string& name, const std::vector<std::uint8_t>& bytes);

// Fixed 32-byte seed: byte i = base + i.
std::vector<std::uint8_t> fixedSeed(std::uint8_t base);

}  // namespace edgefl::test
