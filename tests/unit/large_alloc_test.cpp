// LargeHeap, the arena allocator behind large mallocs: placement, reuse,
// coalescing, alignment, usable sizes, calloc's zeroes, realloc in place,
// giving memory back, many threads, fork. Each test makes its own heap over
// raw system calls (the process's heap maps through the registry and would
// start the scanner thread in this binary).
#include <gtest/gtest.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "scanner/large_alloc.h"
#include "scanner/meta_alloc.h"
#include "scanner/os/sys.h"

using namespace dedup;

namespace {

constexpr size_t KiB = 1024, MiB = 1024 * 1024, kPage = 4096;

std::atomic<int> g_maps{0}, g_unmaps{0}, g_discards{0}, g_remaps{0};

long raw_map(void* addr, size_t len) {
    g_maps.fetch_add(1);
    return sys::call(SYS_mmap, (long)addr, (long)len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED : 0), -1, 0);
}
long raw_unmap(void* addr, size_t len) {
    g_unmaps.fetch_add(1);
    return sys::munmap(addr, len);
}
long raw_discard(void* addr, size_t len) {
    g_discards.fetch_add(1);
    return sys::madvise(addr, len, MADV_DONTNEED);
}
long raw_remap(void* addr, size_t old_len, size_t new_len) {
    g_remaps.fetch_add(1);
    return sys::call(SYS_mremap, (long)addr, (long)old_len, (long)new_len, MREMAP_MAYMOVE, 0);
}

// A heap of its own, in metadata memory (it is too big for the stack).
class Heap {
public:
    Heap() {
        mem_ = meta_alloc(sizeof(LargeHeap));
        h_ = new (mem_) LargeHeap;  // meta_alloc memory is zero
        h_->init(LargeBackend{raw_map, raw_unmap, raw_discard, raw_remap});
        g_maps = g_unmaps = g_discards = g_remaps = 0;
    }
    ~Heap() {
        h_->trim(0, false);  // unmaps every arena that is free by now
        h_->~LargeHeap();
        meta_free(mem_, sizeof(LargeHeap));
    }
    LargeHeap* operator->() { return h_; }
    LargeHeap& operator*() { return *h_; }
    void expect_consistent() {
        char why[200] = "";
        EXPECT_TRUE(h_->check(why, sizeof why)) << why;
    }

private:
    void* mem_;
    LargeHeap* h_;
};

void fill(void* p, size_t n, uint64_t seed) {
    unsigned char* c = static_cast<unsigned char*>(p);
    for (size_t i = 0; i < n; i += 512) c[i] = (unsigned char)(seed * 131 + i / 512);
    if (n && (n - 1) % 512) c[n - 1] = (unsigned char)(seed ^ 0x5a);  // the last byte, unless the loop wrote it
}
bool check_fill(const void* p, size_t n, uint64_t seed) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; i += 512)
        if (c[i] != (unsigned char)(seed * 131 + i / 512)) return false;
    return !n || (n - 1) % 512 == 0 || c[n - 1] == (unsigned char)(seed ^ 0x5a);
}
// The part fill() wrote below n (after a realloc changed the size).
bool check_prefix(const void* p, size_t n, uint64_t seed) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; i += 512)
        if (c[i] != (unsigned char)(seed * 131 + i / 512)) return false;
    return true;
}
bool all_zero(const void* p, size_t n) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i)
        if (c[i]) return false;
    return true;
}
// Resident pages of [p, p+len) (mincore); -1 if some of it is not mapped.
long resident_pages(const void* p, size_t len) {
    std::vector<unsigned char> v(len / kPage + 1);
    if (mincore(const_cast<void*>(p), len, v.data()) != 0) return -1;
    long n = 0;
    for (size_t i = 0; i < len / kPage; ++i) n += v[i] & 1;
    return n;
}
const uint64_t* hdr(const void* p) { return static_cast<const uint64_t*>(p) - 2; }

}  // namespace

