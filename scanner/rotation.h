// Store rotation: gives back the canonical pages kept for forked children.
//
// After a fork the child may map any slot that was in use, so a slot the
// parent stops using stays allocated (SlotStore pins it) and nobody can say
// when the child stops mapping it. Only the kernel knows: it frees a memfd's
// pages when the last mapping of the file goes. So when enough pinned slots
// are dead, the parent stops using the file altogether:
//   1. a new memfd becomes the current generation, the old one retires (its
//      slots are never reused or punched) and the content index forgets the
//      old slots, so no new merge maps them;
//   2. the scanner moves every page that maps an old slot onto a copy of it
//      in the new file, with the merge protocol (write-protect, compare,
//      remap): a page written since its merge differs and keeps its private
//      copy;
//   3. when no registered page maps an old slot, the old views are unmapped,
//      and what is left of the old file in the program's memory (pages
//      written since their merge, private copies inside old-file VMAs) is
//      made anonymous again.
// The parent then holds no reference to the old file: its memory goes back
// to the system when the children have exited or exec'd; a child that lives
// on keeps the old file alive for the pages it still maps.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

struct State;

struct Rotation {
    uintptr_t cursor = 0;        // next address step 2 looks at
    uint32_t* to_new = nullptr;  // per old slot: new slot + 1, or 0 before it is copied
    uint64_t old_first = 0;      // slot id of to_new[0]
    uint64_t old_count = 0;
    uint64_t leftover_ino = 0;   // step 3 under way for this inode
    uint64_t leftover_last = 0; // VMAs of it found at the last try
    int leftover_tries = 0;     // tries in a row that made no progress
    uint64_t next_try_ns = 0;
};

// The scanner's turn, under the lock: starts a rotation when one is due, does
// up to max_pages of its work, and finishes it. Returns the pages worked on;
// 0 when there is nothing to do now (the scanner then scans as usual).
size_t rotation_step(State& s, size_t max_pages);

// In a forked child: forget the parent's rotation.
void rotation_reset_in_child(Rotation& rot);

}  // namespace dedup
