// The runtime's entry points for the memory calls: each takes the mm lock
// around the system call and the registry update, so that the registry
// changes only after the kernel succeeded (a failed munmap never drops
// records of pages that are still mapped), and no batch of the scanner is
// ever in flight over memory that changes.
#include "scanner/runtime.h"

#include <errno.h>
#include <sys/mman.h>

#include "scanner/lifecycle.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"
#include "scanner/vma_giveback.h"

namespace dedup {
namespace {

constexpr uintptr_t kWholeSpace = ~uintptr_t(0) & ~kPageMask;

bool has_file_pages(State& s, uintptr_t start, uintptr_t end) {
    bool has_file = false;
    for_regions(s, start, end, [&](Region& rg) {
        uintptr_t a = start > rg.start ? start : rg.start, b = end < rg.end ? end : rg.end;
        for (uintptr_t p = a; p < b && !has_file; p += kPageSize) has_file = in_file_vma(rg.at(p).state);
    });
    return has_file;
}

// A range we split into several VMAs by merging, or a merged range (whose
// growth would map more of the memfd), must be one anonymous mapping again
// before the kernel moves or grows it: the kernel would return EFAULT for a
// range of several VMAs.
long prepare_remap(State& s, uintptr_t old_start, uintptr_t old_end) {
    if (!has_file_pages(s, old_start, old_end)) return 0;
    Region* r = s.regions.find(old_start);
    if (!r || r->end < old_end || !s.regions.isolate(old_start, old_end)) return 0;
    r = s.regions.find(old_start);
    return make_anonymous(s, *r, old_start, old_end, WriteWindow::IfPinned::kWait);
}

// The kernel refuses (EFAULT) to resize or move a range of several VMAs. An
// unmerge leaves such a range behind even when no memfd page is left (see
// rejoin_anonymous). Where the range is registered without a gap, with one
// protection and the same advice the kernel keeps (so it would be one VMA
// without the shim), it becomes one anonymous mapping again, for the kernel
// to be asked again. Ranges the program split itself (holes, protections,
// advice, mlock) stay as they are: their EFAULT is the kernel's answer.
bool rejoin_split_range(State& s, uintptr_t start, uintptr_t end) {
    if (!s.regions.isolate(start, end)) return false;
    size_t first = s.regions.lower_bound(start);
    if (first == s.regions.count()) return false;
    // Records may differ in the shim's own flags (advised, unmergeable) only.
    const int prot = s.regions[first].prot;
    const uint32_t advice = s.regions[first].flags & kRegKernelAdvice;
    uintptr_t covered = start;
    for (size_t i = first; i < s.regions.count() && covered < end; ++i) {
        const Region& r = s.regions[i];
        if (r.start != covered || r.prot != prot || (r.flags & (kRegExcluded | kRegLeftAlone)) ||
            (r.flags & kRegKernelAdvice) != advice)
            return false;
        covered = r.end;
    }
    if (covered < end || !kernel_protection_is(start, end - start, prot)) return false;
    return rejoin_anonymous(s, start, end) == 0;
}

// After the kernel moved or resized [old_start, old_end) to [dst, dst +
// new_rlen): the records follow the mapping.
void follow_remap(State& s, uintptr_t old_start, uintptr_t old_end, uintptr_t dst, size_t new_rlen, int flags) {
    uintptr_t keep_end = old_start + (new_rlen < old_end - old_start ? new_rlen : old_end - old_start);
    if (!s.regions.isolate(old_start, old_end) || !s.regions.split_at(keep_end)) {
        forget_range(s, old_start, old_end);
        return;
    }
    forget_range(s, keep_end, old_end);  // shrunk away
    if (dst == old_start) {
        s.regions.grow_tail(keep_end, old_start + new_rlen);
        return;
    }
    if (!s.regions.relocate(old_start, keep_end, dst, flags & MREMAP_DONTUNMAP)) {
        // No memory for the move: drop the records, but keep their slot
        // references (never freed) rather than free slots the pages still map.
        s.regions.remove(old_start, keep_end, [](PageMeta&, uintptr_t) {});
        return;
    }
    s.regions.grow_tail(dst + (keep_end - old_start), dst + new_rlen);
}

}  // namespace

bool rt_start() { return runtime_ready(); }

void rt_shutdown() { runtime_shutdown(); }

long rt_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (!runtime_ready()) return sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
    return map_and_register(addr, len, prot, flags, fd, off);
}

