#include "scanner/large_alloc.h"

#include <errno.h>
#include <linux/futex.h>
#include <new>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "scanner/meta_alloc.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/sites.h"

namespace dedup {
namespace {
using large_detail::kMagic;
using large_detail::kMmappedBit;

constexpr size_t kPage = LargeHeap::kPage;

uint64_t* header(const void* p) { return reinterpret_cast<uint64_t*>(const_cast<void*>(p)) - 2; }
void write_header(uintptr_t p, size_t off, size_t usable) {
    uint64_t* h = header(reinterpret_cast<void*>(p));
    h[0] = kMagic | (uint64_t)off;
    h[1] = (uint64_t)usable | kMmappedBit;
}
// Offset of p from its block's start: page-aligned pointers have no header.
size_t offset_of(uintptr_t p) { return (p & (kPage - 1)) ? (size_t)(header((void*)p)[0] & 0xffffffffull) : 0; }

// Free ranges are stamped when trim() first sees them (0: not yet), not on
// every free: a clock read per free cost 4% of a malloc/free pair, and ages
// are then right to one look (kTrimEveryMs). Joined ranges keep the newest.
uint32_t join_stamps(uint32_t a, uint32_t b) {
    if (!a || !b) return 0;
    return (int32_t)(a - b) > 0 ? a : b;
}
uintptr_t round_up(uintptr_t v, uintptr_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

// ---- the lock: a spin, then a futex (never a libc lock) -------------------------

void LargeHeap::Lock::lock() {
    int c = 0;
    if (__builtin_expect(word_.compare_exchange_strong(c, 1, std::memory_order_acquire), 1)) return;
    // Held for well under a microsecond: spin a little before sleeping.
    for (int i = 0; i < 128; ++i) {
        __builtin_ia32_pause();
        c = 0;
        if (word_.load(std::memory_order_relaxed) == 0 &&
            word_.compare_exchange_weak(c, 1, std::memory_order_acquire))
            return;
    }
    c = word_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
        sys::call(SYS_futex, (long)&word_, FUTEX_WAIT_PRIVATE, 2, 0, 0, 0);
        c = word_.exchange(2, std::memory_order_acquire);
    }
}

void LargeHeap::Lock::unlock() {
    if (word_.exchange(0, std::memory_order_release) == 2)
        sys::call(SYS_futex, (long)&word_, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}

uint32_t LargeHeap::now_ms() {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 0;
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

// ---- bins: segregated free lists (TLSF's two-level classes, in pages) -----------

// 1..15 pages: a bin each; then 8 bins per power of two.
int LargeHeap::bin_of(uint32_t pages) {
    if (pages < 16) return (int)pages;
    int fl = 31 - __builtin_clz(pages);
    int sl = (int)(pages >> (fl - 3)) & 7;
    return 16 + (fl - 4) * 8 + sl;
}

int LargeHeap::next_bin(int from) const {
    for (int w = from >> 6; w < 2; ++w) {
        uint64_t bits = bin_map_[w];
        if (w == from >> 6) bits &= ~0ull << (from & 63);
        if (bits) return w * 64 + __builtin_ctzll(bits);
    }
    return -1;
}

void LargeHeap::bin_insert(uint32_t r) {
    PageInfo& pi = info(r);
    int b = bin_of(pi.head & kLenMask);
    uint64_t bit = 1ull << (b & 63);
    pi.prev = kNil;
    if (bin_map_[b >> 6] & bit) {
        pi.next = bin_head_[b];
        info(pi.next).prev = r;
    } else {
        pi.next = kNil;
        bin_map_[b >> 6] |= bit;
    }
    bin_head_[b] = r;
}

void LargeHeap::bin_remove(uint32_t r) {
    PageInfo& pi = info(r);
    int b = bin_of(pi.head & kLenMask);
    if (pi.prev != kNil) {
        info(pi.prev).next = pi.next;
    } else {
        bin_head_[b] = pi.next;
        if (pi.next == kNil) bin_map_[b >> 6] &= ~(1ull << (b & 63));
    }
    if (pi.next != kNil) info(pi.next).prev = pi.prev;
}

void LargeHeap::make_free(uint32_t slot, uint32_t first, uint32_t pages, uint32_t stamp) {
    Arena& a = arenas_[slot];
    a.info[first].head = kFree | pages;
    a.info[first].stamp = stamp;
    a.info[first + pages - 1].tail = first;
    bin_insert(ref(slot, first));
}

bool LargeHeap::hot_reclaim(uint32_t slot, uint32_t first) {
    Arena& a = arenas_[slot];
    uint32_t n = a.info[first].head & kLenMask;
    if ((a.info[first].head & (kFree | kBusy)) || n > kHotMaxPages) return false;
    uintptr_t p = a.base + (uintptr_t)first * kPage + 16;
    for (int st = 0; st < kHotStripes; ++st)
        for (int w = 0; w < kHotWays; ++w) {
            uintptr_t expected = p;
            if (hot_[st][n][w].load(std::memory_order_relaxed) == p &&  // a plain load first: a CAS takes the line
                hot_[st][n][w].compare_exchange_strong(expected, 0, std::memory_order_acquire,
                                                       std::memory_order_relaxed)) {
                a.used -= n;
                return true;
            }
        }
    return false;
}

// [first, first+pages) becomes free: joined with free neighbours (not those
// being given back right now; those waiting in the hot cache are taken
// back), then binned.
void LargeHeap::release(uint32_t slot, uint32_t first, uint32_t pages, uint32_t stamp) {
    Arena& a = arenas_[slot];
    uint32_t end = first + pages;
    // A block taken back from the hot cache may have a free block beyond
    // it: go on until neither neighbour is free.
    while (end < a.pages) {
        PageInfo& r = a.info[end];
        bool is_free = (r.head & (kFree | kBusy)) == kFree;
        if (!is_free && !hot_reclaim(slot, end)) break;
        if (is_free) bin_remove(ref(slot, end));
        stamp = is_free ? join_stamps(stamp, r.stamp) : 0;
        uint32_t n = r.head & kLenMask;
        r.head = 0;
        end += n;
    }
    while (first > 0) {
        uint32_t t = a.info[first - 1].tail;
        PageInfo& l = a.info[t];
        if (t + (l.head & kLenMask) != first) break;
        bool is_free = (l.head & (kFree | kBusy)) == kFree;
        if (!is_free && !hot_reclaim(slot, t)) break;
        if (is_free) bin_remove(ref(slot, t));
        stamp = is_free ? join_stamps(stamp, l.stamp) : 0;
        a.info[first].head = 0;
        first = t;
    }
    make_free(slot, first, end - first, stamp);
}

bool LargeHeap::fits(uint32_t r, uint32_t pages, uint32_t align_pages, uint32_t* start) const {
    const Arena& a = arenas_[r >> kPageBits];
    uint32_t s = r & (kArenaMaxPages - 1);
    uint32_t m = a.info[s].head & kLenMask;
    uint32_t st = s;
    if (align_pages > 1) {
        uintptr_t abs = (a.base / kPage) + s;
        st = (uint32_t)(round_up(abs, align_pages) - a.base / kPage);
    }
    if (st + pages > s + m) return false;
    *start = st;
    return true;
}

// A free block that holds `pages` at an alignment of align_pages, taken out
// of its bin; kNil if none. Good fit: the first few blocks of the request's
// own class, else the head of the next non-empty class (all of whose blocks
// are big enough).
uint32_t LargeHeap::find(uint32_t pages, uint32_t align_pages, uint32_t* start) {
    constexpr int kLook = 8;
    int b = bin_of(pages);
    int sure = bin_of(pages + align_pages - 1);
    for (int bb = (bin_map_[b >> 6] >> (b & 63)) & 1 ? b : next_bin(b + 1); bb >= 0; bb = next_bin(bb + 1)) {
        uint32_t r = bin_head_[bb];
        for (int k = 0; r != kNil && k < (bb > sure ? 1 : kLook); ++k, r = info(r).next) {
            if (fits(r, pages, align_pages, start)) {
                bin_remove(r);
                return r;
            }
        }
    }
    return kNil;
}

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

// ---- which arena an address is in: a two-level table of 2 MiB granules ----------

int LargeHeap::radix_slot(uintptr_t p) const {
    uintptr_t i1 = p >> kL1Shift;
    if (i1 >= (uintptr_t)kL1Size) return -1;
    std::atomic<uint32_t>* l2 = radix_[i1].load(std::memory_order_acquire);
    if (!l2) return -1;
    return (int)l2[(p >> kGranuleShift) & ((1u << kL2Bits) - 1)].load(std::memory_order_acquire) - 1;
}

bool LargeHeap::radix_set(uintptr_t base, size_t len, uint32_t value) {
    for (uintptr_t g = base; g < base + len; g += kGranule) {
        uintptr_t i1 = g >> kL1Shift;
        if (i1 >= (uintptr_t)kL1Size) return false;
        std::atomic<uint32_t>* l2 = radix_[i1].load(std::memory_order_acquire);
        if (!l2) {
            if (!value) continue;
            l2 = static_cast<std::atomic<uint32_t>*>(meta_alloc(sizeof(uint32_t) << kL2Bits));
            if (!l2) {
                if (g > base) radix_set(base, g - base, 0);
                return false;
            }
            radix_[i1].store(l2, std::memory_order_release);
        }
        l2[(g >> kGranuleShift) & ((1u << kL2Bits) - 1)].store(value, std::memory_order_release);
    }
    return true;
}

bool LargeHeap::in_arena(uintptr_t p) const { return radix_slot(p) >= 0; }

bool LargeHeap::owns_page_aligned(uintptr_t p) const { return in_arena(p) || aligned_contains(p); }

// ---- arenas -----------------------------------------------------------------------

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

// The hot cache: what a program that frees and allocates blocks of one size
// in a loop needs, without the lock (with 4 threads the lock cost ten times
// glibc's per-thread arenas). A block there has the default header, so the
// pointer and the size say everything; acquire/release hand its contents to
// the next owner.
namespace {
__thread int t_stripe = -1;
int my_stripe() {
    if (__builtin_expect(t_stripe < 0, 0)) t_stripe = (int)(sys::gettid() % LargeHeap::kHotStripes);
    return t_stripe;
}
}  // namespace

void* LargeHeap::hot_take(uint32_t pages) {
    if (!hot_any_.load(std::memory_order_relaxed)) return nullptr;  // (and its pages untouched)
    int own = my_stripe();
    for (int i = 0; i < kHotStripes; ++i) {
        std::atomic<uintptr_t>* ways = hot_[(own + i) % kHotStripes][pages];
        for (int w = 0; w < kHotWays; ++w)
            if (ways[w].load(std::memory_order_relaxed))
                if (uintptr_t p = ways[w].exchange(0, std::memory_order_acquire)) return reinterpret_cast<void*>(p);
    }
    return nullptr;
}

bool LargeHeap::hot_put(uintptr_t p, uint32_t pages) {
    std::atomic<uintptr_t>* ways = hot_[my_stripe()][pages];
    for (int w = 0; w < kHotWays; ++w) {
        uintptr_t expected = 0;
        if (ways[w].compare_exchange_strong(expected, p)) {
            // After the block is in: a flush that cleared the flag before
            // this sees the block or the flag.
            if (!hot_any_.load(std::memory_order_relaxed)) hot_any_.store(true);
            return true;
        }
        if (expected == p) return true;  // freed twice: ignored
    }
    return false;
}

void LargeHeap::flush_hot() {
    // Nothing put since the last flush: the 33 KiB of slots stay untouched.
    if (!hot_any_.load(std::memory_order_relaxed) || !hot_any_.exchange(false)) return;
    uintptr_t got[64];
    uint32_t got_pages[64];
    int n = 0;
    auto put_back = [&] {
        lock_.lock();
        for (int i = 0; i < n; ++i) {
            int slot = radix_slot(got[i]);
            Arena& a = arenas_[slot];
            uint32_t s = (uint32_t)((got[i] - 16 - a.base) / kPage);
            a.used -= got_pages[i];
            release((uint32_t)slot, s, got_pages[i], 0);
        }
        lock_.unlock();
        n = 0;
    };
    for (int st = 0; st < kHotStripes; ++st)
        for (uint32_t pages = 1; pages <= kHotMaxPages; ++pages)
            for (int w = 0; w < kHotWays; ++w) {
                std::atomic<uintptr_t>& slot = hot_[st][pages][w];
                if (!slot.load(std::memory_order_relaxed)) continue;
                if (uintptr_t p = slot.exchange(0, std::memory_order_acquire)) {
                    got[n] = p;
                    got_pages[n++] = pages;
                    if (n == 64) put_back();
                }
            }
    if (n) put_back();
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

// ---- blocks with a mapping of their own -----------------------------------------

// Our page-aligned pointers outside arenas. Their header sits on the page
// before the pointer, and reading below a page-aligned pointer from another
// allocator (jemalloc) could fault: such pointers are looked up here
// instead. Rare, so a small table suffices.
bool LargeHeap::aligned_insert(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = 0;
        if (aligned_[i].load(std::memory_order_relaxed) == 0 && aligned_[i].compare_exchange_strong(expected, p)) {
            aligned_count_.fetch_add(1);
            return true;
        }
    }
    return false;
}

bool LargeHeap::aligned_contains(uintptr_t p) const {
    if (aligned_count_.load(std::memory_order_acquire) == 0) return false;
    for (int i = 0; i < kAlignedSlots; ++i)
        if (aligned_[i].load(std::memory_order_relaxed) == p) return true;
    return false;
}

void LargeHeap::aligned_erase(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = p;
        if (aligned_[i].compare_exchange_strong(expected, 0)) {
            aligned_count_.fetch_sub(1);
            return;
        }
    }
}

// A fresh mapping (so zero), with the header 16 bytes into its first page
// for the default alignment, as copies in arenas have it.
void* LargeHeap::dedicated_alloc(size_t size, size_t align) {
    if (align > (1u << 30)) return nullptr;
    size_t need = size + 16 + (align > 16 ? align : 0);
    size_t len = round_up(need, kPage);
    long r = be_.map(nullptr, len);
    if (sys::failed(r)) return nullptr;
    uintptr_t base = (uintptr_t)r;
    uintptr_t p = (base + 16 + align - 1) & ~(uintptr_t)(align - 1);
    if ((p & (kPage - 1)) == 0 && !aligned_insert(p)) {  // table full: let the next allocator serve it
        be_.unmap((void*)base, len);
        return nullptr;
    }
    write_header(p, p - base, base + len - p);
    dedicated_.fetch_add(1, std::memory_order_relaxed);
    return reinterpret_cast<void*>(p);
}

void LargeHeap::dedicated_free(void* p) {
    uint64_t* h = header(p);
    uintptr_t base = (uintptr_t)p - (uintptr_t)(h[0] & 0xffffffffull);
    size_t len = (size_t)(((uintptr_t)p + (size_t)(h[1] & ~uint64_t(15))) - base);
    if (((uintptr_t)p & (kPage - 1)) == 0) aligned_erase((uintptr_t)p);
    dedicated_.fetch_sub(1, std::memory_order_relaxed);
    be_.unmap((void*)base, len);
}

// ---- the heap's entry points ------------------------------------------------------

void* LargeHeap::alloc(size_t size, size_t align, bool zero, bool own_mapping) {
    if (align < 16) align = 16;
    if (size > (SIZE_MAX >> 2) || (align & (align - 1))) return nullptr;
    // Below a page of alignment the block starts on a page and the pointer
    // `off` bytes in, after the header; from a page on, the block starts at
    // the pointer, which is looked up rather than headed.
    size_t off = align >= kPage ? 0 : align;
    size_t pages = (off + size + kPage - 1) / kPage;
    if (pages == 0) pages = 1;
    size_t align_pages = align > kPage ? align / kPage : 1;
    if (!own_mapping && align <= kGranule && pages + align_pages - 1 <= kBlockMaxPages)
        if (void* p = arena_alloc((uint32_t)pages, (uint32_t)align_pages, off, size, zero)) return p;
    return dedicated_alloc(size, align);  // a fresh mapping reads zero
}

void LargeHeap::free(void* p) {
    int slot = radix_slot((uintptr_t)p);
    if (slot >= 0) arena_free(slot, (uintptr_t)p);
    else dedicated_free(p);
}

size_t LargeHeap::usable(const void* ptr) {
    uintptr_t p = (uintptr_t)ptr;
    int slot = radix_slot(p);
    if (slot < 0 || (p & (kPage - 1))) return (size_t)(header(ptr)[1] & ~uint64_t(15));
    lock_.lock();
    Arena& a = arenas_[slot];
    uint32_t s = (uint32_t)((p - a.base) / kPage);
    uint32_t h = s < a.pages ? a.info[s].head : 0;
    lock_.unlock();
    return (h & (kFree | kBusy)) ? 0 : (size_t)(h & kLenMask) * kPage;
}

bool LargeHeap::resize(void* p, size_t n) {
    int slot = radix_slot((uintptr_t)p);
    if (slot >= 0) return arena_resize(slot, p, n);
    // A mapping of its own keeps its size when at least half is still used.
    size_t u = (size_t)(header(p)[1] & ~uint64_t(15));
    return n <= u && n >= u / 2;
}

size_t LargeHeap::trim(uint32_t min_age_ms, bool periodic) {
    uint32_t now = now_ms();
    struct Work {
        uintptr_t addr;
        size_t len;
        int slot;
    };
    Work give[kMaxPending], unmap[kMaxPending];
    int ngive = 0, nunmap = 0;
    if (periodic && looked_.load(std::memory_order_relaxed) &&
        (uint32_t)(now - last_look_ms_.load(std::memory_order_relaxed)) < kTrimEveryMs)
        return 0;
    looked_.store(true, std::memory_order_relaxed);
    last_look_ms_.store(now, std::memory_order_relaxed);
    flush_hot();  // blocks wait there only until the next look
    lock_.lock();
    if (npending_ || ndying_) {
        lock_.unlock();
        return 0;
    }
    for (int b = next_bin(0); b >= 0 && npending_ < kMaxPending && ndying_ < kMaxPending; b = next_bin(b + 1)) {
        for (uint32_t r = bin_head_[b], next; r != kNil; r = next) {
            next = info(r).next;
            uint32_t slot = r >> kPageBits, s = r & (kArenaMaxPages - 1);
            Arena& a = arenas_[slot];
            PageInfo& pi = a.info[s];
            uint32_t n = pi.head & kLenMask;
            if (!pi.stamp) pi.stamp = now ? now : 1;  // first seen free now
            if ((int32_t)(now - pi.stamp) < (int32_t)min_age_ms) continue;
            if (a.used == 0 && s == 0 && n == a.pages) {  // the whole arena: unmapped
                bin_remove(r);
                radix_set(a.base, (size_t)a.pages * kPage, 0);
                a.dying = true;
                dying_[ndying_++] = (int)slot;
                unmap[nunmap++] = Work{a.base, (size_t)a.pages * kPage, (int)slot};
            } else {
                uint32_t last, first = dirty_span(a, s, n, &last);
                if (first == kNil) continue;  // reads zero already
                bin_remove(r);
                pi.head |= kBusy;
                pending_[npending_++] = Pending{r, n, false};
                give[ngive++] = Work{a.base + (uintptr_t)first * kPage, (size_t)(last - first + 1) * kPage, (int)slot};
            }
            if (npending_ == kMaxPending || ndying_ == kMaxPending) break;
        }
    }
    lock_.unlock();
    if (!ngive && !nunmap) return 0;
    // Outside our lock: these take the mm lock.
    bool given[kMaxPending], unmapped[kMaxPending];
    size_t bytes = 0;
    for (int i = 0; i < ngive; ++i) {
        given[i] = be_.discard((void*)give[i].addr, give[i].len) == 0;
        if (given[i]) bytes += give[i].len;
    }
    for (int i = 0; i < nunmap; ++i) {
        unmapped[i] = be_.unmap((void*)unmap[i].addr, unmap[i].len) == 0;
        if (unmapped[i]) bytes += unmap[i].len;
    }
    void* meta[kMaxPending];
    size_t meta_len[kMaxPending];
    int nmeta = 0;
    lock_.lock();
    for (int i = 0; i < ngive; ++i) {
        uint32_t r = pending_[i].ref, slot = r >> kPageBits, s = r & (kArenaMaxPages - 1);
        Arena& a = arenas_[slot];
        if (given[i]) set_dirty(a, (uint32_t)((give[i].addr - a.base) / kPage), (uint32_t)(give[i].len / kPage), false);
        uint32_t stamp = a.info[s].stamp;
        a.info[s].head &= ~kBusy;
        release(slot, s, pending_[i].pages, stamp);
    }
    for (int i = 0; i < nunmap; ++i) {
        Arena& a = arenas_[unmap[i].slot];
        if (unmapped[i]) {
            meta[nmeta] = a.info;
            meta_len[nmeta++] = a.meta_bytes;
            arena_bytes_ -= unmap[i].len;
            --arena_count_;
            a = Arena{};
        } else {  // still mapped: an arena again
            radix_set(a.base, unmap[i].len, (uint32_t)unmap[i].slot + 1);
            a.dying = false;
            make_free((uint32_t)unmap[i].slot, 0, a.pages, now);
        }
    }
    npending_ = ndying_ = 0;
    lock_.unlock();
    for (int i = 0; i < nmeta; ++i) meta_free(meta[i], meta_len[i]);
    return bytes;
}

LargeHeap::Counters LargeHeap::counters() {
    Counters c{};
    lock_.lock();
    c.arenas = arena_count_;
    c.arena_bytes = arena_bytes_;
    for (uint32_t i = 0; i < slots_used_; ++i)
        if (arenas_[i].base) c.used_bytes += (size_t)arenas_[i].used * kPage;
    for (int b = next_bin(0); b >= 0; b = next_bin(b + 1)) {
        for (uint32_t r = bin_head_[b]; r != kNil; r = info(r).next) {
            Arena& a = arena_of_ref(r);
            uint32_t s = r & (kArenaMaxPages - 1), n = a.info[s].head & kLenMask;
            c.free_bytes += (size_t)n * kPage;
            ++c.free_ranges;
            for (uint32_t p = s; p < s + n; ++p) c.dirty_free_bytes += (a.dirty[p >> 6] >> (p & 63) & 1) * kPage;
        }
    }
    lock_.unlock();
    c.dedicated_blocks = dedicated_.load(std::memory_order_relaxed);
    return c;
}

bool LargeHeap::check(char* why, size_t cap) {
    bool ok = true;
    auto fail = [&](const char* what, uint32_t slot, uint32_t page) {
        if (ok) snprintf(why, cap, "%s (arena %u, page %u)", what, slot, page);
        ok = false;
    };
    lock_.lock();
    size_t binned = 0;
    for (int b = 0; b < kBins; ++b) {
        bool set = (bin_map_[b >> 6] >> (b & 63)) & 1;
        if (!set) continue;
        uint32_t prev = kNil;
        for (uint32_t r = bin_head_[b]; r != kNil && ok; prev = r, r = info(r).next) {
            PageInfo& pi = info(r);
            if ((pi.head & (kFree | kBusy)) != kFree) fail("binned block not free", r >> kPageBits, r & 16383);
            if (bin_of(pi.head & kLenMask) != b) fail("block in the wrong bin", r >> kPageBits, r & 16383);
            if (pi.prev != prev) fail("bad prev link", r >> kPageBits, r & 16383);
            ++binned;
        }
    }
    size_t blocks_free = 0;
    for (uint32_t slot = 0; slot < slots_used_ && ok; ++slot) {
        Arena& a = arenas_[slot];
        if (!a.base) continue;
        uint32_t used = 0;
        bool prev_free = false;
        for (uint32_t s = 0; s < a.pages && ok;) {
            uint32_t h = a.info[s].head, n = h & kLenMask;
            if (!n || s + n > a.pages) {
                fail("bad block length", slot, s);
                break;
            }
            if (a.info[s + n - 1].tail != s) fail("bad tail", slot, s);
            bool is_free = h & kFree;
            if (is_free && !(h & kBusy)) {
                if (prev_free) fail("free neighbours not joined", slot, s);
                ++blocks_free;
            }
            if (!is_free) used += n;
            prev_free = is_free && !(h & kBusy);
            s += n;
        }
        if (ok && used != a.used) fail("used count wrong", slot, used);
    }
    if (ok && blocks_free != binned) fail("free blocks not all binned", (uint32_t)blocks_free, (uint32_t)binned);
    lock_.unlock();
    return ok;
}

void LargeHeap::fork_prepare() { lock_.lock(); }
void LargeHeap::fork_parent() { lock_.unlock(); }

// The child's only thread is the one that forked. Work other threads had in
// flight is taken back: ranges being given back are free again (still
// dirty), arenas being unmapped are arenas again, a half-made arena is left
// mapped and unused.
void LargeHeap::fork_child() {
    lock_.reset();
    growing_.store(0, std::memory_order_relaxed);
    for (int i = 0; i < npending_; ++i) {
        uint32_t r = pending_[i].ref, slot = r >> kPageBits, s = r & (kArenaMaxPages - 1);
        Arena& a = arenas_[slot];
        a.info[s].head &= ~kBusy;
        release(slot, s, pending_[i].pages, a.info[s].stamp);
    }
    for (int i = 0; i < ndying_; ++i) {
        Arena& a = arenas_[dying_[i]];
        radix_set(a.base, (size_t)a.pages * kPage, (uint32_t)dying_[i] + 1);
        a.dying = false;
        make_free((uint32_t)dying_[i], 0, a.pages, 0);
    }
    npending_ = ndying_ = 0;
}

// ---- the process's heap -------------------------------------------------------------

namespace {

long runtime_map(void* addr, size_t len) {
    return map_and_register(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED : 0), -1, 0);
}
long runtime_unmap(void* addr, size_t len) { return unmap_and_forget(addr, len); }
// What madvise(MADV_DONTNEED) from the program does: merged pages become
// fresh anonymous memory first (on them the kernel's DONTNEED would bring
// back the canonical contents, not zeros), under the mm lock.
long runtime_discard(void* addr, size_t len) { return rt_madvise(addr, len, MADV_DONTNEED); }

std::atomic<int> g_built{0};  // 0 no, 1 being built, 2 built
alignas(LargeHeap) unsigned char g_storage[sizeof(LargeHeap)];

LargeHeap* built_heap() {
    return g_built.load(std::memory_order_acquire) == 2 ? reinterpret_cast<LargeHeap*>(g_storage) : nullptr;
}


// Built on the first large allocation (never destroyed: other threads may
// free into it while the process exits). The fork handlers are registered
// then, outside every lock, after the runtime's own (so that fork takes our
// lock before the mm lock; we never wait for the mm lock while holding ours
// anyway).
LargeHeap& heap() {
    if (LargeHeap* h = built_heap()) return *h;
    int expected = 0;
    if (g_built.compare_exchange_strong(expected, 1)) {
        // Default-initialised, not value-initialised: the storage is zero
        // already, and clearing 200 KiB of it cost every process that makes
        // one large allocation 50 page faults.
        LargeHeap* h = new (g_storage) LargeHeap;
        h->init(LargeBackend{runtime_map, runtime_unmap, runtime_discard});
        int saved = errno;
        pthread_atfork(large_fork_prepare, large_fork_parent, large_fork_child);
        errno = saved;
        g_built.store(2, std::memory_order_release);
    }
    while (g_built.load(std::memory_order_acquire) != 2) sys::call(SYS_sched_yield);
    return *reinterpret_cast<LargeHeap*>(g_storage);
}

}  // namespace

// Whether this thread's fork took the heap's lock: a heap built by another
// thread between prepare and parent/child must not be unlocked.
static __thread bool t_fork_locked;

void large_fork_prepare() {
    LargeHeap* h = built_heap();
    t_fork_locked = h != nullptr;
    if (h) h->fork_prepare();
}
void large_fork_parent() {
    if (t_fork_locked) built_heap()->fork_parent();
    t_fork_locked = false;
}
void large_fork_child() {
    if (t_fork_locked) built_heap()->fork_child();
    t_fork_locked = false;
}

void* large_alloc(size_t size, size_t align, bool zero) {
    LargeHeap& h = heap();
    // While allocation sites are captured, each block keeps a mapping (and
    // so a registered region and a site) of its own, as before arenas.
    return h.alloc(size, align, zero, sites_enabled());
}

bool large_detail::owns_page_aligned(uintptr_t p) {
    LargeHeap* h = built_heap();
    return h && h->owns_page_aligned(p);
}

size_t large_usable(const void* p) { return heap().usable(p); }
void large_free(void* p) { heap().free(p); }
bool large_resize(void* p, size_t n) { return heap().resize(p, n); }

void large_trim() {
    if (LargeHeap* h = built_heap()) h->trim(LargeHeap::kTrimAgeMs, true);
}

}  // namespace dedup
