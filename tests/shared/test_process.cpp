// keepFreedMemoryForReuse, in a process of its own (one test binary per
// file, one process per test under ctest), so no other test has moved
// glibc's dynamic thresholds before.

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "edgefl/shared/process.hpp"

namespace {

// A buffer of `bytes`, touched so its pages exist.
std::unique_ptr<char[]> buffer(std::size_t bytes) {
  auto b = std::make_unique<char[]>(bytes);
  std::memset(b.get(), 1, bytes);
  return b;
}

// Unset, glibc maps the first buffer of 128 KiB or more on its own, and
// unmaps it at free (it raises the threshold only after such a free).
TEST(Process, LargeBuffersComeFromTheHeapAndStayThereWhenFreed) {
  if (std::getenv("GLIBC_TUNABLES") != nullptr) GTEST_SKIP() << "GLIBC_TUNABLES is set";
  const std::string said = edgefl::keepFreedMemoryForReuse();
  EXPECT_NE(said.find("32 MiB"), std::string::npos) << said;
  for (const std::size_t bytes : {std::size_t{400} << 10, std::size_t{24} << 20}) {
    {
      auto first = buffer(bytes);
      EXPECT_EQ(mallinfo2().hblks, 0u) << bytes << " bytes were mapped on their own";
    }
    // Freed, the bytes stay in the heap and serve the next buffer.
    EXPECT_GE(mallinfo2().fordblks, bytes);
    const std::size_t heap = mallinfo2().arena;
    { auto again = buffer(bytes); }
    EXPECT_EQ(mallinfo2().arena, heap) << "the heap grew for " << bytes << " bytes it had free";
  }
}

TEST(Process, AnOperatorsMallocTunablesWin) {
  ASSERT_EQ(::setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", 1), 0);
  EXPECT_NE(edgefl::keepFreedMemoryForReuse().find("GLIBC_TUNABLES"), std::string::npos);
  ASSERT_EQ(::unsetenv("GLIBC_TUNABLES"), 0);
}

}  // namespace