long rt_munmap(void* addr, size_t len) {
    if (!runtime_ready()) return sys::munmap(addr, len);
    return unmap_and_forget(addr, len);
}

long rt_mprotect(void* addr, size_t len, int prot) {
    if (!runtime_ready()) return sys::mprotect(addr, len, prot);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::mprotect(addr, len, prot);
    if (r == -ENOMEM && give_back_vmas(s, true)) r = sys::mprotect(addr, len, prot);
    uintptr_t start = (uintptr_t)addr, end = start + page_round_up(len);
    if (r != 0 || !s.regions.overlaps(start, end)) return r;
    if (!s.regions.isolate(start, end)) {
        // No memory to split our records: record "not writable" for the whole
        // straddling regions so the scanner leaves them alone.
        for_regions(s, start, end, [&](Region& rg) { rg.prot = PROT_NONE; });
        return r;
    }
    for_regions(s, start, end, [&](Region& rg) { rg.prot = prot; });
    s.regions.coalesce(start, end);
    return r;
}

long rt_mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr) {
    auto kernel = [&] { return sys::mremap(old_addr, old_len, new_len, flags, new_addr); };
    if (!runtime_ready()) return kernel();
    uintptr_t old_start = (uintptr_t)old_addr;
    if (old_start & kPageMask) return kernel();
    uintptr_t old_end = old_start + page_round_up(old_len);
    size_t new_rlen = page_round_up(new_len);
    State& s = state();
    MmLockGuard g(s.lock);
    bool fixed = flags & MREMAP_FIXED;
    uintptr_t nfix = (uintptr_t)new_addr;
    if (!s.regions.overlaps(old_start, old_end) && !(fixed && s.regions.overlaps(nfix, nfix + new_rlen)))
        return kernel();
    bool moves_or_grows = fixed || new_rlen > old_end - old_start || (flags & MREMAP_DONTUNMAP);
    if (moves_or_grows && old_len) {
        long c = prepare_remap(s, old_start, old_end);
        if (c != 0) return c;
    }
    long res = kernel();
    if (res == -EFAULT && moves_or_grows && old_len && rejoin_split_range(s, old_start, old_end)) res = kernel();
    if (sys::failed(res)) return res;
    uintptr_t dst = (uintptr_t)res;
    if (dst != old_start) forget_range(s, dst, dst + new_rlen);  // whatever was at the target is gone
    if (old_len) follow_remap(s, old_start, old_end, dst, new_rlen, flags);  // (0: a shared mapping's duplicate)
    return res;
}

long rt_remap_block(void* addr, size_t old_len, size_t new_len) {
    if (!runtime_initialised()) return -EAGAIN;  // the records would stay behind
    uintptr_t start = (uintptr_t)addr, end = start + page_round_up(old_len);
    size_t new_rlen = page_round_up(new_len);
    State& s = state();
    MmLockGuard g(s.lock);
    uintptr_t vs = 0, ve = 0;
    int prot = 0;
    // One VMA, with the heap's protection: not merged, not split, and no
    // write window over it (a window's record would stay at the old address).
    if (has_file_pages(s, start, end) || !vma_at(start, &vs, &ve, &prot) || vs > start || ve < end ||
        prot != (PROT_READ | PROT_WRITE))
        return -EAGAIN;
    long res = sys::mremap(addr, old_len, new_len, MREMAP_MAYMOVE, nullptr);
    if (sys::failed(res)) return res;
    uintptr_t dst = (uintptr_t)res;
    if (dst != start) forget_range(s, dst, dst + new_rlen);
    follow_remap(s, start, end, dst, new_rlen, MREMAP_MAYMOVE);
    return res;
}

