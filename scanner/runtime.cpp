#include "scanner/runtime.h"

#include <atomic>
#include <new>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "scanner/config.h"
#include "scanner/linux_compat.h"
#include "scanner/fault_handler.h"
#include "scanner/log.h"
#include "scanner/merge_engine.h"
#include "scanner/meta_alloc.h"
#include "scanner/scanner_thread.h"
#include "scanner/sites.h"
#include "scanner/state.h"
#include "scanner/sys.h"

extern "C" int __sigaction(int, const struct sigaction*, struct sigaction*);

namespace dedup {

// Never destroyed: the detached scanner thread may still be running while
// the process exits and static destructors run.
State& state() {
    alignas(State) static unsigned char storage[sizeof(State)];
    static State* s = new (storage) State();
    return *s;
}

namespace {

enum InitState { kUninit = 0, kIniting = 1, kReady = 2, kDisabled = 3 };
std::atomic<int> g_init{kUninit};
__thread bool t_initialising = false;
std::atomic<bool> g_mlock_future{false};
// A forked child inherits registered memory but no scanner thread: the first
// mapping call it makes starts one (not the fork itself: most children exec).
std::atomic<bool> g_child_needs_scanner{false};
long g_original_pid = 0;
std::atomic<bool> g_descriptors_had{false};  // reset in a forked child
// The live stats file (see open_live_file); guarded by the mm lock.
struct LiveFile {
    char* map = nullptr;
    size_t longest = 0;
    long linked_pid = 0;
};
LiveFile g_live;
bool g_registered_anything = false;

constexpr uintptr_t kPageMask = kPageSize - 1;
uintptr_t round_up(uintptr_t v) { return (v + kPageMask) & ~kPageMask; }


void fork_prepare() {
    if (g_init.load() != kReady) return;
    state().lock.lock();
}

void fork_parent() {
    if (g_init.load() != kReady) return;
    State& s = state();
    s.store.pin_for_fork();
    s.lock.unlock();
}

// The child has one thread, a copy of the registry, and mappings of the
// parent's memfd that it must never write to or punch: it forgets the
// parent's store and builds its own on demand.
void fork_child() {
    reset_current_tid();
    if (g_init.load() != kReady) return;
    State& s = state();
    s.lock.reset_after_fork();
    for (size_t i = 0; i < s.regions.count(); ++i) {
        Region& r = s.regions[i];
        for (size_t p = 0; p < r.pages(); ++p)
            if (has_slot(r.meta[p].state)) r.meta[p].state = kFileVma;  // maps the parent's canonical page
    }
    s.store.reset_in_child();
    rotation_reset_in_child(s.rotation);
    s.index.clear();
    // Kept files opened by the parent describe the parent (a child reading
    // its parent's pagemap once skipped every page it had rewritten).
    for (KeptFile* f : kept_files().all) f->close();
    g_live = LiveFile();  // its mapping is DONTFORK: not in the child
    g_descriptors_had.store(false);
    scanner_forget_after_fork();
    g_child_needs_scanner.store(s.regions.count() > 0);
}

// Whether every anonymous mapping may get huge pages, advised or not.
bool thp_enabled_always() {
    long fd = sys::call(SYS_open, (long)"/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return false;
    char buf[128] = {0};
    long n = sys::call(SYS_read, fd, (long)buf, sizeof(buf) - 1);
    sys::close((int)fd);
    return n > 0 && strstr(buf, "[always]");
}

bool init_now() {
    t_initialising = true;
    // The log destination first, so that warnings about other options land there.
    const Config& cfg = config();  // opens DEDUP_LOG, then parses the rest of the environment
    if (cfg.disable) {
        t_initialising = false;
        g_init.store(kDisabled, std::memory_order_release);
        return false;
    }
    State& s = state();
    s.merge_all = cfg.scope == Scope::kAll;
    sites_set_enabled(cfg.sites);
    static char zero[kPageSize];
    s.zero_hash = page_hash(zero);
    s.thp_always = thp_enabled_always();
    s.vmas.init(cfg.vma_reserve);
    s.start_ns = monotonic_ns();
    g_original_pid = sys::getpid();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    t_initialising = false;
    g_init.store(kReady, std::memory_order_release);
    return true;
}

void start_scanner_in_child();

bool ensure_init() {
    int st = g_init.load(std::memory_order_acquire);
    if (st == kReady) {
        if (__builtin_expect(g_child_needs_scanner.load(std::memory_order_relaxed), 0)) start_scanner_in_child();
        return true;
    }
    if (st == kDisabled || t_initialising) return false;
    int expected = kUninit;
    if (g_init.compare_exchange_strong(expected, kIniting)) return init_now();
    while ((st = g_init.load(std::memory_order_acquire)) == kIniting) {
    }
    return st == kReady;
}

void start_scanner_in_child() {
    if (!g_child_needs_scanner.exchange(false)) return;
    if (state().lock.held_by_me()) {  // not under the lock: retry on the next call
        g_child_needs_scanner.store(true);
        return;
    }
    scanner_ensure_started();
}

bool registrable(int prot, int flags, size_t len) {
    (void)prot;
    if (!(flags & MAP_ANONYMOUS) || (flags & MAP_TYPE) != MAP_PRIVATE) return false;
    if (flags & (MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK)) return false;
    return len >= config().min_region;
}

void forget_range(State& s, uintptr_t start, uintptr_t end) {
    if (!s.regions.overlaps(start, end)) return;
    s.regions.isolate(start, end);
    s.regions.remove(start, end, [&](PageMeta& m, uintptr_t) { forget_page(s, m); });
    s.store.flush_punches();
}

// Called after registering: starts the scanner and the fault handler
// outside the lock.
bool open_live_file();

void after_register() {
    fault_handler_install(__sigaction);
    // The shim's descriptors are had now, while the program is likely to
    // have some to spare, rather than first by the scanner later, when it
    // might take the program's last free one.
    if (!g_descriptors_had.load(std::memory_order_relaxed)) {
        State& s = state();
        MmLockGuard g(s.lock);
        bool had = s.store.ensure_ready() & open_pagemap() & open_maps() &
                   kept_files().status.ensure("/proc/self/status", O_RDONLY) & open_live_file();
        g_descriptors_had.store(had, std::memory_order_relaxed);
    }
    scanner_ensure_started();
}

template <typename F>
void for_regions(State& s, uintptr_t start, uintptr_t end, F&& f) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i)
        f(s.regions[i]);
}

// madvise's argument checks, for the advice the kernel never sees.
long check_madvise_range(void* addr, size_t len, uintptr_t* end) {
    uintptr_t a = (uintptr_t)addr;
    if (a & kPageMask) return -EINVAL;
    uintptr_t l = round_up(len);
    if (len && !l) return -EINVAL;
    if (a + l < a) return -EINVAL;
    *end = a + l;
    if (l == 0) return 0;
    long r = sys::msync(addr, l, MS_ASYNC);  // ENOMEM for holes, as madvise reports them
    return sys::failed(r) ? r : 0;
}

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
        default: return 0;
    }
}

