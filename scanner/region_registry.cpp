#include "scanner/region_registry.h"

#include <string.h>

#include "scanner/meta_alloc.h"

namespace dedup {

void free_region_meta(Region& r) {
    meta_free(r.meta, r.pages() * sizeof(PageMeta));
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
    PageMeta* meta = static_cast<PageMeta*>(meta_alloc(pages * sizeof(PageMeta)));
    if (!meta || !reserve(count_ + 1)) {
        meta_free(meta, pages * sizeof(PageMeta));
        return false;
    }
    size_t i = lower_bound(start);
    memmove(&regions_[i + 1], &regions_[i], (count_ - i) * sizeof(Region));
    regions_[i] = Region{start, end, prot, flags, meta, site};
    ++count_;
    pages_ += pages;
    return true;
}

bool RegionRegistry::split_at(uintptr_t addr) {
    Region* r = find(addr);
    if (!r || r->start == addr) return true;
    size_t i = (size_t)(r - regions_);
    size_t left = (addr - r->start) / kPageSize, right = (r->end - addr) / kPageSize;
    PageMeta* lm = static_cast<PageMeta*>(meta_alloc(left * sizeof(PageMeta)));
    PageMeta* rm = static_cast<PageMeta*>(meta_alloc(right * sizeof(PageMeta)));
    if (!lm || !rm || !reserve(count_ + 1)) {
        meta_free(lm, left * sizeof(PageMeta));
        meta_free(rm, right * sizeof(PageMeta));
        return false;
    }
    r = &regions_[i];  // reserve may have moved the array
    memcpy(lm, r->meta, left * sizeof(PageMeta));
    memcpy(rm, r->meta + left, right * sizeof(PageMeta));
    Region orig = *r;
    free_region_meta(*r);
    memmove(&regions_[i + 1], &regions_[i], (count_ - i) * sizeof(Region));
    ++count_;
    regions_[i] = Region{orig.start, addr, orig.prot, orig.flags, lm, orig.site};
    regions_[i + 1] = Region{addr, orig.end, orig.prot, orig.flags, rm, orig.site};
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
            PageMeta* m = static_cast<PageMeta*>(meta_realloc(a.meta, ap * sizeof(PageMeta), (ap + bp) * sizeof(PageMeta)));
            if (!m) return;
            memcpy(m + ap, b.meta, bp * sizeof(PageMeta));
            a.meta = m;
            a.end = b.end;
            free_region_meta(b);
            erase_at(i + 1);
            continue;
        }
        ++i;
    }
}

void RegionRegistry::clear() {
    for (size_t i = 0; i < count_; ++i) free_region_meta(regions_[i]);
    count_ = 0;
    pages_ = 0;
}

}  // namespace dedup
