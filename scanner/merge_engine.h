// The merge protocol and its inverse. Every function requires the mm lock.
//
// Merging a run of pages (see docs/DESIGN.md for why no write can be lost):
//   1. mprotect(run, PROT_READ): from now on an application write faults and
//      its thread waits in the SIGSEGV handler for the mm lock we hold.
//   2. confirm byte for byte that each page equals its canonical content.
//   3. mmap(run, app_prot, MAP_PRIVATE|MAP_FIXED, memfd, slot offset): the
//      page now maps the immutable canonical page; a write gets the kernel's
//      copy-on-write.
//   4. re-apply the region's madvise flags to the remapped piece.
//   5. mprotect(run, app_prot) — always, on every path, so nothing is left
//      read-only.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/state.h"

namespace dedup {

// Hash of an all-zero page, computed once.
uint64_t page_hash(const void* page);

// Looks at up to max_pages pages of region r from `from` (page aligned, inside
// r), merging what it can. Returns the number of pages looked at (>= 1).
size_t scan_batch(State& s, Region& r, uintptr_t from, size_t max_pages);

// Opens /proc/self/pagemap (kept open, scanner/kept_file.h) if needed and
// says whether it can be read.
bool open_pagemap();
// /proc/self/pagemap entries of n pages from addr. False if unreadable now.
bool read_pagemap(uintptr_t addr, size_t n, uint64_t* out);

// Merges the pages of [start, start + n pages) onto slots first_slot,
// first_slot+1, ... as far as they equal them byte for byte (steps 1-5
// above), releasing a slot a page mapped before. Returns the pages merged
// (the page after them differs), or -1 if the run cannot be opened now
// (VMA budget, a kernel write into it, mprotect failure).
long merge_onto_slots(State& s, Region& r, uintptr_t start, size_t n, uint32_t first_slot);
// Drops one page's reference to slot (and its index entry once unused).
void release_slot(State& s, uint32_t slot);
// Erases the content index's entry for slot, if the entry names it.
void forget_slot_entry(State& s, uint32_t slot);

// Whether the scanner may merge pages of r.
bool region_mergeable(const State& s, const Region& r);

// Gives every page of [start, end) that lives in a memfd VMA a private
// anonymous copy with the same contents (MADV_UNMERGEABLE, mlock, WIPEONFORK,
// mremap). Returns 0 or -errno (memory left as it was for failed pieces).
long unmerge_range(State& s, uintptr_t start, uintptr_t end);

// Replaces memfd-backed pages in [start, end) with fresh zero anonymous
// memory, as MADV_DONTNEED would leave anonymous memory. Returns 0 or -errno.
long zero_file_pages(State& s, uintptr_t start, uintptr_t end);

// Accounting when a page's mapping goes away (munmap, MAP_FIXED over it).
void forget_page(State& s, PageMeta& m);

// Re-applies kept madvise flags to [start, start+len).
void reapply_flags(uint32_t flags, uintptr_t start, size_t len);

}  // namespace dedup