// Makes [start, end) of a region one anonymous VMA again (private copies of
// merged pages, present pages copied), so the kernel's mremap sees the single
// mapping the application created. Requires the range inside one region.
long consolidate(State& s, Region& r, uintptr_t start, uintptr_t end) {
    size_t len = end - start;
    long err = 0;
    void* tmp = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, &err);
    if (tmp == MAP_FAILED) return -err;
    int ro = (r.prot & ~PROT_WRITE) | PROT_READ;
    s.window_seq.fetch_add(1);
    if (sys::failed(sys::mprotect((void*)start, len, ro))) {
        sys::munmap(tmp, len);
        s.window_seq.fetch_add(1);
        return -ENOMEM;
    }
    uint64_t pm[256];
    for (uintptr_t a = start; a < end; a += 256 * kPageSize) {
        size_t n = (end - a) / kPageSize < 256 ? (end - a) / kPageSize : 256;
        bool have = read_pagemap(a, n, pm);
        for (size_t i = 0; i < n; ++i) {
            uintptr_t p = a + i * kPageSize;
            bool copy = !have || (pm[i] & (3ull << 62)) || in_file_vma(r.at(p).state);
            if (copy) memcpy((char*)tmp + (p - start), (void*)p, kPageSize);
        }
    }
    if (r.prot != (PROT_READ | PROT_WRITE)) sys::mprotect(tmp, len, r.prot);
    long mr = sys::mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void*)start);
    if (sys::failed(mr)) {
        sys::munmap(tmp, len);
        sys::mprotect((void*)start, len, r.prot);
        s.window_seq.fetch_add(1);
        return mr;
    }
    reapply_flags(r.flags, start, len);
    for (uintptr_t p = start; p < end; p += kPageSize) {
        PageMeta& m = r.at(p);
        if (in_file_vma(m.state) || is_zero_freed(m.state)) forget_page(s, m);
        m.state = 0;
        m.hash32 = 0;
    }
    s.store.flush_punches();
    s.window_seq.fetch_add(1);
    return 0;
}

// MADV_COLLAPSE (madvise or process_madvise) over [start, end): every
// region there that holds memfd pieces becomes one anonymous mapping again.
// Lock held.
void prepare_collapse(State& s, uintptr_t start, uintptr_t end) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i) {
        Region& r = s.regions[i];
        bool has_file = false;
        for (uintptr_t p = r.start; p < r.end && !has_file; p += kPageSize) has_file = in_file_vma(r.at(p).state);
        if (has_file) consolidate(s, r, r.start, r.end);
    }
}

// The program ran into vm.max_map_count (its call failed with ENOMEM) while
// our merges hold VMAs: give them back, most fragmented regions first, by
// making each one a single anonymous mapping again. True if any VMA was
// freed (the caller then retries its call once). Lock held.
bool give_back_vmas(State& s, bool at_limit) {
    uint64_t max = s.vmas.max_map_count();
    uint64_t n = count_vmas();
    uint64_t reserve = max - s.vmas.limit();
    if (at_limit && n + 64 < max) return false;  // ENOMEM for another reason
    if (!at_limit && n <= s.vmas.pressure_threshold()) return false;
    uint64_t target = s.vmas.limit() - reserve / 4;  // a margin below the budget
    bool freed = false;
    while (n >= target) {
        // The region with the most memfd pieces (runs of merged pages).
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
            if (runs > best_runs) { best_runs = runs; best = i; }
        }
        if (best == s.regions.count()) break;
        Region& r = s.regions[best];
        if (consolidate(s, r, r.start, r.end) != 0) break;
        freed = true;
        n = count_vmas();
    }
    s.vmas.recount();
    if (freed) s.vmas.hold_off(10ull * 1000 * 1000000);
    if (freed)
        log_warning("the program's VMAs approach vm.max_map_count (%llu of %llu); merged regions were unmerged to give VMAs back",
                    (unsigned long long)n, (unsigned long long)max);
    return freed;
}