TEST(LargeAlloc, BlocksComeFromFewArenasAndDoNotOverlap) {
    Heap h;
    std::mt19937_64 rng(1);
    std::vector<std::pair<char*, size_t>> blocks;
    for (int i = 0; i < 200; ++i) {
        size_t n = 64 * KiB + rng() % (960 * KiB);
        char* p = static_cast<char*>(h->alloc(n, 16, false));
        ASSERT_NE(p, nullptr);
        EXPECT_TRUE(h->in_arena((uintptr_t)p));
        EXPECT_TRUE(large_owns(p));
        fill(p, n, i);
        blocks.push_back({p, n});
    }
    for (size_t i = 0; i < blocks.size(); ++i) EXPECT_TRUE(check_fill(blocks[i].first, blocks[i].second, i)) << i;
    LargeHeap::Counters c = h->counters();
    // About 100 MiB in arenas that double from 4 MiB up to 64 MiB: a handful
    // of mappings, not one per block.
    EXPECT_LE(c.arenas, 8u);
    EXPECT_LE(g_maps.load(), 8);
    EXPECT_GE(c.used_bytes, 100 * MiB);
    h.expect_consistent();
    for (auto& b : blocks) h->free(b.first);
    h->flush_hot();  // the last block of each size waits there for a malloc of that size
    c = h->counters();
    EXPECT_EQ(c.used_bytes, 0u);
    EXPECT_EQ(c.free_bytes, c.arena_bytes);
    EXPECT_EQ(c.free_ranges, c.arenas);  // every arena coalesced into one free range
    EXPECT_EQ(g_unmaps.load(), 0);       // no munmap per free
    h.expect_consistent();
}

TEST(LargeAlloc, HeaderKeepsCopiesPageForPage) {
    Heap h;
    // The data starts 16 bytes into a page, after a header that is the same
    // for every block of the same size: copies of a buffer have equal pages.
    char* a = static_cast<char*>(h->alloc(300 * KiB, 16, false));
    char* b = static_cast<char*>(h->alloc(300 * KiB, 16, false));
    ASSERT_TRUE(a && b);
    EXPECT_EQ((uintptr_t)a % kPage, 16u);
    EXPECT_EQ((uintptr_t)b % kPage, 16u);
    EXPECT_EQ(hdr(a)[0], hdr(b)[0]);
    EXPECT_EQ(hdr(a)[1], hdr(b)[1]);
    EXPECT_EQ(hdr(a)[0] >> 32, large_detail::kMagicTag);
    EXPECT_TRUE(hdr(a)[1] & large_detail::kMmappedBit);
    memset(a, 7, 300 * KiB);
    memcpy(b, a, 300 * KiB);
    EXPECT_EQ(memcmp(a - 16, b - 16, 74 * kPage), 0);
    h->free(a);
    h->free(b);
}

TEST(LargeAlloc, FreedBlockIsReusedAndNeighboursCoalesce) {
    Heap h;
    char* a = static_cast<char*>(h->alloc(200 * KiB, 16, false));
    char* b = static_cast<char*>(h->alloc(200 * KiB, 16, false));
    char* c = static_cast<char*>(h->alloc(200 * KiB, 16, false));
    char* d = static_cast<char*>(h->alloc(200 * KiB, 16, false));  // keeps the arena in use
    ASSERT_TRUE(a && b && c && d);
    size_t ranges0 = h->counters().free_ranges;
    h->free(b);
    EXPECT_EQ(h->alloc(200 * KiB, 16, false), b);  // same size: the same block again
    h->free(a);
    h->free(c);
    h->flush_hot();
    EXPECT_EQ(h->counters().free_ranges, ranges0 + 2);
    h->free(b);  // waits in the hot cache, then joins a and c
    h->flush_hot();
    EXPECT_EQ(h->counters().free_ranges, ranges0 + 1);
    h.expect_consistent();
    // The joined range serves a block as big as all three.
    char* big = static_cast<char*>(h->alloc(3 * 200 * KiB + 8 * KiB, 16, false));
    EXPECT_EQ(big, a);
    h->free(big);
    h->free(d);
    h->flush_hot();
    h.expect_consistent();
    EXPECT_EQ(h->counters().used_bytes, 0u);
}

TEST(LargeAlloc, UsableSizeIsExact) {
    Heap h;
    for (size_t n : {64 * KiB, 64 * KiB + 1, 100 * KiB - 16, 100 * KiB - 15, 1 * MiB, 4 * MiB - 16, 4 * MiB,
                     9 * MiB + 5}) {
        char* p = static_cast<char*>(h->alloc(n, 16, false));
        ASSERT_NE(p, nullptr) << n;
        size_t u = h->usable(p);
        EXPECT_GE(u, n);
        EXPECT_LT(u, n + kPage);
        EXPECT_EQ(((uintptr_t)p + u) % kPage, 0u) << n;  // to the block's last byte
        memset(p, 1, u);                                  // every usable byte is ours
        h->free(p);
    }
    h.expect_consistent();
}

