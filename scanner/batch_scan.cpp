#include "scanner/batch_scan.h"

#include <setjmp.h>

#include "scanner/large_bss.h"
#include "scanner/merge.h"
#include "scanner/os/proc.h"
#include "scanner/registration.h"

namespace dedup {
namespace {

constexpr uintptr_t kHugeSize = 2u << 20;

struct Action {
    Act kind = Act::kNone;
    uint32_t slot = 0;   // kToSlot
    uintptr_t cand = 0;  // kPair: the earlier page with the same content
    Region* cand_region = nullptr;
};

void* page(uintptr_t a) { return reinterpret_cast<void*>(a); }

// A zero page looked at for the first time (not one that changed since its
// last look, nor one touched again after it was given back), once a stable
// zero page was given back in this process: given back at once, as a page
// equal to a canonical page is merged at its first look. Kernel KSM does the
// same with its default use_zero_pages=0, where zero content is a node of its
// stable tree. In the scattered bench layout the zero pages otherwise waited
// a whole extra pass over 196,000 fragmented VMAs (a sixth of the CPU to 99%).
bool first_look_zero(const State& s, const PageMeta& m, uint64_t h) {
    return h == s.zero_hash && m.hash32 == 0 && s.zero_given_back && !in_file_vma(m.state);
}

// Decides what to do with a present private page whose hash is h. Has side
// effects (remembering the hash, inserting a candidate) only when it returns
// kNone, so it may be asked again after the pending run was merged.
Action choose(State& s, uintptr_t addr, PageMeta& m, uint64_t h) {
    Action a;
    uint32_t slot;
    if (find_canonical(s, h, &slot)) {
        a.kind = Act::kToSlot;  // equals a canonical page: merge on first look, as KSM's stable tree
        a.slot = slot;
        return a;
    }
    if (first_look_zero(s, m, h)) {
        a.kind = Act::kZero;
        return a;
    }
    PageIndex::Entry* e = s.index.find(h);
    if (!same_fingerprint(m, h)) {  // first look, or changed since: volatile (back-off level 0)
        if (m.hash32) ++s.stats.pass_volatile;
        else ++s.stats.pass_first_looks;
        m.hash32 = fingerprint_of(h);
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
                if (!has_slot(cm.state) && !is_zero_freed(cm.state) && same_fingerprint(cm, h)) {
                    a.kind = Act::kPair;
                    a.cand = c;
                    a.cand_region = cr;
                    return a;
                }
            }
        }
    }
    // A merge domain: another member saw a stable page with this content.
    if (s.store.in_domain() && !in_file_vma(m.state) && s.store.ensure_ready() && s.domain.hint(h)) {
        a.kind = Act::kPublish;
        return a;
    }
    s.index.put(h, PageIndex::candidate_value(addr));
    ++s.stats.pass_unshared;
    // Unchanged and unique again: looked at half as often. Not a zero page
    // (one in a memfd VMA cannot be given back, but stays cheap to find),
    // nor any page that was ever merged.
    if (m.state == 0 && h != s.zero_hash) backoff_climb(m);
    return a;
}

// Whether the page, looked at now with hash h, will most likely be acted on
// in this batch: it equals a canonical page, or it is stable and zero or
// has a candidate to pair with. Only bounds the batch window.
bool likely_action(State& s, const PageMeta& m, uint64_t h) {
    uint32_t slot;
    if (find_canonical(s, h, &slot) || first_look_zero(s, m, h)) return true;
    PageIndex::Entry* e = s.index.find(h);
    if (!same_fingerprint(m, h)) return false;
    return h == s.zero_hash || (e && PageIndex::is_candidate(e->value()));
}

