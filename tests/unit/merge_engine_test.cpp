// The merge engine on real memory (no shim): scan_batch, unmerge_range,
// zero_file_pages, region_mergeable. Uses its own State, not state().
#include <gtest/gtest.h>

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <vector>

#include "scanner/batch_scan.h"
#include "scanner/merge.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/proc.h"
#include "scanner/runtime.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"
#include "tests/unit/scan_fixture.h"

using namespace dedup;

namespace {

constexpr size_t kPg = 4096;
constexpr uint64_t kPresent = 1ull << 63;
constexpr uint64_t kFilePage = 1ull << 61;

uint64_t pagemap_entry(uintptr_t addr) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ~0ull;
    uint64_t v = ~0ull;
    if (pread(fd, &v, 8, (off_t)(addr / kPg * 8)) != 8) v = ~0ull;
    close(fd);
    return v;
}

// Fills a page with content derived from `pattern` (0 = all zero).
void fill_pattern(void* page, unsigned pattern) {
    if (pattern == 0) {
        memset(page, 0, kPg);
        return;
    }
    uint32_t x = pattern * 0x9e3779b9u;
    unsigned char* c = static_cast<unsigned char*>(page);
    for (size_t i = 0; i < kPg; ++i) {
        x = x * 1664525u + 1013904223u;
        c[i] = (unsigned char)(x >> 24);
    }
    c[0] = (unsigned char)pattern;  // no two patterns alike
}

// Reads every byte through a volatile pointer (faults the page in).
uint64_t touch(uintptr_t addr) {
    const volatile unsigned char* p = reinterpret_cast<const volatile unsigned char*>(addr);
    uint64_t sum = 0;
    for (size_t i = 0; i < kPg; i += 64) sum += p[i];
    return sum;
}

struct MergeFixture : ScanFixture {
    std::vector<std::pair<void*, size_t>> maps;

    void TearDown() override {
        for (auto& m : maps) munmap(m.first, m.second);
        ScanFixture::TearDown();
    }

    uintptr_t map_region(size_t pages, uint32_t flags = 0, bool reg = true) {
        void* p = mmap(nullptr, pages * kPg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        EXPECT_NE(p, MAP_FAILED);
        if (p == MAP_FAILED) return 0;
        maps.emplace_back(p, pages * kPg);
        uintptr_t a = (uintptr_t)p;
        if (reg) {
            EXPECT_TRUE(s().regions.insert(a, a + pages * kPg, PROT_READ | PROT_WRITE, flags));
        }
        return a;
    }

    // One scanner look over the whole region [start, start+pages).
    size_t scan(uintptr_t start, size_t pages) {
        MmLockGuard g(s().lock);
        return scan_range(start, pages);
    }
    void end_pass() {
        MmLockGuard g(s().lock);
        s().index.drop_candidates();
    }
    PageMeta& meta(uintptr_t addr) { return s().regions.find(addr)->at(addr); }
};

bool page_equals_pattern(uintptr_t addr, unsigned pattern) {
    unsigned char want[kPg];
    fill_pattern(want, pattern);
    return memcmp(reinterpret_cast<void*>(addr), want, kPg) == 0;
}

}  // namespace

TEST(MergeEngine, PageHashIsContentHash) {
    std::vector<unsigned char> a(kPg, 0), b(kPg, 0);
    EXPECT_EQ(page_hash(a.data()), page_hash(b.data()));
    b[4095] = 1;
    EXPECT_NE(page_hash(a.data()), page_hash(b.data()));
    b[4095] = 0;
    b[0] = 1;
    EXPECT_NE(page_hash(a.data()), page_hash(b.data()));
}

