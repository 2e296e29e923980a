// LargeHeap's entry points (alloc, free, usable, resize), its lock, the
// table that says which arena an address is in, and the counters and
// invariant checks. The heap's design is in docs/DESIGN.md, "Large
// allocations"; the other large_heap_*.cpp files hold its parts (large_heap.h).
#include <stdio.h>

#include "scanner/large_heap.h"
#include "scanner/meta_alloc.h"

namespace dedup {

using namespace large_detail;

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

}  // namespace dedup
