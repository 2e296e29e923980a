// Noticing copy-on-write breaks fast. When the program rewrites merged
// memory, every write gives it a private copy while the canonical page stays
// allocated until the scanner notices that its last sharer went; a batch
// notices only the pages it looks at, so a program rewriting all its merged
// data briefly holds both (192 MiB of data peaked at 290 MiB at the default
// settings, and a memory cgroup limit below that killed it). So when a batch
// sees copy-on-write breaks, the scanner sweeps the pagemap entries of every
// merged page (no hashing: the entries alone tell a private copy), freeing
// canonical pages as their last user goes.
#pragma once
#include <stddef.h>

#include "scanner/state.h"

namespace dedup {

// The scanner's turn, under the lock: part of a sweep over every merged page,
// while one is due. Returns the pages looked at; 0 when none is due.
size_t cow_sweep_step(State& s, size_t max_pages);
// A batch saw this many copy-on-write breaks: a sweep is due if many.
void cow_sweep_note_breaks(State& s, uint64_t breaks);
// At the start of a wake-up: while the last sweep still found many breaks
// (the program is rewriting merged memory), another is due, and the scanner
// sleeps 1 ms instead of DEDUP_SLEEP_MS (returns true), so that canonical
// pages are freed about as fast as the program's writes free them.
bool cow_sweep_wakeup(State& s);

}  // namespace dedup