TEST(LargeAlloc, AlignmentsUpToLarge) {
    Heap h;
    std::vector<void*> keep;
    for (size_t align = 16; align <= 64 * MiB; align *= 2) {
        for (size_t n : {size_t(4096), 70 * KiB, 1 * MiB + 3, 5 * MiB}) {
            void* p = h->alloc(n, align, false);
            ASSERT_NE(p, nullptr) << align << " " << n;
            EXPECT_EQ((uintptr_t)p % align, 0u) << align << " " << n;
            if ((uintptr_t)p % kPage) EXPECT_TRUE(large_owns(p)) << align << " " << n;
            else EXPECT_TRUE(h->owns_page_aligned((uintptr_t)p)) << align << " " << n;  // large_owns asks the process's heap
            size_t u = h->usable(p);
            EXPECT_GE(u, n);
            memset(p, 0x33, u);
            keep.push_back(p);
        }
    }
    h.expect_consistent();
    for (void* p : keep) h->free(p);
    h->flush_hot();
    h.expect_consistent();
    LargeHeap::Counters c = h->counters();
    EXPECT_EQ(c.used_bytes, 0u);
    EXPECT_EQ(c.dedicated_blocks, 0u);
}

TEST(LargeAlloc, PageAlignedForeignPointersAreNotOurs) {
    Heap h;
    void* ours = h->alloc(128 * KiB, 4096, false);
    ASSERT_NE(ours, nullptr);
    EXPECT_TRUE(h->owns_page_aligned((uintptr_t)ours));
    void* theirs = aligned_alloc(4096, 128 * KiB);
    EXPECT_FALSE(h->owns_page_aligned((uintptr_t)theirs));
    EXPECT_FALSE(h->in_arena((uintptr_t)theirs));
    void* small = malloc(100);
    __asm__ volatile("" : "+r"(small));  // as free() sees it: reading below a malloc pointer is the point
    EXPECT_FALSE(large_owns(small));
    EXPECT_TRUE(large_surely_foreign(small));
    free(small);
    free(theirs);
    h->free(ours);
}

TEST(LargeAlloc, CallocReadsZeroOnReusedAndGivenBackMemory) {
    Heap h;
    char* keep = static_cast<char*>(h->alloc(64 * KiB, 16, false));  // keeps the arena
    char* a = static_cast<char*>(h->alloc(1 * MiB, 16, false));
    ASSERT_TRUE(keep && a);
    memset(a, 0xff, h->usable(a));
    h->free(a);
    // Reused (old contents): cleared.
    char* z = static_cast<char*>(h->alloc(1 * MiB, 16, true));
    EXPECT_EQ(z, a);
    EXPECT_TRUE(all_zero(z, 1 * MiB));
    memset(z, 0xee, h->usable(z));
    h->free(z);
    // Partly old, partly never used: still all zero.
    char* y = static_cast<char*>(h->alloc(2 * MiB + 100, 16, true));
    ASSERT_NE(y, nullptr);
    EXPECT_TRUE(all_zero(y, 2 * MiB + 100));
    memset(y, 0xdd, 2 * MiB + 100);
    h->free(y);
    // Given back with MADV_DONTNEED: zero without a memset.
    EXPECT_GT(h->trim(0, false), 0u);
    EXPECT_EQ(h->counters().dirty_free_bytes, 0u);
    char* x = static_cast<char*>(h->alloc(2 * MiB, 16, true));
    ASSERT_NE(x, nullptr);
    EXPECT_EQ(resident_pages(x - 16, 2 * MiB), 1);  // only the header's page was written
    EXPECT_TRUE(all_zero(x, 2 * MiB));
    h->free(x);
    h->free(keep);
    h.expect_consistent();
}