// The advice a VMA already carries, from its smaps VmFlags line: memory we
// never saw mapped may have been given DONTFORK, HUGEPAGE... before it was
// advised MERGEABLE, and merging must keep those.
uint32_t flags_from_vmflags(const char* line) {
    uint32_t flags = 0;
    for (const char* p = line; *p; ++p) {
        if (p[0] == ' ' && p[1] && p[2] && (p[3] == ' ' || p[3] == 0)) {
            char f0 = p[1], f1 = p[2];
            if (f0 == 'd' && f1 == 'c') flags |= kRegDontfork;
            if (f0 == 'd' && f1 == 'd') flags |= kRegDontdump;
            if (f0 == 'h' && f1 == 'g') flags |= kRegHugepage;
            if (f0 == 'n' && f1 == 'h') flags |= kRegNohugepage;
            if (f0 == 'r' && f1 == 'r') flags |= kRegRandom;
            if (f0 == 's' && f1 == 'r') flags |= kRegSequential;
            if ((f0 == 'w' && f1 == 'f') || (f0 == 'l' && f1 == 'o')) flags |= kRegExcluded;  // WIPEONFORK, mlocked
        }
    }
    return flags;
}

// MADV_MERGEABLE on memory we never saw mapped (smaller than
// DEDUP_MIN_REGION, mapped before we were loaded, or by a raw system call):
// register the private anonymous parts, as KSM would take them, with the
// advice their VMAs already carry. [heap] and [stack] stay out: glibc and the
// kernel change those without calling us (brief, trap 4). Reads
// /proc/self/smaps (opened for this call only: it is the program's own
// madvise call, and rare).
void register_unknown_anon(State& s, uintptr_t start, uintptr_t end, uint32_t site) {
    long fd = sys::call(SYS_open, (long)"/proc/self/smaps", O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return;
    char buf[8192];
    size_t have = 0;
    bool eof = false;
    // The VMA whose lines we are in, if it is one to register.
    uintptr_t vma_lo = 0, vma_hi = 0;
    int vma_prot = 0;
    bool wanted = false;
    while (!eof || have) {
        if (!eof && have < sizeof(buf)) {
            long n = sys::call(SYS_read, fd, (long)(buf + have), (long)(sizeof(buf) - have));
            if (n <= 0) eof = true;
            else have += (size_t)n;
        }
        char* nl = (char*)memchr(buf, '\n', have);
        if (!nl) {
            if (eof || have == sizeof(buf)) break;
            continue;
        }
        *nl = 0;
        unsigned long lo, hi, off, inode;
        char perms[8] = "", path[32] = "";
        unsigned dmaj, dmin;
        int f = sscanf(buf, "%lx-%lx %7s %lx %x:%x %lu %31s", &lo, &hi, perms, &off, &dmaj, &dmin, &inode, path);
        if (f >= 7) {  // a VMA's header line
            wanted = perms[3] == 'p' && inode == 0 && (f == 7 || path[0] == 0) && lo < end && hi > start;
            vma_lo = lo;
            vma_hi = hi;
            vma_prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
                       (perms[2] == 'x' ? PROT_EXEC : 0);
        } else if (wanted && strncmp(buf, "VmFlags:", 8) == 0) {
            wanted = false;
            uint32_t flags = flags_from_vmflags(buf + 8);
            uintptr_t a = vma_lo > start ? vma_lo : start, b = vma_hi < end ? vma_hi : end;
            // Skip what is registered already; register the gaps.
            while (a < b) {
                Region* r = s.regions.find(a);
                if (r) { a = r->end; continue; }
                size_t i = s.regions.lower_bound(a);
                uintptr_t gap_end = i < s.regions.count() && s.regions[i].start < b ? s.regions[i].start : b;
                if (s.regions.insert(a, gap_end, vma_prot, flags, site)) {
                    s.stats.registered_bytes_total += gap_end - a;
                    g_registered_anything = true;
                }
                a = gap_end;
            }
        }
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, have - used);
        have -= used;
    }
    sys::close((int)fd);
}

// Pages per allocation site that are merged or given back as zero pages.
// Returns an array of kMaxSites counts (meta memory), or nullptr. Lock held.
uint64_t* count_duplicates_by_site(State& s) {
    if (!site_count()) return nullptr;
    uint64_t* per = static_cast<uint64_t*>(meta_alloc(sizeof(uint64_t) * kMaxSites));
    if (!per) return nullptr;
    for (size_t i = 0; i < s.regions.count(); ++i) {
        Region& r = s.regions[i];
        if (r.site >= kMaxSites) continue;
        uint64_t n = 0;
        for (size_t p = 0; p < r.pages(); ++p) n += has_slot(r.meta[p].state) || is_zero_freed(r.meta[p].state);
        per[r.site] += n;
    }
    return per;
}

// Per site, the most duplicate pages it ever had at one time: programs free
// their data before exit, and a site's peak is what the user wants to see.
// Sampled every second by the scanner and once more at exit.
uint64_t* g_site_peak = nullptr;

void note_site_peaks(const uint64_t* now) {
    if (!now) return;
    if (!g_site_peak) g_site_peak = static_cast<uint64_t*>(meta_alloc(sizeof(uint64_t) * kMaxSites));
    if (!g_site_peak) return;
    for (uint32_t i = 0; i < kMaxSites; ++i)
        if (now[i] > g_site_peak[i]) g_site_peak[i] = now[i];
}

// Fills the report's top sites (symbolised: spawns addr2line, so no lock).
void top_sites(uint64_t* per, Report* rep) {
    rep->nsites = 0;
    if (!per) return;
    // Sites that differ only below the frames shown print the same: add
    // them up under one line. Look at a few more than are shown.
    for (int tries = 0; tries < 4 * Report::kTopSites && rep->nsites < Report::kTopSites; ++tries) {
        uint32_t best = 0;
        for (uint32_t i = 0; i < kMaxSites; ++i)
            if (per[i] > (best ? per[best] : 0)) best = i;
        if (!per[best]) break;
        char text[sizeof(rep->site_text[0])];
        site_describe(best, 3, text, sizeof(text));
        int k = 0;
        while (k < rep->nsites && strcmp(rep->site_text[k], text) != 0) ++k;
        if (k == rep->nsites) {
            memcpy(rep->site_text[k], text, sizeof(text));
            rep->site_bytes[k] = 0;
            rep->nsites = k + 1;
        }
        rep->site_bytes[k] += per[best] * kPageSize;
        per[best] = 0;
    }
    meta_free(per, sizeof(uint64_t) * kMaxSites);
}

