// PageIndex: open-addressing hash -> candidate/slot table.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <unordered_map>
#include <vector>

#include "scanner/page_index.h"

using namespace dedup;

namespace {

uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

}  // namespace

TEST(PageIndexEncoding, CandidateAndSlotValues) {
    uintptr_t addr = 0x7f12345678000;
    uint64_t c = PageIndex::candidate_value(addr);
    EXPECT_TRUE(PageIndex::is_candidate(c));
    EXPECT_FALSE(PageIndex::is_slot(c));
    EXPECT_EQ(PageIndex::candidate_addr(c), addr);

    for (uint32_t slot : {0u, 1u, 12345u, 0x3fffffffu, 0x7ffffffeu, 0xffffffffu}) {
        uint64_t v = PageIndex::slot_value(slot);
        EXPECT_TRUE(PageIndex::is_slot(v)) << slot;
        EXPECT_FALSE(PageIndex::is_candidate(v)) << slot;
        EXPECT_EQ(PageIndex::slot_id(v), slot);
    }
    // Page-aligned addresses up to the top of the user address space.
    for (uintptr_t a : {uintptr_t(0x1000), uintptr_t(0x7ffffffff000), uintptr_t(0x555555554000)}) {
        uint64_t v = PageIndex::candidate_value(a);
        EXPECT_TRUE(PageIndex::is_candidate(v));
        EXPECT_EQ(PageIndex::candidate_addr(v), a);
    }
    EXPECT_FALSE(PageIndex::is_candidate(0));
    EXPECT_FALSE(PageIndex::is_slot(0));
}

TEST(PageIndex, EmptyFindAndErase) {
    PageIndex ix;
    EXPECT_EQ(ix.find(123), nullptr);
    EXPECT_EQ(ix.find(0), nullptr);
    ix.erase(123);  // no table yet: must not crash
    ix.drop_candidates();
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.bytes(), 0u);
}

TEST(PageIndex, PutFindEraseOverwrite) {
    PageIndex ix;
    ASSERT_TRUE(ix.put(0x1234, PageIndex::slot_value(7)));
    ASSERT_TRUE(ix.put(0x5678, PageIndex::candidate_value(0x10000)));
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_GT(ix.bytes(), 0u);
    PageIndex::Entry* e = ix.find(0x1234);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->hash, 0x1234u);
    EXPECT_EQ(PageIndex::slot_id(e->value), 7u);
    ASSERT_NE(ix.find(0x5678), nullptr);
    EXPECT_EQ(PageIndex::candidate_addr(ix.find(0x5678)->value), 0x10000u);
    EXPECT_EQ(ix.find(0x9999), nullptr);

    // Overwrite keeps the size.
    ASSERT_TRUE(ix.put(0x1234, PageIndex::slot_value(9)));
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(0x1234)->value), 9u);

    // Mutating through the returned entry is visible.
    ix.find(0x5678)->value = PageIndex::slot_value(3);
    EXPECT_TRUE(PageIndex::is_slot(ix.find(0x5678)->value));

    ix.erase(0x1234);
    EXPECT_EQ(ix.size(), 1u);
    EXPECT_EQ(ix.find(0x1234), nullptr);
    ASSERT_NE(ix.find(0x5678), nullptr);
    ix.erase(0x1234);  // absent: no change
    EXPECT_EQ(ix.size(), 1u);
    ix.erase(0x5678);
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.find(0x5678), nullptr);
}

TEST(PageIndex, HashZeroIsUsable) {
    PageIndex ix;
    ASSERT_TRUE(ix.put(0, PageIndex::slot_value(5)));
    EXPECT_EQ(ix.size(), 1u);
    PageIndex::Entry* e = ix.find(0);
    ASSERT_NE(e, nullptr);
    EXPECT_NE(e->hash, 0u) << "0 marks an empty table slot and must not be stored";
    EXPECT_EQ(PageIndex::slot_id(e->value), 5u);
    ASSERT_TRUE(ix.put(0, PageIndex::slot_value(6)));  // overwrite, not a second entry
    EXPECT_EQ(ix.size(), 1u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(0)->value), 6u);
    // Other keys are unaffected.
    ASSERT_TRUE(ix.put(4096, PageIndex::slot_value(1)));
    ASSERT_TRUE(ix.put(8192, PageIndex::slot_value(2)));
    ix.erase(0);
    EXPECT_EQ(ix.find(0), nullptr);
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(4096)->value), 1u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(8192)->value), 2u);
}

