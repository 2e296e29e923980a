// Giving LargeHeap's free memory back: free ranges untouched for a while are
// discarded (they read zero afterwards), arenas free for as long are
// unmapped. The work is picked under the lock and done outside it, so a
// fork in the meantime leaves the child work to take back (fork_child).
#include <time.h>

#include "scanner/large_heap.h"
#include "scanner/meta_alloc.h"

namespace dedup {

using namespace large_detail;

uint32_t LargeHeap::now_ms() {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 0;
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

struct LargeHeap::TrimWork {
    struct Range {
        uintptr_t addr;
        size_t len;
        int slot;
    };
    Range give[kMaxPending], unmap[kMaxPending];
    int ngive = 0, nunmap = 0;
    bool given[kMaxPending], unmapped[kMaxPending];  // done
};

size_t LargeHeap::trim(uint32_t min_age_ms, bool periodic) {
    uint32_t now = now_ms();
    if (periodic && looked_.load(std::memory_order_relaxed) &&
        (uint32_t)(now - last_look_ms_.load(std::memory_order_relaxed)) < kTrimEveryMs)
        return 0;
    looked_.store(true, std::memory_order_relaxed);
    last_look_ms_.store(now, std::memory_order_relaxed);
    flush_hot();  // blocks wait there only until the next look
    TrimWork w;
    lock_.lock();
    if (npending_ || ndying_) {
        lock_.unlock();
        return 0;
    }
    trim_pick(now, min_age_ms, w);
    lock_.unlock();
    if (!w.ngive && !w.nunmap) return 0;
    // Outside our lock: these take the mm lock.
    size_t bytes = 0;
    for (int i = 0; i < w.ngive; ++i) {
        w.given[i] = be_.discard((void*)w.give[i].addr, w.give[i].len) == 0;
        if (w.given[i]) bytes += w.give[i].len;
    }
    for (int i = 0; i < w.nunmap; ++i) {
        w.unmapped[i] = be_.unmap((void*)w.unmap[i].addr, w.unmap[i].len) == 0;
        if (w.unmapped[i]) bytes += w.unmap[i].len;
    }
    void* meta[kMaxPending];
    size_t meta_len[kMaxPending];
    lock_.lock();
    int nmeta = trim_settle(now, w, meta, meta_len);
    npending_ = ndying_ = 0;
    lock_.unlock();
    for (int i = 0; i < nmeta; ++i) meta_free(meta[i], meta_len[i]);
    return bytes;
}

void LargeHeap::trim_pick(uint32_t now, uint32_t min_age_ms, TrimWork& w) {
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
                w.unmap[w.nunmap++] = TrimWork::Range{a.base, (size_t)a.pages * kPage, (int)slot};
            } else {
                uint32_t last, first = dirty_span(a, s, n, &last);
                if (first == kNil) continue;  // reads zero already
                bin_remove(r);
                pi.head |= kBusy;
                pending_[npending_++] = Pending{r, n, false};
                w.give[w.ngive++] =
                    TrimWork::Range{a.base + (uintptr_t)first * kPage, (size_t)(last - first + 1) * kPage, (int)slot};
            }
            if (npending_ == kMaxPending || ndying_ == kMaxPending) break;
        }
    }
}

int LargeHeap::trim_settle(uint32_t now, const TrimWork& w, void** meta, size_t* meta_len) {
    int nmeta = 0;
    for (int i = 0; i < w.ngive; ++i) {
        uint32_t r = pending_[i].ref, slot = r >> kPageBits, s = r & (kArenaMaxPages - 1);
        Arena& a = arenas_[slot];
        if (w.given[i])
            set_dirty(a, (uint32_t)((w.give[i].addr - a.base) / kPage), (uint32_t)(w.give[i].len / kPage), false);
        uint32_t stamp = a.info[s].stamp;
        a.info[s].head &= ~kBusy;
        release(slot, s, pending_[i].pages, stamp);
    }
    for (int i = 0; i < w.nunmap; ++i) {
        Arena& a = arenas_[w.unmap[i].slot];
        if (w.unmapped[i]) {
            meta[nmeta] = a.info;
            meta_len[nmeta++] = a.meta_bytes;
            arena_bytes_ -= w.unmap[i].len;
            --arena_count_;
            a = Arena{};
        } else {  // still mapped: an arena again
            radix_set(a.base, w.unmap[i].len, (uint32_t)w.unmap[i].slot + 1);
            a.dying = false;
            make_free((uint32_t)w.unmap[i].slot, 0, a.pages, now);
        }
    }
    return nmeta;
}

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

}  // namespace dedup
