#include "scanner/merge_engine.h"

#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "scanner/kernel_write_guard.h"
#include "scanner/log.h"
#include "scanner/sys.h"

#ifdef DEDUP_BROKEN_MERGE
// Test-only build (build/libdedup-broken.so): skips the write protection, so
// a write between compare and remap is lost. Proves the race test can fail.
#define DEDUP_WRITE_PROTECT 0
#else
#define DEDUP_WRITE_PROTECT 1
#endif

namespace dedup {
namespace {

constexpr size_t kMaxBatch = 512;  // one 2 MiB huge page
constexpr uintptr_t kHugeSize = 2u << 20;
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmFile = 1ull << 61;  // file page or shared anonymous
constexpr int kRW = PROT_READ | PROT_WRITE;

enum class Act { kNone, kZero, kToSlot, kPair };

struct Action {
    Act kind = Act::kNone;
    uint32_t slot = 0;          // kToSlot
    uintptr_t cand = 0;         // kPair: the earlier page with the same content
    Region* cand_region = nullptr;
};

struct Run {
    Act kind = Act::kNone;
    uintptr_t start = 0;
    size_t n = 0;
    uint32_t first_slot = 0;
    uintptr_t cand = 0;
    Region* cand_region = nullptr;
    uint64_t hashes[kMaxBatch];
};

uint32_t hash32(uint64_t h) {
    uint32_t v = (uint32_t)h;
    return v ? v : 1;
}

bool page_is_zero(const void* p) {
    const uint64_t* w = static_cast<const uint64_t*>(p);
    uint64_t acc = 0;
    for (size_t i = 0; i < kPageSize / 8; i += 8)
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
    return acc == 0;
}

void* page(uintptr_t a) { return reinterpret_cast<void*>(a); }

// PAGEMAP_SCAN (Linux 6.7): which ranges are mapped by huge pages.
struct PageRegion {
    uint64_t start, end, categories;
};
struct PmScanArg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
        category_anyof_mask, return_mask;
};
constexpr uint64_t kPageIsHuge = 1ull << 6;

bool may_be_huge(const State& s, const Region& r) {
    return !(r.flags & kRegNohugepage) && (s.thp_always || (r.flags & kRegHugepage));
}

// The huge pages that changing [a, a+len) would split: those mapped as one
// 2 MiB page that the range covers only in part. A merge over a whole
// aligned huge page replaces it without splitting.
uint64_t thp_splits_for(State& s, const Region& r, uintptr_t a, size_t len) {
    if (!may_be_huge(s, r) || !open_pagemap()) return 0;
    uintptr_t lo = a & ~(kHugeSize - 1), hi = (a + len + kHugeSize - 1) & ~(kHugeSize - 1);
    PageRegion vec[4];
    PmScanArg arg = {sizeof(PmScanArg), 0, lo, hi, 0, (uint64_t)(uintptr_t)vec, 4, 0, 0, 0, kPageIsHuge, kPageIsHuge};
    const unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
    long n = sys::call(SYS_ioctl, kept_files().pagemap.fd(), (long)kPagemapScan, (long)&arg);
    uint64_t splits = 0;
    for (long i = 0; i < n; ++i)
        for (uintptr_t h = vec[i].start & ~(kHugeSize - 1); h < vec[i].end; h += kHugeSize)
            if (h + kHugeSize > a && h < a + len && !(a <= h && h + kHugeSize <= a + len)) ++splits;
    return splits;
}

}  // namespace

bool open_pagemap() { return kept_files().pagemap.ensure("/proc/self/pagemap", O_RDONLY); }

bool read_pagemap(uintptr_t addr, size_t n, uint64_t* out) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!open_pagemap()) return false;
        if (kept_files().pagemap.pread(out, n * 8, (off_t)(addr / kPageSize * 8)) == (long)(n * 8)) return true;
        kept_files().pagemap.close();
    }
    return false;
}

