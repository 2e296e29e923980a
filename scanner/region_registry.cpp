#include "scanner/region_registry.h"

#include <string.h>

#include "scanner/meta_alloc.h"

namespace dedup {

namespace {
size_t block_bytes(size_t pages) { return sizeof(MetaBlock) + pages * sizeof(PageMeta); }

MetaBlock* new_block(size_t pages) {
    MetaBlock* b = static_cast<MetaBlock*>(meta_alloc(block_bytes(pages)));
    if (b) {
        b->refs = 1;
        b->pages = pages;
    }
    return b;
}
}  // namespace

void free_region_meta(Region& r) {
    if (r.block && --r.block->refs == 0) meta_free(r.block, block_bytes(r.block->pages));
    r.block = nullptr;
    r.meta = nullptr;
}

bool RegionRegistry::reserve(size_t n) {
    if (n <= capacity_) return true;
    size_t cap = capacity_ ? capacity_ * 2 : 256;
    while (cap < n) cap *= 2;
    void* p = meta_realloc(regions_, capacity_ * sizeof(Region), cap * sizeof(Region));
    if (!p) return false;
    regions_ = static_cast<Region*>(p);
    capacity_ = cap;
    return true;
}

void RegionRegistry::erase_at(size_t i) {
    memmove(&regions_[i], &regions_[i + 1], (count_ - i - 1) * sizeof(Region));
    --count_;
}

size_t RegionRegistry::lower_bound(uintptr_t addr) const {
    size_t lo = 0, hi = count_;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (regions_[mid].end <= addr) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

Region* RegionRegistry::find(uintptr_t addr) {
    size_t i = lower_bound(addr);
    if (i < count_ && regions_[i].start <= addr) return &regions_[i];
    return nullptr;
}

bool RegionRegistry::overlaps(uintptr_t start, uintptr_t end) const {
    size_t i = lower_bound(start);
    return i < count_ && regions_[i].start < end;
}

bool RegionRegistry::insert(uintptr_t start, uintptr_t end, int prot, uint32_t flags, uint32_t site) {
    if (end <= start) return true;
    size_t pages = (end - start) / kPageSize;
    MetaBlock* block = new_block(pages);
    if (!block || !reserve(count_ + 1)) {
        if (block) meta_free(block, block_bytes(pages));
        return false;
    }
    size_t i = lower_bound(start);
    memmove(&regions_[i + 1], &regions_[i], (count_ - i) * sizeof(Region));
    regions_[i] = Region{start, end, prot, flags, block->meta, site, block};
    ++count_;
    pages_ += pages;
    return true;
}

bool RegionRegistry::split_at(uintptr_t addr) {
    Region* r = find(addr);
    if (!r || r->start == addr) return true;
    size_t i = (size_t)(r - regions_);
    if (!reserve(count_ + 1)) return false;
    Region orig = regions_[i];  // reserve may have moved the array
    size_t left = (addr - orig.start) / kPageSize;
    memmove(&regions_[i + 1], &regions_[i], (count_ - i) * sizeof(Region));
    ++count_;
    ++orig.block->refs;  // both halves share the block
    regions_[i] = Region{orig.start, addr, orig.prot, orig.flags, orig.meta, orig.site, orig.block};
    regions_[i + 1] = Region{addr, orig.end, orig.prot, orig.flags, orig.meta + left, orig.site, orig.block};
    return true;
}

void RegionRegistry::coalesce(uintptr_t start, uintptr_t end) {
    size_t i = lower_bound(start);
    if (i > 0) --i;
    while (i + 1 < count_ && regions_[i].start <= end) {
        Region& a = regions_[i];
        Region& b = regions_[i + 1];
        if (a.end == b.start && a.prot == b.prot && a.flags == b.flags && a.site == b.site) {
            size_t ap = a.pages(), bp = b.pages();
            if (a.block == b.block && a.meta + ap == b.meta) {  // split siblings meeting again: free
                a.end = b.end;
                free_region_meta(b);
                erase_at(i + 1);
                continue;
            }
            MetaBlock* m = new_block(ap + bp);
            if (!m) return;
            memcpy(m->meta, a.meta, ap * sizeof(PageMeta));
            memcpy(m->meta + ap, b.meta, bp * sizeof(PageMeta));
            free_region_meta(a);
            free_region_meta(b);
            a.meta = m->meta;
            a.block = m;
            a.end = b.end;
            erase_at(i + 1);
            continue;
        }
        ++i;
    }
}

bool RegionRegistry::relocate(uintptr_t from, uintptr_t from_end, uintptr_t to, bool keep_old) {
    size_t first = lower_bound(from), last = first;
    while (last < count_ && regions_[last].start < from_end) ++last;
    size_t n = last - first;
    if (n == 0) return true;
    Region* moving = static_cast<Region*>(meta_alloc(n * sizeof(Region)));
    if (!moving || !reserve(count_ + (keep_old ? n : 0))) {
        meta_free(moving, n * sizeof(Region));
        return false;
    }
    memcpy(moving, &regions_[first], n * sizeof(Region));
    memmove(&regions_[first], &regions_[last], (count_ - last) * sizeof(Region));
    count_ -= n;
    if (keep_old)  // fresh records (a failure leaves that part unregistered: never merged)
        for (size_t i = 0; i < n; ++i) insert(moving[i].start, moving[i].end, moving[i].prot, moving[i].flags, moving[i].site);
    for (size_t i = 0; i < n; ++i) {
        Region r = moving[i];
        uintptr_t delta_start = r.start - from;
        r.end = to + delta_start + r.pages() * kPageSize;
        r.start = to + delta_start;
        size_t at = lower_bound(r.start);
        memmove(&regions_[at + 1], &regions_[at], (count_ - at) * sizeof(Region));
        regions_[at] = r;
        ++count_;
    }
    meta_free(moving, n * sizeof(Region));
    coalesce(to, to + (from_end - from));
    return true;
}

bool RegionRegistry::grow_tail(uintptr_t end, uintptr_t new_end) {
    Region* last = find(end - kPageSize);
    if (!last || new_end <= end) return true;
    int prot = last->prot;
    uint32_t flags = last->flags, site = last->site;
    if (!insert(end, new_end, prot, flags, site)) return false;
    coalesce(end, new_end);
    return true;
}

void RegionRegistry::clear() {
    for (size_t i = 0; i < count_; ++i) free_region_meta(regions_[i]);
    count_ = 0;
    pages_ = 0;
}

}  // namespace dedup
