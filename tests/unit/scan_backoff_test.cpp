// The scan's back-off of unchanged unique pages (KSM's smart scan): the
// schedule in page_meta.h, and scan_batch on real memory (no shim) passing
// over backed-off pages, putting a changed page back to level 0 and merging
// a duplicate written late within the stated bound.
#include <gtest/gtest.h>

#include <string.h>
#include <sys/mman.h>

#include <memory>
#include <vector>

#include "scanner/batch_scan.h"
#include "scanner/merge.h"
#include "scanner/os/kept_file.h"
#include "scanner/page_meta.h"
#include "scanner/state.h"
#include "tests/unit/scan_fixture.h"

using namespace dedup;

namespace {

constexpr size_t kPg = 4096;

PageMeta meta_with(uint32_t fingerprint_bits, uint32_t level) {
    PageMeta m{};
    m.hash32 = (fingerprint_bits & ~kBackoffMask) | level;
    return m;
}

// ---- the schedule alone ----------------------------------------------------

TEST(BackoffSchedule, ClimbsOneLevelAtATimeUpToTheMaximum) {
    PageMeta m{};
    m.hash32 = fingerprint_of(0x123456789abcdef0ull);
    uint32_t fp = fingerprint(m);
    for (uint32_t want = 1; want <= kMaxBackoff + 3; ++want) {
        backoff_climb(m);
        EXPECT_EQ(backoff(m), want < kMaxBackoff ? want : kMaxBackoff);
        EXPECT_EQ(fingerprint(m), fp) << "climbing must not change the fingerprint";
        EXPECT_TRUE(same_fingerprint(m, 0x123456789abcdef0ull));
    }
    PageMeta never{};  // not looked at: nothing to climb from
    backoff_climb(never);
    EXPECT_EQ(never.hash32, 0u);
}

TEST(BackoffSchedule, FingerprintIgnoresTheLevelBitsAndIsNeverZero) {
    EXPECT_NE(fingerprint_of(0), 0u);
    EXPECT_NE(fingerprint_of(3), 0u);
    EXPECT_EQ(fingerprint_of(0) & kBackoffMask, 0u);
    EXPECT_EQ(fingerprint_of(0xffffffffull) & kBackoffMask, 0u);
    // A changed page (another hash) is not the same fingerprint: level 0 again
    // when the scan records it.
    PageMeta m = meta_with(fingerprint_of(0x1111), kMaxBackoff);
    EXPECT_TRUE(same_fingerprint(m, 0x1111));
    EXPECT_FALSE(same_fingerprint(m, 0x2221));
    m.hash32 = fingerprint_of(0x2221);
    EXPECT_EQ(backoff(m), 0u);
}

TEST(BackoffSchedule, LevelLIsLookedAtOncePerTwoToTheLPasses) {
    for (uint32_t fp = 0; fp < 64; fp += 4) {
        for (uint32_t level = 0; level <= kMaxBackoff; ++level) {
            PageMeta m = meta_with(fp, level);
            // In any window of 2^level consecutive passes: exactly one look.
            for (uint64_t start = 0; start < 40; ++start) {
                int looks = 0;
                for (uint64_t p = start; p < start + (1u << level); ++p) looks += backoff_look_pass(m, p);
                EXPECT_EQ(looks, 1) << "fp " << fp << " level " << level << " from pass " << start;
            }
        }
    }
}

// Two pages at any levels (equal content or not) are both looked at in some
// pass of every kBackoffPeriod consecutive passes: the bound on pairing a
// unique page with a duplicate that appears later.
TEST(BackoffSchedule, AnyTwoPagesShareALookPassInEveryPeriod) {
    for (uint32_t fp = 0; fp < 64; fp += 4) {
        for (uint32_t la = 0; la <= kMaxBackoff; ++la) {
            for (uint32_t lb = 0; lb <= kMaxBackoff; ++lb) {
                PageMeta a = meta_with(fp, la), b = meta_with(fp * 7 + 4, lb);
                for (uint64_t p = 0; p < 64; ++p) {
                    // A higher level's look passes are among a lower one's.
                    if (la >= lb && backoff_look_pass(a, p)) {
                        EXPECT_TRUE(backoff_look_pass(b, p));
                    }
                }
                for (uint64_t start = 0; start < 40; ++start) {
                    bool both = false;
                    for (uint64_t p = start; p < start + kBackoffPeriod; ++p)
                        both |= backoff_look_pass(a, p) && backoff_look_pass(b, p);
                    EXPECT_TRUE(both) << "fp " << fp << " levels " << la << "," << lb << " from " << start;
                }
            }
        }
    }
}

// ---- scan_batch on real memory --------------------------------------------

void fill_unique(void* page, unsigned pattern) {
    uint32_t x = pattern * 0x9e3779b9u + 7;
    unsigned char* c = static_cast<unsigned char*>(page);
    for (size_t i = 0; i < kPg; ++i) {
        x = x * 1664525u + 1013904223u;
        c[i] = (unsigned char)(x >> 24);
    }
    memcpy(c, &pattern, sizeof pattern);  // no two patterns alike
}

struct BackoffScan : ScanFixture {
    uintptr_t base = 0;
    size_t pages = 0;