namespace {

// Opens a write-protect window over [a, a+len). The seq bump lets the fault
// handler recognise faults that a window explains.
bool protect(State& s, uintptr_t a, size_t len, int app_prot) {
    s.window_seq.fetch_add(1, std::memory_order_release);
    if (!DEDUP_WRITE_PROTECT) return true;
    int ro = (app_prot & ~PROT_WRITE) | PROT_READ;
    return !sys::failed(sys::mprotect(page(a), len, ro));
}

// Closes the window: the application's protection comes back on every page
// of the range, whatever happened in between. Retried because leaving a page
// read-only would crash the application on its next write. `remapped`: the
// whole range was just replaced by a mapping that already has app_prot, so
// the mprotect would change nothing (one syscall a merge saved).
void restore(State& s, uintptr_t a, size_t len, int app_prot, bool remapped = false) {
    if (DEDUP_WRITE_PROTECT && !remapped) {
        long r = 0;
        for (int i = 0; i < 1000; ++i) {
            r = sys::mprotect(page(a), len, app_prot);
            if (!sys::failed(r)) break;
        }
        if (sys::failed(r))
            log_warning("could not restore protection of %p+%zu (errno %ld)", page(a), len, -r);
    }
    s.window_seq.fetch_add(1, std::memory_order_release);
}

void release_slot_ref(State& s, uint32_t slot) {
    if (s.store.unref(slot)) forget_slot_entry(s, slot);
}

void note_saving(State& s) {
    uint64_t now = bytes_saved_now(s);
    uint64_t peak = s.stats.bytes_saved_peak.load(std::memory_order_relaxed);
    if (now > peak) s.stats.bytes_saved_peak.store(now, std::memory_order_relaxed);
}

// Decides what to do with a present private page whose hash is h. Has side
// effects (remembering the hash, inserting a candidate) only when it returns
// kNone, so it may be asked again after the pending run was flushed.
Action choose(State& s, uintptr_t addr, PageMeta& m, uint64_t h) {
    Action a;
    PageIndex::Entry* e = s.index.find(h);
    if (e && PageIndex::is_slot(e->value())) {
        uint32_t slot = PageIndex::slot_id(e->value());
        if (s.store.hash(slot) == h && s.store.refs(slot) > 0) {
            a.kind = Act::kToSlot;  // equals a canonical page: merge on first look, as KSM's stable tree
            a.slot = slot;
            return a;
        }
    }
    if (m.hash32 != hash32(h)) {  // first look, or changed since: volatile
        if (m.hash32) ++s.stats.pass_volatile;
        m.hash32 = hash32(h);
        return a;
    }
    if (h == s.zero_hash && !in_file_vma(m.state)) {
        a.kind = Act::kZero;
        return a;
    }
    if (e && PageIndex::is_candidate(e->value()) && s.store.ensure_ready()) {
        uintptr_t c = PageIndex::candidate_addr(e->value());
        if (c != addr) {
            Region* cr = s.regions.find(c);
            if (cr && region_mergeable(s, *cr)) {
                PageMeta& cm = cr->at(c);
                if (!has_slot(cm.state) && !is_zero_freed(cm.state) && cm.hash32 == hash32(h)) {
                    a.kind = Act::kPair;
                    a.cand = c;
                    a.cand_region = cr;
                    return a;
                }
            }
        }
    }
    s.index.put(h, PageIndex::candidate_value(addr));
    ++s.stats.pass_unshared;
    return a;
}

bool extends(const Run& run, const Action& a, uintptr_t addr) {
    if (run.kind != a.kind || run.n == 0 || addr != run.start + run.n * kPageSize) return false;
    switch (a.kind) {
        case Act::kZero: return true;
        case Act::kToSlot: return a.slot == run.first_slot + run.n;
        case Act::kPair: {
            if (a.cand_region != run.cand_region || a.cand != run.cand + run.n * kPageSize) return false;
            uintptr_t cend = a.cand + kPageSize, pend = addr + kPageSize;
            return cend <= run.start || run.cand >= pend;  // the two ranges must not overlap
        }
        case Act::kNone: return false;
    }
    return false;
}

// VMAs a merged piece [a, a+len) of r keeps: one for each side where it
// cuts an anonymous VMA in two. A side next to a merged page is already a
// VMA boundary; a side at the region's edge is counted (a neighbouring VMA
// may have merged with the region's), and so is a piece that lies in a
// memfd VMA already (written since its merge, or moving to a new store):
// it may cut that VMA on both sides. 2 was charged for every merge; in a
// scattered layout half the merges are next to another merged page, and
// the overcharged estimate stopped merging early.
uint64_t vma_cost(Region& r, uintptr_t a, size_t len) {
    uintptr_t b = a + len;
    for (uintptr_t p = a; p < b; p += kPageSize)
        if (in_file_vma(r.at(p).state)) return 2;
    uint64_t left = a == r.start || !in_file_vma(r.at(a - kPageSize).state);
    uint64_t right = b == r.end || !in_file_vma(r.at(b).state);
    return left + right;
}

// The batch window: one write-protect window opened by the first zero or
// slot run of a batch and closed when the batch ends, so that the runs
// after it need no mprotect of their own. A scattered layout has one page a
// run, and a window's mprotect, with its two splits and merges of the VMA,
// was a third of a merge's syscalls and most of a zero page's. The window
// reaches no further than the batch's last page likely to be merged
// (`limit`), nor past the next page already merged, and closes early at a
// page the program is changing. The mm lock is held for the whole batch,
// so a write into the window waits in the fault handler as for any window.
// Only the scanner thread, under the lock, uses it.
struct BatchWindow {
    Region* r = nullptr;       // the batch's region (nullptr: not in a batch)
    uintptr_t limit = 0;       // the window never reaches past this address
    uintptr_t start = 0, end = 0;  // the open window (start == end: none)
};
BatchWindow g_batch;

bool in_batch_window(const Region& r, uintptr_t start, size_t len) {
    return g_batch.r == &r && g_batch.start <= start && start + len <= g_batch.end;
}

void close_batch_window(State& s) {
    if (g_batch.start != g_batch.end) {
        restore(s, g_batch.start, g_batch.end - g_batch.start, g_batch.r->prot);
        kw_window_close();
    }
    g_batch.start = g_batch.end = 0;
}

// Steps before a one-range merge: VMA budget, the kernel-write window,
// write protection. False (counted, nothing left changed) if the run cannot
// be merged now; true means the caller must close_run_window().
bool open_run_window(State& s, Region& r, uintptr_t start, size_t n, Act kind) {
    size_t len = n * kPageSize;
    // A merge keeps the VMAs vma_cost() counts (none between two merged
    // pages). Giving back zero pages keeps none: inside the batch window it
    // splits nothing, and its own window's pieces merge again when it
    // closes, so it may use the reserve for that moment: every zero page is
    // given back however many VMAs the merges hold.
    uint64_t cost = kind == Act::kZero ? 0 : vma_cost(r, start, len);
    bool fits = cost == 0 || s.vmas.can_afford(cost);
    if (in_batch_window(r, start, len) && fits) return true;
    bool afford = kind == Act::kZero ? s.vmas.can_afford_briefly(2) : fits;
    if (!afford) { s.stats.pass_budget_skips += n; return false; }
    uint64_t splits = thp_splits_for(s, r, start, len);
    // Zero pages inside a huge page are most often a huge page being
    // filled: giving back 4 KiB of it would cost the whole huge page.
    if (splits && kind == Act::kZero) return false;
    // Open the batch window here if the batch goes on past this run; not
    // over huge pages (it would split them), and not over a buffer a
    // syscall is writing into (then this run gets a window of its own).
    close_batch_window(s);
    uintptr_t end = start + len;
    // The batch window stays inside this anonymous VMA: it ends before the
    // next page already merged, since changing the protection of every
    // memfd piece of a fragmented region twice cost more (244 us an
    // mprotect at the VMA budget) than the windows it saved.
    uintptr_t window_end = end;
    if (g_batch.r == &r && !may_be_huge(s, r))
        while (window_end < g_batch.limit && !in_file_vma(r.at(window_end).state)) window_end += kPageSize;
    if (window_end > end && kw_window_open(start, window_end - start, 0, 0)) {
        end = window_end;
    } else if (!kw_window_open(start, len, 0, 0)) {
        ++s.stats.pinned_skips;
        return false;
    }
    s.stats.thp_splits += splits;
    if (!protect(s, start, end - start, r.prot)) {
        ++s.stats.merge_failures;
        restore(s, start, end - start, r.prot);
        kw_window_close();
        return false;
    }
    if (end != start + len) {
        g_batch.start = start;
        g_batch.end = end;
    }
    return true;
}

// After a run opened with open_run_window: closes its window, unless the
// batch window holds it (that closes when the batch ends).
void close_run_window(State& s, Region& r, uintptr_t start, size_t len, bool remapped) {
    if (in_batch_window(r, start, len)) return;
    restore(s, start, len, r.prot, remapped);
    kw_window_close();
}

// Whether a merged piece of slot comes mapped with r's protection already.
bool remaps_with_app_prot(const State& s, const Region& r, uint32_t slot) {
    return r.prot == kRW && s.store.maps_writable(slot);
}

void merge_zero_run(State& s, Region& r, const Run& run) {
    size_t len = run.n * kPageSize;
    if (!open_run_window(s, r, run.start, run.n, Act::kZero)) return;
    size_t k = 0;
    while (k < run.n && page_is_zero(page(run.start + k * kPageSize))) ++k;
    if (k && !sys::failed(sys::madvise(page(run.start), k * kPageSize, MADV_DONTNEED))) {
        for (size_t i = 0; i < k; ++i) {
            PageMeta& m = r.at(run.start + i * kPageSize);
            m.state = kZeroFreed;
            m.hash32 = 0;
        }
        s.stats.zero_pages += k;
        s.stats.pass_zero_freed += k;
    } else if (k) {
        ++s.stats.merge_failures;
    }
    close_run_window(s, r, run.start, len, false);
    note_saving(s);
}

void merge_slot_run(State& s, Region& r, const Run& run) {
    merge_onto_slots(s, r, run.start, run.n, run.first_slot);
}

}  // namespace

