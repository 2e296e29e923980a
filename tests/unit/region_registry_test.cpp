// RegionRegistry: the sorted interval map of registered regions. It never
// touches the registered memory itself, so made-up addresses are fine.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "scanner/region_registry.h"

using namespace dedup;

namespace {

constexpr uintptr_t kBase = 0x200000000000ull;
uintptr_t P(size_t page) { return kBase + page * kPageSize; }

struct RegistryFixture : testing::Test {
    RegionRegistry reg;
    void TearDown() override { reg.clear(); }

    // Distinct, recognisable metadata for every page of the region at addr.
    void stamp(uintptr_t addr, uint32_t salt) {
        Region* r = reg.find(addr);
        ASSERT_NE(r, nullptr);
        for (size_t p = 0; p < r->pages(); ++p) {
            uintptr_t a = r->start + p * kPageSize;
            r->meta[p].hash32 = (uint32_t)((a - kBase) / kPageSize) * 7 + salt;
            r->meta[p].state = (uint32_t)((a - kBase) / kPageSize) ^ (salt << 16);
        }
    }
    void expect_stamp(uintptr_t start, uintptr_t end, uint32_t salt) {
        for (uintptr_t a = start; a < end; a += kPageSize) {
            Region* r = reg.find(a);
            ASSERT_NE(r, nullptr) << std::hex << a;
            EXPECT_EQ(r->at(a).hash32, (uint32_t)((a - kBase) / kPageSize) * 7 + salt) << std::hex << a;
            EXPECT_EQ(r->at(a).state, (uint32_t)((a - kBase) / kPageSize) ^ (salt << 16)) << std::hex << a;
        }
    }
};

}  // namespace

TEST_F(RegistryFixture, InsertFindLowerBound) {
    ASSERT_TRUE(reg.insert(P(20), P(30), 3, kRegAdvised));
    ASSERT_TRUE(reg.insert(P(0), P(10), 1, 0));
    ASSERT_TRUE(reg.insert(P(40), P(41), 3, kRegDontdump));
    ASSERT_EQ(reg.count(), 3u);
    EXPECT_EQ(reg.pages_registered(), 21u);
    // Sorted by address whatever the insertion order.
    EXPECT_EQ(reg[0].start, P(0));
    EXPECT_EQ(reg[1].start, P(20));
    EXPECT_EQ(reg[2].start, P(40));
    EXPECT_EQ(reg[1].prot, 3);
    EXPECT_EQ(reg[1].flags, (uint32_t)kRegAdvised);
    EXPECT_EQ(reg[1].pages(), 10u);

    EXPECT_EQ(reg.find(P(0)), &reg[0]);
    EXPECT_EQ(reg.find(P(10) - 1), &reg[0]);
    EXPECT_EQ(reg.find(P(10)), nullptr);
    EXPECT_EQ(reg.find(P(19) + 100), nullptr);
    EXPECT_EQ(reg.find(P(25) + 5), &reg[1]);
    EXPECT_EQ(reg.find(P(40)), &reg[2]);
    EXPECT_EQ(reg.find(P(41)), nullptr);
    EXPECT_EQ(reg.find(kBase - 1), nullptr);
    EXPECT_EQ(reg.find(0), nullptr);

    EXPECT_EQ(reg.lower_bound(0), 0u);
    EXPECT_EQ(reg.lower_bound(P(5)), 0u);
    EXPECT_EQ(reg.lower_bound(P(10)), 1u);
    EXPECT_EQ(reg.lower_bound(P(15)), 1u);
    EXPECT_EQ(reg.lower_bound(P(29)), 1u);
    EXPECT_EQ(reg.lower_bound(P(30)), 2u);
    EXPECT_EQ(reg.lower_bound(P(41)), 3u);

    EXPECT_TRUE(reg.overlaps(P(9), P(11)));
    EXPECT_FALSE(reg.overlaps(P(10), P(20)));
    EXPECT_TRUE(reg.overlaps(P(10), P(21)));
    EXPECT_TRUE(reg.overlaps(P(0), P(100)));
    EXPECT_FALSE(reg.overlaps(P(41), P(100)));

    // New metadata is zero.
    for (size_t i = 0; i < reg.count(); ++i)
        for (size_t p = 0; p < reg[i].pages(); ++p) {
            EXPECT_EQ(reg[i].meta[p].hash32, 0u);
            EXPECT_EQ(reg[i].meta[p].state, 0u);
        }
    // An empty range registers nothing.
    EXPECT_TRUE(reg.insert(P(50), P(50), 3, 0));
    EXPECT_EQ(reg.count(), 3u);
}

