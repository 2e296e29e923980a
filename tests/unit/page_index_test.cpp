// PageIndex: open-addressing hash -> candidate/slot table, 8-byte entries
// keyed by the high 28 bits of the hash.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include "scanner/page_index.h"

using namespace dedup;

namespace {

constexpr unsigned kFragShift = 36;               // the key is hash >> 36
constexpr uint64_t kNoiseMask = (1ull << 36) - 1;  // bits the index ignores

uint64_t splitmix(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t frag(uint64_t h) { return h >> kFragShift; }
// A hash whose key fragment is f, with arbitrary low bits.
uint64_t key(uint64_t f, uint64_t noise = 0) { return f << kFragShift | (noise & kNoiseMask); }

// Random hashes with pairwise distinct fragments (never in `taken`).
std::vector<uint64_t> distinct_keys(size_t n, uint64_t& seed, std::unordered_set<uint64_t>* taken = nullptr) {
    std::unordered_set<uint64_t> local;
    if (!taken) taken = &local;
    std::vector<uint64_t> out;
    while (out.size() < n) {
        uint64_t k = splitmix(seed);
        if (taken->insert(frag(k)).second) out.push_back(k);
    }
    return out;
}

// White-box: the index's home position at a table of 2^bits entries is the
// top bits of fragment * this constant. Used only to build keys whose homes
// collide (long probe chains, chains wrapping past the end of the table); if
// the mix changes, these keys merely stop colliding.
unsigned top12(uint64_t f) { return (unsigned)((f * 0x9e3779b97f4a7c15ull) >> 52); }
// n fragments (never in `taken`) whose home's top 12 bits are `bucket`: the
// same home at 4096 entries, adjacent homes at every larger capacity.
std::vector<uint64_t> colliding_keys(size_t n, unsigned bucket, uint64_t& seed, std::unordered_set<uint64_t>& taken) {
    std::vector<uint64_t> out;
    for (uint64_t f = splitmix(seed) & 0xfffffff; out.size() < n; f = (f + 1) & 0xfffffff)
        if (top12(f) == bucket && taken.insert(f).second) out.push_back(key(f, splitmix(seed)));
    return out;
}

uint64_t random_candidate(std::mt19937_64& rng) {
    uintptr_t a = (uintptr_t)(rng() & 0x7ffffffff000ull);
    return PageIndex::candidate_value(a ? a : 0x1000);
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

TEST(PageIndexEncoding, EntryIsOneWord) {
    static_assert(sizeof(PageIndex::Entry) == 8, "8-byte entries");
    EXPECT_EQ(sizeof(PageIndex::Entry), 8u);
}

TEST(PageIndex, EmptyFindAndErase) {
    PageIndex ix;
    EXPECT_EQ(ix.find(123), nullptr);
    EXPECT_EQ(ix.find(0), nullptr);
    ix.erase(123);  // no table yet: must not crash
    ix.drop_candidates();
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.bytes(), 0u);
}

TEST(PageIndex, PutFindEraseOverwrite) {
    PageIndex ix;
    const uint64_t a = key(0x1234, 0xabc), b = key(0x5678, 0xdef), absent = key(0x9999, 0xabc);
    ASSERT_TRUE(ix.put(a, PageIndex::slot_value(7)));
    ASSERT_TRUE(ix.put(b, PageIndex::candidate_value(0x10000)));
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(ix.candidates(), 1u);
    EXPECT_GT(ix.bytes(), 0u);
    PageIndex::Entry* e = ix.find(a);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->fragment(), 0x1234u);
    EXPECT_TRUE(PageIndex::is_slot(e->value()));
    EXPECT_EQ(PageIndex::slot_id(e->value()), 7u);
    ASSERT_NE(ix.find(b), nullptr);
    EXPECT_TRUE(PageIndex::is_candidate(ix.find(b)->value()));
    EXPECT_EQ(PageIndex::candidate_addr(ix.find(b)->value()), 0x10000u);
    EXPECT_EQ(ix.find(absent), nullptr);

    // Overwrite keeps the size.
    ASSERT_TRUE(ix.put(a, PageIndex::slot_value(9)));
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(a)->value()), 9u);

    // Overwriting with the other kind keeps candidates() right, both ways.
    ASSERT_TRUE(ix.put(b, PageIndex::slot_value(3)));
    EXPECT_TRUE(PageIndex::is_slot(ix.find(b)->value()));
    EXPECT_EQ(ix.candidates(), 0u);
    ASSERT_TRUE(ix.put(a, PageIndex::candidate_value(0x20000)));
    EXPECT_EQ(ix.find(a)->value(), PageIndex::candidate_value(0x20000));
    EXPECT_EQ(ix.candidates(), 1u);
    EXPECT_EQ(ix.size(), 2u);

    ix.erase(a);
    EXPECT_EQ(ix.size(), 1u);
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.find(a), nullptr);
    ASSERT_NE(ix.find(b), nullptr);
    ix.erase(a);  // absent: no change
    ix.erase(absent);
    EXPECT_EQ(ix.size(), 1u);
    ix.erase(b);
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.find(b), nullptr);
}

