// Content index: 64-bit XXH3 of a page -> either a canonical slot (KSM's
// "stable tree") or a candidate page seen earlier in this pass (KSM's
// "unstable tree"). Open addressing with linear probing in the shim's own
// memory; 16 bytes an entry. A hash match is only a hint: every merge is
// confirmed byte for byte under write protection.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

class PageIndex {
public:
    struct Entry {
        uint64_t hash;   // 0 = empty slot in the table
        uint64_t value;  // candidate page address | 1, or slot << 2 | 2
    };
    static bool is_candidate(uint64_t v) { return (v & 3) == 1; }
    static bool is_slot(uint64_t v) { return (v & 3) == 2; }
    static uintptr_t candidate_addr(uint64_t v) { return (uintptr_t)(v & ~uint64_t(3)); }
    static uint32_t slot_id(uint64_t v) { return (uint32_t)(v >> 2); }
    static uint64_t candidate_value(uintptr_t addr) { return (uint64_t)addr | 1; }
    static uint64_t slot_value(uint32_t slot) { return (uint64_t)slot << 2 | 2; }

    ~PageIndex();
    // nullptr when absent.
    Entry* find(uint64_t hash);
    // Inserts or overwrites. Returns false if the table could not grow.
    bool put(uint64_t hash, uint64_t value);
    void erase(uint64_t hash);
    // Drops every candidate entry (start of a new pass), keeping slots.
    void drop_candidates();
    void clear();
    size_t size() const { return size_; }
    size_t candidates() const { return candidates_; }
    size_t bytes() const { return capacity_ * sizeof(Entry); }

private:
    static uint64_t norm(uint64_t h) { return h ? h : 1; }
    bool grow();
    size_t mask() const { return capacity_ - 1; }

    Entry* table_ = nullptr;
    size_t capacity_ = 0;  // power of two
    size_t size_ = 0;
    size_t candidates_ = 0;  // entries that are candidate pages
};

}  // namespace dedup
