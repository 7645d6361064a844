#pragma once
// Settings for the whole process, made only by edgefl's own programs (the
// coordinator, the simulator, and the benchmarks that run them in process):
// the device library never calls these, its process belongs to the
// application that embeds it.

#include <string>

namespace edgefl {

// Keeps freed memory in the heap for the next allocation instead of handing
// it back to the kernel. glibc gives every allocation above its mmap
// threshold (128 KiB at first, raised only by such a free) pages of its own
// and unmaps them at free, and trims the top of a heap past its trim
// threshold (also 128 KiB at first, twice the mmap threshold once that
// moved); a 400 KB update copied into a fresh buffer then costs a page
// fault per 4 KiB, every time. With this, allocations up to 32 MiB come
// from the heap and up to 256 MiB of free memory stays there, and every
// thread allocates from the one main heap: a buffer received on one thread
// and freed on another is reused by both (a per-thread arena is a chain of
// 64 MiB heaps, each unmapped whole as soon as it empties). Leaves the
// allocator alone when GLIBC_TUNABLES already sets a malloc tunable (the
// operator's choice wins). Returns a line for the log saying what was done.
std::string keepFreedMemoryForReuse();

// The same setting for a process that cannot call mallopt itself: the
// mosquitto broker, which copies every 400 KB update into a fresh packet
// buffer per subscriber (its CPU per update halves with it). The value of
// GLIBC_TUNABLES that `edgefl fleet init` prints in the broker's command
// line, and that tools/demo.sh and the tests' brokers run with.
inline constexpr const char* kBrokerMallocTunables =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456";

}  // namespace edgefl