TEST_F(RegistryFixture, ManyRegionsGrowTheArray) {
    for (size_t i = 0; i < 2000; ++i) ASSERT_TRUE(reg.insert(P(2 * i), P(2 * i + 1), 3, (uint32_t)i));
    EXPECT_EQ(reg.count(), 2000u);
    EXPECT_EQ(reg.pages_registered(), 2000u);
    for (size_t i = 0; i < 2000; ++i) {
        Region* r = reg.find(P(2 * i));
        ASSERT_NE(r, nullptr);
        EXPECT_EQ(r->flags, (uint32_t)i);
        EXPECT_EQ(reg.find(P(2 * i + 1)), nullptr);
    }
}

TEST_F(RegistryFixture, SplitAtPreservesMetadata) {
    ASSERT_TRUE(reg.insert(P(0), P(16), 3, kRegAdvised | kRegDontdump));
    stamp(P(0), 11);
    ASSERT_TRUE(reg.split_at(P(5)));
    ASSERT_EQ(reg.count(), 2u);
    EXPECT_EQ(reg[0].start, P(0));
    EXPECT_EQ(reg[0].end, P(5));
    EXPECT_EQ(reg[1].start, P(5));
    EXPECT_EQ(reg[1].end, P(16));
    for (size_t i = 0; i < 2; ++i) {
        EXPECT_EQ(reg[i].prot, 3);
        EXPECT_EQ(reg[i].flags, (uint32_t)(kRegAdvised | kRegDontdump));
    }
    EXPECT_EQ(reg.pages_registered(), 16u);
    expect_stamp(P(0), P(16), 11);

    // Splitting at an existing boundary, at a region start, or outside any
    // region changes nothing.
    EXPECT_TRUE(reg.split_at(P(5)));
    EXPECT_TRUE(reg.split_at(P(0)));
    EXPECT_TRUE(reg.split_at(P(16)));
    EXPECT_TRUE(reg.split_at(P(100)));
    EXPECT_EQ(reg.count(), 2u);
    // Split at the last page.
    ASSERT_TRUE(reg.split_at(P(15)));
    ASSERT_EQ(reg.count(), 3u);
    EXPECT_EQ(reg[2].pages(), 1u);
    expect_stamp(P(0), P(16), 11);
    EXPECT_EQ(reg.pages_registered(), 16u);
}

TEST_F(RegistryFixture, IsolateMakesWholeRegions) {
    ASSERT_TRUE(reg.insert(P(0), P(32), 3, 0));
    ASSERT_TRUE(reg.insert(P(32), P(40), 1, kRegDontdump));
    stamp(P(0), 3);
    stamp(P(32), 3);
    ASSERT_TRUE(reg.isolate(P(10), P(35)));
    ASSERT_EQ(reg.count(), 4u);
    EXPECT_EQ(reg[0].end, P(10));
    EXPECT_EQ(reg[1].start, P(10));
    EXPECT_EQ(reg[1].end, P(32));
    EXPECT_EQ(reg[2].start, P(32));
    EXPECT_EQ(reg[2].end, P(35));
    EXPECT_EQ(reg[2].prot, 1);
    EXPECT_EQ(reg[2].flags, (uint32_t)kRegDontdump);
    EXPECT_EQ(reg[3].start, P(35));
    EXPECT_EQ(reg[3].end, P(40));
    expect_stamp(P(0), P(40), 3);
    EXPECT_EQ(reg.pages_registered(), 40u);
}

