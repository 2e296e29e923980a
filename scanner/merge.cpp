#include "scanner/merge.h"

#include <string.h>
#include <new>
#include <sys/mman.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/write_window.h"
#include "scanner/zero_giveback.h"

namespace dedup {
namespace {

constexpr uintptr_t kHugeSize = 2u << 20;
constexpr int kRW = PROT_READ | PROT_WRITE;

void* page(uintptr_t a) { return reinterpret_cast<void*>(a); }

bool page_is_zero(const void* p) {
    const uint64_t* w = static_cast<const uint64_t*>(p);
    uint64_t acc = 0;
    for (size_t i = 0; i < kPageSize / 8; i += 8)
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
    return acc == 0;
}

// The huge pages that changing [a, a+len) would split: those mapped as one
// 2 MiB page that the range covers only in part. A merge over a whole
// aligned huge page replaces it without splitting.
uint64_t thp_splits_for(State& s, const Region& r, uintptr_t a, size_t len) {
    if (!may_be_huge(s, r)) return 0;
    uintptr_t lo = a & ~(kHugeSize - 1), hi = (a + len + kHugeSize - 1) & ~(kHugeSize - 1);
    uintptr_t ranges[4][2];
    long n = pagemap_huge_ranges(lo, hi, ranges, 4);
    uint64_t splits = 0;
    for (long i = 0; i < n; ++i)
        for (uintptr_t h = ranges[i][0] & ~(kHugeSize - 1); h < ranges[i][1]; h += kHugeSize)
            if (h + kHugeSize > a && h < a + len && !(a <= h && h + kHugeSize <= a + len)) ++splits;
    return splits;
}

// VMAs a merged piece [a, a+len) of r keeps: one for each side where it
// cuts an anonymous VMA in two. A side next to a merged page is already a
// VMA boundary; a side at the region's edge is counted (a neighbouring VMA
// may have merged with the region's), and so is a piece that lies in a
// memfd VMA already (written since its merge, or moving to a new store): it
// may cut that VMA on both sides. Charging 2 for every merge overestimated
// scattered layouts by a quarter and stopped them early.
uint64_t vma_cost(Region& r, uintptr_t a, size_t len) {
    uintptr_t b = a + len;
    for (uintptr_t p = a; p < b; p += kPageSize)
        if (in_file_vma(r.at(p).state)) return 2;
    uint64_t left = a == r.start || !in_file_vma(r.at(a - kPageSize).state);
    uint64_t right = b == r.end || !in_file_vma(r.at(b).state);
    return left + right;
}

// Whether a merged piece of slot comes mapped with r's protection already.
bool remaps_with_app_prot(const State& s, const Region& r, uint32_t slot) {
    return r.prot == kRW && s.store.maps_writable(slot);
}

void release_slot_ref(State& s, uint32_t slot) {
    if (s.store.unref(slot)) forget_slot_entry(s, slot);
}

// ---- the batch window ----------------------------------------------------------
// One write window opened by the first zero or slot run of a batch and closed
// when the batch ends, so that the runs after it need no mprotect of their
// own. In a scattered layout (one page a run) a window's mprotect, with its
// two splits and merges of the VMA, was a third of a merge's system calls and
// most of a zero page's. It never reaches past the batch's last page likely
// to be merged (`limit`), nor past the next page already merged (changing
// the protection of every memfd piece of a fragmented region twice cost more,
// 244 us an mprotect at the VMA budget, than the windows it saved), and it
// closes early at a page the program is changing. Not over huge pages (it
// would split them). The mm lock is held for the whole batch, so a write
// into it waits in the fault handler as for any window. Only the scanner
// thread, under the lock, uses it.
struct BatchWindow {
    Region* r = nullptr;  // the batch's region (nullptr: not in a batch)
    uintptr_t limit = 0;
    WriteWindow window;
};
// Never destroyed: exit() runs static destructors before the library's
// destructor stops the scanner, so ~WriteWindow would close a window of the
// batch in flight from the exiting thread, restoring protection and
// unpublishing it under the scanner. Every batch closes it at its end
// anyway. Built in place at first use, under the mm lock: a global with a
// destructor (even an empty one) is registered with atexit at load, in
// every process, and its code faulted in at exit.
alignas(BatchWindow) unsigned char g_batch_storage[sizeof(BatchWindow)];
bool g_batch_built = false;
BatchWindow& batch_window() {
    if (__builtin_expect(!g_batch_built, 0)) {
        new (g_batch_storage) BatchWindow();
        g_batch_built = true;
    }
    return *reinterpret_cast<BatchWindow*>(g_batch_storage);
}

// Counts why a window over [a, b) did not open; a protection the program
// changed behind the shim's back is taken into the registry after the batch.
void window_failed(State& s, const WriteWindow& w, uintptr_t a, uintptr_t b) {
    if (w.gave_up_for_pin()) ++s.stats.pinned_skips;
    else if (w.protection_changed()) request_protection_resync(s, a, b);
    else ++s.stats.merge_failures;
}

// The window a one-range run [start, start+n pages) of kind uses: the batch
// window if it covers the run, else one opened now (the batch window, if
// the batch goes on past the run, or `own`). Checks the VMA budget first.
// nullptr (counted) if the run cannot be merged now.
WriteWindow* open_run_window(State& s, Region& r, uintptr_t start, size_t n, Act kind, WriteWindow& own) {
    BatchWindow& batch = batch_window();
    size_t len = n * kPageSize;
    // A merge keeps the VMAs vma_cost() counts. Giving back zero pages keeps
    // none: inside the batch window it splits nothing, and its own window's
    // pieces merge again when it closes, so it may use the reserve for that
    // moment: every zero page is given back however many VMAs merges hold.
    uint64_t cost = kind == Act::kZero ? 0 : vma_cost(r, start, len);
    bool fits = cost == 0 || s.vmas.can_afford(cost);
    if (batch.r == &r && batch.window.covers(start, len) && fits) return &batch.window;
    bool afford = kind == Act::kZero ? s.vmas.can_afford_briefly(2) : fits;
    if (!afford) {
        s.stats.pass_budget_skips += n;
        return nullptr;
    }
    uint64_t splits = thp_splits_for(s, r, start, len);
    // Zero pages inside a huge page are most often a huge page being
    // filled: giving back 4 KiB of it would cost the whole huge page.
    if (splits && kind == Act::kZero) return nullptr;
    batch_window_close(s);
    uintptr_t end = start + len, window_end = end;
    if (batch.r == &r && !may_be_huge(s, r))
        while (window_end < batch.limit && !in_file_vma(r.at(window_end).state)) window_end += kPageSize;
    WriteWindow* w = nullptr;
    // The batch window if the batch goes on past this run, and for zero pages
    // of a batch in any case: they go back with the batch's others when it
    // closes (zero_giveback.h).
    if (window_end > end || (kind == Act::kZero && batch.r == &r)) {
        if (batch.window.open(start, window_end - start, r.prot)) {
            w = &batch.window;
        } else if (!batch.window.gave_up_for_pin()) {
            window_failed(s, batch.window, start, window_end);
            return nullptr;
        }  // else a syscall writes into the rest of the batch: this run alone
    }
    if (!w) {
        if (!own.open(start, len, r.prot)) {
            window_failed(s, own, start, end);
            return nullptr;
        }
        w = &own;
    }
    s.stats.thp_splits += splits;
    return w;
}

// Under the batch window the verified zero pages wait for it to close and
// go back with the batch's others in one call; under a window of their own
// they go now.
void merge_zero_run(State& s, Region& r, const Run& run) {
    WriteWindow own;
    WriteWindow* w = open_run_window(s, r, run.start, run.n, Act::kZero, own);
    if (!w) return;
    size_t k = 0;
    while (k < run.n && page_is_zero(page(run.start + k * kPageSize))) ++k;
    if (k && !(w == &batch_window().window && zero_give_back_later(r, run.start, k)) &&
        !zero_give_back_now(s, r, run.start, k))
        ++s.stats.merge_failures;
    own.close();
    note_saving(s);
}

// Maps slots [first, first+k) over [start, start+k pages) of r and does the
// bookkeeping; false if the mapping failed (nothing changed).
bool map_onto_slots(State& s, Region& r, uintptr_t start, size_t k, uint32_t first, uint64_t cost) {
    if (!s.store.map_run(start, first, k)) {
        ++s.stats.merge_failures;
        return false;
    }
    for (size_t i = 0; i < k; ++i) {
        PageMeta& m = r.at(start + i * kPageSize);
        if (has_slot(m.state)) release_slot_ref(s, slot_of(m.state));  // moving off a retiring slot
        m.state = merged_state(first + (uint32_t)i);
        s.store.ref(first + (uint32_t)i);
    }
    reapply_flags(r.flags, start, k * kPageSize);
    s.vmas.spent(cost);
    s.stats.pages_merged += k;
    ++s.stats.merge_runs;
    return true;
}

void merge_pair_run(State& s, Region& r, const Run& run) {
    size_t len = run.n * kPageSize;
    Region& cr = *run.cand_region;
    batch_window_close(s);  // a pair run has a window of its own over both runs
    if (!s.vmas.can_afford(4)) {
        s.stats.pass_budget_skips += 2 * run.n;
        return;
    }
    int64_t first = s.store.alloc_run((uint32_t)run.n);
    if (first < 0) {
        ++s.stats.merge_failures;
        return;
    }
    // Before the window: its mprotect splits the huge pages it covers in part.
    uint64_t splits = thp_splits_for(s, r, run.start, len) + thp_splits_for(s, cr, run.cand, len);
    WriteWindow w;
    size_t used = 0;
    if (w.open_pair(run.start, len, r.prot, run.cand, len, cr.prot)) {
        s.stats.thp_splits += splits;
        size_t k = 0;
        while (k < run.n) {
            uintptr_t pa = run.start + k * kPageSize, ca = run.cand + k * kPageSize;
            if (memcmp(page(pa), page(ca), kPageSize) != 0) break;
            uint64_t h = page_hash(page(pa));  // the page is stable now: hash what we store
            if (h != run.hashes[k]) break;
            s.store.fill((uint32_t)first + (uint32_t)k, page(pa), h);
            ++k;
        }
        if (k && map_onto_slots(s, r, run.start, k, (uint32_t)first, 2)) {
            used = k;
            if (k == run.n && remaps_with_app_prot(s, r, (uint32_t)first)) w.replaced(run.start, len);
            for (size_t i = 0; i < k; ++i) publish_canonical(s, run.hashes[i], (uint32_t)first + (uint32_t)i);
            if (map_onto_slots(s, cr, run.cand, k, (uint32_t)first, 2) && k == run.n &&
                remaps_with_app_prot(s, cr, (uint32_t)first))
                w.replaced(run.cand, len);
        }
    } else {
        window_failed(s, w, run.start, run.start + len);
        if (w.protection_changed()) request_protection_resync(s, run.cand, run.cand + len);
    }
    w.close();
    for (size_t i = used; i < run.n; ++i) s.store.release_unused((uint32_t)first + (uint32_t)i);
    note_saving(s);
}

// A merge domain: pages of this process that another member also has (the
// domain's hint table says so) become canonical pages: copied into new
// slots and remapped onto them under one window, then published, so that
// the other member's pages merge onto them at its next look.
void merge_publish_run(State& s, Region& r, const Run& run) {
    size_t len = run.n * kPageSize;
    batch_window_close(s);
    if (!s.vmas.can_afford(2)) {
        s.stats.pass_budget_skips += run.n;
        return;
    }
    int64_t first = s.store.alloc_run((uint32_t)run.n);
    if (first < 0) {
        ++s.stats.merge_failures;
        return;
    }
    uint64_t splits = thp_splits_for(s, r, run.start, len);
    WriteWindow w;
    size_t k = 0;
    if (w.open(run.start, len, r.prot)) {
        s.stats.thp_splits += splits;
        // The pages are stable now: what is stored is what is hashed again.
        while (k < run.n && page_hash(page(run.start + k * kPageSize)) == run.hashes[k]) {
            s.store.fill((uint32_t)first + (uint32_t)k, page(run.start + k * kPageSize), run.hashes[k]);
            ++k;
        }
        if (k && map_onto_slots(s, r, run.start, k, (uint32_t)first, vma_cost(r, run.start, k * kPageSize))) {
            if (k == run.n && remaps_with_app_prot(s, r, (uint32_t)first)) w.replaced(run.start, len);
            for (size_t i = 0; i < k; ++i) publish_canonical(s, run.hashes[i], (uint32_t)first + (uint32_t)i);
        } else {
            k = 0;
        }
    } else {
        window_failed(s, w, run.start, run.start + len);
    }
    w.close();
    for (size_t i = k; i < run.n; ++i) s.store.release_unused((uint32_t)first + (uint32_t)i);
    note_saving(s);
}

}  // namespace

uint64_t page_hash(const void* p) { return XXH3_64bits(p, kPageSize); }

bool region_mergeable(const State& s, const Region& r) {
    if (r.flags & (kRegExcluded | kRegLeftAlone)) return false;
    if (r.prot != kRW) return false;
    return s.merge_all ? !(r.flags & kRegUnmergeable) : (r.flags & kRegAdvised) != 0;
}

bool may_be_huge(const State& s, const Region& r) {
    return !(r.flags & kRegNohugepage) && (s.thp_always || (r.flags & kRegHugepage));
}

long merge_onto_slots(State& s, Region& r, uintptr_t start, size_t n, uint32_t first_slot, const uint64_t* hashes) {
    // A domain's slots are taken before the compare: then no member can free
    // them under it. A slot freed and filled again since it was looked up
    // has another hash, and the run ends before it.
    size_t taken = 0;
    while (taken < n && s.store.take(first_slot + (uint32_t)taken,
                                     hashes ? hashes[taken] : s.store.hash(first_slot + (uint32_t)taken)))
        ++taken;
    n = taken;
    if (n == 0) return -1;
    size_t len = n * kPageSize;
    WriteWindow own;
    WriteWindow* w = open_run_window(s, r, start, n, Act::kToSlot, own);
    if (!w) {
        for (size_t i = 0; i < n; ++i) s.store.release_unused(first_slot + (uint32_t)i);
        return -1;
    }
    size_t k = 0;
    while (k < n && memcmp(page(start + k * kPageSize), s.store.content(first_slot + (uint32_t)k), kPageSize) == 0)
        ++k;
    // vma_cost before the pages change state
    if (k && !map_onto_slots(s, r, start, k, first_slot, vma_cost(r, start, k * kPageSize))) k = 0;
    if (k == n && remaps_with_app_prot(s, r, first_slot)) w->replaced(start, len);
    own.close();
    for (size_t i = k; i < n; ++i) s.store.release_unused(first_slot + (uint32_t)i);
    note_saving(s);
    return (long)k;
}

bool find_canonical(State& s, uint64_t hash, uint32_t* slot) {
    PageIndex::Entry* e = s.index.find(hash);
    if (!e || !PageIndex::is_slot(e->value())) return false;
    *slot = PageIndex::slot_id(e->value());
    // A domain's slot this member learned of may have been freed since (and
    // filled again): the domain's slot table says.
    if (s.store.in_domain()) return s.domain.hash(*slot) == hash;
    return s.store.hash(*slot) == hash && s.store.refs(*slot) > 0;
}

namespace {
// In a domain, two members may publish the same content at once: the slot
// with the lowest id is the canonical one, and every member's index names
// it (pages on the others move onto it: batch_scan.cpp).
void index_slot(State& s, uint64_t hash, uint32_t slot) {
    PageIndex::Entry* e = s.index.find(hash);
    bool keep = s.store.in_domain() && e && PageIndex::is_slot(e->value()) && PageIndex::slot_id(e->value()) < slot &&
                s.domain.hash(PageIndex::slot_id(e->value())) == hash;
    if (!keep) s.index.put(hash, PageIndex::slot_value(slot));
}
}  // namespace

void publish_canonical(State& s, uint64_t hash, uint32_t slot) {
    if (s.store.in_domain()) s.domain.publish(slot, hash);
    index_slot(s, hash, slot);
}

void learn_domain_slots(State& s, bool all) {
    s.domain.learn(all, [](uint64_t h, uint32_t slot, void* ctx) { index_slot(*static_cast<State*>(ctx), h, slot); }, &s);
}

void merge_run(State& s, Region& r, const Run& run) {
    switch (run.kind) {
        case Act::kZero: merge_zero_run(s, r, run); break;
        case Act::kToSlot: merge_onto_slots(s, r, run.start, run.n, run.first_slot, run.hashes); break;
        case Act::kPair: merge_pair_run(s, r, run); break;
        case Act::kPublish: merge_publish_run(s, r, run); break;
        case Act::kNone: break;
    }
}

void batch_begin(Region& r, uintptr_t limit) {
    BatchWindow& batch = batch_window();
    batch.r = &r;
    batch.limit = limit;
}

// The zero pages queued under the window go first (zero_giveback.h): they
// stay write-protected until they are gone.
void batch_window_close(State& s) {
    zero_giveback_flush(s);
    batch_window().window.close();
}

void batch_end(State& s) {
    batch_window_close(s);
    batch_window().r = nullptr;
}

void release_slot(State& s, uint32_t slot) { release_slot_ref(s, slot); }

void note_cow_break(State& s, PageMeta& m) {
    release_slot_ref(s, slot_of(m.state));
    m.state = kFileVma;
    m.hash32 = 0;
    ++s.stats.cow_breaks;
}

void forget_slot_entry(State& s, uint32_t slot) {
    if (s.store.in_domain()) return;  // other members may still use it: entries go stale, checked when used
    uint64_t h = s.store.hash(slot);
    PageIndex::Entry* e = s.index.find(h);
    if (e && PageIndex::is_slot(e->value()) && PageIndex::slot_id(e->value()) == slot) s.index.erase(h);
}

void forget_page(State& s, PageMeta& m) {
    if (has_slot(m.state)) release_slot_ref(s, slot_of(m.state));
    else if (is_zero_freed(m.state)) --s.stats.zero_pages;
    m.state = 0;
    m.hash32 = 0;
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

void note_saving(State& s) {
    uint64_t now = bytes_saved_now(s);
    uint64_t peak = s.stats.bytes_saved_peak.load(std::memory_order_relaxed);
    if (now > peak) s.stats.bytes_saved_peak.store(now, std::memory_order_relaxed);
}

uint64_t bytes_saved_now(State& s) {
    uint64_t sharing = s.store.total_refs() - s.store.slots_in_use();
    return (sharing + s.stats.zero_pages.load(std::memory_order_relaxed)) * kPageSize;
}

}  // namespace dedup
