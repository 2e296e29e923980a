// Canonical pages: one memfd, one 4 KiB slot per distinct merged content.
// The memfd's descriptor is closed once it is mapped: the store holds no fd.
// Slots are written only through a scanner-private MAP_SHARED view of the
// memfd, never through a mapping the application can reach, and are
// immutable while any page maps them. A slot nobody maps any more is punched
// out (MADV_REMOVE on the view) and reused, except slots that existed when
// the process forked: the child may still map those, so they are never
// punched or rewritten by either process.
// Rotation gives those back: the store starts a new memfd (a generation),
// the scanner moves every page off the old one (scanner/rotation.cpp), and
// the old views are unmapped; the kernel frees the old file when the last
// process mapping it is gone. Slot ids are unique across generations: the
// current generation's ids start at its base.
// All calls require the mm lock.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "scanner/domain.h"
#include "scanner/page_meta.h"

namespace dedup {

class SlotStore {
public:
    static constexpr uint64_t kRotateMinKept = 256;  // 1 MiB kept for children
    static constexpr const char* kMemfdName = "libdedup-canonical";  // as /proc/self/maps shows it
    // Slots are a merge domain's (before first use; domain.h): allocated,
    // shared and freed with the other members. Local refcounts count this
    // process's pages; a slot is given back to the domain when they fall to
    // zero. Fork pinning and rotation are not needed then: a forked child is
    // a member with the parent's slots.
    void use_domain(Domain* d) { domain_ = d; }
    bool in_domain() const { return domain_ != nullptr; }
    // Before comparing a page with slot: in a domain, takes the slot (its
    // bit keeps it alive) if it is a live canonical page with this hash;
    // this process's own slots need nothing (true).
    bool take(uint32_t slot, uint64_t hash);
    // Canonical pages this process maps that other members map too.
    uint64_t pages_shared_with_others() const;
    // Creates the memfd and its views on first use. False (and logged once)
    // if the memfd cannot be had; the caller then merges nothing but zero pages.
    bool ensure_ready();
    bool ready() const { return cur_.shared != nullptr; }
    // Maps slots [first, first+n) privately over [target, target+n pages),
    // replacing what was there (as mmap MAP_PRIVATE|MAP_FIXED of the memfd
    // would). The new mapping is writable, or read-only when strict
    // overcommit refused a writable view: the caller restores the protection.
    bool map_run(uintptr_t target, uint32_t first, size_t n);
    // Whether map_run of this slot gives a writable mapping (PROT_READ |
    // PROT_WRITE), so that a run it covered whole needs no restore.
    bool maps_writable(uint32_t slot) const { return gen_of(slot).priv_writable; }

    // n consecutive slots, or -1. New slots have refs 0.
    int64_t alloc_run(uint32_t n);
    void fill(uint32_t slot, const void* page, uint64_t hash);
    const void* content(uint32_t slot) const {
        const Generation& g = gen_of(slot);
        return g.shared + (size_t)(slot - g.base) * kPageSize;
    }
    uint64_t hash(uint32_t slot) const { return domain_ ? domain_->hash(slot) : hashes_[slot - array_base_]; }
    uint32_t refs(uint32_t slot) const { return refs_[slot - array_base_]; }
    // Punched or about to be: its id may be handed out again.
    bool is_free(uint32_t slot) const { return flags_[slot - array_base_] & kFree; }

    void ref(uint32_t slot) {
        if (refs_[slot - array_base_]++ == 0) ++in_use_;
        ++total_refs_;
        if (slot < cur_.base) ++retiring_refs_;
    }
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
    uint64_t slots_allocated() const { return next_ - array_base_; }
    uint64_t bytes() const { return capacity_ * (sizeof(uint64_t) + 2 * sizeof(uint32_t) + 1); }

    // Fork: slots in use now may be mapped by the child, so once freed they
    // are never punched or reused. Free slots are mapped by nobody: they stay
    // reusable, and a slot reused after the fork is not pinned.
    void pin_for_fork();
    // Slots kept only because a forked child may map them.
    uint64_t fork_kept() const { return pinned_dead_; }