long merge_onto_slots(State& s, Region& r, uintptr_t start, size_t n, uint32_t first_slot) {
    size_t len = n * kPageSize;
    if (!open_run_window(s, r, start, n, Act::kToSlot)) return -1;
    size_t k = 0;
    while (k < n && memcmp(page(start + k * kPageSize), s.store.content(first_slot + (uint32_t)k), kPageSize) == 0)
        ++k;
    bool remapped = false;
    if (k) {
        uint64_t cost = vma_cost(r, start, k * kPageSize);  // before the pages change state
        if (s.store.map_run(start, first_slot, k)) {
            remapped = k == n && remaps_with_app_prot(s, r, first_slot);
            for (size_t i = 0; i < k; ++i) {
                PageMeta& m = r.at(start + i * kPageSize);
                if (has_slot(m.state)) release_slot_ref(s, slot_of(m.state));  // moving off a retiring slot
                m.state = merged_state(first_slot + (uint32_t)i);
                s.store.ref(first_slot + (uint32_t)i);
            }
            reapply_flags(r.flags, start, k * kPageSize);
            s.vmas.spent(cost);
            s.stats.pages_merged += k;
            ++s.stats.merge_runs;
        } else {
            ++s.stats.merge_failures;
            k = 0;
        }
    }
    close_run_window(s, r, start, len, remapped);
    note_saving(s);
    return (long)k;
}