TEST_F(RegistryFixture, RemoveVisitsEveryPageOnce) {
    ASSERT_TRUE(reg.insert(P(0), P(8), 3, 0));
    ASSERT_TRUE(reg.insert(P(10), P(30), 3, 0));
    ASSERT_TRUE(reg.insert(P(30), P(34), 1, 0));
    ASSERT_TRUE(reg.insert(P(40), P(44), 3, 0));
    stamp(P(0), 5);
    stamp(P(10), 5);
    stamp(P(30), 5);
    stamp(P(40), 5);
    ASSERT_TRUE(reg.isolate(P(4), P(32)));
    std::map<uintptr_t, int> seen;
    reg.remove(P(4), P(32), [&](PageMeta& m, uintptr_t addr) {
        ++seen[addr];
        EXPECT_EQ(m.hash32, (uint32_t)((addr - kBase) / kPageSize) * 7 + 5) << std::hex << addr;
        EXPECT_EQ(m.state, (uint32_t)((addr - kBase) / kPageSize) ^ (5u << 16));
    });
    std::set<uintptr_t> want;
    for (size_t p = 4; p < 8; ++p) want.insert(P(p));
    for (size_t p = 10; p < 32; ++p) want.insert(P(p));
    EXPECT_EQ(seen.size(), want.size());
    for (auto& kv : seen) {
        EXPECT_EQ(kv.second, 1) << std::hex << kv.first;
        EXPECT_TRUE(want.count(kv.first)) << std::hex << kv.first;
    }
    EXPECT_EQ(reg.pages_registered(), 4u + 2u + 4u);
    ASSERT_EQ(reg.count(), 3u);
    EXPECT_EQ(reg[0].start, P(0));
    EXPECT_EQ(reg[0].end, P(4));
    EXPECT_EQ(reg[1].start, P(32));
    EXPECT_EQ(reg[1].end, P(34));
    EXPECT_EQ(reg[2].start, P(40));
    EXPECT_EQ(reg.find(P(4)), nullptr);
    EXPECT_EQ(reg.find(P(20)), nullptr);
    expect_stamp(P(0), P(4), 5);
    expect_stamp(P(32), P(34), 5);
    expect_stamp(P(40), P(44), 5);
}

TEST_F(RegistryFixture, RemoveWithoutIsolateLeavesStraddlingRegions) {
    ASSERT_TRUE(reg.insert(P(0), P(10), 3, 0));
    ASSERT_TRUE(reg.insert(P(10), P(12), 3, 0));
    int calls = 0;
    reg.remove(P(5), P(12), [&](PageMeta&, uintptr_t) { ++calls; });
    EXPECT_EQ(calls, 2);  // only the whole region [10, 12)
    ASSERT_EQ(reg.count(), 1u);
    EXPECT_EQ(reg[0].start, P(0));
    EXPECT_EQ(reg[0].end, P(10));
    EXPECT_EQ(reg.pages_registered(), 10u);
}

TEST_F(RegistryFixture, CoalesceMergesEqualAdjacentRegions) {
    ASSERT_TRUE(reg.insert(P(0), P(3), 3, kRegAdvised));
    ASSERT_TRUE(reg.insert(P(3), P(10), 3, kRegAdvised));
    ASSERT_TRUE(reg.insert(P(10), P(11), 3, kRegAdvised));
    stamp(P(0), 9);
    stamp(P(3), 9);
    stamp(P(10), 9);
    reg.coalesce(P(3), P(10));
    ASSERT_EQ(reg.count(), 1u);
    EXPECT_EQ(reg[0].start, P(0));
    EXPECT_EQ(reg[0].end, P(11));
    EXPECT_EQ(reg[0].prot, 3);
    EXPECT_EQ(reg[0].flags, (uint32_t)kRegAdvised);
    EXPECT_EQ(reg.pages_registered(), 11u);
    expect_stamp(P(0), P(11), 9);
}

