// LargeHeap's arenas: big registered mappings, 2 MiB aligned, mapped as the
// heap grows; the bitmap of their pages that may hold old contents; and the
// blocks carved from them (allocated, freed, resized in place).
#include <string.h>
#include <sys/mman.h>

#include "scanner/large_heap.h"
#include "scanner/meta_alloc.h"

namespace dedup {

using namespace large_detail;

// ---- the dirty bitmap: pages that may hold old contents --------------------------

void LargeHeap::set_dirty(Arena& a, uint32_t first, uint32_t pages, bool dirty) {
    uint32_t i = first, end = first + pages;
    if (dirty && pages <= 64 && (i >> 6) == ((end - 1) >> 6)) {  // the common case: one word
        a.dirty[i >> 6] |= (pages == 64 ? ~0ull : ((1ull << pages) - 1)) << (i & 63);
        return;
    }
    while (i < end) {
        uint32_t w = i >> 6, bit = i & 63;
        uint32_t n = 64 - bit < end - i ? 64 - bit : end - i;
        uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << bit;
        if (dirty) a.dirty[w] |= mask;
        else a.dirty[w] &= ~mask;
        i += n;
    }
}

// First dirty page in [first, first+pages) (kNil if none); *last: the last.
uint32_t LargeHeap::dirty_span(const Arena& a, uint32_t first, uint32_t pages, uint32_t* last) const {
    uint32_t lo = kNil, hi = 0, i = first, end = first + pages;
    while (i < end) {
        uint32_t w = i >> 6, bit = i & 63;
        uint32_t n = 64 - bit < end - i ? 64 - bit : end - i;
        uint64_t bits = (a.dirty[w] >> bit) & (n == 64 ? ~0ull : ((1ull << n) - 1));
        if (bits) {
            if (lo == kNil) lo = i + __builtin_ctzll(bits);
            hi = i + 63 - __builtin_clzll(bits);
        }
        i += n;
    }
    *last = hi;
    return lo;
}

// ---- arenas: mapped, grown, blocks carved from them ------------------------------

// Maps len bytes at a 2 MiB boundary (the table's granule). The kernel puts
// anonymous mappings of whole 2 MiB multiples on such a boundary already;
// otherwise a reservation a granule bigger is cut to size.
bool LargeHeap::map_arena(size_t len, uintptr_t* base) {
    long r = be_.map(nullptr, len);
    if (sys::failed(r)) return false;
    uintptr_t a = (uintptr_t)r;
    if (a & (kGranule - 1)) {
        be_.unmap((void*)a, len);
        long err = 0;
        void* res = sys::mmap(nullptr, len + kGranule, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, &err);
        if (res == MAP_FAILED) return false;
        uintptr_t rs = (uintptr_t)res, re = rs + len + kGranule;
        a = round_up(rs, kGranule);
        r = be_.map((void*)a, len);
        if (sys::failed(r)) {
            sys::munmap(res, len + kGranule);
            return false;
        }
        if (a > rs) sys::munmap(res, a - rs);
        if (re > a + len) sys::munmap((void*)(a + len), re - (a + len));
    }
    if (((a + len) >> 47) != 0) {  // outside the table (5-level paging and a hint): not an arena
        be_.unmap((void*)a, len);
        return false;
    }
    *base = a;
    return true;
}

// Maps one more arena, big enough for min_pages: as big as all arenas
// together (doubling), from kArenaMin up to kArenaMax, smaller if the
// address space is short (RLIMIT_AS). One thread grows at a time; the
// others wait for it and then look again. False if nothing could be mapped.
namespace {
// This thread is mapping an arena: a large malloc made meanwhile (by what
// map_and_register calls: starting the scanner thread...) must not wait for
// itself. It gets a mapping of its own.
__thread bool t_growing = false;
}  // namespace

bool LargeHeap::grow(uint32_t min_pages) {
    if (t_growing) return false;
    int expected = 0;
    if (!growing_.compare_exchange_strong(expected, 1, std::memory_order_acquire)) {
        while (growing_.load(std::memory_order_acquire)) sys::call(SYS_sched_yield);
        return true;
    }
    t_growing = true;
    lock_.lock();
    size_t total = arena_bytes_;
    lock_.unlock();
    size_t need = round_up((size_t)min_pages * kPage, kGranule);
    size_t want = round_up(total, kGranule);
    if (want < kArenaMin) want = kArenaMin;
    if (want > kArenaMax) want = kArenaMax;
    if (want < need) want = need;
    uintptr_t base = 0;
    size_t len = want;
    while (!map_arena(len, &base)) {
        if (len == need) break;
        len = round_up(len / 2, kGranule);
        if (len < need) len = need;
    }
    bool ok = false;
    if (base) {
        uint32_t pages = (uint32_t)(len / kPage);
        size_t meta = pages * sizeof(PageInfo) + (pages + 63) / 64 * sizeof(uint64_t);
        char* m = static_cast<char*>(meta_alloc(meta));
        if (m) {
            lock_.lock();
            uint32_t slot = 0;
            while (slot < slots_used_ && arenas_[slot].base) ++slot;
            if (slot < (uint32_t)kMaxArenas && radix_set(base, len, slot + 1)) {
                if (slot == slots_used_) ++slots_used_;
                Arena& a = arenas_[slot];
                a.base = base;
                a.pages = pages;
                a.used = 0;
                a.dying = false;
                a.info = reinterpret_cast<PageInfo*>(m);
                a.dirty = reinterpret_cast<uint64_t*>(m + pages * sizeof(PageInfo));
                a.meta_bytes = meta;
                make_free(slot, 0, pages, 0);
                arena_bytes_ += len;
                ++arena_count_;
                ok = true;
            }
            lock_.unlock();
            if (!ok) meta_free(m, meta);
        }
        if (!ok) be_.unmap((void*)base, len);
    }
    t_growing = false;
    growing_.store(0, std::memory_order_release);
    return ok;
}


void* LargeHeap::arena_alloc(uint32_t pages, uint32_t align_pages, size_t off, size_t size, bool zero) {
    if (off == 16 && pages <= kHotMaxPages)
        if (void* p = hot_take(pages)) {
            if (zero) memset(p, 0, size);  // it held the last owner's data
            return p;
        }
    uint64_t was_dirty[kBlockMaxPages / 64 + 1];
    for (int attempt = 0;; ++attempt) {
        lock_.lock();
        uint32_t start = 0;
        uint32_t r = find(pages, align_pages, &start);
        if (r != kNil) {
            uint32_t slot = r >> kPageBits, s = r & (kArenaMaxPages - 1);
            Arena& a = arenas_[slot];
            if (attempt == 0 && !(a.dirty[start >> 6] >> (start & 63) & 1) &&
                hot_any_.load(std::memory_order_relaxed)) {
                // Fresh pages fault on first touch: blocks freed into the
                // hot cache (of other sizes) go back to the bins first, so
                // that reused memory serves this (python3's start-up frees
                // and allocates 64-128 KiB blocks of ever-different sizes).
                bin_insert(r);
                lock_.unlock();
                flush_hot();
                continue;
            }
            uint32_t m = a.info[s].head & kLenMask, stamp = a.info[s].stamp;
            uint32_t end = start + pages;
            if (start > s) make_free(slot, s, start - s, stamp);
            if (end < s + m) make_free(slot, end, s + m - end, stamp);
            a.info[start].head = pages;
            a.info[end - 1].tail = start;
            a.used += pages;
            if (zero) {  // which pages calloc must clear: those that may hold old contents
                for (uint32_t i = 0; i < pages; ++i) {
                    uint64_t bit = 1ull << (i & 63);
                    if (a.dirty[(start + i) >> 6] >> ((start + i) & 63) & 1) was_dirty[i >> 6] |= bit;
                    else was_dirty[i >> 6] &= ~bit;
                }
            }
            set_dirty(a, start, pages, true);
            uintptr_t blk = a.base + (uintptr_t)start * kPage;
            lock_.unlock();
            uintptr_t p = blk + off;
            if (off) write_header(p, off, (size_t)pages * kPage - off);
            if (zero) {
                // Clear the dirty pages' share of [p, p + size); the rest reads zero.
                uintptr_t end_p = p + size;
                for (uint32_t i = 0; i < pages;) {
                    if (!(was_dirty[i >> 6] >> (i & 63) & 1)) {
                        ++i;
                        continue;
                    }
                    uint32_t j = i;
                    while (j < pages && (was_dirty[j >> 6] >> (j & 63) & 1)) ++j;
                    uintptr_t lo = blk + (uintptr_t)i * kPage, hi = blk + (uintptr_t)j * kPage;
                    if (lo < p) lo = p;
                    if (hi > end_p) hi = end_p;
                    if (lo < hi) memset(reinterpret_cast<void*>(lo), 0, hi - lo);
                    i = j;
                }
            }
            return reinterpret_cast<void*>(p);
        }
        lock_.unlock();
        if (attempt == 0) {  // what waits in the hot cache first
            flush_hot();
            continue;
        }
        if (attempt == 4 || !grow(pages + align_pages - 1)) return nullptr;
    }
}

void LargeHeap::arena_free(int slot, uintptr_t p) {
    if ((p & (kPage - 1)) == 16) {  // the default header: the hot cache may keep it
        uint32_t pages = (uint32_t)(((header((void*)p)[1] & ~uint64_t(15)) + 16) / kPage);
        if (pages <= kHotMaxPages && hot_put(p, pages)) return;
    }
    uintptr_t blk = p - offset_of(p);
    lock_.lock();
    Arena& a = arenas_[slot];
    uint32_t s = (uint32_t)((blk - a.base) / kPage);
    uint32_t h = s < a.pages ? a.info[s].head : 0;
    uint32_t n = h & kLenMask;
    // Not the start of an allocated block: a double free; ignored.
    if (blk >= a.base && !(h & (kFree | kBusy)) && n && s + n <= a.pages) {
        a.used -= n;
        release((uint32_t)slot, s, n, 0);
    }
    lock_.unlock();
}

bool LargeHeap::arena_resize(int slot, void* ptr, size_t size) {
    uintptr_t p = (uintptr_t)ptr;
    size_t off = offset_of(p);
    uintptr_t blk = p - off;
    if (size > kArenaMax) return false;
    uint32_t need = (uint32_t)((off + size + kPage - 1) / kPage);
    if (need == 0) need = 1;
    bool ok = false;
    lock_.lock();
    Arena& a = arenas_[slot];
    uint32_t s = (uint32_t)((blk - a.base) / kPage);
    uint32_t h = s < a.pages ? a.info[s].head : 0;
    uint32_t n = h & kLenMask;
    if (!(h & (kFree | kBusy)) && n && s + n <= a.pages) {
        if (need <= n) {
            if (need < n) {  // shrink: the tail goes back
                a.info[s].head = need;
                a.info[s + need - 1].tail = s;
                a.used -= n - need;
                release((uint32_t)slot, s + need, n - need, 0);
            }
            ok = true;
        } else if (s + n < a.pages) {  // grow into a free neighbour
            uint32_t r = s + n;
            PageInfo& ri = a.info[r];
            uint32_t rn = ri.head & kLenMask;
            bool is_free = (ri.head & (kFree | kBusy)) == kFree;
            if (n + rn >= need && (is_free || hot_reclaim((uint32_t)slot, r))) {
                if (is_free) bin_remove(ref((uint32_t)slot, r));
                uint32_t take = need - n, rstamp = is_free ? ri.stamp : 0;
                ri.head = 0;
                a.info[s].head = need;
                a.info[s + need - 1].tail = s;
                a.used += take;
                // The rest joins what lies beyond (free after a block taken
                // back from the hot cache).
                if (rn > take) release((uint32_t)slot, r + take, rn - take, rstamp);
                set_dirty(a, r, take, true);
                ok = true;
            }
        }
    }
    lock_.unlock();
    if (ok && off) header(ptr)[1] = (uint64_t)((size_t)need * kPage - off) | kMmappedBit;
    return ok;
}

}  // namespace dedup
