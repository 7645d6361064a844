#include "edgefl/shared/process.hpp"

#include <malloc.h>

#include <cstdlib>
#include <string_view>

namespace edgefl {

namespace {
// glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
constexpr int kMmapThreshold = 32 << 20;
constexpr int kTrimThreshold = 256 << 20;
}  // namespace

std::string keepFreedMemoryForReuse() {
  if (const char* tunables = std::getenv("GLIBC_TUNABLES");
      tunables != nullptr &&
      std::string_view(tunables).find("glibc.malloc.") != std::string_view::npos) {
    return "allocator: left as GLIBC_TUNABLES sets it";
  }
  // Each setting on its own: one refused leaves the others in force.
  std::string refused;
  if (mallopt(M_MMAP_THRESHOLD, kMmapThreshold) != 1) refused += " mmap threshold";
  if (mallopt(M_TRIM_THRESHOLD, kTrimThreshold) != 1) refused += " trim threshold";
  if (mallopt(M_ARENA_MAX, 1) != 1) refused += " arena count";
  if (!refused.empty()) return "allocator: mallopt refused the" + refused;
  return "allocator: one heap for every thread, buffers up to 32 MiB from it, up to 256 MiB of "
         "freed memory kept";
}

}  // namespace edgefl
