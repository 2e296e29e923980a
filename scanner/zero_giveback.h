// Giving zero pages back to the kernel (MADV_DONTNEED), a batch at a time.
//
// A zero page given back alone costs a TLB flush, and a flush while another
// thread of the program runs is an IPI (28 us here, not 2): in the scattered
// bench layout, giving back 65,536 zero pages one at a time during the write
// phase was a quarter of the scanner's CPU. Zero runs found under the batch
// window (merge.cpp) are queued instead and given back together, with one
// process_madvise(PIDFD_SELF_THREAD_GROUP, MADV_DONTNEED) and one flush, just
// before that window closes: until then they stay write-protected, so they
// are still zero when they go.
//
// process_madvise is a system call the program may not expect. A seccomp
// filter could answer it with SIGSYS, so it is used only while the process's
// leader thread has no filter (read when the scanner thread starts), and
// never again once the program installs one through libc
// (prctl(PR_SET_SECCOMP), syscall(SYS_seccomp)): rt_before_seccomp() calls
// zero_giveback_forbid_vector() before the install, then waits for a batch
// in flight. A filter installed with an inline syscall is not seen (README,
// limits). Any error (an older kernel without PIDFD_SELF, EPERM) falls back
// to madvise, range by range, for good.
//
// Every function but zero_giveback_forbid_vector requires the mm lock.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/state.h"

namespace dedup {

// Gives the zero pages [start, start + n pages) of r back now (madvise);
// false, with nothing changed, if the kernel refused.
bool zero_give_back_now(State& s, Region& r, uintptr_t start, size_t n);
// Queues them until zero_giveback_flush(); false if the vector call cannot
// be used (then give them back now). The caller keeps them write-protected
// until the flush.
bool zero_give_back_later(Region& r, uintptr_t start, size_t n);
// Gives back what is queued, and does the bookkeeping.
void zero_giveback_flush(State& s);

// The scanner thread, at its start: whether it may use process_madvise.
void zero_giveback_thread_started();
// A seccomp filter is about to be installed: no more vector calls. Any
// thread; the caller then waits for the batch in flight (rt_before_seccomp
// takes the mm lock).
void zero_giveback_forbid_vector();

}  // namespace dedup