TEST(PageIndex, HashZeroIsUsable) {
    PageIndex ix;
    // Fragment 0 and the smallest payloads: the stored word must still not
    // read as an empty table slot.
    ASSERT_TRUE(ix.put(0, PageIndex::candidate_value(0x1000)));
    EXPECT_EQ(ix.size(), 1u);
    PageIndex::Entry* e = ix.find(0);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->fragment(), 0u);
    EXPECT_EQ(e->value(), PageIndex::candidate_value(0x1000));
    ASSERT_TRUE(ix.put(0, PageIndex::slot_value(0)));  // overwrite, not a second entry
    EXPECT_EQ(ix.size(), 1u);
    EXPECT_EQ(ix.find(0)->value(), PageIndex::slot_value(0));
    ASSERT_TRUE(ix.put(0, PageIndex::slot_value(6)));
    EXPECT_EQ(PageIndex::slot_id(ix.find(0)->value()), 6u);
    // Other keys are unaffected.
    ASSERT_TRUE(ix.put(key(1), PageIndex::slot_value(1)));
    ASSERT_TRUE(ix.put(key(2), PageIndex::slot_value(2)));
    EXPECT_EQ(ix.size(), 3u);
    ix.erase(0);
    EXPECT_EQ(ix.find(0), nullptr);
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(key(1))->value()), 1u);
    EXPECT_EQ(PageIndex::slot_id(ix.find(key(2))->value()), 2u);
}

TEST(PageIndex, EqualHigh28BitsAreOneKey) {
    PageIndex ix;
    const uint64_t h1 = key(0xabcdef1, 0x123456789), h2 = key(0xabcdef1, 0xfedcba987);  // differ in low 36 bits only
    const uint64_t other = key(0xabcdef0, 0x123456789);  // same low bits, different fragment
    ASSERT_NE(h1, h2);
    ASSERT_TRUE(ix.put(h1, PageIndex::candidate_value(0x5000)));
    ASSERT_TRUE(ix.put(other, PageIndex::slot_value(1)));
    // find of the other hash returns h1's entry: a hint the caller verifies.
    ASSERT_NE(ix.find(h2), nullptr);
    EXPECT_EQ(ix.find(h2), ix.find(h1));
    EXPECT_EQ(ix.find(h2)->value(), PageIndex::candidate_value(0x5000));
    // put of the other hash overwrites it.
    ASSERT_TRUE(ix.put(h2, PageIndex::slot_value(42)));
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.find(h1)->value(), PageIndex::slot_value(42));
    // erase of the other hash erases it; the different fragment stays.
    ix.erase(h1);
    EXPECT_EQ(ix.find(h2), nullptr);
    EXPECT_EQ(ix.size(), 1u);
    ASSERT_NE(ix.find(other), nullptr);
    EXPECT_EQ(ix.find(other)->value(), PageIndex::slot_value(1));
    // Every hash with fragment 0 (including 0 and 2^36 - 1) is one key.
    ASSERT_TRUE(ix.put(0x0000000fffffffffull, PageIndex::slot_value(5)));
    ASSERT_NE(ix.find(0), nullptr);
    EXPECT_EQ(ix.find(0)->value(), PageIndex::slot_value(5));
    ix.erase(12345);
    EXPECT_EQ(ix.find(0x0000000fffffffffull), nullptr);
}

