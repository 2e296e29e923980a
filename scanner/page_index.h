// Content index: 64-bit XXH3 of a page -> either a canonical slot (KSM's
// "stable tree") or a candidate page seen earlier in this pass (KSM's
// "unstable tree"). Open addressing with linear probing and backward-shift
// deletion in the shim's own memory, load factor <= 3/4, 8 bytes an entry.
// (3/4 rather than 1/2: the table is most of the metadata a page costs, and
// a miss at 3/4 still probes about 8 entries, one or two cache lines.)
//
// An entry is one word: [28-bit key fragment | 1 kind bit | 35-bit payload].
//  - The key fragment is the HIGH 28 bits of the hash (hash >> 36). The index
//    keeps nothing else of the key: two hashes with the same high 28 bits are
//    the same key here (find() of one returns the other's entry, put() of one
//    overwrites it, erase() of one erases it). A hit is therefore only a hint,
//    and every caller confirms it with bits the index never looks at:
//    a candidate by PageMeta.hash32 (the low 32 bits) and then byte for byte
//    under write protection, a slot by SlotStore::hash(slot) == the full hash.
//    A colliding key can only cost a lost hint (a merge found later or not at
//    all), never a wrong merge.
//  - Kind bit 0: a candidate page; payload = its page number (addr >> 12).
//    Kind bit 1: a canonical slot; payload = the slot id.
//  - An all-zero word is an empty table slot. No stored entry is all zero: a
//    candidate's page number is >= 1 and a slot has the kind bit.
// The home position is a multiplicative mix of the fragment, so growth,
// drop_candidates() and deletion recompute it from the stored word alone.
//
// Values keep the encoding below (candidate addr | 1, slot << 2 | 2). A value
// that cannot be stored — neither kind, a candidate address that is 0, not
// page aligned or >= 2^47, or a slot id >= 2^35 — makes put() return false
// and store nothing. (Every slot_value(uint32_t) fits; candidate_value() of a
// user address fits unless the address is above 2^47, i.e. 5-level paging
// with an explicit high mmap hint.)
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

class PageIndex {
public:
    class Entry {
    public:
        // The stored value, in the encoding of candidate_value()/slot_value().
        uint64_t value() const {
            uint64_t p = word_ & kPayloadMask;
            return (word_ & kKindSlot) ? p << 2 | 2 : p << 12 | 1;
        }
        // The key fragment (high 28 bits of the hash) this entry is filed under.
        uint32_t fragment() const { return (uint32_t)(word_ >> kFragShift); }

    private:
        friend class PageIndex;
        uint64_t word_;  // 0 = empty slot in the table
    };
    // There is no setter on Entry: a change of value goes through put(), which
    // keeps candidates() right when the value changes kind.

    static bool is_candidate(uint64_t v) { return (v & 3) == 1; }
    static bool is_slot(uint64_t v) { return (v & 3) == 2; }
    static uintptr_t candidate_addr(uint64_t v) { return (uintptr_t)(v & ~uint64_t(3)); }
    static uint32_t slot_id(uint64_t v) { return (uint32_t)(v >> 2); }
    static uint64_t candidate_value(uintptr_t addr) { return (uint64_t)addr | 1; }
    static uint64_t slot_value(uint32_t slot) { return (uint64_t)slot << 2 | 2; }

    ~PageIndex();
    // nullptr when absent. May return the entry of another hash with the same
    // high 28 bits (see above).
    Entry* find(uint64_t hash);
    // Inserts or overwrites (the entry of any hash with the same high 28
    // bits). Returns false, storing nothing, if the value cannot be encoded
    // or the table could not grow.
    bool put(uint64_t hash, uint64_t value);
    // Erases the entry filed under hash's high 28 bits, if any.
    void erase(uint64_t hash);
    // Drops every candidate entry (start of a new pass), keeping slots.
    void drop_candidates();
    void clear();
    size_t size() const { return size_; }
    size_t candidates() const { return candidates_; }
    size_t bytes() const { return capacity_ * sizeof(Entry); }  // the table (drop_candidates' buffer aside)

    // The table grows by half before size would pass capacity * 3/4 (by
    // half, not double: the load stays between 1/2 and 3/4).
    static constexpr size_t kMaxLoadNum = 3, kMaxLoadDen = 4;

private:
    static constexpr unsigned kFragShift = 36;
    static constexpr uint64_t kKindSlot = uint64_t(1) << 35;
    static constexpr uint64_t kPayloadMask = kKindSlot - 1;
    static constexpr uint64_t kLowMask = (uint64_t(1) << kFragShift) - 1;  // kind | payload

    // kind | payload for a value, or 0 if it cannot be encoded.
    static uint64_t encode(uint64_t value);
    static bool word_is_candidate(uint64_t w) { return !(w & kKindSlot); }
    // Multiply-shift into [0, capacity_): any capacity, not only powers of two.
    size_t home(uint64_t frag) const {
        return (size_t)(((unsigned __int128)(frag * 0x9e3779b97f4a7c15ull) * capacity_) >> 64);
    }
    size_t next(size_t i) const { return i + 1 == capacity_ ? 0 : i + 1; }
    bool grow();
    bool shrink_for(size_t entries);
    // Adds a word whose fragment is not in the table; there must be room.
    void insert_new(uint64_t w);
    void erase_at(size_t i);
    void erase_candidates_in_place();

    Entry* table_ = nullptr;
    size_t capacity_ = 0;  // a multiple of 512 (whole pages)
    size_t size_ = 0;
    size_t candidates_ = 0;  // entries that are candidate pages
    uint64_t* keep_ = nullptr;  // drop_candidates' slot entries, kept between passes
    size_t keep_cap_ = 0;
};

static_assert(sizeof(PageIndex::Entry) == 8, "an index entry is one word");

}  // namespace dedup