struct SavedRegion {
    uintptr_t start, end;
    int prot;
    uint32_t flags;
    PageMeta* meta;
    uint32_t site;
};

}  // namespace

bool rt_active() { return ensure_init(); }

long rt_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (!ensure_init()) return sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
    State& s = state();
    // libunwind's own caches, mapped while it captures a site, are not the
    // program's memory.
    bool reg = registrable(prot, flags, len) && !site_capture_in_progress();
    bool fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE);
    if (!reg && !fixed) {
        long r = sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
        if (r != -ENOMEM) return r;
        MmLockGuard g(s.lock);
        if (give_back_vmas(s, true)) r = sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
        return r;
    }
    uint32_t site = reg ? site_capture() : 0;  // outside the lock: unwinding may take libc locks
    long r;
    {
        MmLockGuard g(s.lock);
        r = sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
        if (r == -ENOMEM && give_back_vmas(s, true)) r = sys::call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
        if (sys::failed(r)) return r;
        uintptr_t start = (uintptr_t)r, end = start + round_up(len);
        forget_range(s, start, end);  // MAP_FIXED replaced whatever we knew there
        if (!reg) return r;
        uint32_t rf = 0;
        if ((flags & MAP_LOCKED) || g_mlock_future.load()) rf |= kRegExcluded;
        if (!s.regions.insert(start, end, prot, rf, site)) {
            log_warning("out of metadata memory; %zu bytes at %p not registered", len, (void*)r);
            return r;
        }
        s.regions.coalesce(start, end);
        s.stats.registered_bytes_total += end - start;
        g_registered_anything = true;
    }
    after_register();
    return r;
}

long rt_munmap(void* addr, size_t len) {
    if (!ensure_init()) return sys::munmap(addr, len);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::munmap(addr, len);
    if (r == -ENOMEM && give_back_vmas(s, true)) r = sys::munmap(addr, len);
    if (r == 0) forget_range(s, (uintptr_t)addr, (uintptr_t)addr + round_up(len));
    return r;
}