TEST(PageIndex, ValuesRoundTrip) {
    PageIndex ix;
    std::vector<uint64_t> values;
    for (uintptr_t a : {uintptr_t(0x1000), uintptr_t(0x2000), uintptr_t(0x555555554000), uintptr_t(0x7f1234567000),
                        uintptr_t((1ull << 47) - 8192), uintptr_t((1ull << 47) - 4096)})
        values.push_back(PageIndex::candidate_value(a));
    for (uint32_t s : {0u, 1u, 2u, 12345u, 0x3fffffffu, 0x7ffffffeu, 0x7fffffffu, 0xffffffffu})
        values.push_back(PageIndex::slot_value(s));
    uint64_t seed = 3;
    std::vector<uint64_t> keys = distinct_keys(values.size(), seed);
    for (size_t i = 0; i < values.size(); ++i) ASSERT_TRUE(ix.put(keys[i], values[i])) << std::hex << values[i];
    EXPECT_EQ(ix.size(), values.size());
    EXPECT_EQ(ix.candidates(), 6u);
    for (size_t i = 0; i < values.size(); ++i) {
        PageIndex::Entry* e = ix.find(keys[i]);
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e->value(), values[i]) << std::hex << values[i];
        EXPECT_EQ(e->fragment(), frag(keys[i]));
    }
    EXPECT_EQ(PageIndex::candidate_addr(ix.find(keys[5])->value()), (1ull << 47) - 4096);
    EXPECT_EQ(PageIndex::slot_id(ix.find(keys[11])->value()), 0x7ffffffeu);
    // Every page number and slot id of a sample across the whole range.
    std::mt19937_64 rng(5);
    for (int i = 0; i < 20000; ++i) {
        uint64_t k = key(rng() & 0xfffffff, rng());
        uint64_t v = (i & 1) ? PageIndex::slot_value((uint32_t)rng()) : random_candidate(rng);
        ASSERT_TRUE(ix.put(k, v));
        ASSERT_EQ(ix.find(k)->value(), v);
    }
}

TEST(PageIndex, UnencodableValuesAreRejected) {
    PageIndex ix;
    const uint64_t k = key(77, 1), k2 = key(78, 1);
    const uint64_t bad[] = {
        0,                                                  // neither kind
        3,                                                  // neither kind
        0x10000,                                            // neither kind (low bits 00)
        0x10003,                                            // neither kind (low bits 11)
        PageIndex::candidate_value(0),                      // page 0
        PageIndex::candidate_value(0x1234),                 // not page aligned
        PageIndex::candidate_value(0x1004),                 // not page aligned
        PageIndex::candidate_value(0x10800),                // not page aligned
        PageIndex::candidate_value(1ull << 47),             // above the user address space
        PageIndex::candidate_value(0xffff800000000000ull),  // kernel address
        (1ull << 35) << 2 | 2,                              // slot id 2^35
        (1ull << 40) << 2 | 2,                              // slot id 2^40
    };
    for (uint64_t v : bad) {
        EXPECT_FALSE(ix.put(k, v)) << std::hex << v;
        EXPECT_EQ(ix.size(), 0u);
        EXPECT_EQ(ix.find(k), nullptr);
    }
    // Largest encodable slot id.
    EXPECT_TRUE(ix.put(k2, ((1ull << 35) - 1) << 2 | 2));
    EXPECT_EQ(ix.find(k2)->value(), ((1ull << 35) - 1) << 2 | 2);
    // A rejected overwrite leaves the stored value alone.
    ASSERT_TRUE(ix.put(k, PageIndex::slot_value(9)));
    for (uint64_t v : bad) {
        EXPECT_FALSE(ix.put(k, v)) << std::hex << v;
        EXPECT_EQ(ix.find(k)->value(), PageIndex::slot_value(9));
    }
    EXPECT_EQ(ix.size(), 2u);
    EXPECT_EQ(ix.candidates(), 0u);
}