TEST(MergeEngine, RegionMergeable) {
    State st;
    Region r{};
    r.start = 0x100000;
    r.end = 0x200000;
    r.prot = PROT_READ | PROT_WRITE;
    r.flags = 0;
    r.meta = nullptr;
    st.merge_all = true;
    EXPECT_TRUE(region_mergeable(st, r));
    r.flags = kRegAdvised;
    EXPECT_TRUE(region_mergeable(st, r));
    r.flags = kRegDontfork | kRegHugepage | kRegSequential;
    EXPECT_TRUE(region_mergeable(st, r));
    r.flags = kRegExcluded;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = kRegExcluded | kRegAdvised;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = kRegUnmergeable;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = 0;
    for (int prot : {PROT_NONE, PROT_READ, PROT_WRITE, PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC}) {
        r.prot = prot;
        EXPECT_FALSE(region_mergeable(st, r)) << "prot " << prot;
    }
    // Scope "advised": only MADV_MERGEABLE regions.
    st.merge_all = false;
    r.prot = PROT_READ | PROT_WRITE;
    r.flags = 0;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = kRegDontfork;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = kRegAdvised;
    EXPECT_TRUE(region_mergeable(st, r));
    r.flags = kRegAdvised | kRegExcluded;
    EXPECT_FALSE(region_mergeable(st, r));
    r.flags = kRegAdvised;
    r.prot = PROT_READ;
    EXPECT_FALSE(region_mergeable(st, r));
}

