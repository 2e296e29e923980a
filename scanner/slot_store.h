// Canonical pages: one memfd, one 4 KiB slot per distinct merged content.
// The memfd's descriptor is closed once it is mapped: the store holds no fd.
// Slots are written only through a scanner-private MAP_SHARED view of the
// memfd, never through a mapping the application can reach, and are
// immutable while any page maps them. A slot nobody maps any more is punched
// out (MADV_REMOVE on the view) and reused, except slots that existed when
// the process forked: the child may still map those, so they are never
// punched or rewritten by either process.
// All calls require the mm lock.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace dedup {

class SlotStore {
public:
    // Creates the memfd and its views on first use. False (and logged once)
    // if the memfd cannot be had; the caller then merges nothing but zero pages.
    bool ensure_ready();
    bool ready() const { return view_ != nullptr; }
    // Maps slots [first, first+n) privately over [target, target+n pages),
    // replacing what was there (as mmap MAP_PRIVATE|MAP_FIXED of the memfd
    // would). The new mapping is writable, or read-only when strict
    // overcommit refused a writable view: the caller restores the protection.
    bool map_run(uintptr_t target, uint32_t first, size_t n);

    // n consecutive slots, or -1. New slots have refs 0.
    int64_t alloc_run(uint32_t n);
    void fill(uint32_t slot, const void* page, uint64_t hash);
    const void* content(uint32_t slot) const { return view_ + (size_t)slot * 4096; }
    uint64_t hash(uint32_t slot) const { return hashes_[slot]; }
    uint32_t refs(uint32_t slot) const { return refs_[slot]; }

    void ref(uint32_t slot) { if (refs_[slot]++ == 0) ++in_use_; ++total_refs_; }
    // Drops one reference; true when the slot became free (queued to be
    // punched out, or, if fork-pinned, left alone).
    bool unref(uint32_t slot);
    // Punches out the queued free slots, consecutive ones with one call, and
    // makes them reusable. Called at the end of every operation that frees.
    void flush_punches();
    // Gives back a slot that was allocated but never referenced.
    void release_unused(uint32_t slot);

    uint64_t slots_in_use() const { return in_use_; }  // KSM's pages_shared
    uint64_t total_refs() const { return total_refs_; }  // pages mapping slots
    uint64_t slots_allocated() const { return next_; }
    uint64_t bytes() const { return capacity_ * (sizeof(uint64_t) + 2 * sizeof(uint32_t) + 1); }

    // Fork: slots in use now may be mapped by the child, so once freed they
    // are never punched or reused. Free slots are mapped by nobody: they stay
    // reusable, and a slot reused after the fork is not pinned.
    void pin_for_fork();
    // In the child: forget the parent's store (its slots are the parent's);
    // a new memfd is created on next use.
    void reset_in_child();
    void shutdown_for_test();

private:
    bool grow_arrays(uint64_t min_slots);
    bool grow_views(uint64_t min_slots);

    bool failed_ = false;
    bool full_warned_ = false;
    uint64_t retry_at_ns_ = 0;   // memfd_create hit EMFILE: not before then
    char* view_ = nullptr;       // MAP_SHARED view of the whole memfd
    char* private_ = nullptr;    // MAP_PRIVATE view, source of merged pieces
    uint64_t view_slots_ = 0;    // slots both views cover now
    uint64_t file_slots_ = 0;    // size of the memfd in slots
    uint64_t next_ = 0;          // bump pointer
    uint8_t* pinned_ = nullptr;  // per slot: in use at a fork, never punch or reuse
    uint32_t* pending_ = nullptr;  // freed, not yet punched (never reused before)
    uint64_t pending_count_ = 0;
    uint64_t* hashes_ = nullptr;
    uint32_t* refs_ = nullptr;
    uint32_t* free_ = nullptr;   // stack of free slot ids
    uint64_t free_count_ = 0;
    uint64_t capacity_ = 0;      // of the arrays
    uint64_t in_use_ = 0;
    uint64_t total_refs_ = 0;
};

}  // namespace dedup