TEST(PageIndex, GrowsPastManyThousandsOfEntries) {
    PageIndex ix;
    const size_t n = 100000;
    uint64_t seed = 1;
    std::vector<uint64_t> keys = distinct_keys(n, seed);
    for (size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(ix.put(keys[i], PageIndex::slot_value((uint32_t)i)));
        if (ix.size() >= 4096) {
            ASSERT_LE(ix.bytes(), 4 * sizeof(PageIndex::Entry) * ix.size()) << "table more than 4x the entries";
        }
    }
    EXPECT_EQ(ix.size(), n);
    EXPECT_GE(ix.bytes() * 3, 4 * n * sizeof(PageIndex::Entry)) << "load factor above 3/4";
    for (size_t i = 0; i < n; ++i) {
        PageIndex::Entry* e = ix.find(keys[i]);
        ASSERT_NE(e, nullptr) << i;
        ASSERT_EQ(PageIndex::slot_id(e->value()), (uint32_t)i);
    }
    // Keys whose homes all collide: one long probe chain. Kept small: quadratic.
    PageIndex seq;
    std::unordered_set<uint64_t> taken;
    std::vector<uint64_t> chain = colliding_keys(3000, 0x800, seed, taken);
    for (size_t i = 0; i < chain.size(); ++i) ASSERT_TRUE(seq.put(chain[i], PageIndex::candidate_value((i + 1) << 12)));
    EXPECT_EQ(seq.size(), 3000u);
    EXPECT_EQ(seq.candidates(), 3000u);
    for (size_t i = 0; i < chain.size(); ++i) {
        PageIndex::Entry* e = seq.find(chain[i]);
        ASSERT_NE(e, nullptr) << i;
        ASSERT_EQ(PageIndex::candidate_addr(e->value()), (i + 1) << 12);
    }
    // Consecutive fragments (mixed apart by the home function).
    PageIndex cons;
    for (uint64_t f = 0; f < 50000; ++f) ASSERT_TRUE(cons.put(key(f, f * 977), PageIndex::slot_value((uint32_t)f)));
    for (uint64_t f = 0; f < 50000; ++f) ASSERT_EQ(cons.find(key(f))->value(), PageIndex::slot_value((uint32_t)f));
    ix.clear();
    EXPECT_EQ(ix.size(), 0u);
    EXPECT_EQ(ix.bytes(), 0u);
    EXPECT_EQ(ix.find(keys[0]), nullptr);
    ASSERT_TRUE(ix.put(keys[0], PageIndex::slot_value(1)));  // usable after clear
    EXPECT_EQ(ix.find(keys[0])->value(), PageIndex::slot_value(1));
}