TEST_F(RegistryFixture, CoalesceLargeMetadataArrays) {
    // Arrays of more than one page of metadata each (512 entries per page).
    ASSERT_TRUE(reg.insert(P(0), P(1000), 3, 0));
    ASSERT_TRUE(reg.insert(P(1000), P(2600), 3, 0));
    stamp(P(0), 1);
    stamp(P(1000), 1);
    reg.coalesce(P(0), P(2600));
    ASSERT_EQ(reg.count(), 1u);
    EXPECT_EQ(reg[0].pages(), 2600u);
    expect_stamp(P(0), P(2600), 1);
}

TEST_F(RegistryFixture, CoalesceKeepsDifferentOrDistantRegionsApart) {
    ASSERT_TRUE(reg.insert(P(0), P(4), 3, 0));
    ASSERT_TRUE(reg.insert(P(4), P(8), 1, 0));            // different prot
    ASSERT_TRUE(reg.insert(P(8), P(12), 1, kRegAdvised));  // different flags
    ASSERT_TRUE(reg.insert(P(13), P(16), 1, kRegAdvised)); // not adjacent (gap at 12)
    reg.coalesce(P(0), P(16));
    EXPECT_EQ(reg.count(), 4u);
    EXPECT_EQ(reg.pages_registered(), 15u);
}

TEST_F(RegistryFixture, ClearForgetsEverything) {
    ASSERT_TRUE(reg.insert(P(0), P(4), 3, 0));
    ASSERT_TRUE(reg.insert(P(8), P(12), 3, 0));
    reg.clear();
    EXPECT_EQ(reg.count(), 0u);
    EXPECT_EQ(reg.pages_registered(), 0u);
    EXPECT_EQ(reg.find(P(0)), nullptr);
    ASSERT_TRUE(reg.insert(P(0), P(2), 3, 0));
    EXPECT_EQ(reg.pages_registered(), 2u);
}