TEST(PageIndex, GrowsPastManyThousandsOfEntries) {
    PageIndex ix;
    const size_t n = 100000;
    uint64_t seed = 1;
    std::vector<uint64_t> keys;
    for (size_t i = 0; i < n; ++i) {
        uint64_t k = splitmix(seed) | 2;  // never 0 or 1
        keys.push_back(k);
        ASSERT_TRUE(ix.put(k, PageIndex::slot_value((uint32_t)i)));
    }
    EXPECT_EQ(ix.size(), n);
    EXPECT_GE(ix.bytes(), 2 * n * sizeof(PageIndex::Entry)) << "load factor above 1/2";
    for (size_t i = 0; i < n; ++i) {
        PageIndex::Entry* e = ix.find(keys[i]);
        ASSERT_NE(e, nullptr) << i;
        ASSERT_EQ(PageIndex::slot_id(e->value), (uint32_t)i);
    }
    // Keys that all share their low 20 bits: one long probe chain (the worst
    // case for the mask; real keys are XXH3 hashes). Kept small: quadratic.
    PageIndex seq;
    for (uint64_t i = 1; i <= 3000; ++i) ASSERT_TRUE(seq.put(i << 20, i));
    EXPECT_EQ(seq.size(), 3000u);
    for (uint64_t i = 1; i <= 3000; ++i) {
        PageIndex::Entry* e = seq.find(i << 20);
        ASSERT_NE(e, nullptr) << i;
        ASSERT_EQ(e->value, i);
    }
    ix.clear();
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.bytes(), 0u);
    EXPECT_EQ(ix.find(keys[0]), nullptr);
    ASSERT_TRUE(ix.put(keys[0], 1));  // usable after clear
    EXPECT_EQ(ix.find(keys[0])->value, 1u);
}

// Random put/overwrite/erase/find against std::unordered_map, with many keys
// whose low bits collide so that probe chains are long and wrap around the
// end of the table, exercising the backward-shift deletion.
TEST(PageIndex, RandomisedAgainstModel) {
    std::mt19937_64 rng(12345);
    std::vector<uint64_t> universe;
    uint64_t seed = 99;
    for (int i = 0; i < 600; ++i) universe.push_back(splitmix(seed) | 2);
    // Same low 16 bits (same home bucket at every capacity up to 65536).
    for (int i = 0; i < 300; ++i) universe.push_back((splitmix(seed) << 16) | 0xfff7);
    for (int i = 0; i < 300; ++i) universe.push_back((splitmix(seed) << 16) | 0x0003);
    // Home buckets at the very end of a 4096-entry table: chains wrap to 0.
    for (int i = 0; i < 300; ++i) universe.push_back((splitmix(seed) << 12) | (0xffe + (i & 1)));
    // Consecutive homes.
    for (uint64_t i = 0; i < 300; ++i) universe.push_back(0x100000000ull + i);
    for (auto& k : universe)
        if (k < 2) k = 2;

    PageIndex ix;
    std::unordered_map<uint64_t, uint64_t> model;
    auto check_all = [&](int step) {
        ASSERT_EQ(ix.size(), model.size()) << "step " << step;
        size_t cands = 0;
        for (auto& kv : model) cands += PageIndex::is_candidate(kv.second);
        ASSERT_EQ(ix.candidates(), cands) << "step " << step;
        for (uint64_t k : universe) {
            PageIndex::Entry* e = ix.find(k);
            auto it = model.find(k);
            if (it == model.end()) {
                ASSERT_EQ(e, nullptr) << "step " << step << " key " << std::hex << k;
            } else {
                ASSERT_NE(e, nullptr) << "step " << step << " key " << std::hex << k;
                ASSERT_EQ(e->value, it->second) << "step " << step;
            }
        }
    };
    const int kOps = 40000;
    for (int step = 0; step < kOps; ++step) {
        uint64_t k = universe[rng() % universe.size()];
        unsigned op = rng() % 10;
        if (op < 5) {
            uint64_t v = (rng() & 1) ? PageIndex::slot_value((uint32_t)rng())
                                     : PageIndex::candidate_value((uintptr_t)(rng() & 0x7ffffffff000ull));
            ASSERT_TRUE(ix.put(k, v));
            model[k] = v;
        } else if (op < 9) {
            ix.erase(k);
            model.erase(k);
        } else {
            PageIndex::Entry* e = ix.find(k);
            auto it = model.find(k);
            if (it == model.end()) ASSERT_EQ(e, nullptr);
            else {
                ASSERT_NE(e, nullptr);
                ASSERT_EQ(e->value, it->second);
            }
        }
        if (step % 2000 == 0) check_all(step);
    }
    check_all(kOps);
    // Erase everything in random order; the rest stay findable all along.
    std::vector<uint64_t> keys;
    for (auto& kv : model) keys.push_back(kv.first);
    std::shuffle(keys.begin(), keys.end(), rng);
    for (size_t i = 0; i < keys.size(); ++i) {
        ix.erase(keys[i]);
        model.erase(keys[i]);
        if (i % 50 == 0) check_all(-(int)i);
    }
    check_all(-1);
    EXPECT_EQ(ix.size(), 0u);
}