long rt_mprotect(void* addr, size_t len, int prot) {
    if (!ensure_init()) return sys::mprotect(addr, len, prot);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::mprotect(addr, len, prot);
    if (r == -ENOMEM && give_back_vmas(s, true)) r = sys::mprotect(addr, len, prot);
    uintptr_t start = (uintptr_t)addr, end = start + round_up(len);
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

long rt_madvise(void* addr, size_t len, int advice) {
    if (!ensure_init()) {
        if (advice == MADV_MERGEABLE || advice == MADV_UNMERGEABLE) {
            uintptr_t end;
            return check_madvise_range(addr, len, &end);
        }
        return sys::madvise(addr, len, advice);
    }
    State& s = state();
    uintptr_t start = (uintptr_t)addr, end = 0;
    switch (advice) {
        case MADV_MERGEABLE:
        case MADV_UNMERGEABLE: {
            long c = check_madvise_range(addr, len, &end);
            if (c != 0 || end == start) return c;
            long result = 0;
            uint32_t site = advice == MADV_MERGEABLE ? site_capture() : 0;
            {
                MmLockGuard g(s.lock);
                if (advice == MADV_MERGEABLE) register_unknown_anon(s, start, end, site);
                if (!s.regions.overlaps(start, end) || !s.regions.isolate(start, end)) return 0;
                if (advice == MADV_UNMERGEABLE) result = unmerge_range(s, start, end);
                for_regions(s, start, end, [&](Region& rg) {
                    if (advice == MADV_MERGEABLE) rg.flags = (rg.flags | kRegAdvised) & ~kRegUnmergeable;
                    else rg.flags = (rg.flags | kRegUnmergeable) & ~kRegAdvised;
                });
                s.regions.coalesce(start, end);
            }
            if (advice == MADV_MERGEABLE) after_register();
            return result;
        }
        case MADV_DONTNEED:
        case MADV_DONTNEED_LOCKED:
        case MADV_FREE: {
            // On a merged page these would bring back (DONTNEED) or refuse
            // (FREE) the canonical contents: make those pages fresh anonymous
            // memory first, so the application reads zeros as it expects.
            MmLockGuard g(s.lock);
            if ((start & kPageMask) == 0 && len && s.regions.overlaps(start, start + round_up(len)))
                zero_file_pages(s, start, start + round_up(len));
            long r = sys::madvise(addr, len, advice);
            return r;
        }
        case MADV_REMOVE: {
            MmLockGuard g(s.lock);
            // Registered memory is private anonymous, where MADV_REMOVE is EINVAL.
            if ((start & kPageMask) == 0 && len && s.regions.overlaps(start, start + round_up(len))) return -EINVAL;
            return sys::madvise(addr, len, advice);
        }
        case MADV_GUARD_INSTALL: {
            // A guard removed later must leave zero-fill pages, not the
            // canonical ones: make merged pages fresh anonymous memory first,
            // and forget the range's hashes (no pair merge reads a guard).
            MmLockGuard g(s.lock);
            end = start + round_up(len);
            if ((start & kPageMask) == 0 && len && s.regions.overlaps(start, end)) {
                zero_file_pages(s, start, end);
                for_regions(s, start, end, [&](Region& rg) {
                    uintptr_t a = start > rg.start ? start : rg.start, b = end < rg.end ? end : rg.end;
                    for (uintptr_t p = a; p < b; p += kPageSize) rg.at(p).hash32 = 0;
                });
            }
            return sys::madvise(addr, len, advice);
        }
        case MADV_COLLAPSE: {
            // Collapsing needs one anonymous VMA over each huge page: make
            // every region in the range one anonymous mapping again.
            MmLockGuard g(s.lock);
            end = start + round_up(len);
            if ((start & kPageMask) == 0 && len) prepare_collapse(s, start, end);
            return sys::madvise(addr, len, advice);
        }
        case MADV_WIPEONFORK: {
            // Does not work on a file mapping: give merged pages back first.
            MmLockGuard g(s.lock);
            end = start + round_up(len);
            bool ours = (start & kPageMask) == 0 && len && s.regions.overlaps(start, end);
            if (ours) unmerge_range(s, start, end);
            long r = sys::madvise(addr, len, advice);
            if (r == 0 && ours && s.regions.isolate(start, end)) {
                for_regions(s, start, end, [&](Region& rg) { rg.flags |= kRegExcluded; });
                s.regions.coalesce(start, end);
            }
            return r;
        }
        default: {
            bool set;
            uint32_t flag = flag_for_advice(advice, &set);
            MmLockGuard g(s.lock);
            long r = sys::madvise(addr, len, advice);
            end = start + round_up(len);
            if (r == 0 && (flag || advice == MADV_KEEPONFORK) && len && s.regions.overlaps(start, end) &&
                s.regions.isolate(start, end)) {
                for_regions(s, start, end, [&](Region& rg) {
                    if (advice == MADV_KEEPONFORK) rg.flags &= ~kRegExcluded;
                    else if (set) rg.flags |= flag;
                    else rg.flags &= ~flag;
                    // The kernel keeps one of each pair.
                    if (advice == MADV_HUGEPAGE) rg.flags &= ~kRegNohugepage;
                    if (advice == MADV_NOHUGEPAGE) rg.flags &= ~kRegHugepage;
                    if (advice == MADV_RANDOM) rg.flags &= ~kRegSequential;
                    if (advice == MADV_SEQUENTIAL) rg.flags &= ~kRegRandom;
                });
                s.regions.coalesce(start, end);
            }
            return r;
        }
    }
}

namespace {

// Whether a pidfd names this process: the PIDFD_SELF sentinels (6.15), or a
// pidfd whose PIDFD_GET_INFO says our thread group.
bool pidfd_is_self(int pidfd) {
    constexpr int kSelfThread = -10000, kSelfThreadGroup = -20000;
    if (pidfd == kSelfThread || pidfd == kSelfThreadGroup) return true;
    struct PidfdInfo {  // struct pidfd_info, PIDFD_INFO_SIZE_VER0
        uint64_t mask, cgroupid;
        uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid, spare0;
    } info;
    memset(&info, 0, sizeof(info));
    info.mask = 1;  // PIDFD_INFO_PID
    const unsigned long kGetInfo = _IOWR(0xFF, 11, PidfdInfo);
    if (sys::failed(sys::call(SYS_ioctl, pidfd, (long)kGetInfo, (long)&info))) return false;
    return (long)info.tgid == sys::getpid();
}

}  // namespace

long rt_process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags) {
    auto kernel = [&] { return sys::call(SYS_process_madvise, pidfd, (long)iov, (long)n, advice, flags); };
    // Of the advice process_madvise takes (COLD, PAGEOUT, WILLNEED,
    // COLLAPSE), only COLLAPSE fails on merged pieces: prepare as madvise does.
    if (advice != MADV_COLLAPSE || !iov || n > 1024 || !ensure_init() || !pidfd_is_self(pidfd)) return kernel();
    State& s = state();
    MmLockGuard g(s.lock);
    for (size_t i = 0; i < n; ++i) {
        uintptr_t a = (uintptr_t)iov[i].iov_base;
        if (a & kPageMask || !iov[i].iov_len) continue;
        prepare_collapse(s, a, a + round_up(iov[i].iov_len));
    }
    return kernel();
}