// Random inserts, removals, protection changes (isolate + set + coalesce, as
// the mprotect wrapper does), metadata writes and splits, checked after every
// step against a page-level model.
TEST_F(RegistryFixture, RandomisedAgainstPageModel) {
    struct Info {
        int prot;
        uint32_t flags;
        uint32_t hash32, state;
    };
    std::map<size_t, Info> model;
    std::mt19937 rng(4242);
    const size_t kPages = 600;
    const int prots[] = {1, 3, 0};
    const uint32_t flagset[] = {0, kRegAdvised, kRegUnmergeable | kRegDontfork};

    auto verify = [&](int step, size_t cstart, size_t cend, bool check_coalesced) {
        uint64_t total = 0;
        for (size_t i = 0; i < reg.count(); ++i) {
            Region& r = reg[i];
            ASSERT_LT(r.start, r.end) << step;
            ASSERT_EQ((r.start - kBase) % kPageSize, 0u);
            ASSERT_EQ((r.end - kBase) % kPageSize, 0u);
            if (i) {
                ASSERT_LE(reg[i - 1].end, r.start) << "step " << step << ": unsorted or overlapping";
            }
            total += r.pages();
            for (size_t p = 0; p < r.pages(); ++p) {
                size_t page = (r.start - kBase) / kPageSize + p;
                auto it = model.find(page);
                ASSERT_NE(it, model.end()) << "step " << step << ": page " << page << " registered, not in model";
                ASSERT_EQ(r.prot, it->second.prot) << "step " << step << " page " << page;
                ASSERT_EQ(r.flags, it->second.flags) << "step " << step << " page " << page;
                ASSERT_EQ(r.meta[p].hash32, it->second.hash32) << "step " << step << " page " << page;
                ASSERT_EQ(r.meta[p].state, it->second.state) << "step " << step << " page " << page;
            }
            if (check_coalesced && i) {
                Region& a = reg[i - 1];
                bool mergeable = a.end == r.start && a.prot == r.prot && a.flags == r.flags;
                bool in_range = a.end >= P(cstart) && a.end <= P(cend);
                ASSERT_FALSE(mergeable && in_range)
                    << "step " << step << ": equal adjacent regions left apart at page "
                    << (a.end - kBase) / kPageSize;
            }
        }
        ASSERT_EQ(total, model.size()) << step;
        ASSERT_EQ(reg.pages_registered(), model.size()) << step;
        for (int k = 0; k < 20; ++k) {
            size_t page = rng() % (kPages + 4);
            Region* r = reg.find(P(page) + rng() % kPageSize);
            ASSERT_EQ(r != nullptr, model.count(page) == 1) << "step " << step << " find page " << page;
            if (r) {
                ASSERT_TRUE(r->start <= P(page) && P(page) < r->end);
            }
        }
    };

    for (int step = 0; step < 3000; ++step) {
        size_t s = rng() % kPages;
        size_t len = 1 + rng() % 40;
        size_t e = std::min(kPages, s + len);
        unsigned op = rng() % 6;
        size_t cs = 0, ce = 0;
        bool coalesced = false;
        bool model_overlap = false;
        for (size_t p = s; p < e; ++p) model_overlap |= model.count(p) != 0;
        ASSERT_EQ(reg.overlaps(P(s), P(e)), model_overlap) << step;
        if (op == 0 || op == 1) {  // insert (as the mmap wrapper: insert + coalesce)
            if (model_overlap) continue;
            int prot = prots[rng() % 3];
            uint32_t flags = flagset[rng() % 3];
            ASSERT_TRUE(reg.insert(P(s), P(e), prot, flags));
            for (size_t p = s; p < e; ++p) model[p] = Info{prot, flags, 0, 0};
            reg.coalesce(P(s), P(e));
            cs = s; ce = e; coalesced = true;
        } else if (op == 2) {  // remove
            ASSERT_TRUE(reg.isolate(P(s), P(e)));
            std::map<size_t, int> seen;
            reg.remove(P(s), P(e), [&](PageMeta& m, uintptr_t addr) {
                size_t page = (addr - kBase) / kPageSize;
                ++seen[page];
                auto it = model.find(page);
                ASSERT_NE(it, model.end());
                EXPECT_EQ(m.hash32, it->second.hash32);
                EXPECT_EQ(m.state, it->second.state);
            });
            size_t want = 0;
            for (size_t p = s; p < e; ++p) {
                if (model.count(p)) {
                    ++want;
                    ASSERT_EQ(seen[p], 1) << "step " << step << " page " << p;
                    model.erase(p);
                } else {
                    ASSERT_EQ(seen.count(p), 0u) << "step " << step << " page " << p;
                }
            }
            size_t visited = 0;
            for (auto& kv : seen) visited += kv.second;
            ASSERT_EQ(visited, want) << step;
        } else if (op == 3) {  // change prot/flags over a range
            if (!model_overlap) continue;
            int prot = prots[rng() % 3];
            uint32_t flags = flagset[rng() % 3];
            ASSERT_TRUE(reg.isolate(P(s), P(e)));
            for (size_t i = reg.lower_bound(P(s)); i < reg.count() && reg[i].start < P(e); ++i) {
                ASSERT_GE(reg[i].start, P(s));
                ASSERT_LE(reg[i].end, P(e));
                reg[i].prot = prot;
                reg[i].flags = flags;
            }
            for (size_t p = s; p < e; ++p) {
                auto it = model.find(p);
                if (it != model.end()) { it->second.prot = prot; it->second.flags = flags; }
            }
            reg.coalesce(P(s), P(e));
            cs = s; ce = e; coalesced = true;
        } else if (op == 4) {  // write metadata
            for (size_t p = s; p < e; ++p) {
                auto it = model.find(p);
                if (it == model.end()) continue;
                Region* r = reg.find(P(p));
                ASSERT_NE(r, nullptr);
                uint32_t h = rng(), st = rng();
                r->at(P(p)).hash32 = h;
                r->at(P(p)).state = st;
                it->second.hash32 = h;
                it->second.state = st;
            }
        } else {  // split somewhere
            ASSERT_TRUE(reg.split_at(P(s)));
        }
        verify(step, cs, ce, coalesced);
        if (HasFatalFailure()) return;
    }
}
