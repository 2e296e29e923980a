// One batch of the scan: up to one huge page's worth of pages of one region,
// looked at under the mm lock. For each present private page it decides, from
// the page's hash and what the content index knows, whether the page
//   - equals a canonical page (merge it now: KSM's stable tree, first look),
//   - changed since the last look (volatile: remember the hash, move on),
//   - is a stable zero page (give it back),
//   - pairs with a stable candidate seen earlier in the pass (KSM's unstable
//     tree: both go to a new canonical page),
//   - or becomes a candidate itself,
// and groups the decisions into runs (consecutive pages going to consecutive
// slots, or pairing with consecutive candidates) that merge.h executes.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/state.h"

namespace dedup {

// Looks at up to max_pages pages of region r from `from` (page aligned,
// inside r), merging what it can. Returns the number of pages looked at.
size_t scan_batch(State& s, Region& r, uintptr_t from, size_t max_pages);

// Content became canonical that backed-off pages (unique pages looked at only
// every few passes) may equal but are not scheduled with: slots another member
// of the merge domain published. Every page is looked at for the rest of this
// pass and the whole next one.
void scan_look_at_everything(State& s);

// Called by the SIGSEGV (and SIGBUS) handler first: if this thread is the
// scanner reading the program's pages outside a window, jumps back out of
// the read (the batch is skipped) and does not return; else false.
bool scan_recover_from_fault();

}  // namespace dedup
