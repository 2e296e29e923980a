// Giving memory back to the program: merged (memfd-backed) pages become its
// own anonymous memory again, with the same contents. Every function here
// requires the mm lock.
//
// The mechanism is the merge protocol run backwards, a chunk at a time: open
// a write window over the chunk (write_window.h: writers wait, and a system
// call writing into the chunk makes it give up or wait), copy the chunk into
// a scratch anonymous mapping, move that piece over the chunk with mremap,
// re-apply the region's advice, close. The pieces all come from one scratch
// mapping, so the kernel joins them into one VMA again (with each other, not
// with the rest of the program's mapping: see rejoin_anonymous); a chunk's copy is the
// only extra memory, and canonical pages are freed as their last user goes.
//
// Where a system call is writing into a chunk right now, the window must not
// open (the call would fail with EFAULT). Then MADV_POPULATE_WRITE gives the
// pages private copies without any window (the kernel's own copy-on-write,
// as KSM's unmerge does), and the VMA is made anonymous later by the scanner.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/state.h"
#include "scanner/write_window.h"

namespace dedup {

enum class Unmerge {
    // MADV_UNMERGEABLE, prctl(PR_SET_MEMORY_MERGE, 0): every page private
    // now; its VMA made anonymous now, or later where a syscall writes into it.
    kPrivateNow,
    // mlock, mlockall, WIPEONFORK: anonymous VMAs now (the kernel needs
    // them); waits for syscalls writing into the range (bounded).
    kAnonymousNow,
    // Rotation leftovers: as kPrivateNow, but where a syscall still writes
    // after the bounded wait, the rest is tried again later.
    kWhenFree,
};

// Gives every page of [start, end) that lives in a memfd VMA a private
// anonymous copy with the same contents. Returns 0 or -errno (ENOMEM, as
// the kernel reports a failed unmerge; memory left as it was where it failed).
long unmerge_range(State& s, uintptr_t start, uintptr_t end, Unmerge how);

// Makes [start, end), inside region r, one anonymous mapping again (private
// copies of merged pages; present pages copied), so that the kernel's mremap
// or MADV_COLLAPSE sees the single mapping the program created, or to give
// VMAs back. 0 or -errno (-EAGAIN: gave up for a syscall writing into it).
long make_anonymous(State& s, Region& r, uintptr_t start, uintptr_t end, WriteWindow::IfPinned if_pinned);

// Makes [start, end), which whole regions cover without a gap (isolate
// first), one anonymous mapping again through one scratch mapping: the
// pieces that earlier unmerges moved in each from their own scratch mapping
// are VMAs apart for the kernel (each has its own anon_vma) even when no
// memfd page is left, and mremap refuses to resize or move several VMAs.
// 0 or -errno (-EINVAL: not covered; the range may then be partly rewritten,
// its contents always intact).
long rejoin_anonymous(State& s, uintptr_t start, uintptr_t end);

// Replaces memfd-backed pages in [start, end) with fresh zero anonymous
// memory, as MADV_DONTNEED would leave anonymous memory. 0 or -errno.
long zero_file_pages(State& s, uintptr_t start, uintptr_t end);

// The scanner's turn: makes anonymous the memfd VMAs that unmerges left
// behind (pages already private) in regions that may not merge. Returns the
// pages worked on; 0 when there is nothing left.
size_t unmerge_leftovers_step(State& s, size_t max_pages);

}  // namespace dedup
