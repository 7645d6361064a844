// keepFreedMemoryForReuse, in a process of its own (one test binary per
// file, one process per test under ctest), so no other test has moved
// glibc's dynamic thresholds before.

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "edgefl/shared/process.hpp"

namespace {

// ASan and TSan bring their own allocator, which mallopt does not reach.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kGlibcMalloc = false;
#else
constexpr bool kGlibcMalloc = true;
#endif

// A buffer of `bytes`, filled so its pages exist.
std::vector<char> buffer(std::size_t bytes) {
  std::vector<char> b(bytes, 1);
  // Seen by the compiler as used, so the allocation is not elided.
  asm volatile("" : : "r"(b.data()) : "memory");
  return b;
}

// Unset, glibc maps the first buffer of 128 KiB or more on its own, and
// unmaps it at free (it raises the threshold only after such a free).
TEST(Process, LargeBuffersComeFromTheHeapAndStayThereWhenFreed) {
  if (!kGlibcMalloc) GTEST_SKIP() << "a sanitizer's allocator";
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

// Every thread allocates from the one heap: a buffer freed by another
// thread serves this one without growing the heap.
TEST(Process, ThreadsShareOneHeap) {
  if (!kGlibcMalloc) GTEST_SKIP() << "a sanitizer's allocator";
  if (std::getenv("GLIBC_TUNABLES") != nullptr) GTEST_SKIP() << "GLIBC_TUNABLES is set";
  edgefl::keepFreedMemoryForReuse();
  constexpr std::size_t kBytes = std::size_t{8} << 20;
  std::thread([&] { auto other = buffer(kBytes); }).join();
  const std::size_t heap = mallinfo2().arena;
  { auto mine = buffer(kBytes); }
  EXPECT_EQ(mallinfo2().arena, heap) << "this thread's buffer did not reuse the other's";
}

TEST(Process, AnOperatorsMallocTunablesWin) {
  ASSERT_EQ(::setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1048576", 1), 0);
  EXPECT_NE(edgefl::keepFreedMemoryForReuse().find("GLIBC_TUNABLES"), std::string::npos);
  ASSERT_EQ(::unsetenv("GLIBC_TUNABLES"), 0);
}

}  // namespace
