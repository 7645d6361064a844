#pragma once
// Settings for the whole process, made only by edgefl's own programs (the
// coordinator and the simulator): the device library never calls these,
// its process belongs to the application that embeds it.

#include <string>

namespace edgefl {

// Keeps freed memory in the heap for the next allocation instead of handing
// it back to the kernel. glibc gives every allocation above its mmap
// threshold (128 KiB at first) pages of its own and unmaps them at free,
// and trims the top of each heap past twice that; a 400 KB update copied
// into a fresh buffer then costs a page fault per 4 KiB, every time. With
// this, allocations up to 32 MiB come from the heap and up to 256 MiB of
// free memory stays there. Leaves the allocator alone when GLIBC_TUNABLES
// already sets a malloc tunable (the operator's choice wins). Returns a line
// for the log saying what was done.
std::string keepFreedMemoryForReuse();

}  // namespace edgefl
