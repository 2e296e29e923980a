// Waiting while the program's own threads keep the CPUs busy.
//
// Every merge remaps a page, and the kernel then flushes that page from the
// TLB of every CPU running one of the process's threads: an inter-processor
// interrupt to each CPU a busy thread is on. On these machines an mremap made
// while the program writes costs three times one made after (a merge, its
// scanning included, 1.7 times: DESIGN.md), and each interrupt also stops
// the program's thread. A program that fills its memory (a load phase, a
// cache warming up, the bench's write phase) is busy for a few seconds and
// then calms down: the same merges made after cost less, and stop nobody.
//
// So the scanner takes a look at the process's CPU time before each
// wake-up. If its other threads used at least half a CPU since the last
// look, it sleeps a slice instead of scanning, for at most DEDUP_BUSY_WAIT_MS
// in a row. A program that stays busy longer is merged anyway: busy time
// refills the allowance by an eighth of itself, so that from then on the
// scanner waits at most an eighth of the time; calm time refills it one for
// one. It does not wait while the
// program rewrites merged memory (canonical pages are freed as it goes), and
// dedupstat's requests and the reports are served while it waits.
#pragma once
#include <stdint.h>

namespace dedup {

class BusyWait {
public:
    static constexpr uint64_t kSliceMs = 10;

    // DEDUP_BUSY_WAIT_MS; 0 never waits. The allowance starts full.
    void set_limit_ms(uint64_t limit_ms);

    // Whether the scanner waits a slice now, given the time (ns) on the
    // monotonic clock, the process's CPU time and the scanner thread's own.
    // True charges the slice to the allowance.
    bool should_wait(uint64_t wall_ns, uint64_t process_cpu_ns, uint64_t own_cpu_ns);

    // The program's threads were busy at the last look that could tell.
    bool busy() const { return busy_; }

private:
    uint64_t limit_ns_ = 0;
    uint64_t allowance_ns_ = 0;
    uint64_t last_wall_ = 0, last_process_ = 0, last_own_ = 0;
    bool busy_ = false;
};

}  // namespace dedup