// The main scenario: duplicates, zero pages and unique pages in one region.
TEST_F(MergeFixture, MergesDuplicatesFreesZerosAndKeepsContents) {
    const size_t n = 64;
    uintptr_t a = map_region(n);
    ASSERT_NE(a, 0u);
    std::vector<unsigned> pat(n);
    for (size_t i = 0; i < n; ++i) {
        if (i % 8 == 7) pat[i] = 0;             // 8 zero pages
        else if (i == 3) pat[i] = 100;          // unique
        else if (i == 42) pat[i] = 101;         // unique
        else pat[i] = 1 + (unsigned)(i % 3);    // patterns 1, 2, 3
    }
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), pat[i]);
    size_t dup_pages = 0, zero_pages = 0;
    for (unsigned p : pat) {
        dup_pages += p >= 1 && p <= 3;
        zero_pages += p == 0;
    }
    ASSERT_EQ(zero_pages, 8u);

    // Pass 1 only remembers hashes.
    EXPECT_EQ(scan(a, n), n);
    EXPECT_EQ(s().stats.pages_scanned.load(), n);
    EXPECT_EQ(s().store.slots_in_use(), 0u);
    EXPECT_EQ(s().stats.zero_pages.load(), 0u);
    EXPECT_EQ(s().stats.pages_merged.load(), 0u);
    end_pass();
    // Pass 2 merges.
    EXPECT_EQ(scan(a, n), n);
    EXPECT_EQ(s().stats.merge_failures.load(), 0u);
    EXPECT_EQ(s().stats.vma_budget_skips.load(), 0u);
    EXPECT_EQ(s().store.slots_in_use(), 3u);
    EXPECT_EQ(s().store.total_refs(), dup_pages);
    EXPECT_EQ(s().stats.pages_merged.load(), dup_pages);
    EXPECT_EQ(s().stats.zero_pages.load(), zero_pages);
    {
        MmLockGuard g(s().lock);
        EXPECT_EQ(bytes_saved_now(s()), (dup_pages - 3 + zero_pages) * kPg);
    }
    EXPECT_GE(s().stats.bytes_saved_peak.load(), (dup_pages - 3 + zero_pages) * kPg);

    // Metadata.
    for (size_t i = 0; i < n; ++i) {
        uint32_t st = meta(a + i * kPg).state;
        if (pat[i] == 0) EXPECT_TRUE(is_zero_freed(st)) << i;
        else if (pat[i] >= 100) EXPECT_EQ(st, 0u) << i;
        else {
            EXPECT_TRUE(has_slot(st)) << i;
            EXPECT_TRUE(in_file_vma(st)) << i;
        }
    }
    // Same pattern, same slot; different patterns, different slots.
    uint32_t slot_of_pat[4] = {~0u, ~0u, ~0u, ~0u};
    for (size_t i = 0; i < n; ++i) {
        if (pat[i] < 1 || pat[i] > 3) continue;
        uint32_t sl = slot_of(meta(a + i * kPg).state);
        if (slot_of_pat[pat[i]] == ~0u) slot_of_pat[pat[i]] = sl;
        EXPECT_EQ(sl, slot_of_pat[pat[i]]) << "page " << i;
    }
    EXPECT_NE(slot_of_pat[1], slot_of_pat[2]);
    EXPECT_NE(slot_of_pat[2], slot_of_pat[3]);
    EXPECT_NE(slot_of_pat[1], slot_of_pat[3]);

    // Zero pages were given back: not present before anyone reads them.
    for (size_t i = 0; i < n; ++i)
        if (pat[i] == 0) {
            EXPECT_FALSE(pagemap_entry(a + i * kPg) & kPresent) << "zero page " << i << " still present";
        }
    // Unique pages were left alone: present and anonymous.
    for (size_t i : {3u, 42u}) {
        uint64_t pm = pagemap_entry(a + i * kPg);
        EXPECT_TRUE(pm & kPresent) << i;
        EXPECT_FALSE(pm & kFilePage) << i;
    }
    // Merged pages map the memfd once touched.
    for (size_t i = 0; i < n; ++i) {
        if (pat[i] < 1 || pat[i] > 3) continue;
        touch(a + i * kPg);
        uint64_t pm = pagemap_entry(a + i * kPg);
        EXPECT_TRUE(pm & kPresent) << i;
        EXPECT_TRUE(pm & kFilePage) << "merged page " << i << " does not map the memfd";
    }
    // Contents unchanged, byte for byte (zero pages read back as zeros).
    for (size_t i = 0; i < n; ++i) EXPECT_TRUE(page_equals_pattern(a + i * kPg, pat[i])) << "page " << i;

    // A write to one merged page changes only that page.
    size_t victim = 0;  // pattern 1
    ASSERT_EQ(pat[victim], 1u);
    reinterpret_cast<volatile unsigned char*>(a)[100] ^= 0xff;
    uint64_t pm = pagemap_entry(a);
    EXPECT_TRUE(pm & kPresent);
    EXPECT_FALSE(pm & kFilePage) << "written page still maps the memfd";
    EXPECT_FALSE(page_equals_pattern(a, 1));
    for (size_t i = 1; i < n; ++i) EXPECT_TRUE(page_equals_pattern(a + i * kPg, pat[i])) << "page " << i;
    unsigned char canon[kPg];
    fill_pattern(canon, 1);
    EXPECT_EQ(memcmp(s().store.content(slot_of_pat[1]), canon, kPg), 0) << "canonical page changed";

    // The next look counts the copy-on-write break, and re-faulted zero pages.
    uint64_t refs_before = s().store.total_refs();
    scan(a, n);
    EXPECT_EQ(s().stats.cow_breaks.load(), 1u);
    EXPECT_EQ(s().store.total_refs(), refs_before - 1);
    EXPECT_EQ(s().store.slots_in_use(), 3u);
    EXPECT_EQ(s().stats.zero_pages.load(), 0u) << "zero pages read since were not noticed";
    EXPECT_FALSE(has_slot(meta(a).state));
    EXPECT_TRUE(in_file_vma(meta(a).state));

    // Unmerge: private pages again, same contents, references gone.
    reinterpret_cast<volatile unsigned char*>(a)[100] ^= 0xff;  // restore pattern 1 in page 0
    {
        MmLockGuard g(s().lock);
        EXPECT_EQ(unmerge_range(s(), a, a + n * kPg, Unmerge::kPrivateNow), 0);
    }
    EXPECT_EQ(s().store.slots_in_use(), 0u);
    EXPECT_EQ(s().store.total_refs(), 0u);
    EXPECT_GE(s().stats.unmerged_pages.load(), dup_pages);
    for (size_t i = 0; i < n; ++i) {
        touch(a + i * kPg);
        uint64_t e = pagemap_entry(a + i * kPg);
        EXPECT_FALSE(e & kFilePage) << "page " << i << " still maps the memfd after unmerge";
        EXPECT_TRUE(page_equals_pattern(a + i * kPg, pat[i])) << "page " << i;
        EXPECT_FALSE(in_file_vma(meta(a + i * kPg).state)) << i;
        EXPECT_FALSE(has_slot(meta(a + i * kPg).state)) << i;
    }
    // Writable everywhere, and writes stay private.
    for (size_t i = 0; i < n; ++i) reinterpret_cast<volatile unsigned char*>(a + i * kPg)[7] = (unsigned char)i;
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(reinterpret_cast<unsigned char*>(a + i * kPg)[7], (unsigned char)i);
}

