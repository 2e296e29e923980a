#include "scanner/unmerge.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "scanner/merge.h"
#include "scanner/os/clock.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {

constexpr int kRW = PROT_READ | PROT_WRITE;
// One step of an unmerge: the span of one write window, and the most extra
// memory an unmerge needs at a time (its copy, before the old pages go).
constexpr size_t kChunk = 2u << 20;
constexpr size_t kChunkPages = kChunk / kPageSize;

void* page(uintptr_t a) { return reinterpret_cast<void*>(a); }

// Calls fn(region, a, e) for each run [a, e) of pages inside [start, end)
// that live in a memfd VMA; stops early if fn returns false.
template <typename F>
void for_each_file_run(State& s, uintptr_t start, uintptr_t end, F&& fn) {
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && s.regions[i].start < end; ++i) {
        Region& r = s.regions[i];
        uintptr_t a = start > r.start ? start : r.start;
        uintptr_t b = end < r.end ? end : r.end;
        while (a < b) {
            if (!in_file_vma(r.at(a).state)) {
                a += kPageSize;
                continue;
            }
            uintptr_t e = a;
            while (e < b && in_file_vma(r.at(e).state)) e += kPageSize;
            if (!fn(r, a, e)) return;
            a = e;
        }
    }
}

// Copies the pages of [p, p+len) of r that hold data into dst: present or
// swapped pages, memfd pages (a read would show the canonical content), and
// every page when pagemap cannot tell. The others read as zero, as dst does.
void copy_chunk(Region& r, uintptr_t p, size_t len, char* dst) {
    uint64_t pm[kChunkPages];
    size_t n = len / kPageSize;
    bool have = read_pagemap(p, n, pm);
    for (size_t i = 0; i < n; ++i) {
        uintptr_t q = p + i * kPageSize;
        if (!have || (pm[i] & (3ull << 62)) || in_file_vma(r.at(q).state)) memcpy(dst + (q - p), page(q), kPageSize);
    }
}

// A scratch mapping of len bytes, or nullptr when the address space has no
// room for one.
char* scratch_mapping(size_t len) {
    long err = 0;
    void* p = sys::mmap(nullptr, len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, &err);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

// [a, e) of r as anonymous memory, a chunk at a time (see unmerge.h), each
// chunk copied through whole + (p - a) when whole (a scratch mapping for the
// range, so that its pieces become one VMA again) is given, else through a
// mapping of its own. Returns 0, or -errno with *done the end of what was
// done: -EAGAIN when it gave up for a syscall writing into the next chunk.
// The caller unmaps what is left of whole.
long rewrite_through(State& s, Region& r, uintptr_t a, uintptr_t e, char* whole, WriteWindow::IfPinned if_pinned,
                     uintptr_t* done) {
    *done = a;
    long err = 0;
    long result = 0;
    uintptr_t p = a;
    while (p < e) {
        size_t len = e - p < kChunk ? e - p : kChunk;
        // The protection the kernel has (the program may have changed it with
        // a raw syscall): the copy gets it, chunk by chunk along its VMAs.
        int prot = r.prot;
        uintptr_t vs, ve;
        if (vma_at(p, &vs, &ve, &prot) && vs <= p && ve > p && ve - p < len) len = ve - p;
        char* dst = whole ? whole + (p - a)
                          : static_cast<char*>(sys::mmap(nullptr, len, kRW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, &err));
        if (dst == MAP_FAILED) {
            result = -ENOMEM;
            break;
        }
        WriteWindow w;
        if (!w.open(p, len, prot, if_pinned)) {
            if (!whole) sys::munmap(dst, len);
            result = w.gave_up_for_pin() ? -EAGAIN : -ENOMEM;
            break;
        }
        copy_chunk(r, p, len, dst);
        if (prot != kRW) sys::mprotect(dst, len, prot);
        if (sys::failed(sys::mremap(dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, page(p)))) {
            if (!whole) sys::munmap(dst, len);
            result = -ENOMEM;
            break;  // the window restores the program's protection
        }
        w.replaced(p, len);  // the piece has the program's protection already
        reapply_flags(r.flags, p, len);
        for (uintptr_t q = p; q < p + len; q += kPageSize) forget_page(s, r.at(q));
        s.store.flush_punches();  // canonical pages go as their last user goes
        w.close();
        p += len;
        *done = p;
    }
    return result;
}

// rewrite_through with one scratch mapping for the whole range.
long rewrite_anonymous(State& s, Region& r, uintptr_t a, uintptr_t e, WriteWindow::IfPinned if_pinned,
                       uintptr_t* done) {
    char* whole = scratch_mapping(e - a);
    long result = rewrite_through(s, r, a, e, whole, if_pinned, done);
    if (whole && *done < e) sys::munmap(whole + (*done - a), e - *done);  // the part not moved into place
    return result;
}

// Private copies of every page of [a, e) of r, with no window: the kernel's
// own copy-on-write (MADV_POPULATE_WRITE), as a write to each page would
// make it. Their VMA stays a memfd VMA. 0 or -errno.
long privatize(State& s, Region& r, uintptr_t a, uintptr_t e) {
    if (!(r.prot & PROT_WRITE)) return -EINVAL;
    for (uintptr_t p = a; p < e; p += kChunk) {
        size_t len = e - p < kChunk ? e - p : kChunk;
        long rc = sys::madvise(page(p), len, MADV_POPULATE_WRITE);
        if (sys::failed(rc)) return rc;
        for (uintptr_t q = p; q < p + len; q += kPageSize) {
            PageMeta& m = r.at(q);
            if (has_slot(m.state)) release_slot(s, slot_of(m.state));
            m.state = kFileVma;
            m.hash32 = 0;
        }
        s.store.flush_punches();
    }
    return 0;
}

}  // namespace

