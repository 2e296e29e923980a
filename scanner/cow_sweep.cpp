#include "scanner/cow_sweep.h"

#include "scanner/merge.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"

namespace dedup {
namespace {

// Breaks in one batch that make a sweep worth its cost (a sweep reads 8
// bytes of pagemap per merged page, about 0.2 us).
constexpr uint64_t kBreaksForSweep = 16;
constexpr size_t kRun = 512;

// The pagemap of the merged pages of [a, b) of r: those written since their
// merge drop their slot reference. Returns the pages looked at.
size_t sweep_range(State& s, Region& r, uintptr_t a, uintptr_t b) {
    uint64_t pm[kRun];
    size_t n = (b - a) / kPageSize;
    if (!read_pagemap(a, n, pm)) return n;
    for (size_t i = 0; i < n; ++i) {
        PageMeta& m = r.at(a + i * kPageSize);
        if (has_slot(m.state) && (pm[i] & kPmPresent) && !(pm[i] & kPmFile)) note_cow_break(s, m);
    }
    return n;
}

}  // namespace

void cow_sweep_note_breaks(State& s, uint64_t breaks) {
    if (breaks >= kBreaksForSweep) s.cow_sweep_due = true;
}

namespace {

// Whether a few merged pages picked at random were written since their
// merge: a program rewriting much of its merged memory is seen within a
// wake-up or two, wherever the scan's cursor is (probing 32 pages costs about
// 30 us; at most every 5 ms).
bool probe_finds_breaks(State& s) {
    static uint64_t rng = 0x9e3779b97f4a7c15ull, last_ns = 0;
    uint64_t now = monotonic_ns();
    uint64_t total = s.regions.pages_registered();
    if (now - last_ns < 5 * 1000000ull || s.regions.count() == 0 || total == 0 || s.store.total_refs() == 0)
        return false;
    last_ns = now;
    int probed = 0;
    for (int tries = 0; tries < 256 && probed < 32; ++tries) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        Region& r = s.regions[rng % s.regions.count()];
        uintptr_t a = r.start + (rng >> 20) % r.pages() * kPageSize;
        if (!has_slot(r.at(a).state)) continue;
        ++probed;
        uint64_t pm;
        if (read_pagemap(a, 1, &pm) && (pm & kPmPresent) && !(pm & kPmFile)) return true;
    }
    return false;
}

}  // namespace

bool cow_sweep_wakeup(State& s) {
    if (s.cow_storm || (!s.cow_sweep_due && probe_finds_breaks(s))) s.cow_sweep_due = true;
    return s.cow_storm;
}

size_t cow_sweep_step(State& s, size_t max_pages) {
    if (!s.cow_sweep_due) return 0;
    if (s.cow_sweep_cursor == 0) s.cow_sweep_start_breaks = s.stats.cow_breaks.load(std::memory_order_relaxed);
    size_t work = 0;
    const size_t budget = 16 * max_pages;  // a pagemap entry costs far less than a hash
    while (work < budget) {
        size_t i = s.regions.lower_bound(s.cow_sweep_cursor);
        if (i == s.regions.count()) {  // the sweep is over
            s.cow_sweep_cursor = 0;
            s.cow_sweep_due = false;
            // The program is still rewriting merged memory: sweep again soon.
            s.cow_storm = s.stats.cow_breaks.load(std::memory_order_relaxed) - s.cow_sweep_start_breaks >= kBreaksForSweep;
            break;
        }
        Region& r = s.regions[i];
        uintptr_t a = s.cow_sweep_cursor > r.start ? s.cow_sweep_cursor : r.start;
        while (a < r.end && !has_slot(r.at(a).state)) a += kPageSize;  // to the next merged page
        uintptr_t b = a;
        while (b < r.end && b - a < kRun * kPageSize && has_slot(r.at(b).state)) b += kPageSize;
        work += (a - (s.cow_sweep_cursor > r.start ? s.cow_sweep_cursor : r.start)) / kPageSize / 64 + 1;
        if (a < b) work += sweep_range(s, r, a, b);
        s.cow_sweep_cursor = b < r.end ? b : r.end;
    }
    s.store.flush_punches();
    note_saving(s);
    return work;
}

}  // namespace dedup