long rt_mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr) {
    auto kernel = [&] { return sys::mremap(old_addr, old_len, new_len, flags, new_addr); };
    if (!ensure_init()) return kernel();
    State& s = state();
    uintptr_t old_start = (uintptr_t)old_addr;
    if (old_start & kPageMask) return kernel();
    uintptr_t old_end = old_start + round_up(old_len);
    size_t new_rlen = round_up(new_len);
    MmLockGuard g(s.lock);
    bool fixed = flags & MREMAP_FIXED;
    uintptr_t nfix = (uintptr_t)new_addr;
    if (!s.regions.overlaps(old_start, old_end) && !(fixed && s.regions.overlaps(nfix, nfix + new_rlen)))
        return kernel();
    // A range we split into several VMAs by merging, or a fully merged range
    // (whose growth would map more of the memfd), must be one anonymous
    // mapping again before the kernel moves or grows it.
    bool moves_or_grows = fixed || new_rlen > old_end - old_start || (flags & MREMAP_DONTUNMAP);
    if (moves_or_grows && old_len) {
        Region* r = s.regions.find(old_start);
        bool has_file = false;
        for_regions(s, old_start, old_end, [&](Region& rg) {
            uintptr_t a = old_start > rg.start ? old_start : rg.start, b = old_end < rg.end ? old_end : rg.end;
            for (uintptr_t p = a; p < b && !has_file; p += kPageSize)
                has_file = in_file_vma(rg.at(p).state);
        });
        if (has_file && r && r->end >= old_end && s.regions.isolate(old_start, old_end)) {
            r = s.regions.find(old_start);
            long c = consolidate(s, *r, old_start, old_end);
            if (c != 0) return c;
        }
    }
    long res = kernel();
    if (sys::failed(res)) return res;
    uintptr_t dst = (uintptr_t)res;
    if (fixed) forget_range(s, dst, dst + new_rlen);  // whatever was at the target is gone
    if (!old_len) return res;                          // a shared-mapping duplicate: not ours
    // Move our records along with the mapping.
    uintptr_t keep_end = old_start + (new_rlen < old_end - old_start ? new_rlen : old_end - old_start);
    if (!s.regions.isolate(old_start, old_end) || !s.regions.split_at(keep_end)) {
        forget_range(s, old_start, old_end);
        return res;
    }
    // Save the records of the kept part.
    SavedRegion saved[64];
    size_t nsaved = 0;
    bool overflow = false;
    for_regions(s, old_start, keep_end, [&](Region& rg) {
        if (nsaved == 64) { overflow = true; return; }
        size_t bytes = rg.pages() * sizeof(PageMeta);
        PageMeta* copy = static_cast<PageMeta*>(meta_alloc(bytes));
        if (copy) memcpy(copy, rg.meta, bytes);
        else overflow = true;
        saved[nsaved++] = SavedRegion{rg.start, rg.end, rg.prot, rg.flags, copy, rg.site};
    });
    bool dontunmap = flags & MREMAP_DONTUNMAP;
    if (dst == old_start) {
        // In place: shrink drops the tail; growth adds an anonymous tail.
        forget_range(s, keep_end, old_end);
        if (new_rlen > old_end - old_start && nsaved) {
            const SavedRegion& last = saved[nsaved - 1];
            if (s.regions.insert(old_end, old_start + new_rlen, last.prot, last.flags, last.site))
                s.regions.coalesce(old_end, old_start + new_rlen);
        }
    } else {
        // Moved: the kept part's pages (and slot references) travel with it.
        s.regions.remove(old_start, keep_end, [](PageMeta&, uintptr_t) {});
        forget_range(s, keep_end, old_end);
        if (!overflow) {
            for (size_t i = 0; i < nsaved; ++i) {
                const SavedRegion& sv = saved[i];
                uintptr_t ns = dst + (sv.start - old_start), ne = dst + (sv.end - old_start);
                if (s.regions.insert(ns, ne, sv.prot, sv.flags, sv.site)) {
                    memcpy(s.regions.find(ns)->meta, sv.meta, (ne - ns) / kPageSize * sizeof(PageMeta));
                }
            }
            if (new_rlen > keep_end - old_start && nsaved) {
                const SavedRegion& last = saved[nsaved - 1];
                s.regions.insert(dst + (keep_end - old_start), dst + new_rlen, last.prot, last.flags, last.site);
            }
            s.regions.coalesce(dst, dst + new_rlen);
        }
        if (dontunmap && nsaved) {  // the old range stays mapped, now empty
            for (size_t i = 0; i < nsaved; ++i)
                if (s.regions.insert(saved[i].start, saved[i].end, saved[i].prot, saved[i].flags, saved[i].site))
                    s.regions.coalesce(saved[i].start, saved[i].end);
        }
    }
    for (size_t i = 0; i < nsaved; ++i) meta_free(saved[i].meta, (saved[i].end - saved[i].start) / kPageSize * sizeof(PageMeta));
    return res;
}

long rt_mlock(void* addr, size_t len, unsigned flags) {
    auto kernel = [&] {
        return flags ? sys::call(SYS_mlock2, (long)addr, (long)len, flags) : sys::call(SYS_mlock, (long)addr, (long)len);
    };
    if (!ensure_init()) return kernel();
    State& s = state();
    MmLockGuard g(s.lock);
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = round_up((uintptr_t)addr + len);
    bool ours = s.regions.overlaps(start, end);
    if (ours) unmerge_range(s, start, end);  // locked memory must be the program's own pages
    long r = kernel();
    if (r == 0 && ours && s.regions.isolate(start, end)) {
        for_regions(s, start, end, [&](Region& rg) { rg.flags |= kRegExcluded; });
        s.regions.coalesce(start, end);
    }
    return r;
}

long rt_munlock(void* addr, size_t len) {
    if (!ensure_init()) return sys::call(SYS_munlock, (long)addr, (long)len);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::call(SYS_munlock, (long)addr, (long)len);
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = round_up((uintptr_t)addr + len);
    if (r == 0 && s.regions.overlaps(start, end) && s.regions.isolate(start, end)) {
        for_regions(s, start, end, [&](Region& rg) { rg.flags &= ~kRegExcluded; });
        s.regions.coalesce(start, end);
    }
    return r;
}

long rt_mlockall(int flags) {
    if (!ensure_init()) return sys::call(SYS_mlockall, flags);
    State& s = state();
    MmLockGuard g(s.lock);
    if (flags & MCL_CURRENT) unmerge_range(s, 0, ~uintptr_t(0) & ~kPageMask);
    long r = sys::call(SYS_mlockall, flags);
    if (r == 0) {
        if (flags & MCL_CURRENT)
            for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegExcluded;
        if (flags & MCL_FUTURE) g_mlock_future.store(true);
    }
    return r;
}

long rt_munlockall() {
    if (!ensure_init()) return sys::call(SYS_munlockall);
    State& s = state();
    MmLockGuard g(s.lock);
    long r = sys::call(SYS_munlockall);
    if (r == 0) {
        for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags &= ~kRegExcluded;
        g_mlock_future.store(false);
    }
    return r;
}

bool rt_relieve_vma_pressure() {
    if (g_init.load() != kReady) return false;
    State& s = state();
    MmLockGuard g(s.lock);
    return give_back_vmas(s, false);
}