void release_slot(State& s, uint32_t slot) { release_slot_ref(s, slot); }

void forget_slot_entry(State& s, uint32_t slot) {
    uint64_t h = s.store.hash(slot);
    PageIndex::Entry* e = s.index.find(h);
    if (e && PageIndex::is_slot(e->value()) && PageIndex::slot_id(e->value()) == slot) s.index.erase(h);
}

namespace {

void merge_pair_run(State& s, Region& r, const Run& run) {
    size_t len = run.n * kPageSize;
    Region& cr = *run.cand_region;
    close_batch_window(s);  // a pair run has two windows of its own
    if (!s.vmas.can_afford(4)) { s.stats.pass_budget_skips += 2 * run.n; return; }
    if (!kw_window_open(run.start, len, run.cand, len)) { ++s.stats.pinned_skips; return; }
    int64_t first = s.store.alloc_run((uint32_t)run.n);
    if (first < 0) { ++s.stats.merge_failures; kw_window_close(); return; }
    s.stats.thp_splits += thp_splits_for(s, r, run.start, len) + thp_splits_for(s, cr, run.cand, len);
    bool ok = protect(s, run.start, len, r.prot);
    bool cok = ok && protect(s, run.cand, len, cr.prot);
    size_t used = 0;
    bool remapped = false, cremapped = false;
    if (ok && cok) {
        size_t k = 0;
        while (k < run.n) {
            uintptr_t pa = run.start + k * kPageSize, ca = run.cand + k * kPageSize;
            if (memcmp(page(pa), page(ca), kPageSize) != 0) break;
            uint64_t h = page_hash(page(pa));  // the page is stable now; hash what we store
            if (h != run.hashes[k]) break;
            s.store.fill((uint32_t)first + (uint32_t)k, page(pa), h);
            ++k;
        }
        if (k) {
            if (s.store.map_run(run.start, (uint32_t)first, k)) {
                used = k;
                remapped = k == run.n && remaps_with_app_prot(s, r, (uint32_t)first);
                for (size_t i = 0; i < k; ++i) {
                    uint32_t slot = (uint32_t)first + (uint32_t)i;
                    r.at(run.start + i * kPageSize).state = merged_state(slot);
                    s.store.ref(slot);
                    s.index.put(run.hashes[i], PageIndex::slot_value(slot));
                }
                reapply_flags(r.flags, run.start, k * kPageSize);
                s.vmas.spent(2);
                s.stats.pages_merged += k;
                ++s.stats.merge_runs;
                if (s.store.map_run(run.cand, (uint32_t)first, k)) {
                    cremapped = k == run.n && remaps_with_app_prot(s, cr, (uint32_t)first);
                    for (size_t i = 0; i < k; ++i) {
                        cr.at(run.cand + i * kPageSize).state = merged_state((uint32_t)first + (uint32_t)i);
                        s.store.ref((uint32_t)first + (uint32_t)i);
                    }
                    reapply_flags(cr.flags, run.cand, k * kPageSize);
                    s.vmas.spent(2);
                    s.stats.pages_merged += k;
                    ++s.stats.merge_runs;
                } else {
                    ++s.stats.merge_failures;
                }
            } else {
                ++s.stats.merge_failures;
            }
        }
    } else {
        ++s.stats.merge_failures;
    }
    if (cok || ok) restore(s, run.cand, len, cr.prot, cremapped);
    restore(s, run.start, len, r.prot, remapped);
    kw_window_close();
    for (size_t i = used; i < run.n; ++i) s.store.release_unused((uint32_t)first + (uint32_t)i);
    note_saving(s);
}

void flush(State& s, Region& r, Run& run) {
    switch (run.kind) {
        case Act::kZero: merge_zero_run(s, r, run); break;
        case Act::kToSlot: merge_slot_run(s, r, run); break;
        case Act::kPair: merge_pair_run(s, r, run); break;
        case Act::kNone: break;
    }
    run.kind = Act::kNone;
    run.n = 0;
}

void start_run(Run& run, const Action& a, uintptr_t addr, uint64_t h) {
    run.kind = a.kind;
    run.start = addr;
    run.n = 1;
    run.first_slot = a.slot;
    run.cand = a.cand;
    run.cand_region = a.cand_region;
    run.hashes[0] = h;
}

}  // namespace