TEST_F(MergeFixture, ThirdCopyMergesOntoExistingSlotOnFirstLook) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 7);
    scan(a, n);
    end_pass();
    scan(a, n);
    ASSERT_EQ(s().store.slots_in_use(), 1u);
    ASSERT_EQ(s().store.total_refs(), n);
    // A new region with the same content merges on its first look (stable tree).
    uintptr_t b = map_region(4);
    for (size_t i = 0; i < 4; ++i) fill_pattern((void*)(b + i * kPg), 7);
    scan(b, 4);
    EXPECT_EQ(s().store.slots_in_use(), 1u);
    EXPECT_EQ(s().store.total_refs(), n + 4);
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_TRUE(page_equals_pattern(b + i * kPg, 7));
        EXPECT_TRUE(pagemap_entry(b + i * kPg) & kFilePage) << i;
    }
}

TEST_F(MergeFixture, DuplicatesAcrossRegionsMerge) {
    uintptr_t a = map_region(16);
    uintptr_t b = map_region(16);
    for (size_t i = 0; i < 16; ++i) {
        fill_pattern((void*)(a + i * kPg), 200 + (unsigned)i);
        fill_pattern((void*)(b + i * kPg), 200 + (unsigned)i);
    }
    scan(a, 16);
    scan(b, 16);
    end_pass();
    scan(a, 16);
    scan(b, 16);
    EXPECT_EQ(s().stats.merge_failures.load(), 0u);
    EXPECT_EQ(s().store.slots_in_use(), 16u);
    EXPECT_EQ(s().store.total_refs(), 32u);
    EXPECT_LE(s().stats.merge_runs.load(), 4u);
    for (size_t i = 0; i < 16; ++i) {
        EXPECT_TRUE(page_equals_pattern(a + i * kPg, 200 + (unsigned)i)) << i;
        EXPECT_TRUE(page_equals_pattern(b + i * kPg, 200 + (unsigned)i)) << i;
        EXPECT_TRUE(pagemap_entry(a + i * kPg) & kFilePage) << i;
        EXPECT_TRUE(pagemap_entry(b + i * kPg) & kFilePage) << i;
    }
}

TEST_F(MergeFixture, CopiedBufferMergesAsRuns) {
    const size_t half = 32;
    uintptr_t a = map_region(2 * half);
    std::mt19937_64 rng(5);
    for (size_t i = 0; i < half * kPg / 8; ++i) reinterpret_cast<uint64_t*>(a)[i] = rng();
    memcpy((void*)(a + half * kPg), (void*)a, half * kPg);
    scan(a, 2 * half);
    end_pass();
    scan(a, 2 * half);
    EXPECT_EQ(s().stats.merge_failures.load(), 0u);
    EXPECT_EQ(s().store.slots_in_use(), half);
    EXPECT_EQ(s().store.total_refs(), 2 * half);
    EXPECT_EQ(s().stats.pages_merged.load(), 2 * half);
    EXPECT_LE(s().stats.merge_runs.load(), 4u) << "copies merged page by page instead of as runs";
    // The slots of a run are consecutive, in the order of the pages.
    uint32_t first = slot_of(meta(a).state);
    for (size_t i = 0; i < half; ++i) {
        EXPECT_EQ(slot_of(meta(a + i * kPg).state), first + i) << i;
        EXPECT_EQ(slot_of(meta(a + (half + i) * kPg).state), first + i) << i;
    }
    std::mt19937_64 rng2(5);
    for (size_t i = 0; i < half * kPg / 8; ++i) {
        uint64_t w = rng2();
        ASSERT_EQ(reinterpret_cast<uint64_t*>(a)[i], w) << i;
        ASSERT_EQ(reinterpret_cast<uint64_t*>(a + half * kPg)[i], w) << i;
    }
}

TEST_F(MergeFixture, ChangedPageIsVolatileAndNotMerged) {
    uintptr_t a = map_region(4);
    for (size_t i = 0; i < 4; ++i) fill_pattern((void*)(a + i * kPg), 9);
    scan(a, 4);
    end_pass();
    fill_pattern((void*)(a + 2 * kPg), 10);  // changed since the first look
    scan(a, 4);
    EXPECT_EQ(s().stats.pass_volatile, 1u);
    EXPECT_EQ(meta(a + 2 * kPg).state, 0u);
    EXPECT_TRUE(has_slot(meta(a).state));
    EXPECT_TRUE(has_slot(meta(a + kPg).state));
    EXPECT_TRUE(has_slot(meta(a + 3 * kPg).state));
    EXPECT_EQ(s().store.total_refs(), 3u);
    EXPECT_TRUE(page_equals_pattern(a + 2 * kPg, 10));
}