TEST(LargeAlloc, ReallocInPlaceGrowsIntoFreeNeighbourAndShrinks) {
    Heap h;
    char* a = static_cast<char*>(h->alloc(100 * KiB, 16, false));
    char* b = static_cast<char*>(h->alloc(100 * KiB, 16, false));
    char* c = static_cast<char*>(h->alloc(100 * KiB, 16, false));
    ASSERT_TRUE(a && b && c);
    fill(a, 100 * KiB, 3);
    EXPECT_FALSE(h->resize(a, 150 * KiB));  // b is in the way
    h->free(b);
    EXPECT_TRUE(h->resize(a, 150 * KiB));  // into b's pages
    EXPECT_GE(h->usable(a), 150 * KiB);
    EXPECT_LT(h->usable(a), 150 * KiB + kPage);
    EXPECT_TRUE(check_prefix(a, 100 * KiB, 3));
    memset(a + 100 * KiB, 1, 50 * KiB);
    EXPECT_TRUE(h->resize(a, 52 * kPage - 16));   // all of b (26 pages each)
    EXPECT_FALSE(h->resize(a, 52 * kPage - 15));  // c is in the way
    // Shrink: the tail is free again, and the next block goes there.
    EXPECT_TRUE(h->resize(a, 80 * KiB));
    EXPECT_LT(h->usable(a), 80 * KiB + kPage);
    EXPECT_TRUE(check_prefix(a, 80 * KiB, 3));
    h.expect_consistent();
    char* d = static_cast<char*>(h->alloc(100 * KiB, 16, false));
    EXPECT_EQ((uintptr_t)d - 16, (uintptr_t)a - 16 + 21 * kPage);
    h->free(d);
    h->free(a);
    h->free(c);
    h.expect_consistent();
    // A page-aligned block resizes the same way.
    char* p = static_cast<char*>(h->alloc(64 * KiB, 4096, false));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(h->resize(p, 300 * KiB));
    EXPECT_EQ(h->usable(p), 300 * KiB);
    h->free(p);
}

TEST(LargeAlloc, TrimGivesIdleMemoryBack) {
    Heap h;
    char* keep = static_cast<char*>(h->alloc(64 * KiB, 16, false));
    char* a = static_cast<char*>(h->alloc(2 * MiB, 16, false));
    ASSERT_TRUE(keep && a);
    memset(a, 1, 2 * MiB);
    char* page0 = a - 16;
    EXPECT_EQ(resident_pages(page0, 2 * MiB), 512);
    h->free(a);
    EXPECT_EQ(h->trim(60 * 1000, false), 0u);  // not idle for a minute: kept
    EXPECT_EQ(resident_pages(page0, 2 * MiB), 512);
    EXPECT_EQ(g_discards.load(), 0);
    EXPECT_GE(h->trim(0, false), 2 * MiB);
    EXPECT_EQ(resident_pages(page0, 2 * MiB), 0);
    EXPECT_EQ(h->counters().dirty_free_bytes, 0u);
    EXPECT_EQ(h->trim(0, false), 0u);  // nothing dirty left: no more system calls
    int discards = g_discards.load();
    EXPECT_EQ(h->trim(0, false), 0u);
    EXPECT_EQ(g_discards.load(), discards);
    h.expect_consistent();
    // Periodic looks are rate-limited.
    h->free(keep);
    h->trim(60 * 1000, true);
    EXPECT_EQ(h->trim(0, true), 0u);
    // A whole free arena is unmapped.
    EXPECT_GT(h->trim(0, false), 0u);
    LargeHeap::Counters c = h->counters();
    EXPECT_EQ(c.arenas, 0u);
    EXPECT_EQ(c.arena_bytes, 0u);
    EXPECT_EQ(resident_pages(page0, kPage), -1);
    h.expect_consistent();
    // And the heap maps a new one when needed.
    char* b = static_cast<char*>(h->alloc(100 * KiB, 16, true));
    ASSERT_NE(b, nullptr);
    EXPECT_TRUE(all_zero(b, 100 * KiB));
    h->free(b);
}

TEST(LargeAlloc, OneSizeLoopsGoThroughTheHotCache) {
    Heap h;
    char* keep = static_cast<char*>(h->alloc(64 * KiB, 16, false));
    char* a = static_cast<char*>(h->alloc(256 * KiB, 16, false));
    ASSERT_TRUE(keep && a);
    memset(a, 0xff, 256 * KiB);
    size_t used = h->counters().used_bytes;
    h->free(a);
    h->free(a);  // a double free is ignored, not cached twice
    EXPECT_EQ(h->counters().used_bytes, used);  // waiting, not binned
    char* b = static_cast<char*>(h->alloc(256 * KiB, 16, true));
    EXPECT_EQ(b, a);
    EXPECT_TRUE(all_zero(b, 256 * KiB));  // calloc clears what the last owner left
    char* c2 = static_cast<char*>(h->alloc(256 * KiB, 16, false));  // the cache is empty again
    EXPECT_NE(c2, a);
    h->free(c2);
    h->free(b);
    // A look of trim() puts it back in the bins (and gives its pages back).
    EXPECT_GT(h->trim(0, false), 0u);
    LargeHeap::Counters c = h->counters();
    EXPECT_EQ(c.used_bytes, 64 * KiB + kPage);
    EXPECT_EQ(c.dirty_free_bytes, 0u);
    h.expect_consistent();
    h->free(keep);
}