uint64_t page_hash(const void* p) { return XXH3_64bits(p, kPageSize); }

bool region_mergeable(const State& s, const Region& r) {
    if (r.flags & kRegExcluded) return false;
    if (r.prot != kRW) return false;
    return s.merge_all ? !(r.flags & kRegUnmergeable) : (r.flags & kRegAdvised) != 0;
}

void reapply_flags(uint32_t flags, uintptr_t start, size_t len) {
#ifdef DEDUP_BROKEN_DROP_FLAGS
    // Test-only: a fresh mapping keeps none of the program's advice. The
    // advice matrix test must catch this.
    (void)flags, (void)start, (void)len;
    return;
#endif
    if (flags & kRegDontfork) sys::madvise(page(start), len, MADV_DONTFORK);
    if (flags & kRegDontdump) sys::madvise(page(start), len, MADV_DONTDUMP);
    if (flags & kRegHugepage) sys::madvise(page(start), len, MADV_HUGEPAGE);
    if (flags & kRegNohugepage) sys::madvise(page(start), len, MADV_NOHUGEPAGE);
    if (flags & kRegRandom) sys::madvise(page(start), len, MADV_RANDOM);
    if (flags & kRegSequential) sys::madvise(page(start), len, MADV_SEQUENTIAL);
}