bool extends(const Run& run, const Action& a, uintptr_t addr) {
    if (run.kind != a.kind || run.n == 0 || addr != run.start + run.n * kPageSize) return false;
    switch (a.kind) {
        case Act::kZero:
        case Act::kPublish: return true;
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

void start_run(Run& run, const Action& a, uintptr_t addr, uint64_t h) {
    run.kind = a.kind;
    run.start = addr;
    run.n = 1;
    run.first_slot = a.slot;
    run.cand = a.cand;
    run.cand_region = a.cand_region;
    run.hashes[0] = h;
}

void flush(State& s, Region& r, Run& run) {
    merge_run(s, r, run);
    run.kind = Act::kNone;
    run.n = 0;
}

// The batch's pages, up to the next 2 MiB boundary in a region that may hold
// huge pages (so that a huge page of duplicates merges in one run).
size_t batch_pages(const State& s, const Region& r, uintptr_t from, size_t max_pages) {
    size_t n = (r.end - from) / kPageSize;
    if (may_be_huge(s, r)) {
        size_t to_boundary = (((from | (kHugeSize - 1)) + 1) - from) / kPageSize;
        if (n > to_boundary) n = to_boundary;
    } else if (n > max_pages) {
        n = max_pages;
    }
    return n > kMaxBatch ? kMaxBatch : n;
}

// In a merge domain two members may publish the same content at the same
// moment: the slot with the lowest id is the canonical one (merge.cpp), and a
// page merged onto another moves onto it; the duplicate is freed when its
// last page has moved. *h gets the content's hash.
bool duplicate_canonical(State& s, const PageMeta& m, uint64_t* h) {
    if (!s.store.in_domain()) return false;
    uint32_t mine = slot_of(m.state), other;
    *h = s.store.hash(mine);
    return *h && find_canonical(s, *h, &other) && other < mine;
}

// Backing off unique pages (KSM's smart scan). A page found unchanged and
// unique (it became a candidate and nothing paired with it) climbs one
// back-off level, up to kMaxBackoff; at level L it is hashed only in its
// look passes (page_meta.h: the passes whose number is a multiple of 2^L)
// and passed over unhashed in the others. A look that finds another
// fingerprint puts it back to level 0 (the volatile rule in choose()), and
// so does anything that forgets the hash (a merge, a zero page given back
// or touched again, a copy-on-write break, advice).
//
// Two pages are both looked at in every look pass of the one at the higher
// level: a unique page that gains a duplicate later pairs with it at its
// next look, at most kBackoffPeriod passes after the duplicate was first
// seen stable. A page equal to a canonical page made in this process is
// looked at within kBackoffPeriod passes too. Content that another member
// of a merge domain published is looked for sooner: the scanner looks at
// every page for a full pass after learning new domain slots
// (scan_look_at_everything).
uint64_t g_look_at_everything_until = 0;  // pass number

uint64_t current_pass(const State& s) { return s.stats.full_scans.load(std::memory_order_relaxed); }

// Whether this pass may pass over the page unhashed: private content never
// merged (not zero-freed, no slot, not in a memfd VMA), looked at before,
// backed off, and this is not one of its look passes.
bool backed_off(const PageMeta& m, uint64_t pass) {
    if (m.state != 0 || backoff(m) == 0 || pass < g_look_at_everything_until) return false;
    return !backoff_look_pass(m, pass);
}

// Only the scanner thread, under the lock, uses these.
DEDUP_LARGE_BSS uint64_t g_hashes[kMaxBatch];
bool g_looked[kMaxBatch];
DEDUP_LARGE_BSS Run g_run;

// The bookkeeping and the hashes of the whole batch, before any window opens:
// copy-on-write breaks and zero pages touched since they were given back are
// noticed, and present private pages are hashed. Returns the end of the
// pages likely to be acted on, so that the batch window stops there: pages
// the program writes past it are never write-protected.
size_t look_at_batch(State& s, Region& r, uintptr_t from, size_t n, const uint64_t* pm) {
    size_t likely_end = 0;
    uint64_t pass = current_pass(s);
    for (size_t i = 0; i < n; ++i) {
        uintptr_t addr = from + i * kPageSize;
        PageMeta& m = r.at(addr);
        bool present = pm[i] & kPmPresent, file = pm[i] & kPmFile;
        bool look = true;
        if (has_slot(m.state)) {
            if (present && !file) {
                note_cow_break(s, m);  // written since the merge: a private copy
            } else if (duplicate_canonical(s, m, &g_hashes[i])) {
                g_looked[i] = true;  // merges onto the other slot (its content is the slot's)
                if (likely_action(s, m, g_hashes[i])) likely_end = i + 1;
                continue;
            }
            look = false;  // merged, or just broken: look again next pass
        } else if (is_zero_freed(m.state)) {
            if (present) {  // read or written since it was given back
                --s.stats.zero_pages;
                m.state = 0;
                // In use again: not a first look (first_look_zero), so it is
                // given back again only once it is seen unchanged.
                m.hash32 = fingerprint_of(~s.zero_hash);
            } else {
                look = false;
            }
        }
        g_looked[i] = look && present && !file && !backed_off(m, pass);
        if (!g_looked[i]) continue;
        g_hashes[i] = page_hash(page(addr));
        ++s.stats.pages_scanned;
        if (likely_action(s, m, g_hashes[i])) likely_end = i + 1;
    }
    return likely_end;
}

// Set while the scanner reads the program's pages outside any window: a
// page the program made unreadable with a raw mprotect syscall (or unmapped
// with a raw munmap) faults, and the SIGSEGV handler jumps back here instead
// of killing the process (scan_recover_from_fault).
__thread sigjmp_buf* t_read_guard = nullptr;

// look_at_batch, surviving a page that cannot be read: false then (the
// batch is skipped and the registry takes the kernel's protection).
bool look_at_batch_guarded(State& s, Region& r, uintptr_t from, size_t n, const uint64_t* pm, size_t* likely_end) {
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        t_read_guard = nullptr;
        request_protection_resync(s, from, from + n * kPageSize);
        return false;
    }
    t_read_guard = &jb;
    *likely_end = look_at_batch(s, r, from, n, pm);
    t_read_guard = nullptr;
    return true;
}

}  // namespace