// 8 bytes an entry at a load factor between 1/2 and 3/4 (the table grows by
// half): at most 16 bytes an entry however many there are, 10.7 when full.
TEST(PageIndex, AtMostSixteenBytesAnEntry) {
    PageIndex ix;
    uint64_t seed = 11;
    const size_t n = 200000;
    std::unordered_set<uint64_t> taken;
    std::vector<uint64_t> keys = distinct_keys(n, seed, &taken);
    size_t grown = 0, last = 0;
    for (size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(ix.put(keys[i], PageIndex::candidate_value((i + 1) << 12)));
        ASSERT_GE(ix.bytes() * 3, 4 * sizeof(PageIndex::Entry) * ix.size()) << "load factor above 3/4";
        if (ix.size() > 4096) {
            ASSERT_LE(ix.bytes(), 16 * ix.size() + 4096) << "load factor below 1/2 (a page aside) at " << i;
        }
        if (ix.bytes() != last) {
            // It grew only when full: 3/4 of the old table in use.
            if (last) {
                EXPECT_GE(ix.size() * 4 * 8, 3 * last) << "grew before 3/4 at " << i;
            }
            ++grown;
            last = ix.bytes();
        }
        ASSERT_EQ(ix.bytes() % 4096, 0u) << "whole pages";
    }
    EXPECT_GE(grown, 10u);
    EXPECT_EQ(ix.size(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NE(ix.find(keys[i]), nullptr) << i;
    // drop_candidates keeps the table's size.
    size_t bytes = ix.bytes();
    ix.drop_candidates();
    EXPECT_EQ(ix.bytes(), bytes);
    EXPECT_EQ(ix.size(), 0u);
}

// A first pass full of candidates that then merge leaves a large table with
// few entries: after a whole pass under 3/8 load it shrinks to about 1/2
// load, keeping every slot entry.
TEST(PageIndex, ShrinksAfterAPassOfFewEntries) {
    PageIndex ix;
    uint64_t seed = 5;
    std::unordered_set<uint64_t> taken;
    std::vector<uint64_t> cands = distinct_keys(100000, seed, &taken);
    std::vector<uint64_t> slots = distinct_keys(3000, seed, &taken);
    for (size_t i = 0; i < cands.size(); ++i) ASSERT_TRUE(ix.put(cands[i], PageIndex::candidate_value((i + 1) << 12)));
    for (size_t i = 0; i < slots.size(); ++i) ASSERT_TRUE(ix.put(slots[i], PageIndex::slot_value((uint32_t)i)));
    size_t big = ix.bytes();
    ix.drop_candidates();  // this pass was full: no shrink yet
    EXPECT_EQ(ix.bytes(), big);
    for (size_t i = 0; i < 500; ++i) ASSERT_TRUE(ix.put(cands[i], PageIndex::candidate_value((i + 1) << 12)));
    ix.drop_candidates();  // a pass of 3500 entries in a table for 100000
    EXPECT_LT(ix.bytes(), big / 8);
    EXPECT_LE(ix.bytes(), 16 * 3500 + 4096 * 8);
    EXPECT_EQ(ix.size(), slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        PageIndex::Entry* e = ix.find(slots[i]);
        ASSERT_NE(e, nullptr) << i;
        EXPECT_EQ(e->value(), PageIndex::slot_value((uint32_t)i));
    }
    for (size_t i = 0; i < 500; ++i) EXPECT_EQ(ix.find(cands[i]), nullptr);
}

// Random put/overwrite/erase/find/drop_candidates against std::map, with many
// keys whose homes collide so that probe chains are long and wrap around the
// end of the table, exercising the backward-shift deletion.
TEST(PageIndex, RandomisedAgainstModel) {
    std::mt19937_64 rng(12345);
    uint64_t seed = 99;
    std::unordered_set<uint64_t> taken;
    std::vector<uint64_t> universe = distinct_keys(600, seed, &taken);
    // Same home at 4096 entries, adjacent homes at larger tables.
    for (uint64_t k : colliding_keys(300, 0xff7, seed, taken)) universe.push_back(k);
    for (uint64_t k : colliding_keys(300, 0x003, seed, taken)) universe.push_back(k);
    // Homes at the very end of the table at every capacity: chains wrap to 0.
    for (uint64_t k : colliding_keys(150, 0xffe, seed, taken)) universe.push_back(k);
    for (uint64_t k : colliding_keys(150, 0xfff, seed, taken)) universe.push_back(k);
    for (uint64_t k : colliding_keys(100, 0x000, seed, taken)) universe.push_back(k);
    // Consecutive fragments.
    for (uint64_t f = 0x1000000; universe.size() < 1900; ++f)
        if (taken.insert(f).second) universe.push_back(key(f, splitmix(seed)));

    PageIndex ix;
    std::map<uint64_t, uint64_t> model;
    auto check_all = [&](int step) {
        ASSERT_EQ(ix.size(), model.size()) << "step " << step;
        size_t cands = 0;
        for (auto& kv : model) cands += PageIndex::is_candidate(kv.second);
        ASSERT_EQ(ix.candidates(), cands) << "step " << step;
        ASSERT_GE(ix.bytes(), 2 * sizeof(PageIndex::Entry) * ix.size()) << "step " << step;
        for (uint64_t k : universe) {
            // Any hash with the same fragment finds the same entry.
            uint64_t probe = (rng() & 1) ? k : key(frag(k), rng());
            PageIndex::Entry* e = ix.find(probe);
            auto it = model.find(k);
            if (it == model.end()) {
                ASSERT_EQ(e, nullptr) << "step " << step << " key " << std::hex << k;
            } else {
                ASSERT_NE(e, nullptr) << "step " << step << " key " << std::hex << k;
                ASSERT_EQ(e->value(), it->second) << "step " << step;
                ASSERT_EQ(e->fragment(), frag(k));
            }
        }
    };
    const int kOps = 60000;
    for (int step = 0; step < kOps; ++step) {
        uint64_t k = universe[rng() % universe.size()];
        unsigned op = rng() % 1000;
        if (op < 500) {
            uint64_t v = (rng() & 1) ? PageIndex::slot_value((uint32_t)rng()) : random_candidate(rng);
            ASSERT_TRUE(ix.put(k, v));
            model[k] = v;
        } else if (op < 900) {
            ix.erase(k);
            model.erase(k);
        } else if (op < 998) {
            PageIndex::Entry* e = ix.find(k);
            auto it = model.find(k);
            if (it == model.end()) ASSERT_EQ(e, nullptr);
            else {
                ASSERT_NE(e, nullptr);
                ASSERT_EQ(e->value(), it->second);
            }
        } else {
            ix.drop_candidates();
            for (auto it = model.begin(); it != model.end();)
                it = PageIndex::is_candidate(it->second) ? model.erase(it) : std::next(it);
            check_all(step);
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
    std::map<uint64_t, uint64_t> slots;
    std::vector<uint64_t> cands;
    uint64_t seed = 7;
    std::unordered_set<uint64_t> taken;
    std::vector<uint64_t> plain = distinct_keys(3334, seed, &taken);
    std::vector<uint64_t> chained = colliding_keys(1667, 0x777, seed, taken);
    for (uint32_t i = 0; i < 5000; ++i) {
        // Colliding homes so that slots sit behind candidates in chains.
        uint64_t k = (i % 3 == 0) ? chained[i / 3] : plain[i - i / 3 - 1];
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
    ix.drop_candidates();  // many: the table is rebuilt
    EXPECT_EQ(ix.size(), slots.size());
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.bytes(), bytes);
    for (auto& kv : slots) {
        PageIndex::Entry* e = ix.find(kv.first);
        ASSERT_NE(e, nullptr);
        EXPECT_EQ(e->value(), kv.second);
    }
    for (uint64_t k : cands) EXPECT_EQ(ix.find(k), nullptr);
    // Still fully usable.
    for (uint64_t k : cands) ASSERT_TRUE(ix.put(k, PageIndex::candidate_value(0x2000)));
    EXPECT_EQ(ix.size(), 5000u);
    ix.drop_candidates();
    EXPECT_EQ(ix.size(), slots.size());
    // A few candidates among chained slots: erased in place.
    for (size_t i = 0; i < 40; ++i) ASSERT_TRUE(ix.put(cands[i * 7], PageIndex::candidate_value(0x3000 + i * 4096)));
    EXPECT_EQ(ix.candidates(), 40u);
    ix.drop_candidates();
    EXPECT_EQ(ix.candidates(), 0u);
    EXPECT_EQ(ix.size(), slots.size());
    for (auto& kv : slots) ASSERT_EQ(ix.find(kv.first)->value(), kv.second);
    for (uint64_t k : cands) ASSERT_EQ(ix.find(k), nullptr);
    // Overwriting a candidate with a slot (what a merge does) makes it survive.
    ASSERT_TRUE(ix.put(cands[0], PageIndex::candidate_value(0x3000)));
    EXPECT_EQ(ix.candidates(), 1u);
    ASSERT_TRUE(ix.put(cands[0], PageIndex::slot_value(77)));
    EXPECT_EQ(ix.candidates(), 0u);
    ix.drop_candidates();
    ASSERT_NE(ix.find(cands[0]), nullptr);
    EXPECT_EQ(PageIndex::slot_id(ix.find(cands[0])->value()), 77u);
    // Only candidates: all gone (in place, then by rebuild).
    for (size_t n : {50u, 3000u}) {
        PageIndex c;
        for (uint64_t f = 2; f < n; ++f) ASSERT_TRUE(c.put(key(f), PageIndex::candidate_value(f << 12)));
        c.drop_candidates();
        EXPECT_EQ(c.size(), 0u);
        EXPECT_EQ(c.candidates(), 0u);
        for (uint64_t f = 2; f < n; ++f) EXPECT_EQ(c.find(key(f)), nullptr);
    }
}

// Rebuilds with few slots and with more than the keep-aside buffer first
// holds (it grows, and is kept for the next pass): same result each time.
TEST(PageIndex, DropCandidatesWithFewOrManySlots) {
    for (size_t nslots : {1u, 100u, 511u, 512u, 513u, 2000u}) {
        PageIndex ix;
        uint64_t seed = 31 + nslots;
        std::vector<uint64_t> keys = distinct_keys(nslots + 300, seed);
        for (size_t i = 0; i < keys.size(); ++i) {
            uint64_t v = i < nslots ? PageIndex::slot_value((uint32_t)i)
                                    : PageIndex::candidate_value((uintptr_t)(i + 1) << 12);
            ASSERT_TRUE(ix.put(keys[i], v));
        }
        ix.drop_candidates();
        for (size_t i = nslots; i < keys.size(); ++i)  // a second pass reuses the buffer
            ASSERT_TRUE(ix.put(keys[i], PageIndex::candidate_value((uintptr_t)(i + 1) << 12)));
        ix.drop_candidates();
        EXPECT_EQ(ix.size(), nslots) << nslots;
        EXPECT_EQ(ix.candidates(), 0u) << nslots;
        for (size_t i = 0; i < keys.size(); ++i) {
            PageIndex::Entry* e = ix.find(keys[i]);
            if (i < nslots) {
                ASSERT_NE(e, nullptr) << nslots << " " << i;
                EXPECT_EQ(e->value(), PageIndex::slot_value((uint32_t)i));
            } else {
                EXPECT_EQ(e, nullptr) << nslots << " " << i;
            }
        }
    }
}