void forget_page(State& s, PageMeta& m) {
    if (has_slot(m.state)) release_slot_ref(s, slot_of(m.state));
    else if (is_zero_freed(m.state)) --s.stats.zero_pages;
    m.state = 0;
    m.hash32 = 0;
}

namespace {

// Whether the page, looked at now with hash h, will most likely be acted on
// in this batch: it equals a canonical page, or it is stable and zero or
// has a candidate to pair with. Only bounds the batch window.
bool likely_action(State& s, const PageMeta& m, uint64_t h) {
    PageIndex::Entry* e = s.index.find(h);
    if (e && PageIndex::is_slot(e->value())) return true;
    if (m.hash32 != hash32(h)) return false;
    return h == s.zero_hash || (e && PageIndex::is_candidate(e->value()));
}

}  // namespace

size_t scan_batch(State& s, Region& r, uintptr_t from, size_t max_pages) {
    size_t n = (r.end - from) / kPageSize;
    if (may_be_huge(s, r)) {
        // Batches (and so runs) end on 2 MiB boundaries, whatever the budget
        // says, so that a huge page of duplicates merges in one run.
        size_t to_boundary = (((from | (kHugeSize - 1)) + 1) - from) / kPageSize;
        if (n > to_boundary) n = to_boundary;
    } else if (n > max_pages) {
        n = max_pages;
    }
    if (n > kMaxBatch) n = kMaxBatch;
    if (n == 0) return 0;
    uint64_t pm[kMaxBatch];
    // Without pagemap we cannot tell untouched pages (reading them would
    // allocate memory here: no zero page) from present ones: skip.
    if (!read_pagemap(from, n, pm)) return n;
    // First the bookkeeping and the hashes of the whole batch, so that the
    // batch window can end at the last page likely to be acted on: pages
    // the program is writing past it are never write-protected, and no
    // hashing happens while the window is open.
    static uint64_t hashes[kMaxBatch];  // only the scanner thread, under the lock, uses these
    static bool looked[kMaxBatch];
    size_t likely_end = 0;  // pages [0, likely_end) may be covered by the batch window
    for (size_t i = 0; i < n; ++i) {
        uintptr_t addr = from + i * kPageSize;
        PageMeta& m = r.at(addr);
        bool present = pm[i] & kPmPresent, file = pm[i] & kPmFile;
        bool look = true;
        if (has_slot(m.state)) {
            if (present && !file) {  // written since the merge: the kernel made a private copy
                release_slot_ref(s, slot_of(m.state));
                m.state = kFileVma;
                m.hash32 = 0;
                ++s.stats.cow_breaks;
            }
            look = false;  // merged, or just broken: look again next pass
        } else if (is_zero_freed(m.state)) {
            if (present) {  // read or written since it was given back
                --s.stats.zero_pages;
                m.state = 0;
                m.hash32 = 0;
            } else {
                look = false;
            }
        }
        looked[i] = look && present && !file;
        if (!looked[i]) continue;
        hashes[i] = page_hash(page(addr));
        ++s.stats.pages_scanned;
        if (likely_action(s, m, hashes[i])) likely_end = i + 1;
    }
    static Run run;
    run.kind = Act::kNone;
    run.n = 0;
    g_batch.r = &r;
    g_batch.limit = from + likely_end * kPageSize;
    for (size_t i = 0; i < n; ++i) {
        uintptr_t addr = from + i * kPageSize;
        PageMeta& m = r.at(addr);
        Action a;
        uint64_t h = hashes[i];
        if (looked[i]) {
            // A page the program changed since the last look: it is writing
            // here, so the batch window closes rather than stand in its way.
            if (m.hash32 && m.hash32 != hash32(h)) {
                flush(s, r, run);
                close_batch_window(s);
            }
            a = choose(s, addr, m, h);
        }
        if (a.kind == Act::kNone) {
            flush(s, r, run);
            continue;
        }
        if (extends(run, a, addr)) {
            run.hashes[run.n++] = h;
            continue;
        }
        if (run.kind != Act::kNone) {
            flush(s, r, run);
            a = choose(s, addr, m, h);  // the flush may have made a canonical page for it
            if (a.kind == Act::kNone) continue;
        }
        start_run(run, a, addr, h);
    }
    flush(s, r, run);
    close_batch_window(s);
    g_batch.r = nullptr;
    s.store.flush_punches();
    return n;
}