// Fresh pages fault on first touch: a request that would take them first
// sends what waits in the hot cache (freed at other sizes) back to the bins,
// and reuses that memory, as python3's start-up needs.
TEST(LargeAlloc, OtherSizesReuseHotBlocksBeforeFreshPages) {
    Heap h;
    char* keep = static_cast<char*>(h->alloc(64 * KiB, 16, false));
    char* a = static_cast<char*>(h->alloc(120 * KiB, 16, false));
    ASSERT_TRUE(keep && a);
    memset(a, 0xab, 120 * KiB);
    h->free(a);  // waits in the hot cache
    char* b = static_cast<char*>(h->alloc(90 * KiB, 16, true));
    EXPECT_EQ(b, a);  // not the fresh pages after it
    EXPECT_TRUE(all_zero(b, 90 * KiB));  // calloc cleared the old contents
    char* c = static_cast<char*>(h->alloc(24 * KiB + 64 * KiB, 16, false));
    ASSERT_TRUE(c);
    EXPECT_GE(c, b + 90 * KiB);  // the rest of a, then fresh pages
    h.expect_consistent();
    h->free(c);
    h->free(b);
    h->free(keep);
    h->flush_hot();
    h.expect_consistent();
    EXPECT_EQ(h->counters().used_bytes, 0u);
}

TEST(LargeAlloc, ReallocIntoABlockWaitingInTheHotCacheKeepsFreeRangesJoined) {
    Heap h;
    char* a = static_cast<char*>(h->alloc(80 * KiB, 16, false));   // 21 pages
    char* b = static_cast<char*>(h->alloc(100 * KiB, 16, false));  // 26 pages
    char* c = static_cast<char*>(h->alloc(120 * KiB, 16, false));  // 31 pages
    char* d = static_cast<char*>(h->alloc(64 * KiB, 16, false));   // keeps c's far side taken
    ASSERT_TRUE(a && b && c && d);
    h->free(c);
    h->flush_hot();  // c is a free range now
    h->free(b);      // b waits in the hot cache, next to it
    EXPECT_TRUE(h->resize(a, 90 * KiB));  // takes part of b back out of the cache
    h.expect_consistent();                // and what is left of b joins c
    EXPECT_TRUE(h->resize(a, 80 * KiB + 26 * kPage + 31 * kPage - 16));  // all of b and c
    h.expect_consistent();
    h->free(a);
    h->free(d);
    h->flush_hot();
    h.expect_consistent();
    EXPECT_EQ(h->counters().used_bytes, 0u);
}

TEST(LargeAlloc, BigBlocksGetTheirOwnMapping) {
    Heap h;
    char* p = static_cast<char*>(h->alloc(6 * MiB, 16, false));
    ASSERT_NE(p, nullptr);
    EXPECT_FALSE(h->in_arena((uintptr_t)p));
    EXPECT_EQ((uintptr_t)p % kPage, 16u);
    EXPECT_EQ(h->counters().dedicated_blocks, 1u);
    memset(p, 2, h->usable(p));
    EXPECT_TRUE(h->resize(p, 4 * MiB));   // at least half still used: kept
    EXPECT_FALSE(h->resize(p, 2 * MiB));  // copy instead
    EXPECT_FALSE(h->resize(p, 7 * MiB));
    int unmaps = g_unmaps.load();
    h->free(p);
    EXPECT_EQ(g_unmaps.load(), unmaps + 1);
    EXPECT_EQ(h->counters().dedicated_blocks, 0u);
    // With own_mapping (allocation sites on) small blocks too.
    char* q = static_cast<char*>(h->alloc(64 * KiB, 16, true, true));
    ASSERT_NE(q, nullptr);
    EXPECT_FALSE(h->in_arena((uintptr_t)q));
    EXPECT_TRUE(all_zero(q, 64 * KiB));
    h->free(q);
}