long rt_mlock(void* addr, size_t len, unsigned flags) {
    auto kernel = [&] {
        return flags ? sys::call(SYS_mlock2, (long)addr, (long)len, flags) : sys::call(SYS_mlock, (long)addr, (long)len);
    };
    if (!runtime_ready()) return kernel();
    State& s = state();
    MmLockGuard g(s.lock);
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = page_round_up((uintptr_t)addr + len);
    bool ours = s.regions.overlaps(start, end);
    if (ours) unmerge_range(s, start, end, Unmerge::kAnonymousNow);  // locked memory is the program's own pages
    long r = kernel();
    if (r == 0 && ours && s.regions.isolate(start, end)) {
        for_regions(s, start, end, [&](Region& rg) { rg.flags |= kRegExcluded; });
        s.regions.coalesce(start, end);
    }
    return r;
}

long rt_munlock(void* addr, size_t len) {
    if (!runtime_ready()) return sys::call(SYS_munlock, (long)addr, (long)len);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::call(SYS_munlock, (long)addr, (long)len);
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = page_round_up((uintptr_t)addr + len);
    if (r == 0 && s.regions.overlaps(start, end) && s.regions.isolate(start, end)) {
        for_regions(s, start, end, [&](Region& rg) { rg.flags &= ~kRegExcluded; });
        s.regions.coalesce(start, end);
    }
    return r;
}

long rt_mlockall(int flags) {
    if (!runtime_ready()) return sys::call(SYS_mlockall, flags);
    State& s = state();
    MmLockGuard g(s.lock);
    if (flags & MCL_CURRENT) unmerge_range(s, 0, kWholeSpace, Unmerge::kAnonymousNow);
    s.store.hide_views(true);
    long r = sys::call(SYS_mlockall, flags);
    s.store.hide_views(false);
    if (r == 0) {
        if (flags & MCL_CURRENT)
            for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegExcluded;
        if (flags & MCL_FUTURE) s.mlock_future = true;
    }
    return r;
}

long rt_munlockall() {
    if (!runtime_ready()) return sys::call(SYS_munlockall);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::call(SYS_munlockall);
    if (r == 0) {
        for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags &= ~kRegExcluded;
        s.mlock_future = false;
    }
    return r;
}

long rt_leave_alone(const void* addr, size_t len) {
    if (!runtime_ready() || !len) return 0;
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = page_round_up((uintptr_t)addr + len);
    if (end < start) end = kWholeSpace;
    State& s = state();
    MmLockGuard g(s.lock);
    if (!s.regions.overlaps(start, end)) return 0;
    long r = unmerge_range(s, start, end, Unmerge::kAnonymousNow);
    if (s.regions.isolate(start, end)) {
        for_regions(s, start, end, [&](Region& rg) { rg.flags |= kRegLeftAlone; });
        s.regions.coalesce(start, end);
    } else {
        for_regions(s, start, end, [&](Region& rg) { rg.flags |= kRegLeftAlone; });  // the whole straddling regions
    }
    return r;
}

long rt_prctl_memory_merge(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5,
                           bool* handled) {
    constexpr int kSet = 67, kGet = 68;  // PR_SET_MEMORY_MERGE, PR_GET_MEMORY_MERGE
    *handled = (option == kSet || option == kGet) && runtime_ready();
    if (!*handled) return 0;
    State& s = state();
    if (option == kGet) {
        if (a2 || a3 || a4 || a5) return -EINVAL;
        MmLockGuard g(s.lock);
        return s.merge_all ? 1 : 0;
    }
    if (a3 || a4 || a5) return -EINVAL;
    {
        MmLockGuard g(s.lock);
        if (a2) {
            s.merge_all = true;
        } else {
            // As the kernel's ksm_disable_merge_any: every page goes back to
            // private memory and nothing merges until advised again.
            unmerge_range(s, 0, kWholeSpace, Unmerge::kPrivateNow);
            for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags &= ~kRegAdvised;
            s.merge_all = false;
        }
    }
    if (a2) runtime_activate();
    return 0;
}

}  // namespace dedup