long rt_prctl_memory_merge(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5,
                           bool* handled) {
    constexpr int kSet = 67, kGet = 68;  // PR_SET_MEMORY_MERGE, PR_GET_MEMORY_MERGE
    *handled = (option == kSet || option == kGet) && ensure_init();
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
            unmerge_range(s, 0, ~uintptr_t(0) & ~kPageMask);
            for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags &= ~kRegAdvised;
            s.merge_all = false;
        }
    }
    if (a2) after_register();
    return 0;
}

long rt_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    if (ensure_init() && signal_is_managed(sig)) return app_sigaction(sig, act, old);
    return __sigaction(sig, act, old) == 0 ? 0 : -errno;
}

bool rt_owns_fd(int fd) {
    if (fd < 0 || g_init.load() != kReady) return false;
    for (KeptFile* f : kept_files().all)
        if (fd == f->fd()) return true;
    return fd == log_file_fd();
}

int rt_fds(int out[kMaxShimFds]) {
    if (g_init.load() != kReady) return 0;
    int n = 0;
    for (KeptFile* f : kept_files().all)
        if (f->fd() >= 0) out[n++] = f->fd();
    if (log_file_fd() >= 0) out[n++] = log_file_fd();
    for (int i = 1; i < n; ++i)
        for (int j = i; j > 0 && out[j - 1] > out[j]; --j) { int t = out[j]; out[j] = out[j - 1]; out[j - 1] = t; }
    return n;
}

void rt_vacate_fd(int fd) {
    if (!rt_owns_fd(fd)) return;
    State& s = state();
    MmLockGuard g(s.lock);
    for (KeptFile* f : kept_files().all) {
        if (fd == f->fd()) {  // reopened on demand
            f->close();
            return;
        }
    }
    if (fd == log_file_fd()) {
        long nfd = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
        if (!sys::failed(nfd)) nfd = park_fd((int)nfd);
        if (!sys::failed(nfd)) {
            log_set_file_fd((int)nfd);
            log_set_fd((int)nfd);
        } else {
            log_set_fd(-1);
        }
        sys::close(fd);
    }
}

namespace {

// Counters into rep; the caller holds the lock. Exact VMA count only when
// asked (it reads /proc/self/maps).
void collect(State& s, Report* rep, double cpu, bool exact_vmas) {
    rep->seconds = (double)(monotonic_ns() - s.start_ns) / 1e9;
    // Pages the scanner may merge: with DEDUP_SCOPE=advised, only advised
    // ranges count as registered (the others are tracked, not registered).
    uint64_t in_scope = 0;
    for (size_t i = 0; i < s.regions.count(); ++i)
        if (s.merge_all || (s.regions[i].flags & kRegAdvised)) in_scope += s.regions[i].pages();
    rep->pages_registered = in_scope;
    rep->pages_scanned = s.stats.pages_scanned.load();
    rep->full_scans = s.stats.full_scans.load();
    rep->pages_shared = s.store.slots_in_use();
    rep->pages_sharing = s.store.total_refs() - s.store.slots_in_use();
    rep->pages_unshared = s.stats.pages_unshared.load();
    rep->pages_volatile = s.stats.pages_volatile.load();
    rep->zero_pages = s.stats.zero_pages.load();
    rep->cow_breaks = s.stats.cow_breaks.load();
    rep->thp_splits = s.stats.thp_splits.load();
    rep->store_rotations = s.stats.store_rotations.load();
    rep->fork_kept_pages = s.store.fork_kept();
    rep->bytes_saved = bytes_saved_now(s);
    rep->bytes_saved_peak = s.stats.bytes_saved_peak.load();
    if (rep->bytes_saved > rep->bytes_saved_peak) rep->bytes_saved_peak = rep->bytes_saved;
    rep->merge_failures = s.stats.merge_failures.load();
    rep->vma_budget_skips = s.stats.vma_budget_skips.load();
    rep->pinned_skips = s.stats.pinned_skips.load();
    rep->merge_runs = s.stats.merge_runs.load();
    rep->pages_merged = s.stats.pages_merged.load();
    rep->unmerged_pages = s.stats.unmerged_pages.load();
    rep->registered_bytes_total = s.stats.registered_bytes_total.load();
    rep->scanner_cpu_seconds = cpu;
    rep->vmas_used = exact_vmas ? count_vmas() : s.vmas.estimate();
    rep->vma_limit = s.vmas.max_map_count();
    rep->metadata_bytes = meta_bytes_in_use();
}

void stats_path(const char* pattern, char* out, size_t cap) {
    const char* pp = strstr(pattern, "%p");
    if (pp) snprintf(out, cap, "%.*s%ld%s", (int)(pp - pattern), pattern, sys::getpid(), pp + 2);
    else snprintf(out, cap, "%s", pattern);
}

void live_path(char* out, size_t cap) { snprintf(out, cap, "/dev/shm/libdedup.%ld.json", sys::getpid()); }

// The live file is created unnamed (O_TMPFILE) with the other kept files,
// sized, mapped and written through the mapping; after its first write (a
// second in) it is given its name and its descriptor is closed. So a
// process that ends sooner, or by _exit, leaves nothing in /dev/shm, and no
// write of ours ever goes through a descriptor number the program might
// have reused for one of its own files. Lock held throughout.
constexpr size_t kLiveBytes = 16384;

bool open_live_file() {
    if (g_live.map) return true;
    KeptFile& f = kept_files().live;
    if (!f.ensure("/dev/shm", O_TMPFILE | O_RDWR, 0644)) return false;
    long err = 0;
    void* m = MAP_FAILED;
    if (!sys::failed(sys::call(SYS_ftruncate, f.fd(), (long)kLiveBytes)))
        m = sys::mmap(nullptr, kLiveBytes, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd(), 0, &err);
    if (m == MAP_FAILED) {
        f.close();
        return false;
    }
    sys::madvise(m, kLiveBytes, MADV_DONTFORK);  // a forked child must not write its parent's file
    memset(m, ' ', kLiveBytes);
    g_live.map = static_cast<char*>(m);
    g_live.linked_pid = 0;
    return true;
}

// Rewritten in place, padded with spaces (trailing spaces are valid JSON).
void write_live_file(const Report& rep) {
    if (!open_live_file()) return;
    char json[8192];
    size_t n = report_to_json(rep, json, sizeof(json));
    if (n == 0) return;
    memcpy(g_live.map, json, n);
    if (g_live.longest > n) memset(g_live.map + n, ' ', g_live.longest - n);
    if (n > g_live.longest) g_live.longest = n;
    long pid = sys::getpid();
    KeptFile& f = kept_files().live;
    if (g_live.linked_pid == pid || f.fd() < 0) return;
    char path[64], self[64];
    live_path(path, sizeof(path));
    snprintf(self, sizeof(self), "/proc/self/fd/%d", f.fd());
    sys::call(SYS_unlink, (long)path);  // a stale file of an earlier process with our pid
    if (!sys::failed(sys::call(SYS_linkat, AT_FDCWD, (long)self, AT_FDCWD, (long)path, AT_SYMLINK_FOLLOW)))
        g_live.linked_pid = pid;
    f.close();  // the mapping is all we need from now on
}

uint64_t g_live_last_ns = 0, g_interval_last_ns = 0;
uint64_t g_live_last_scanned = 0;
double g_live_last_cpu = 0;

}  // namespace

