#include "scanner/registration.h"

#include <errno.h>
#include <sys/mman.h>

#include "scanner/config.h"
#include "scanner/lifecycle.h"
#include "scanner/log.h"
#include "scanner/merge.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/sites.h"
#include "scanner/vma_giveback.h"

namespace dedup {
namespace {

bool registrable(int flags, size_t len) {
    if (!(flags & MAP_ANONYMOUS) || (flags & MAP_TYPE) != MAP_PRIVATE) return false;
    if (flags & (MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK)) return false;
    return len >= config().min_region;
}

long kernel_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    return sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
}

// The region flags for a VMA's VmFlags: memory we never saw mapped may have
// been given DONTFORK, HUGEPAGE... before it was advised MERGEABLE, and
// merging must keep those.
uint32_t region_flags_of(uint32_t vm_flags) {
    uint32_t flags = 0;
    if (vm_flags & kVmDontfork) flags |= kRegDontfork;
    if (vm_flags & kVmDontdump) flags |= kRegDontdump;
    if (vm_flags & kVmHugepage) flags |= kRegHugepage;
    if (vm_flags & kVmNohugepage) flags |= kRegNohugepage;
    if (vm_flags & kVmRandom) flags |= kRegRandom;
    if (vm_flags & kVmSequential) flags |= kRegSequential;
    if (vm_flags & (kVmWipeonfork | kVmLocked)) flags |= kRegExcluded;
    return flags;
}

}  // namespace

long map_and_register(void* addr, size_t len, int prot, int flags, int fd, off_t off, bool in_use) {
    State& s = state();
    // libunwind's own caches, mapped while it captures a site, are not the
    // program's memory.
    bool reg = registrable(flags, len) && !site_capture_in_progress();
    bool fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
    if (!reg && !fixed) {
        long r = kernel_mmap(addr, len, prot, flags, fd, off);
        if (r != -ENOMEM) return r;
        MmLockGuard g(s.lock);
        if (give_back_vmas(s, true)) r = kernel_mmap(addr, len, prot, flags, fd, off);
        return r;
    }
    uint32_t site = reg ? site_capture() : 0;  // outside the lock: unwinding may take libc locks
    long r;
    {
        MmLockGuard g(s.lock);
        r = kernel_mmap(addr, len, prot, flags, fd, off);
        if (r == -ENOMEM && give_back_vmas(s, true)) r = kernel_mmap(addr, len, prot, flags, fd, off);
        if (sys::failed(r)) return r;
        uintptr_t start = (uintptr_t)r, end = start + page_round_up(len);
        forget_range(s, start, end);  // MAP_FIXED replaced whatever we knew there
        if (!reg) return r;
        uint32_t rf = (flags & MAP_LOCKED) || s.mlock_future ? (uint32_t)kRegExcluded : 0u;
        if (!s.regions.insert(start, end, prot, rf, site)) {
            log_warning("out of metadata memory; %zu bytes at %p not registered", len, (void*)r);
            return r;
        }
        s.regions.coalesce(start, end);
        s.stats.registered_bytes_total += end - start;
        s.registered_anything = true;
    }
    runtime_after_register(in_use ? (long)page_round_up(len) : 0);
    return r;
}

long unmap_and_forget(void* addr, size_t len) {
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::munmap(addr, len);
    if (r == -ENOMEM && give_back_vmas(s, true)) r = sys::munmap(addr, len);
    if (r == 0) forget_range(s, (uintptr_t)addr, (uintptr_t)addr + page_round_up(len));
    return r;
}

void forget_range(State& s, uintptr_t start, uintptr_t end) {
    if (!s.regions.overlaps(start, end)) return;
    s.regions.isolate(start, end);
    s.regions.remove(start, end, [&](PageMeta& m, uintptr_t) { forget_page(s, m); });
    s.store.flush_punches();
}

void request_protection_resync(State& s, uintptr_t start, uintptr_t end) {
    if (!s.resync_end || start < s.resync_start) s.resync_start = start;
    if (end > s.resync_end) s.resync_end = end;
}

void resync_protection(State& s) {
    uintptr_t start = s.resync_start, end = s.resync_end;
    s.resync_start = s.resync_end = 0;
    for (uintptr_t p = start; p < end;) {
        uintptr_t vs, ve;
        int prot;
        if (!vma_at(p, &vs, &ve, &prot) || ve <= p) break;
        uintptr_t a = vs > p ? vs : p, b = ve < end ? ve : end;
        if (a < b && s.regions.overlaps(a, b) && s.regions.isolate(a, b)) {
            for_regions(s, a, b, [&](Region& rg) { rg.prot = prot; });
            s.regions.coalesce(a, b);
        }
        p = ve;
    }
}

void register_unknown_anon(State& s, uintptr_t start, uintptr_t end, uint32_t site) {
    for_each_anon_vma(start, end, [&](const AnonVma& v) {
        uint32_t flags = region_flags_of(v.vm_flags);
        // Skip what is registered already; register the gaps.
        uintptr_t a = v.start;
        while (a < v.end) {
            Region* r = s.regions.find(a);
            if (r) {
                a = r->end;
                continue;
            }
            size_t i = s.regions.lower_bound(a);
            uintptr_t gap_end = i < s.regions.count() && s.regions[i].start < v.end ? s.regions[i].start : v.end;
            if (s.regions.insert(a, gap_end, v.prot, flags, site)) {
                s.stats.registered_bytes_total += gap_end - a;
                s.registered_anything = true;
            }
            a = gap_end;
        }
    });
}

}  // namespace dedup
