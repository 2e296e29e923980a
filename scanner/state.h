// The one process-wide state of the deduplicator. Everything in it except
// the atomics is guarded by `lock`.
#pragma once
#include <atomic>
#include <stdint.h>

#include "scanner/mm_lock.h"
#include "scanner/page_index.h"
#include "scanner/region_registry.h"
#include "scanner/rotation.h"
#include "scanner/slot_store.h"
#include "scanner/stats.h"
#include "scanner/vma_budget.h"

namespace dedup {

struct State {
    MmLock lock;
    RegionRegistry regions;
    PageIndex index;
    SlotStore store;
    Domain domain;               // DEDUP_DOMAIN: the store's slots are the domain's
    Rotation rotation;           // giving back memory kept for forked children
    VmaBudget vmas;
    Stats stats;
    uint64_t zero_hash = 0;
    // A stable zero page was given back in this process: from then on a zero
    // page is given back at its first look, as a page equal to a canonical
    // page merges at its first look (batch_scan.cpp).
    bool zero_given_back = false;
    uintptr_t cursor = 0;        // next address the scanner looks at
    bool merge_all = true;       // DEDUP_SCOPE=all, or prctl(PR_SET_MEMORY_MERGE, 1)
    bool thp_always = false;     // transparent_hugepage/enabled is "always"
    bool mlock_future = false;   // mlockall(MCL_FUTURE): new regions are locked, never merged
    bool registered_anything = false;
    // An unmerge left memfd VMAs whose pages are already private (a syscall
    // was writing into them): the scanner makes them anonymous, not before
    // unmerge_leftovers_retry_ns.
    bool unmerge_leftovers = false;
    uint64_t unmerge_leftovers_retry_ns = 0;
    // A window found the kernel's protection of [resync_start, resync_end)
    // different from the registry's (a raw mprotect syscall): the registry
    // takes the kernel's after the batch (registration.h).
    uintptr_t resync_start = 0, resync_end = 0;
    // A sweep for copy-on-write breaks over every merged page (cow_sweep.h).
    bool cow_sweep_due = false;
    bool cow_storm = false;  // the last sweep found many breaks
    uintptr_t cow_sweep_cursor = 0;
    uint64_t cow_sweep_start_breaks = 0;
    uint64_t start_ns = 0;
};

State& state();

// Ceiling of bytes saved right now: merged pages beyond the first per slot,
// plus zero pages given back. Requires the lock.
uint64_t bytes_saved_now(State& s);

}  // namespace dedup