// realloc of a block with a mapping of its own: the kernel moves the pages
// (mremap), as glibc does for its mmapped chunks, instead of a copy that
// faults in every page of a new mapping.
TEST(LargeAlloc, BigBlocksGrowAndShrinkWithTheirMapping) {
    Heap h;
    char* p = static_cast<char*>(h->alloc(6 * MiB, 16, false));
    ASSERT_NE(p, nullptr);
    fill(p, 6 * MiB, 7);
    char* q = static_cast<char*>(h->remap(p, 40 * MiB));
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(g_remaps.load(), 1);
    EXPECT_EQ((uintptr_t)q % kPage, 16u);
    EXPECT_EQ(hdr(q)[1] & 15, 2u) << "still shaped like a glibc mmapped chunk";
    EXPECT_EQ(h->usable(q), 40 * MiB + kPage - 16) << "exact: from the pointer to the mapping's end";
    EXPECT_TRUE(check_prefix(q, 6 * MiB, 7)) << "the old contents moved with the pages";
    EXPECT_EQ(resident_pages(q - 16 + 8 * MiB, 32 * MiB), 0) << "nothing of the new part was touched";
    EXPECT_FALSE(h->in_arena((uintptr_t)q));
    EXPECT_EQ(h->counters().dedicated_blocks, 1u);
    memset(q + 6 * MiB, 3, 34 * MiB);  // the new part is writable
    char* r = static_cast<char*>(h->remap(q, 5 * MiB));  // shrink
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(h->usable(r), 5 * MiB + kPage - 16);
    EXPECT_TRUE(check_prefix(r, 5 * MiB, 7));
    int unmaps = g_unmaps.load();
    h->free(r);
    EXPECT_EQ(g_unmaps.load(), unmaps + 1);
    EXPECT_EQ(h->counters().dedicated_blocks, 0u);
    // An alignment below a page keeps its offset, so its alignment.
    char* a = static_cast<char*>(h->alloc(5 * MiB, 2048, false));
    ASSERT_NE(a, nullptr);
    fill(a, 5 * MiB, 9);
    char* b = static_cast<char*>(h->remap(a, 20 * MiB));
    ASSERT_NE(b, nullptr);
    EXPECT_EQ((uintptr_t)b % 2048, 0u);
    EXPECT_GE(h->usable(b), 20 * MiB);
    EXPECT_TRUE(check_prefix(b, 5 * MiB, 9));
    h->free(b);
    // Not by remap: arena blocks (resize() or a copy) and page-aligned blocks.
    char* s = static_cast<char*>(h->alloc(256 * KiB, 16, false));
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(h->remap(s, 8 * MiB), nullptr);
    h->free(s);
    char* pa = static_cast<char*>(h->alloc(6 * MiB, kPage, false));
    ASSERT_NE(pa, nullptr);
    EXPECT_EQ(h->remap(pa, 12 * MiB), nullptr);
    h->free(pa);
    EXPECT_EQ(g_remaps.load(), 3);
    h.expect_consistent();
}

// A backend without remap (or a kernel that refuses) leaves the block as it
// was: the caller copies.
TEST(LargeAlloc, WithoutRemapBigBlocksStayPut) {
    void* mem = meta_alloc(sizeof(LargeHeap));
    LargeHeap* h = new (mem) LargeHeap;
    h->init(LargeBackend{raw_map, raw_unmap, raw_discard, nullptr});
    char* p = static_cast<char*>(h->alloc(6 * MiB, 16, false));
    ASSERT_NE(p, nullptr);
    fill(p, 6 * MiB, 5);
    EXPECT_EQ(h->remap(p, 12 * MiB), nullptr);
    EXPECT_TRUE(check_fill(p, 6 * MiB, 5));
    EXPECT_EQ(h->usable(p), 6 * MiB + kPage - 16);
    h->free(p);
    h->~LargeHeap();
    meta_free(mem, sizeof(LargeHeap));
}

