// The merge protocol: how a run of registered pages becomes private,
// copy-on-write mappings of immutable canonical pages. Every function here
// requires the mm lock. docs/DESIGN.md ("The merge protocol") says why no
// write can be lost; the write path itself is in write_window.h.
//
// For a run of pages P[0..n) going to canonical slots S[0..n):
//   1. open a write window over P (write_window.h): from here an application
//      write faults and waits; a syscall writing into P makes us give up;
//   2. compare each P[i] byte for byte with S[i]'s content; stop at the first
//      difference (only the equal prefix merges);
//   3. map S[0..k) privately over P[0..k) (SlotStore::map_run: as mmap
//      MAP_PRIVATE|MAP_FIXED of the memfd would): a later write gets the
//      kernel's copy-on-write;
//   4. re-apply the region's madvise flags to the new mapping;
//   5. close the window: the application's protection comes back on every
//      page, whatever happened.
// A pair run (two runs of equal pages, neither merged yet) first copies the
// content into new slots through the store's private writable view, under a
// window over both runs. A zero run gives its verified zero pages back with
// MADV_DONTNEED instead of step 3 (zero_giveback.h: under the batch window,
// when it closes).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/state.h"

namespace dedup {

// XXH3-64 of a 4 KiB page.
uint64_t page_hash(const void* page);

// Whether the scanner may merge pages of r.
bool region_mergeable(const State& s, const Region& r);
// Whether r's pages may be mapped by transparent huge pages.
bool may_be_huge(const State& s, const Region& r);

// What the batch scan decided for a run of consecutive pages: give back
// zero pages, merge onto existing canonical slots, pair with candidate pages
// of this process, or publish (a merge domain: the pages become canonical
// pages themselves, because another member has pages with that content).
enum class Act { kNone, kZero, kToSlot, kPair, kPublish };
constexpr size_t kMaxBatch = 512;  // one 2 MiB huge page
struct Run {
    Act kind = Act::kNone;
    uintptr_t start = 0;
    size_t n = 0;
    uint32_t first_slot = 0;     // kToSlot: pages go to first_slot, first_slot+1, ...
    uintptr_t cand = 0;          // kPair: the earlier run with the same content
    Region* cand_region = nullptr;
    uint64_t hashes[kMaxBatch] = {};  // the pages' hashes when looked at (= {}: a constant initialiser, no start-up code)
};
// Executes a run (steps 1-5); counts what it did in s.stats.
void merge_run(State& s, Region& r, const Run& run);

// Merges [start, start + n pages) onto slots first_slot, first_slot+1, ...
// as far as they equal them byte for byte, releasing a slot a page mapped
// before (rotation moves pages this way). hashes: the pages' content hashes
// (a domain's slots are taken against them; nullptr: the slots' own).
// Returns the pages merged (the page after them differs), or -1 if the run
// cannot be opened now (VMA budget, a kernel write into it, mprotect
// failure).
long merge_onto_slots(State& s, Region& r, uintptr_t start, size_t n, uint32_t first_slot,
                      const uint64_t* hashes = nullptr);

// The canonical index: a slot with this content hash (this process's index,
// or the merge domain's), and publishing a newly filled slot in it.
bool find_canonical(State& s, uint64_t hash, uint32_t* slot);
void publish_canonical(State& s, uint64_t hash, uint32_t slot);
// A merge domain: the slots other members published since the last call
// (all: every live one) go into this member's index.
void learn_domain_slots(State& s, bool all);

// The batch window: one write window for the runs of one batch of region r,
// opened by the first zero or slot run and reaching no further than `limit`
// (the batch's last page likely to be merged). batch_window_close() closes
// it early (the program is changing a page there); batch_end() closes it.
void batch_begin(Region& r, uintptr_t limit);
void batch_window_close(State& s);
void batch_end(State& s);

// Drops one page's reference to slot (and its index entry once unused).
void release_slot(State& s, uint32_t slot);
// A merged page was written since its merge (present, not a file page): the
// kernel made it a private copy. Drops its slot reference; it stays in a
// memfd VMA.
void note_cow_break(State& s, PageMeta& m);
// Erases the content index's entry for slot, if the entry names it.
void forget_slot_entry(State& s, uint32_t slot);
// Accounting when a page's mapping goes away (munmap, MAP_FIXED over it).
void forget_page(State& s, PageMeta& m);
// Re-applies kept madvise flags to [start, start+len).
void reapply_flags(uint32_t flags, uintptr_t start, size_t len);
// Keeps bytes_saved_peak up to date after a change.
void note_saving(State& s);

}  // namespace dedup
