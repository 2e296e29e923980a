// What the files of LargeHeap, the arena allocator behind large mallocs,
// share (the class itself is declared in large_alloc.h, the public header):
// the block header's encoding, the arithmetic, the lock's release. Only
// those files include it:
//
//   large_heap.cpp            the heap's entry points, the lock, which arena
//                             an address is in, counters and checks
//   large_heap_bins.cpp       free ranges: segregated free lists, coalescing
//   large_heap_arenas.cpp     arenas: mapping and growing them, the dirty
//                             bitmap, blocks carved from them
//   large_heap_hot.cpp        the hot cache: freed blocks reused without the lock
//   large_heap_dedicated.cpp  blocks with a mapping of their own
//   large_heap_trim.cpp       giving free memory back; fork's child
//   large_alloc.cpp           the process's heap behind large_alloc()
#pragma once
#include <linux/futex.h>
#include <stddef.h>
#include <stdint.h>

#include "scanner/large_alloc.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace large_detail {

constexpr size_t kPage = LargeHeap::kPage;

inline uint64_t* header(const void* p) { return reinterpret_cast<uint64_t*>(const_cast<void*>(p)) - 2; }
inline void write_header(uintptr_t p, size_t off, size_t usable) {
    uint64_t* h = header(reinterpret_cast<void*>(p));
    h[0] = kMagic | (uint64_t)off;
    h[1] = (uint64_t)usable | kMmappedBit;
}
// Offset of p from its block's start: page-aligned pointers have no header.
inline size_t offset_of(uintptr_t p) {
    return (p & (kPage - 1)) ? (size_t)(header((void*)p)[0] & 0xffffffffull) : 0;
}

inline uintptr_t round_up(uintptr_t v, uintptr_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace large_detail

inline void LargeHeap::Lock::unlock() {
    if (word_.exchange(0, std::memory_order_release) == 2)
        sys::call(SYS_futex, (long)&word_, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}

}  // namespace dedup
