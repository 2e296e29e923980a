#include "scanner/page_index.h"

#include <string.h>

#include "scanner/meta_alloc.h"

namespace dedup {

namespace {
constexpr uint64_t kUserTop = uint64_t(1) << 47;  // candidate addresses are below
constexpr uint64_t kPageMask = 4095;
constexpr unsigned kPageShift = 12;
}  // namespace

PageIndex::~PageIndex() { clear(); }

void PageIndex::clear() {
    meta_free(table_, capacity_ * sizeof(Entry));
    meta_free(keep_, keep_cap_ * sizeof(uint64_t));
    keep_ = nullptr;
    keep_cap_ = 0;
    table_ = nullptr;
    capacity_ = size_ = candidates_ = 0;
}

uint64_t PageIndex::encode(uint64_t value) {
    if (is_slot(value)) {
        uint64_t id = value >> 2;
        return id <= kPayloadMask ? kKindSlot | id : 0;
    }
    if (is_candidate(value)) {
        uint64_t addr = value & ~uint64_t(3);
        if (addr == 0 || (addr & kPageMask) || addr >= kUserTop) return 0;
        return addr >> kPageShift;  // 1 .. 2^35 - 1
    }
    return 0;
}

PageIndex::Entry* PageIndex::find(uint64_t hash) {
    if (!table_) return nullptr;
    uint64_t frag = hash >> kFragShift;
    for (size_t i = home(frag);; i = next(i)) {
        uint64_t w = table_[i].word_;
        if (w == 0) return nullptr;
        if ((w >> kFragShift) == frag) return &table_[i];
    }
}

void PageIndex::insert_new(uint64_t w) {
    size_t i = home(w >> kFragShift);
    while (table_[i].word_) i = next(i);
    table_[i].word_ = w;
    ++size_;
    candidates_ += word_is_candidate(w);
}

bool PageIndex::grow() {
    size_t cap = capacity_ ? (capacity_ + capacity_ / 2 + 511) & ~size_t(511) : 4096;
    Entry* t = static_cast<Entry*>(meta_alloc(cap * sizeof(Entry)));
    if (!t) return false;
    Entry* old = table_;
    size_t old_cap = capacity_;
    table_ = t;
    capacity_ = cap;
    size_ = candidates_ = 0;
    for (size_t i = 0; i < old_cap; ++i)
        if (old[i].word_) insert_new(old[i].word_);
    meta_free(old, old_cap * sizeof(Entry));
    return true;
}

bool PageIndex::put(uint64_t hash, uint64_t value) {
    uint64_t low = encode(value);
    if (!low) return false;
    uint64_t frag = hash >> kFragShift;
    if (Entry* e = find(hash)) {
        candidates_ += (size_t)word_is_candidate(low) - (size_t)word_is_candidate(e->word_);
        e->word_ = frag << kFragShift | low;
        return true;
    }
    if ((size_ + 1) * kMaxLoadDen > capacity_ * kMaxLoadNum && !grow()) return false;
    insert_new(frag << kFragShift | low);
    return true;
}

// Backward-shift deletion keeps probe chains intact without tombstones.
void PageIndex::erase_at(size_t i) {
    candidates_ -= word_is_candidate(table_[i].word_);
    size_t j = i;
    for (;;) {
        j = next(j);
        uint64_t w = table_[j].word_;
        if (w == 0) break;
        size_t h = home(w >> kFragShift);
        // Move j back to i if its home position is not cyclically in (i, j].
        bool between = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!between) {
            table_[i] = table_[j];
            i = j;
        }
    }
    table_[i].word_ = 0;
    --size_;
}

void PageIndex::erase(uint64_t hash) {
    Entry* e = find(hash);
    if (e) erase_at((size_t)(e - table_));
}

void PageIndex::erase_candidates_in_place() {
    // Backward-shift deletion can move a later entry into a slot already
    // visited when a probe chain wraps: sweep until none is left.
    while (candidates_)
        for (size_t i = 0; i < capacity_ && candidates_; ++i)
            while (table_[i].word_ && word_is_candidate(table_[i].word_)) erase_at(i);
}

// A table at under 3/8 load for a whole pass (the first pass of a large
// region fills it with candidates that then merge) shrinks to 1/2 load for
// the next: every one of its pages stays resident otherwise. Leaves the
// table empty (capacity_ changed) or, if not worth it or no memory, as is.
bool PageIndex::shrink_for(size_t entries) {
    if (capacity_ <= 4096 || entries * 8 >= capacity_ * 3) return false;
    size_t cap = (entries * 2 + 511) & ~size_t(511);
    if (cap < 4096) cap = 4096;
    Entry* t = static_cast<Entry*>(meta_alloc(cap * sizeof(Entry)));
    if (!t) return false;
    meta_free(table_, capacity_ * sizeof(Entry));
    table_ = t;
    capacity_ = cap;
    return true;
}

void PageIndex::drop_candidates() {
    if (!table_ || candidates_ == 0) return;
    if (candidates_ < 64) {  // a few: erase in place rather than rebuild the table
        erase_candidates_in_place();
        return;
    }
    // Rebuild in place: keep the slot entries aside, clear the table and
    // put them back. A fresh table every pass would page-fault all of it in
    // again (the profile showed those faults in every pass).
    // The slot entries go aside in a buffer kept from pass to pass (a short
    // pass at full speed must not mmap and munmap every time).
    size_t slots = size_ - candidates_;
    if (slots > keep_cap_) {
        size_t cap = keep_cap_ ? keep_cap_ : 512;
        while (cap < slots) cap *= 2;
        void* k = meta_alloc(cap * sizeof(uint64_t));
        if (!k) {  // no memory to rebuild: erase in place (slower, same result)
            erase_candidates_in_place();
            return;
        }
        meta_free(keep_, keep_cap_ * sizeof(uint64_t));
        keep_ = static_cast<uint64_t*>(k);
        keep_cap_ = cap;
    }
    uint64_t* keep = keep_;
    size_t n = 0;
    for (size_t i = 0; i < capacity_ && n < slots; ++i)
        if (table_[i].word_ && !word_is_candidate(table_[i].word_)) keep[n++] = table_[i].word_;
    size_t busiest = size_;  // this pass's entries, about what the next one needs
    if (!shrink_for(busiest)) memset(table_, 0, capacity_ * sizeof(Entry));
    size_ = candidates_ = 0;
    for (size_t i = 0; i < n; ++i) insert_new(keep[i]);
    // The buffer stays mapped but holds no memory between passes: as many
    // slot entries as the table again would otherwise stay resident.
    if (keep_cap_ * sizeof(uint64_t) >= (64u << 10)) meta_discard(keep_, keep_cap_ * sizeof(uint64_t));
}

}  // namespace dedup
