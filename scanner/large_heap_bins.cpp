// LargeHeap's free ranges: segregated free lists (TLSF's two-level size
// classes, in pages), a good-fit search, and the coalescing of a range that
// becomes free with its free neighbours.
#include "scanner/large_heap.h"

namespace dedup {

using namespace large_detail;

namespace {

// Free ranges are stamped when trim() first sees them (0: not yet), not on
// every free: a clock read per free cost 4% of a malloc/free pair, and ages
// are then right to one look (kTrimEveryMs). Joined ranges keep the newest.
uint32_t join_stamps(uint32_t a, uint32_t b) {
    if (!a || !b) return 0;
    return (int32_t)(a - b) > 0 ? a : b;
}

}  // namespace

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

}  // namespace dedup
