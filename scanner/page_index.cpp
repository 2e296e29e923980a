#include "scanner/page_index.h"

#include "scanner/meta_alloc.h"

namespace dedup {

PageIndex::~PageIndex() { clear(); }

void PageIndex::clear() {
    meta_free(table_, capacity_ * sizeof(Entry));
    table_ = nullptr;
    capacity_ = size_ = candidates_ = 0;
}

PageIndex::Entry* PageIndex::find(uint64_t hash) {
    if (!table_) return nullptr;
    hash = norm(hash);
    for (size_t i = hash & mask();; i = (i + 1) & mask()) {
        if (table_[i].hash == hash) return &table_[i];
        if (table_[i].hash == 0) return nullptr;
    }
}

bool PageIndex::grow() {
    size_t cap = capacity_ ? capacity_ * 2 : 4096;
    Entry* t = static_cast<Entry*>(meta_alloc(cap * sizeof(Entry)));
    if (!t) return false;
    Entry* old = table_;
    size_t old_cap = capacity_;
    table_ = t;
    capacity_ = cap;
    size_ = candidates_ = 0;
    for (size_t i = 0; i < old_cap; ++i)
        if (old[i].hash) put(old[i].hash, old[i].value);
    meta_free(old, old_cap * sizeof(Entry));
    return true;
}

bool PageIndex::put(uint64_t hash, uint64_t value) {
    hash = norm(hash);
    if ((size_ + 1) * 2 > capacity_ && !grow()) return false;
    for (size_t i = hash & mask();; i = (i + 1) & mask()) {
        if (table_[i].hash == hash) {
            candidates_ += (size_t)is_candidate(value) - (size_t)is_candidate(table_[i].value);
            table_[i].value = value;
            return true;
        }
        if (table_[i].hash == 0) {
            table_[i] = Entry{hash, value};
            ++size_;
            candidates_ += is_candidate(value);
            return true;
        }
    }
}

void PageIndex::erase(uint64_t hash) {
    Entry* e = find(hash);
    if (!e) return;
    // Backward-shift deletion keeps probe chains intact without tombstones.
    size_t i = (size_t)(e - table_);
    candidates_ -= is_candidate(e->value);
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask();
        if (table_[j].hash == 0) break;
        size_t home = table_[j].hash & mask();
        // Move j back to i if its home position is not cyclically in (i, j].
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            table_[i] = table_[j];
            i = j;
        }
    }
    table_[i] = Entry{0, 0};
    --size_;
}

void PageIndex::drop_candidates() {
    if (!table_ || candidates_ == 0) return;
    Entry* old = table_;
    size_t cap = capacity_;
    if (candidates_ < 64) {  // a few: erase in place rather than rebuild the table
        // Backward-shift deletion can move a later entry into a slot already
        // visited when a probe chain wraps: sweep until none is left.
        while (candidates_)
            for (size_t i = 0; i < cap && candidates_; ++i)
                while (old[i].hash && is_candidate(old[i].value)) erase(old[i].hash);
        return;
    }
    Entry* t = static_cast<Entry*>(meta_alloc(cap * sizeof(Entry)));
    if (!t) {  // no memory to rebuild: erase in place (slower, same result)
        while (candidates_)
            for (size_t i = 0; i < cap && candidates_; ++i)
                while (old[i].hash && is_candidate(old[i].value)) erase(old[i].hash);
        return;
    }
    table_ = t;
    size_ = candidates_ = 0;
    for (size_t i = 0; i < cap; ++i)
        if (old[i].hash && is_slot(old[i].value)) put(old[i].hash, old[i].value);
    meta_free(old, cap * sizeof(Entry));
}

}  // namespace dedup
