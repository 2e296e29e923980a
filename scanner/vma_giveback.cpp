#include "scanner/vma_giveback.h"

#include <sys/mman.h>

#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/os/sys.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

// VMAs held back for the hard limit. There the program's own call has just
// failed for want of a VMA, and unmerging needs a few (a scratch mapping, a
// window's splits, and mremap refuses within 3 of the limit): without them
// the program's mprotect got ENOMEM it would not get without the shim. So
// while merged pieces exist the shim keeps kReservePages one-page PROT_NONE
// VMAs (kept apart by MADV_DONTDUMP on every other page), gives them up with
// one munmap (a whole mapping: no split) before unmerging at the limit, and
// takes them again once the count is back under the budget. Used under the
// mm lock only (the scanner's check, and the wrappers' retry at ENOMEM).
constexpr size_t kReservePages = 7;
char* g_reserve = nullptr;

void reserve_take() {
    if (g_reserve) return;
    long err = 0;
    void* p = sys::mmap(nullptr, kReservePages * kPageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                        0, &err);
    if (p == MAP_FAILED) return;
    g_reserve = static_cast<char*>(p);
    for (size_t i = 0; i < kReservePages; i += 2) sys::madvise(g_reserve + i * kPageSize, kPageSize, MADV_DONTDUMP);
}

bool reserve_release() {
    if (!g_reserve) return false;
    sys::munmap(g_reserve, kReservePages * kPageSize);
    g_reserve = nullptr;
    return true;
}

// The region with the most memfd pieces (runs of merged pages), or count().
size_t most_fragmented(State& s) {
    size_t best = s.regions.count();
    uint64_t best_runs = 0;
    for (size_t i = 0; i < s.regions.count(); ++i) {
        Region& r = s.regions[i];
        uint64_t runs = 0;
        bool prev = false;
        for (size_t p = 0; p < r.pages(); ++p) {
            bool f = in_file_vma(r.meta[p].state);
            runs += f && !prev;
            prev = f;
        }
        if (runs > best_runs) {
            best_runs = runs;
            best = i;
        }
    }
    return best;
}

// True when an exact count shows the program a quarter of the way into the
// reserve while we hold merged pieces. While the last count was below half
// the budget, no more often than the count's cost allows (a program with
// 200,000 merged pieces and room for a million).
bool under_pressure(State& s) {
    if (s.stats.merge_runs.load(std::memory_order_relaxed) == 0) return false;
    if (s.vmas.last_count() * 2 >= s.vmas.limit()) s.vmas.recount();
    else s.vmas.recount_if_older(0);
    return s.vmas.last_count() > s.vmas.pressure_threshold();
}

}  // namespace

bool give_back_vmas(State& s, bool at_limit) {
    uint64_t max = s.vmas.max_map_count();
    uint64_t n = count_vmas();
    uint64_t reserve = max - s.vmas.limit();
    if (at_limit && n + 64 < max) return false;  // ENOMEM for another reason
    if (!at_limit && n <= s.vmas.pressure_threshold()) return false;
    uint64_t target = s.vmas.limit() - reserve / 4;  // a margin below the budget
    // Waiting (bounded) for syscalls writing into a region: a program that
    // keeps reading into it would otherwise never get its VMAs back.
    auto if_pinned = WriteWindow::IfPinned::kWait;
    // At the limit the held-back VMAs go first: they are what the unmerges
    // need (and, with nothing merged, what the program's retry needs).
    bool released = at_limit && reserve_release();
    bool unmerged = false;
    while (n >= target) {
        size_t best = most_fragmented(s);
        if (best == s.regions.count()) break;
        Region& r = s.regions[best];
        if (make_anonymous(s, r, r.start, r.end, if_pinned) != 0) break;
        unmerged = true;
        n = count_vmas();
    }
    s.vmas.recount();
    if (s.vmas.last_count() < target) reserve_take();
    if (!unmerged) return released;
    s.vmas.hold_off(10ull * 1000 * 1000000);  // no VMA-costing merge for a while: no churn
    log_warning("the program's VMAs approach vm.max_map_count (%llu of %llu); merged regions were unmerged to give VMAs back",
                (unsigned long long)n, (unsigned long long)max);
    return true;
}

void relieve_vma_pressure(State& s) {
    static uint64_t last_ns = 0;
    uint64_t now = monotonic_ns();
    if (now - last_ns < 500 * 1000000ull) return;
    last_ns = now;
    MmLockGuard g(s.lock);
    if (under_pressure(s)) give_back_vmas(s, false);
    // Held back while merged pieces exist, and while there is room.
    if (s.stats.merge_runs.load(std::memory_order_relaxed) && s.vmas.last_count() < s.vmas.limit()) reserve_take();
}

}  // namespace dedup