long unmerge_range(State& s, uintptr_t start, uintptr_t end, Unmerge how) {
    long result = 0;
    for_each_file_run(s, start, end, [&](Region& r, uintptr_t a, uintptr_t e) {
        // Nothing writes into a read-only range: waiting costs nothing there.
        // Rotation waits too: syscalls that keep reading into the range would
        // otherwise keep the old file alive for ever.
        bool wait = how != Unmerge::kPrivateNow || !(r.prot & PROT_WRITE);
        uintptr_t done = a;
        long rc = rewrite_anonymous(s, r, a, e, wait ? WriteWindow::IfPinned::kWait : WriteWindow::IfPinned::kGiveUp,
                                    &done);
        s.stats.unmerged_pages += (done - a) / kPageSize;
        if (rc == 0 || how == Unmerge::kWhenFree) return true;
        // A syscall is writing into [done, e), or there was no memory or
        // address space for a copy: the pages become private now, and the
        // scanner makes their VMA anonymous later.
        if (privatize(s, r, done, e) == 0) {
            s.stats.unmerged_pages += (e - done) / kPageSize;
            s.unmerge_leftovers = true;
            return true;
        }
        result = -ENOMEM;  // as the kernel reports a failed unmerge
        return true;
    });
    return result;
}

long make_anonymous(State& s, Region& r, uintptr_t start, uintptr_t end, WriteWindow::IfPinned if_pinned) {
    uintptr_t done;
    return rewrite_anonymous(s, r, start, end, if_pinned, &done);
}

long rejoin_anonymous(State& s, uintptr_t start, uintptr_t end) {
    char* whole = scratch_mapping(end - start);
    if (!whole) return -ENOMEM;
    uintptr_t done = start;
    long result = 0;
    for (size_t i = s.regions.lower_bound(start); i < s.regions.count() && done < end && result == 0; ++i) {
        Region& r = s.regions[i];
        if (r.start != done || r.end > end) {
            result = -EINVAL;  // a gap, or a region not isolated: not one registered range
            break;
        }
        result = rewrite_through(s, r, r.start, r.end, whole + (r.start - start), WriteWindow::IfPinned::kWait, &done);
    }
    if (result == 0 && done < end) result = -EINVAL;
    if (done < end) sys::munmap(whole + (done - start), end - done);
    return result;
}

long zero_file_pages(State& s, uintptr_t start, uintptr_t end) {
    long result = 0;
    for_each_file_run(s, start, end, [&](Region& r, uintptr_t a, uintptr_t e) {
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
    s.store.flush_punches();
    return result;
}

size_t unmerge_leftovers_step(State& s, size_t max_pages) {
    if (!s.unmerge_leftovers || monotonic_ns() < s.unmerge_leftovers_retry_ns) return 0;
    size_t work = 0;
    bool left = false;
    for (size_t i = 0; i < s.regions.count() && work < max_pages; ++i) {
        Region& r = s.regions[i];
        // Excluded: mlocked (keep its lock). Left alone: a kernel writer the
        // shim cannot hold off writes there (no window, ever).
        if (region_mergeable(s, r) || (r.flags & (kRegExcluded | kRegLeftAlone))) continue;
        for_each_file_run(s, r.start, r.end, [&](Region& rg, uintptr_t a, uintptr_t e) {
            uintptr_t done = a;
            rewrite_anonymous(s, rg, a, e, WriteWindow::IfPinned::kGiveUp, &done);
            work += (e - a) / kPageSize;
            left |= done < e;
            return work < max_pages;
        });
    }
    if (work < max_pages && !left) s.unmerge_leftovers = false;  // a whole sweep found nothing left
    if (left) s.unmerge_leftovers_retry_ns = monotonic_ns() + 100 * 1000000ull;  // a syscall still writes there
    return work;
}

}  // namespace dedup