TEST_F(MergeFixture, UntouchedPagesAreNotScanned) {
    uintptr_t a = map_region(16);
    fill_pattern((void*)(a + 5 * kPg), 3);
    scan(a, 16);
    EXPECT_EQ(s().stats.pages_scanned.load(), 1u);
    end_pass();
    scan(a, 16);
    // Still only one page present: the scanner must not fault the others in.
    for (size_t i = 0; i < 16; ++i)
        if (i != 5) {
            EXPECT_FALSE(pagemap_entry(a + i * kPg) & kPresent) << i;
        }
}

TEST_F(MergeFixture, ZeroFilePagesMakesMergedPagesReadZero) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), i == 6 ? 50 : 11);
    scan(a, n);
    end_pass();
    scan(a, n);
    ASSERT_EQ(s().store.total_refs(), n - 1);
    {
        MmLockGuard g(s().lock);
        EXPECT_EQ(zero_file_pages(s(), a, a + n * kPg), 0);
    }
    for (size_t i = 0; i < n; ++i) {
        if (i == 6) {
            EXPECT_TRUE(page_equals_pattern(a + i * kPg, 50)) << "unmerged page was zeroed";
        } else {
            EXPECT_TRUE(page_equals_pattern(a + i * kPg, 0)) << "merged page " << i << " does not read zeros";
            EXPECT_EQ(meta(a + i * kPg).state, 0u);
            EXPECT_FALSE(pagemap_entry(a + i * kPg) & kFilePage);
        }
    }
    EXPECT_EQ(s().store.total_refs(), 0u);
    EXPECT_EQ(s().store.slots_in_use(), 0u);
    // Fresh memory is writable.
    reinterpret_cast<volatile char*>(a)[0] = 1;
    EXPECT_EQ(reinterpret_cast<char*>(a)[0], 1);
}

TEST_F(MergeFixture, PartialUnmergeKeepsTheRest) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 12);
    scan(a, n);
    end_pass();
    scan(a, n);
    ASSERT_EQ(s().store.total_refs(), n);
    {
        MmLockGuard g(s().lock);
        EXPECT_EQ(unmerge_range(s(), a + 2 * kPg, a + 5 * kPg, Unmerge::kPrivateNow), 0);
    }
    EXPECT_EQ(s().store.total_refs(), n - 3);
    EXPECT_EQ(s().store.slots_in_use(), 1u);
    for (size_t i = 0; i < n; ++i) {
        touch(a + i * kPg);
        bool inside = i >= 2 && i < 5;
        EXPECT_EQ((pagemap_entry(a + i * kPg) & kFilePage) != 0, !inside) << i;
        EXPECT_TRUE(page_equals_pattern(a + i * kPg, 12)) << i;
    }
}

TEST_F(MergeFixture, VmaBudgetExhaustedSkipsMergeAndLeavesPagesWritable) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 13);
    // A reserve that leaves no room at all.
    uint64_t max = s().vmas.max_map_count();
    uint64_t now = count_vmas();
    ASSERT_GT(now, 0u);
    ASSERT_LT(now, max);
    s().vmas.init(max - now + 1);
    ASSERT_LT(s().vmas.limit(), now);
    scan(a, n);
    end_pass();
    scan(a, n);
    // Counted per pass, in pages (published into vma_budget_skips at pass end).
    EXPECT_GT(s().stats.pass_budget_skips, 0u);
    EXPECT_EQ(s().store.total_refs(), 0u);
    EXPECT_EQ(s().stats.pages_merged.load(), 0u);
    for (size_t i = 0; i < n; ++i) {
        EXPECT_FALSE(pagemap_entry(a + i * kPg) & kFilePage) << i;
        EXPECT_TRUE(page_equals_pattern(a + i * kPg, 13)) << i;
        reinterpret_cast<volatile char*>(a + i * kPg)[1] = 1;  // still writable (would crash if left PROT_READ)
    }
}

