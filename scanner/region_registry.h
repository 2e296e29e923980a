// The registered regions: an interval map [start, end) -> protection, flags
// and per-page metadata, kept sorted by address in the shim's own memory.
// All calls require the mm lock (see mm_lock.h).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/page_meta.h"

namespace dedup {

enum RegionFlags : uint32_t {
    kRegAdvised = 1u << 0,      // madvise(MADV_MERGEABLE) was given
    kRegUnmergeable = 1u << 1,  // madvise(MADV_UNMERGEABLE) was given
    kRegExcluded = 1u << 2,     // WIPEONFORK, mlock: never merge (until KEEPONFORK, munlock)
    kRegLeftAlone = 1u << 3,    // a kernel writer the shim cannot hold off writes here: never merge
    kRegDontfork = 1u << 4,     // flags re-applied to every remapped piece
    kRegDontdump = 1u << 5,
    kRegHugepage = 1u << 6,
    kRegNohugepage = 1u << 7,
    kRegRandom = 1u << 8,
    kRegSequential = 1u << 9,
    // The advice the kernel keeps on the VMA too (the others are the shim's own).
    kRegKernelAdvice = kRegDontfork | kRegDontdump | kRegHugepage | kRegNohugepage | kRegRandom | kRegSequential,
};

// Per-page metadata lives in blocks shared by every piece of one
// registration: splitting a region (mprotect, madvise, partial munmap of a
// range the program toggles page by page) allocates nothing, and pieces of
// the same block that meet again coalesce for free.
struct MetaBlock {
    uint32_t refs;   // regions pointing into this block
    uint32_t unused;
    size_t pages;
    PageMeta meta[];
};

struct Region {
    uintptr_t start;
    uintptr_t end;
    int prot;
    uint32_t flags;
    PageMeta* meta;  // (end - start) / kPageSize entries
    uint32_t site;   // allocation site (sites.h), 0 = unknown
    MetaBlock* block;  // owner of meta (shared with split siblings)

    size_t pages() const { return (end - start) / kPageSize; }
    PageMeta& at(uintptr_t addr) { return meta[(addr - start) / kPageSize]; }
};

class RegionRegistry {
public:
    // Registers [start, end); the caller has removed any overlap. Returns false
    // when metadata memory could not be mapped (the range stays unregistered).
    bool insert(uintptr_t start, uintptr_t end, int prot, uint32_t flags, uint32_t site = 0);
    // Region containing addr, or nullptr. Pointers are valid until the next
    // modifying call.
    Region* find(uintptr_t addr);
    // Index of the first region whose end is > addr (== count() if none).
    size_t lower_bound(uintptr_t addr) const;
    // Makes start and end region boundaries (splitting regions that straddle
    // them) so that [start, end) is covered by whole regions. Returns false if
    // metadata memory ran out (nothing split then).
    bool split_at(uintptr_t addr);
    bool isolate(uintptr_t start, uintptr_t end) { return split_at(start) && split_at(end); }
    // Removes every region inside [start, end) after isolate(); calls
    // on_page(meta, addr) for each page that had metadata.
    template <typename F>
    void remove(uintptr_t start, uintptr_t end, F&& on_page);
    // Merges adjacent regions with identical prot and flags around [start, end).
    void coalesce(uintptr_t start, uintptr_t end);
    // mremap moved [from, from_end) (whole regions: isolate() first) to `to`:
    // the regions there move with their pages' records. With keep_old
    // (MREMAP_DONTUNMAP) the old range stays registered, with fresh records
    // (its pages are gone; left unregistered if metadata memory runs out).
    // False if metadata memory ran out: nothing moved.
    bool relocate(uintptr_t from, uintptr_t from_end, uintptr_t to, bool keep_old);
    // mremap grew the mapping that ends at `end` to new_end: registers the
    // tail like the region that ends there.
    bool grow_tail(uintptr_t end, uintptr_t new_end);
    bool overlaps(uintptr_t start, uintptr_t end) const;

    size_t count() const { return count_; }
    Region& operator[](size_t i) { return regions_[i]; }
    uint64_t pages_registered() const { return pages_; }
    void clear();

private:
    bool reserve(size_t n);
    void erase_at(size_t i);

    Region* regions_ = nullptr;
    size_t count_ = 0;
    size_t capacity_ = 0;
    uint64_t pages_ = 0;
};

void free_region_meta(Region& r);

template <typename F>
void RegionRegistry::remove(uintptr_t start, uintptr_t end, F&& on_page) {
    size_t i = lower_bound(start);
    while (i < count_ && regions_[i].start < end) {
        Region& r = regions_[i];
        if (r.start >= start && r.end <= end) {
            for (size_t p = 0; p < r.pages(); ++p) on_page(r.meta[p], r.start + p * kPageSize);
            pages_ -= r.pages();
            free_region_meta(r);
            erase_at(i);
        } else {
            ++i;  // straddles: caller did not isolate (out of memory); leave it
        }
    }
}

}  // namespace dedup