void scan_look_at_everything(State& s) { g_look_at_everything_until = current_pass(s) + 2; }

bool scan_recover_from_fault() {
    sigjmp_buf* jb = t_read_guard;
    if (!jb) return false;
    t_read_guard = nullptr;
    siglongjmp(*jb, 1);
}

size_t scan_batch(State& s, Region& r, uintptr_t from, size_t max_pages) {
    size_t n = batch_pages(s, r, from, max_pages);
    if (n == 0) return 0;
    // Backed-off pages first (unique pages between their look passes):
    // nothing to hash, nothing to merge, no copy-on-write to notice (they
    // were never merged). The batch after them starts at the next page that
    // needs a look.
    uint64_t pass = current_pass(s);
    size_t off = 0;
    while (off < n && backed_off(r.at(from + off * kPageSize), pass)) ++off;
    if (off) return off;
    uint64_t pm[kMaxBatch];
    // Without pagemap we cannot tell untouched pages (reading them would
    // allocate memory) from present ones: skip.
    if (!read_pagemap(from, n, pm)) return n;
    size_t likely_end = 0;
    if (!look_at_batch_guarded(s, r, from, n, pm, &likely_end)) return n;
    Run& run = g_run;
    run.kind = Act::kNone;
    run.n = 0;
    batch_begin(r, from + likely_end * kPageSize);
    for (size_t i = 0; i < n; ++i) {
        uintptr_t addr = from + i * kPageSize;
        PageMeta& m = r.at(addr);
        Action a;
        uint64_t h = g_hashes[i];
        if (g_looked[i]) {
            // A page the program changed since the last look: it is writing
            // here, so the batch window closes rather than stand in its way.
            if (m.hash32 && !same_fingerprint(m, h)) {
                flush(s, r, run);
                batch_window_close(s);
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
    batch_end(s);
    s.store.flush_punches();
    return n;
}

}  // namespace dedup