// The store closes its memfd once mapped, so a program that closes or dup2s
// over every descriptor cannot take merging away: merges work with no
// descriptor of the memfd left in the process.
TEST_F(MergeFixture, MergesNeedNoDescriptor) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 14);
    ASSERT_TRUE(s().store.ensure_ready());
    for (int fd = 0; fd < 4096; ++fd) {
        char path[64], target[256] = {0};
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (readlink(path, target, sizeof(target) - 1) > 0) {
            ASSERT_EQ(strstr(target, "libdedup-canonical"), nullptr) << "fd " << fd << " -> " << target;
        }
    }
    scan(a, n);
    end_pass();
    scan(a, n);
    EXPECT_EQ(s().stats.merge_failures.load(), 0u);
    EXPECT_EQ(s().store.total_refs(), n);
    for (size_t i = 0; i < n; ++i) {
        uint64_t e = pagemap_entry(a + i * kPg);
        EXPECT_TRUE((e & kFilePage) || !(e & (1ull << 63))) << i;  // merged: file page, or not touched since
        EXPECT_TRUE(page_equals_pattern(a + i * kPg, 14)) << i;
        reinterpret_cast<volatile char*>(a + i * kPg)[1] = 1;  // writable: copy on write
    }
}

TEST_F(MergeFixture, ForgetPageDropsReferences) {
    const size_t n = 4;
    uintptr_t a = map_region(n + 1);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 15);
    fill_pattern((void*)(a + n * kPg), 0);
    scan(a, n + 1);
    end_pass();
    scan(a, n + 1);
    ASSERT_EQ(s().store.total_refs(), n);
    ASSERT_EQ(s().stats.zero_pages.load(), 1u);
    MmLockGuard g(s().lock);
    Region* r = s().regions.find(a);
    ASSERT_NE(r, nullptr);
    size_t pages = r->pages();
    for (size_t i = 0; i < pages; ++i) forget_page(s(), r->meta[i]);
    EXPECT_EQ(s().store.total_refs(), 0u);
    EXPECT_EQ(s().store.slots_in_use(), 0u);
    EXPECT_EQ(s().stats.zero_pages.load(), 0u);
    for (size_t i = 0; i < pages; ++i) EXPECT_EQ(r->meta[i].state, 0u);
    // The slot's index entry went with it: identical content becomes a candidate again.
    unsigned char pg[kPg];
    fill_pattern(pg, 15);
    PageIndex::Entry* e = s().index.find(page_hash(pg));
    EXPECT_TRUE(e == nullptr || !PageIndex::is_slot(e->value()));
}

// A buffer pinned by a syscall wrapper (kernel write in progress) is not
// write-protected: the run is skipped and merged on a later pass.
TEST_F(MergeFixture, PinnedBufferIsSkippedThenMergedAfterUnpin) {
    const size_t n = 8;
    uintptr_t a = map_region(n);
    for (size_t i = 0; i < n; ++i) fill_pattern((void*)(a + i * kPg), 16);
    scan(a, n);
    end_pass();
    int token = rt_kernel_write_pin(a + 5 * kPg + 100, 10);  // as read(fd, a+5 pages+100, 10) would
    scan(a, n);
    uint64_t skips = s().stats.pinned_skips.load();
    EXPECT_GT(skips, 0u);
    EXPECT_FALSE(has_slot(meta(a + 5 * kPg).state)) << "pinned page was merged";
    EXPECT_FALSE(pagemap_entry(a + 5 * kPg) & kFilePage);
    // Still writable while pinned (a kernel write would not get EFAULT).
    reinterpret_cast<volatile unsigned char*>(a + 5 * kPg)[100] = reinterpret_cast<unsigned char*>(a + 5 * kPg)[100];
    rt_kernel_write_unpin(token);
    scan(a, n);
    end_pass();
    scan(a, n);
    EXPECT_EQ(s().stats.pinned_skips.load(), skips);
    EXPECT_TRUE(has_slot(meta(a + 5 * kPg).state));
    EXPECT_EQ(s().store.total_refs(), n);
    for (size_t i = 0; i < n; ++i) EXPECT_TRUE(page_equals_pattern(a + i * kPg, 16)) << i;
}