TEST(PageIndex, DropCandidatesKeepsSlots) {
    PageIndex ix;
    std::unordered_map<uint64_t, uint64_t> slots;
    std::vector<uint64_t> cands;
    uint64_t seed = 7;
    for (uint32_t i = 0; i < 5000; ++i) {
        // Colliding low bits so that slots sit behind candidates in chains.
        uint64_t k = (i % 3 == 0) ? ((splitmix(seed) << 12) | 0x777) : (splitmix(seed) | 2);
        if (i % 2) {
            uint64_t v = PageIndex::slot_value(i);
            ASSERT_TRUE(ix.put(k, v));
            slots[k] = v;
        } else {
            ASSERT_TRUE(ix.put(k, PageIndex::candidate_value(0x10000000 + (uintptr_t)i * 4096)));
            cands.push_back(k);
        }
    }
    ASSERT_EQ(ix.size(), 5000u);
    EXPECT_EQ(ix.candidates(), cands.size());
    size_t bytes = ix.bytes();
    ix.drop_candidates();
    EXPECT_EQ(ix.size(), slots.size());
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.bytes(), bytes);
    for (auto& kv : slots) {
        PageIndex::Entry* e = ix.find(kv.first);
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e->value, kv.second);
    }
    for (uint64_t k : cands) EXPECT_EQ(ix.find(k), nullptr);
    // Still fully usable.
    for (uint64_t k : cands) ASSERT_TRUE(ix.put(k, PageIndex::candidate_value(0x2000)));
    EXPECT_EQ(ix.size(), 5000u);
    ix.drop_candidates();
    EXPECT_EQ(ix.size(), slots.size());
    // Overwriting a candidate with a slot (what a merge does) makes it survive.
    ASSERT_TRUE(ix.put(cands[0], PageIndex::candidate_value(0x3000)));
    EXPECT_EQ(ix.candidates(), 1u);
    ASSERT_TRUE(ix.put(cands[0], PageIndex::slot_value(77)));
    EXPECT_EQ(ix.candidates(), 0u);
    ix.drop_candidates();
    ASSERT_NE(ix.find(cands[0]), nullptr);
    EXPECT_EQ(PageIndex::slot_id(ix.find(cands[0])->value), 77u);
    // Only candidates: all gone.
    PageIndex c;
    for (uint64_t i = 2; i < 100; ++i) c.put(i, PageIndex::candidate_value(i << 12));
    c.drop_candidates();
    EXPECT_EQ(c.size(), 0u);
    for (uint64_t i = 2; i < 100; ++i) EXPECT_EQ(c.find(i), nullptr);
}