    void TearDown() override {
        if (base) munmap((void*)base, pages * kPg);
        ScanFixture::TearDown();
    }
    void map_unique(size_t n) {
        pages = n;
        void* p = mmap(nullptr, n * kPg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT_NE(p, MAP_FAILED);
        base = (uintptr_t)p;
        for (size_t i = 0; i < n; ++i) fill_unique(page(i), 1000 + (unsigned)i);
        ASSERT_TRUE(s().regions.insert(base, base + n * kPg, PROT_READ | PROT_WRITE, 0));
    }
    void* page(size_t i) { return reinterpret_cast<void*>(base + i * kPg); }
    PageMeta& meta(size_t i) { return s().regions.find(base)->at(base + i * kPg); }

    // One full pass as the scanner thread makes it: every page, then the end
    // of the pass (candidates dropped, pass number bumped). Returns the pages
    // hashed in it.
    uint64_t pass() {
        MmLockGuard g(s().lock);
        uint64_t before = s().stats.pages_scanned.load();
        EXPECT_EQ(scan_range(base, pages), pages);
        s().index.drop_candidates();
        s().stats.full_scans.fetch_add(1);
        return s().stats.pages_scanned.load() - before;
    }
};

TEST_F(BackoffScan, UnchangedUniquePagesAreHashedLessOften) {
    const size_t n = 256;
    map_unique(n);
    EXPECT_EQ(pass(), n);  // first look: hashes recorded
    EXPECT_EQ(pass(), n);  // stable, unique: candidates, level 1
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(backoff(meta(i)), 1u) << i;
    // After a few more passes every page is at the top level.
    for (int k = 0; k < 2 * (int)kBackoffPeriod; ++k) pass();
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(backoff(meta(i)), kMaxBackoff) << i;
    // From then on every page is hashed exactly once per kBackoffPeriod
    // passes (all in one pass: the pages climbed together), and passed over
    // unhashed, counted as skipped, in the others.
    uint64_t total = 0;
    int idle = 0;
    for (int k = 0; k < (int)kBackoffPeriod; ++k) {
        uint64_t h = pass();
        idle += h == 0;
        total += h;
    }
    EXPECT_EQ(total, n);
    EXPECT_EQ(idle, (int)kBackoffPeriod - 1);
    EXPECT_EQ(s().store.slots_in_use(), 0u);
    EXPECT_EQ(s().stats.pages_merged.load(), 0u);
    for (size_t i = 0; i < n; ++i) {
        unsigned char want[kPg];
        fill_unique(want, 1000 + (unsigned)i);
        EXPECT_EQ(memcmp(page(i), want, kPg), 0) << "page " << i;
    }
}

TEST_F(BackoffScan, AChangedPageGoesBackToLevelZero) {
    const size_t n = 64;
    map_unique(n);
    for (int k = 0; k < 3 * (int)kBackoffPeriod; ++k) pass();
    ASSERT_EQ(backoff(meta(10)), kMaxBackoff);
    fill_unique(page(10), 5000);  // the program rewrites it
    // Noticed at its next look, at most kBackoffPeriod passes on.
    int passes = 0;
    while (passes < (int)kBackoffPeriod && backoff(meta(10)) != 0) {
        pass();
        ++passes;
    }
    EXPECT_EQ(backoff(meta(10)), 0u) << "after " << passes << " passes";
    EXPECT_TRUE(same_fingerprint(meta(10), page_hash(page(10))));
    // Then it climbs again, as any unchanged unique page.
    pass();
    EXPECT_EQ(backoff(meta(10)), 1u);
}

// A duplicate of a backed-off page written later (over another backed-off
// page: the worst case) merges within 2 * kBackoffPeriod passes: at most
// kBackoffPeriod until the rewritten page is looked at again, then at most
// kBackoffPeriod until both are looked at in one pass. Written at every
// point of the schedule.
TEST_F(BackoffScan, ALateDuplicateMergesWithinTheBound) {
    const size_t n = 128;
    map_unique(n);
    for (int k = 0; k < 3 * (int)kBackoffPeriod; ++k) pass();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(backoff(meta(i)), kMaxBackoff) << i;
    // Pairs (src, dst): dst becomes a copy of src, pair j written after
    // j passes more (every point of the schedule, twice).
    std::vector<std::pair<size_t, size_t>> pairs;
    for (size_t i = 0; i < 2 * kBackoffPeriod; ++i) pairs.emplace_back(i, 64 + i);
    std::vector<int> written_at(pairs.size(), -1), merged_after(pairs.size(), -1);
    for (int k = 0; k <= 4 * (int)kBackoffPeriod; ++k) {
        if (k < (int)pairs.size()) {
            memcpy(page(pairs[k].second), page(pairs[k].first), kPg);
            written_at[k] = k;
        }
        pass();
        for (size_t j = 0; j < pairs.size(); ++j)
            if (written_at[j] >= 0 && merged_after[j] < 0 && has_slot(meta(pairs[j].first).state) &&
                has_slot(meta(pairs[j].second).state))
                merged_after[j] = k + 1 - written_at[j];  // passes since the write, this one included
    }
    for (size_t j = 0; j < pairs.size(); ++j) {
        EXPECT_GE(merged_after[j], 1) << "pair " << j << " not merged";
        EXPECT_LE(merged_after[j], 2 * (int)kBackoffPeriod) << "pair " << j;
        EXPECT_EQ(slot_of(meta(pairs[j].first).state), slot_of(meta(pairs[j].second).state)) << j;
    }
    // Every byte is what the program wrote.
    for (size_t i = 0; i < n; ++i) {
        unsigned char want[kPg];
        size_t src = i;
        for (auto& pr : pairs)
            if (pr.second == i) src = pr.first;
        fill_unique(want, 1000 + (unsigned)src);
        EXPECT_EQ(memcmp(page(i), want, kPg), 0) << "page " << i;
    }
    // Merged pages do not back off: level bits play no part for them.
    for (auto& pr : pairs) EXPECT_TRUE(has_slot(meta(pr.first).state));
}

// A copy of a backed-off page written into fresh memory (never looked at)
// merges within kBackoffPeriod + 1 passes.
TEST_F(BackoffScan, ACopyInFreshMemoryMergesWithinThePeriod) {
    const size_t n = 64;
    map_unique(n);
    for (int k = 0; k < 3 * (int)kBackoffPeriod; ++k) pass();
    // Pages 48.. are rewritten as copies of 0..15 and their metadata
    // forgotten (as a fresh registration would have it).
    for (size_t i = 0; i < 16; ++i) {
        memcpy(page(48 + i), page(i), kPg);
        meta(48 + i).hash32 = 0;
    }
    int k = 0;
    auto all_merged = [&] {
        for (size_t i = 0; i < 16; ++i)
            if (!has_slot(meta(i).state) || !has_slot(meta(48 + i).state)) return false;
        return true;
    };
    while (k < (int)kBackoffPeriod + 1 && !all_merged()) {
        pass();
        ++k;
    }
    EXPECT_TRUE(all_merged()) << "after " << k << " passes";
}

// Zero pages and pages that were ever merged never back off.
TEST_F(BackoffScan, ZeroAndMergedPagesDoNotBackOff) {
    const size_t n = 32;
    map_unique(n);
    memset(page(5), 0, kPg);
    memcpy(page(7), page(6), kPg);
    for (int k = 0; k < 3 * (int)kBackoffPeriod; ++k) pass();
    EXPECT_TRUE(is_zero_freed(meta(5).state));
    EXPECT_TRUE(has_slot(meta(6).state));
    EXPECT_TRUE(has_slot(meta(7).state));
    EXPECT_EQ(backoff(meta(5)), 0u);
    // A copy-on-write break leaves a private page in a memfd VMA: not backed off.
    memset(page(7), 0x5a, kPg);
    for (int k = 0; k < 3 * (int)kBackoffPeriod; ++k) pass();
    EXPECT_TRUE(in_file_vma(meta(7).state));
    EXPECT_EQ(backoff(meta(7)), 0u);
    unsigned char want[kPg];
    memset(want, 0x5a, kPg);
    EXPECT_EQ(memcmp(page(7), want, kPg), 0);
    fill_unique(want, 1006);
    EXPECT_EQ(memcmp(page(6), want, kPg), 0);
}

}  // namespace
