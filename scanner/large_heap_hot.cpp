// LargeHeap's hot cache: what a program that frees and allocates blocks of
// one size in a loop needs, without the lock (with 4 threads the lock cost
// ten times glibc's per-thread arenas). A block there has the default
// header, so the pointer and the size say everything; acquire/release hand
// its contents to the next owner. Still allocated as far as the bins know.
#include "scanner/large_heap.h"

namespace dedup {

using namespace large_detail;

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
        int st = (own + i) % kHotStripes;
        if (!(hot_sizes_[st][pages >> 6].load(std::memory_order_relaxed) >> (pages & 63) & 1)) continue;
        std::atomic<uintptr_t>* ways = hot_[st][pages];
        for (int w = 0; w < kHotWays; ++w)
            if (ways[w].load(std::memory_order_relaxed))
                if (uintptr_t p = ways[w].exchange(0, std::memory_order_acquire)) return reinterpret_cast<void*>(p);
    }
    return nullptr;
}

bool LargeHeap::hot_put(uintptr_t p, uint32_t pages) {
    int st = my_stripe();
    std::atomic<uintptr_t>* ways = hot_[st][pages];
    for (int w = 0; w < kHotWays; ++w) {
        uintptr_t expected = 0;
        if (ways[w].compare_exchange_strong(expected, p)) {
            // After the block is in, the size's bit, then the flag: a flush
            // that cleared either before this sees the block or the flag.
            std::atomic<uint64_t>& bits = hot_sizes_[st][pages >> 6];
            uint64_t bit = 1ull << (pages & 63);
            if (!(bits.load() & bit)) bits.fetch_or(bit);
            if (!hot_any_.load(std::memory_order_relaxed)) hot_any_.store(true);
            return true;
        }
        if (expected == p) return true;  // freed twice: ignored
    }
    return false;
}

void LargeHeap::flush_hot() {
    // Nothing put since the last flush: no slot is read.
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
        for (uint32_t word = 0; word < (kHotMaxPages + 64) / 64; ++word) {
            if (!hot_sizes_[st][word].load(std::memory_order_relaxed)) continue;
            for (uint64_t bits = hot_sizes_[st][word].exchange(0); bits; bits &= bits - 1) {
                uint32_t pages = (uint32_t)(word * 64 + __builtin_ctzll(bits));
                for (int w = 0; w < kHotWays; ++w) {
                    std::atomic<uintptr_t>& slot = hot_[st][pages][w];
                    if (!slot.load(std::memory_order_relaxed)) continue;
                    if (uintptr_t p = slot.exchange(0, std::memory_order_acquire)) {
                        got[n] = p;
                        got_pages[n++] = pages;
                        if (n == 64) put_back();
                    }
                }
            }
        }
    if (n) put_back();
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

}  // namespace dedup
