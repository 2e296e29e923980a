// Which memory the shim registers, and how the registry follows the
// program's mappings as they appear and go. Functions taking State& require
// the mm lock; the others take it.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "scanner/state.h"

namespace dedup {

// mmap(2) for the program: maps, and registers a private anonymous mapping
// of at least DEDUP_MIN_REGION; forgets what a MAP_FIXED mapping replaced.
// Gives VMAs back and retries once when the kernel says ENOMEM at the VMA
// limit. Returns the address or -errno. in_use: the mapping counts toward
// DEDUP_START_MIN (runtime_after_register); not the large heap's arenas,
// whose blocks count while they are allocated.
long map_and_register(void* addr, size_t len, int prot, int flags, int fd, off_t off, bool in_use = true);
// munmap(2) for the program: unmaps, then forgets the range (only after the
// kernel succeeded: a failed munmap must not drop records of mapped pages).
long unmap_and_forget(void* addr, size_t len);

// Forgets every registered page of [start, end): its mapping is gone.
void forget_range(State& s, uintptr_t start, uintptr_t end);

// MADV_MERGEABLE on memory the shim never saw mapped (smaller than
// DEDUP_MIN_REGION, mapped before the shim was loaded, or by a raw system
// call): registers its private anonymous parts, as KSM would take them, with
// the advice their VMAs already carry. Never [heap] or [stack]: glibc and
// the kernel change those without calling us (brief, trap 4).
void register_unknown_anon(State& s, uintptr_t start, uintptr_t end, uint32_t site);

// The registry's protection of [start, end) becomes the kernel's (the
// program changed it with a raw mprotect syscall the shim did not see):
// asked later, outside a batch (the registry must not change under one).
void request_protection_resync(State& s, uintptr_t start, uintptr_t end);
void resync_protection(State& s);

// Calls f(region) for each region overlapping [start, end).
template <typename F>
void for_regions(State& s, uintptr_t start, uintptr_t end, F&& f) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i)
        f(s.regions[i]);
}

constexpr uintptr_t kPageMask = kPageSize - 1;
inline uintptr_t page_round_up(uintptr_t v) { return (v + kPageMask) & ~kPageMask; }

}  // namespace dedup