namespace {

// Calls fn(region, a, e) for each run [a, e) of pages inside [start, end)
// that live in a memfd VMA, runs at most max_bytes long; stops early if fn
// returns false. Frees punched slots at the end.
template <typename F>
void for_each_file_run(State& s, uintptr_t start, uintptr_t end, size_t max_bytes, F&& fn) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i) {
        Region& r = s.regions[i];
        uintptr_t a = start > r.start ? start : r.start;
        uintptr_t b = end < r.end ? end : r.end;
        while (a < b) {
            if (!in_file_vma(r.at(a).state)) { a += kPageSize; continue; }
            uintptr_t e = a;
            while (e < b && in_file_vma(r.at(e).state) && e - a < max_bytes) e += kPageSize;
            if (!fn(r, a, e)) break;
            a = e;
        }
    }
    s.store.flush_punches();
}

}  // namespace

long unmerge_range(State& s, uintptr_t start, uintptr_t end) {
    long result = 0;
    // Runs of at most 64 MiB: the copy doubles the run's memory briefly.
    for_each_file_run(s, start, end, 64u << 20, [&](Region& r, uintptr_t a, uintptr_t e) {
        size_t len = e - a;
        long err = 0;
        void* tmp = sys::mmap(nullptr, len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, &err);
        if (tmp == MAP_FAILED) {
            result = -err;
            return false;
        }
        // Block writers while copying; keep reads (and exec) working.
        int ro = (r.prot & ~PROT_WRITE) | PROT_READ;
        s.window_seq.fetch_add(1, std::memory_order_release);
        bool ok = !sys::failed(sys::mprotect(page(a), len, ro));
        if (ok) {
            memcpy(tmp, page(a), len);
            if (r.prot != kRW) sys::mprotect(tmp, len, r.prot);
            ok = !sys::failed(sys::mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, page(a)));
        }
        if (ok) {
            reapply_flags(r.flags, a, len);
            for (uintptr_t p = a; p < e; p += kPageSize) {
                PageMeta& m = r.at(p);
                if (has_slot(m.state)) release_slot_ref(s, slot_of(m.state));
                m.state = 0;
                m.hash32 = 0;
            }
            s.stats.unmerged_pages += len / kPageSize;
        } else {
            sys::munmap(tmp, len);
            sys::mprotect(page(a), len, r.prot);
            result = -12;  // ENOMEM, as the kernel reports a failed unmerge
        }
        s.window_seq.fetch_add(1, std::memory_order_release);
        return true;
    });
    return result;
}

long zero_file_pages(State& s, uintptr_t start, uintptr_t end) {
    long result = 0;
    for_each_file_run(s, start, end, ~size_t(0), [&](Region& r, uintptr_t a, uintptr_t e) {
        long err = 0;
        void* p = sys::mmap(page(a), e - a, r.prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0, &err);
        if (p == MAP_FAILED) {
            result = -err;
        } else {
            reapply_flags(r.flags, a, e - a);
            for (uintptr_t q = a; q < e; q += kPageSize) forget_page(s, r.at(q));
        }
        return true;
    });
    return result;
}

uint64_t bytes_saved_now(State& s) {
    uint64_t sharing = s.store.total_refs() - s.store.slots_in_use();
    return (sharing + s.stats.zero_pages.load(std::memory_order_relaxed)) * kPageSize;
}

}  // namespace dedup