    // Rotation. Due when the slots kept for children are many and at least
    // as many as the pinned slots still in use (what a rotation copies).
    bool rotation_due() const;
    // Starts a new memfd; the old one becomes the retiring generation, whose
    // slots are never reused or punched. False (logged once) if no new memfd
    // can be had: the store goes on as it was.
    bool begin_rotation();
    bool retiring() const { return old_.shared != nullptr; }
    bool is_retiring(uint32_t slot) const { return slot < cur_.base; }
    uint64_t retiring_refs() const { return retiring_refs_; }  // pages still mapping it
    uint64_t retiring_inode() const { return old_.ino; }
    uint64_t current_inode() const { return cur_.ino; }
    // A core dump is about to be written: the views are not the program's
    // memory (the shared one is dumped whole otherwise). Not at creation for
    // the private view: merges take their pieces from it, and a piece would
    // inherit VM_DONTDUMP.
    void exclude_views_from_core();
    // Around the program's mlockall(MCL_CURRENT): hidden (PROT_NONE), the
    // views are locked but not populated; shown again, they are unlocked.
    // Populated, the private view would hold anonymous pages that merges
    // then take (stale zeros), and the shared one every slot of the view.
    void hide_views(bool hide);
    uint64_t retiring_end() const { return cur_.base; }
    // Once no registered page maps the retiring generation: unmaps its views
    // and forgets its slots.
    void end_rotation();
    // In the child: forget the parent's store (its slots are the parent's);
    // a new memfd is created on next use.
    void reset_in_child();
    void shutdown_for_test();

private:
    // One memfd, mapped twice (see slot_store.cpp).
    struct Generation {
        char* shared = nullptr;   // MAP_SHARED view: slots are written and punched here
        char* priv = nullptr;     // MAP_PRIVATE view, source of merged pieces
        uint64_t view_slots = 0;  // slots both views cover now
        uint64_t file_slots = 0;  // size of the memfd in slots
        uint64_t base = 0;        // slot id of its first slot
        uint64_t ino = 0;         // the memfd's inode, to find its mappings
        bool priv_writable = false;  // priv is PROT_READ|PROT_WRITE (else PROT_READ)
    };
    const Generation& gen_of(uint32_t slot) const { return slot < cur_.base ? old_ : cur_; }
    // 0, or -errno: a new memfd sized and mapped into g (descriptor closed).
    // *created says whether memfd_create itself succeeded.
    long open_generation(Generation* g, bool* created);
    long map_views(Generation* g, int fd, uint64_t offset, uint64_t view);
    bool open_domain();
    // Local arrays and views that cover slot ids below end.
    bool cover(uint64_t end);
    static void unmap_generation(Generation* g);
    bool grow_arrays(uint64_t min_slots);
    bool grow_views(uint64_t min_slots);

    Domain* domain_ = nullptr;
    bool failed_ = false;
    bool full_warned_ = false;
    bool rotation_warned_ = false;
    uint64_t rotation_retry_ns_ = 0;  // no new memfd for a rotation: not before then
    uint64_t retry_at_ns_ = 0;   // memfd_create hit EMFILE: not before then
    Generation cur_;             // where new slots go
    Generation old_;             // retiring (rotation under way), or empty
    uint64_t retiring_refs_ = 0; // pages mapping old_'s slots
    uint64_t array_base_ = 0;    // slot id of the arrays' first entry
    uint64_t next_ = 0;          // bump pointer (slot id)
    uint64_t pinned_live_ = 0;   // pinned slots still in use
    uint64_t pinned_dead_ = 0;   // pinned slots no page of ours maps any more
    // Per slot: kPinned (in use at a fork: never punch or reuse), kFree
    // (queued to be punched, or on the free stack).
    static constexpr uint8_t kPinned = 1, kFree = 2;
    uint8_t* flags_ = nullptr;
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
