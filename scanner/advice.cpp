// madvise(2) on registered memory, one function per advice. docs/DESIGN.md
// has the table of what each does and why that keeps the kernel's meaning.
#include <errno.h>
#include <sys/mman.h>

#include "scanner/lifecycle.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/sites.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

// madvise's argument checks, for the advice the kernel never sees.
long check_madvise_range(void* addr, size_t len, uintptr_t* end) {
    uintptr_t a = (uintptr_t)addr;
    if (a & kPageMask) return -EINVAL;
    uintptr_t l = page_round_up(len);
    if (len && !l) return -EINVAL;
    if (a + l < a) return -EINVAL;
    *end = a + l;
    if (l == 0) return 0;
    long r = sys::msync(addr, l, MS_ASYNC);  // ENOMEM for holes, as madvise reports them
    return sys::failed(r) ? r : 0;
}

// Whether [start, start+len) is a page-aligned, non-empty range overlapping
// registered memory; sets *end.
bool ours(State& s, uintptr_t start, size_t len, uintptr_t* end) {
    *end = start + page_round_up(len);
    return (start & kPageMask) == 0 && len && s.regions.overlaps(start, *end);
}

// Sets or clears region flags over [start, end) (whole regions after isolate).
template <typename F>
void change_flags(State& s, uintptr_t start, uintptr_t end, F&& change) {
    if (!s.regions.isolate(start, end)) return;
    for_regions(s, start, end, [&](Region& rg) { rg.flags = change(rg.flags); });
    s.regions.coalesce(start, end);
}

// MERGEABLE / UNMERGEABLE: KSM's semantics, never passed to the kernel
// (kernel KSM must not also act on it: benchmarks run both).
long advise_mergeable(State& s, void* addr, size_t len, bool mergeable) {
    uintptr_t start = (uintptr_t)addr, end = 0;
    long c = check_madvise_range(addr, len, &end);
    if (c != 0 || end == start) return c;
    long result = 0;
    uint32_t site = mergeable ? site_capture() : 0;  // outside the lock: unwinding may take libc locks
    {
        MmLockGuard g(s.lock);
        if (mergeable) register_unknown_anon(s, start, end, site);
        if (!s.regions.overlaps(start, end) || !s.regions.isolate(start, end)) return 0;
        if (!mergeable) result = unmerge_range(s, start, end, Unmerge::kPrivateNow);
        change_flags(s, start, end, [&](uint32_t f) {
            return mergeable ? (f | kRegAdvised) & ~kRegUnmergeable : (f | kRegUnmergeable) & ~kRegAdvised;
        });
    }
    if (mergeable) runtime_activate();
    return result;
}

// DONTNEED, DONTNEED_LOCKED, FREE: on a merged page these would bring back
// (DONTNEED) or refuse (FREE) the canonical contents: those pages become
// fresh anonymous memory first, so that the program reads zeros.
long advise_discard(State& s, void* addr, size_t len, int advice) {
    MmLockGuard g(s.lock);
    uintptr_t end;
    if (ours(s, (uintptr_t)addr, len, &end)) zero_file_pages(s, (uintptr_t)addr, end);
    return sys::madvise(addr, len, advice);
}

// REMOVE: registered memory is private anonymous, where it is EINVAL.
long advise_remove(State& s, void* addr, size_t len) {
    MmLockGuard g(s.lock);
    uintptr_t end;
    if (ours(s, (uintptr_t)addr, len, &end)) return -EINVAL;
    return sys::madvise(addr, len, MADV_REMOVE);
}

// GUARD_INSTALL: a guard removed later must leave zero-fill pages, not the
// canonical ones: merged pages become fresh anonymous memory first, and the
// range's hashes are forgotten (no pair merge reads a guard).
long advise_guard_install(State& s, void* addr, size_t len) {
    MmLockGuard g(s.lock);
    uintptr_t start = (uintptr_t)addr, end;
    if (ours(s, start, len, &end)) {
        zero_file_pages(s, start, end);
        for_regions(s, start, end, [&](Region& rg) {
            uintptr_t a = start > rg.start ? start : rg.start, b = end < rg.end ? end : rg.end;
            for (uintptr_t p = a; p < b; p += kPageSize) rg.at(p).hash32 = 0;
        });
    }
    return sys::madvise(addr, len, MADV_GUARD_INSTALL);
}

// COLLAPSE needs one anonymous VMA over each huge page: every region in
// [start, end) that holds memfd pieces becomes one anonymous mapping again.
void prepare_collapse(State& s, uintptr_t start, uintptr_t end) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i) {
        Region& r = s.regions[i];
        bool has_file = false;
        for (uintptr_t p = r.start; p < r.end && !has_file; p += kPageSize) has_file = in_file_vma(r.at(p).state);
        if (has_file) make_anonymous(s, r, r.start, r.end, WriteWindow::IfPinned::kWait);
    }
}