TEST(LargeAlloc, ManyThreadsWithChecksums) {
    Heap h;
    constexpr int kThreads = 4, kSlots = 24;
#if defined(__SANITIZE_THREAD__)
    constexpr int kOps = 600;
#else
    constexpr int kOps = 2500;
#endif
    std::atomic<long> bad{0};
    std::atomic<bool> done{false};
    auto worker = [&](int t) {
        std::mt19937_64 rng(t + 100);
        struct Slot {
            char* p;
            size_t n;
            uint64_t seed;
        } slot[kSlots] = {};
        for (int op = 0; op < kOps; ++op) {
            Slot& s = slot[rng() % kSlots];
            if (s.p) {
                if (!check_fill(s.p, s.n, s.seed)) bad.fetch_add(1);
                if (rng() % 4 == 0) {  // realloc: in place or by copy
                    size_t n = 64 * KiB + rng() % (1200 * KiB);
                    if (h->resize(s.p, n)) {
                        if (!check_prefix(s.p, n < s.n ? n : s.n, s.seed)) bad.fetch_add(1);
                        s.n = n;
                        fill(s.p, s.n, s.seed);
                        continue;
                    }
                }
                h->free(s.p);
                s.p = nullptr;
            }
            size_t align = rng() % 8 == 0 ? (size_t)1 << (4 + rng() % 14) : 16;
            s.n = rng() % 4 ? 64 * KiB + rng() % (960 * KiB) : 200 * KiB;  // one size: the hot cache
            bool zero = rng() % 3 == 0;
            s.p = static_cast<char*>(h->alloc(s.n, align, zero));
            if (!s.p || (uintptr_t)s.p % align) {
                bad.fetch_add(1);
                s.p = nullptr;
                continue;
            }
            if (zero && !all_zero(s.p, s.n)) bad.fetch_add(1);
            s.seed = rng();
            fill(s.p, s.n, s.seed);
        }
        for (Slot& s : slot)
            if (s.p) {
                if (!check_fill(s.p, s.n, s.seed)) bad.fetch_add(1);
                h->free(s.p);
            }
    };
    std::thread trimmer([&] {
        while (!done.load()) {
            h->trim(0, false);  // gives back and unmaps whatever is free, at once
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) ts.emplace_back(worker, t);
    for (auto& t : ts) t.join();
    done = true;
    trimmer.join();
    h->flush_hot();
    EXPECT_EQ(bad.load(), 0);
    h.expect_consistent();
    EXPECT_EQ(h->counters().used_bytes, 0u);
}

TEST(LargeAlloc, ForkedChildInheritsTheArenas) {
    Heap h;
    char* a = static_cast<char*>(h->alloc(512 * KiB, 16, false));
    char* b = static_cast<char*>(h->alloc(512 * KiB, 16, false));
    ASSERT_TRUE(a && b);
    fill(a, 512 * KiB, 9);
    h->free(b);
    h->fork_prepare();
    pid_t pid = fork();
    if (pid == 0) {
        h->fork_child();
        int rc = 0;
        if (!check_fill(a, 512 * KiB, 9)) rc |= 1;
        char* c = static_cast<char*>(h->alloc(512 * KiB, 16, true));  // b's pages again
        if (c != b || !all_zero(c, 512 * KiB)) rc |= 2;
        h->free(a);
        h->free(c);
        char why[200];
        if (!h->check(why, sizeof why)) rc |= 4;
        _exit(rc);
    }
    h->fork_parent();
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_TRUE(check_fill(a, 512 * KiB, 9));
    h->free(a);
    h.expect_consistent();
}

TEST(LargeAlloc, SmallAddressSpaceGetsSmallerArenas) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    GTEST_SKIP() << "sanitizers reserve most of the address space";
#endif
    pid_t pid = fork();
    if (pid == 0) {
        // Room for about 7 MiB more than the process has now: a 4 MiB
        // arena, then a smaller one than doubling would ask for.
        FILE* f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1) _exit(10);
        fclose(f);
        struct rlimit rl = {pages * kPage + 7 * MiB, RLIM_INFINITY};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(11);
        Heap h;
        std::vector<void*> v;
        for (int i = 0; i < 12; ++i) {
            void* p = h->alloc(500 * KiB, 16, false);
            if (!p) break;
            v.push_back(p);
        }
        // 8 blocks in a 4 MiB arena, 4 in a 2 MiB one.
        int rc = v.size() == 12 ? 0 : 1;
        if (h->counters().arena_bytes != 6 * MiB) rc |= 2;
        for (void* p : v) h->free(p);
        _exit(rc);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}