void rt_live_tick() {
    if (g_init.load() != kReady) return;
    const Config& cfg = config();
    uint64_t now = monotonic_ns();
    if (g_live_last_ns == 0) g_live_last_ns = now;  // first file after a second: short processes leave none
    bool live_due = now - g_live_last_ns >= 1000 * 1000000ull;
    bool interval_due = cfg.stats_interval_ms && now - g_interval_last_ns >= cfg.stats_interval_ms * 1000000ull;
    if (!live_due && !interval_due) return;
    State& s = state();
    Report rep;
    memset(&rep, 0, sizeof(rep));
    double cpu = scanner_cpu_seconds();
    uint64_t* per_site = nullptr;
    {
        MmLockGuard g(s.lock);
        collect(s, &rep, cpu, false);
        if (live_due) {
            per_site = count_duplicates_by_site(s);
            write_live_file(rep);
            g_live_last_ns = now;
        }
    }
    if (per_site) {
        note_site_peaks(per_site);
        meta_free(per_site, sizeof(uint64_t) * kMaxSites);
    }
    if (interval_due) {
        double dt = g_interval_last_ns ? (double)(now - g_interval_last_ns) / 1e9 : rep.seconds;
        if (dt <= 0) dt = 1e-9;
        log_line("live: t=%.1f s, saved %.1f MiB, sharing %llu, shared %llu, zero %llu, volatile %llu, scan %.0f pages/s, scanner CPU %.1f%% (%.2f s)",
                 rep.seconds, (double)rep.bytes_saved / (1 << 20), (unsigned long long)rep.pages_sharing,
                 (unsigned long long)rep.pages_shared, (unsigned long long)rep.zero_pages,
                 (unsigned long long)rep.pages_volatile, (double)(rep.pages_scanned - g_live_last_scanned) / dt,
                 100.0 * (cpu - g_live_last_cpu) / dt, cpu);
        g_live_last_scanned = rep.pages_scanned;
        g_live_last_cpu = cpu;
        g_interval_last_ns = now;
        if (cfg.stats_file[0] && sys::getpid() == g_original_pid) {
            char path[300];
            stats_path(cfg.stats_file, path, sizeof(path));
            report_write_file(rep, path);
        }
    }
}

void rt_shutdown() {
    if (g_init.load() != kReady) return;
    State& s = state();
    double cpu = scanner_cpu_seconds();
    scanner_stop();
    const Config& cfg = config();
    Report rep;
    memset(&rep, 0, sizeof(rep));
    uint64_t* per_site = nullptr;
    {
        MmLockGuard g(s.lock);
        collect(s, &rep, cpu, true);
        per_site = count_duplicates_by_site(s);
    }
    note_site_peaks(per_site);
    if (per_site && g_site_peak) memcpy(per_site, g_site_peak, sizeof(uint64_t) * kMaxSites);
    top_sites(per_site, &rep);
    char live[64];
    live_path(live, sizeof(live));
    {
        MmLockGuard g(s.lock);
        if (g_live.linked_pid == sys::getpid()) sys::call(SYS_unlink, (long)live);
        kept_files().live.close();
    }
    bool child = sys::getpid() != g_original_pid;
    // Short-lived helpers (shells, compilers' drivers) would drown the log in
    // empty summaries: report when something was saved or a lot registered.
    bool worth = rep.bytes_saved_peak > 0 || rep.registered_bytes_total >= (16u << 20);
    if (g_registered_anything && worth && (!child || rep.pages_scanned)) report_to_log(rep);
    if (cfg.stats_file[0]) {
        char path[300];
        stats_path(cfg.stats_file, path, sizeof(path));
        // A forked child writes only to a per-pid path, never over its parent's file.
        if (!child || strstr(cfg.stats_file, "%p")) {
            long w = report_write_file(rep, path);
            if (w != 0) log_warning("DEDUP_STATS_FILE='%s' could not be written (%s)", path, strerror((int)-w));
        }
    }
}

}  // namespace dedup