long advise_collapse(State& s, void* addr, size_t len) {
    MmLockGuard g(s.lock);
    uintptr_t start = (uintptr_t)addr;
    if ((start & kPageMask) == 0 && len) prepare_collapse(s, start, start + page_round_up(len));
    return sys::madvise(addr, len, MADV_COLLAPSE);
}

// WIPEONFORK does not work on a file mapping: merged pages are given back
// first, and the range never merges again (KEEPONFORK makes it mergeable).
long advise_wipeonfork(State& s, void* addr, size_t len) {
    MmLockGuard g(s.lock);
    uintptr_t start = (uintptr_t)addr, end;
    bool registered = ours(s, start, len, &end);
    if (registered) unmerge_range(s, start, end, Unmerge::kAnonymousNow);
    long r = sys::madvise(addr, len, MADV_WIPEONFORK);
    if (r == 0 && registered) change_flags(s, start, end, [](uint32_t f) { return f | kRegExcluded; });
    return r;
}

// The advice that sets a VMA flag a fresh mapping would not inherit, and
// whether it sets (true) or clears it.
uint32_t flag_for_advice(int advice, bool* set) {
    *set = true;
    switch (advice) {
        case MADV_DONTFORK: return kRegDontfork;
        case MADV_DOFORK: *set = false; return kRegDontfork;
        case MADV_DONTDUMP: return kRegDontdump;
        case MADV_DODUMP: *set = false; return kRegDontdump;
        case MADV_HUGEPAGE: return kRegHugepage;
        case MADV_NOHUGEPAGE: return kRegNohugepage;
        case MADV_RANDOM: return kRegRandom;
        case MADV_SEQUENTIAL: return kRegSequential;
        case MADV_NORMAL: *set = false; return kRegRandom | kRegSequential;
        case MADV_KEEPONFORK: *set = false; return kRegExcluded;
        default: return 0;
    }
}

// Everything else passes on; the flags merging must keep are recorded, to be
// re-applied to every remapped piece.
long advise_other(State& s, void* addr, size_t len, int advice) {
    bool set;
    uint32_t flag = flag_for_advice(advice, &set);
    MmLockGuard g(s.lock);
    long r = sys::madvise(addr, len, advice);
    uintptr_t end;
    if (r != 0 || !flag || !ours(s, (uintptr_t)addr, len, &end)) return r;
    change_flags(s, (uintptr_t)addr, end, [&](uint32_t f) {
        f = set ? f | flag : f & ~flag;
        // The kernel keeps one of each pair.
        if (advice == MADV_HUGEPAGE) f &= ~kRegNohugepage;
        if (advice == MADV_NOHUGEPAGE) f &= ~kRegHugepage;
        if (advice == MADV_RANDOM) f &= ~kRegSequential;
        if (advice == MADV_SEQUENTIAL) f &= ~kRegRandom;
        return f;
    });
    return r;
}

}  // namespace

long rt_madvise(void* addr, size_t len, int advice) {
    if (!runtime_ready()) {
        uintptr_t end;
        if (advice == MADV_MERGEABLE || advice == MADV_UNMERGEABLE) return check_madvise_range(addr, len, &end);
        return sys::madvise(addr, len, advice);
    }
    State& s = state();
    switch (advice) {
        case MADV_MERGEABLE: return advise_mergeable(s, addr, len, true);
        case MADV_UNMERGEABLE: return advise_mergeable(s, addr, len, false);
        case MADV_DONTNEED:
        case MADV_DONTNEED_LOCKED:
        case MADV_FREE: return advise_discard(s, addr, len, advice);
        case MADV_REMOVE: return advise_remove(s, addr, len);
        case MADV_GUARD_INSTALL: return advise_guard_install(s, addr, len);
        case MADV_COLLAPSE: return advise_collapse(s, addr, len);
        case MADV_WIPEONFORK: return advise_wipeonfork(s, addr, len);
        default: return advise_other(s, addr, len, advice);
    }
}

long rt_process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags) {
    auto kernel = [&] { return sys::call(SYS_process_madvise, pidfd, (long)iov, (long)n, advice, flags); };
    // Of the advice process_madvise takes (COLD, PAGEOUT, WILLNEED,
    // COLLAPSE), only COLLAPSE fails on merged pieces: prepare as madvise does.
    if (advice != MADV_COLLAPSE || !iov || n > 1024 || !runtime_ready() || !pidfd_is_self(pidfd)) return kernel();
    State& s = state();
    MmLockGuard g(s.lock);
    for (size_t i = 0; i < n; ++i) {
        uintptr_t a = (uintptr_t)iov[i].iov_base;
        if (a & kPageMask || !iov[i].iov_len) continue;
        prepare_collapse(s, a, a + page_round_up(iov[i].iov_len));
    }
    return kernel();
}

}  // namespace dedup
