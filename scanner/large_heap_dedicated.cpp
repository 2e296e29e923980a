// LargeHeap's blocks with a mapping of their own: bigger than an arena
// block, aligned beyond 2 MiB, or every block while allocation sites are
// captured. A fresh mapping each, with the same header as an arena block.
#include "scanner/large_heap.h"

namespace dedup {

using namespace large_detail;

// ---- blocks with a mapping of their own -----------------------------------------

// Our page-aligned pointers outside arenas. Their header sits on the page
// before the pointer, and reading below a page-aligned pointer from another
// allocator (jemalloc) could fault: such pointers are looked up here
// instead. Rare, so a small table suffices.
bool LargeHeap::aligned_insert(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = 0;
        if (aligned_[i].load(std::memory_order_relaxed) == 0 && aligned_[i].compare_exchange_strong(expected, p)) {
            aligned_count_.fetch_add(1);
            return true;
        }
    }
    return false;
}

bool LargeHeap::aligned_contains(uintptr_t p) const {
    if (aligned_count_.load(std::memory_order_acquire) == 0) return false;
    for (int i = 0; i < kAlignedSlots; ++i)
        if (aligned_[i].load(std::memory_order_relaxed) == p) return true;
    return false;
}

void LargeHeap::aligned_erase(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = p;
        if (aligned_[i].compare_exchange_strong(expected, 0)) {
            aligned_count_.fetch_sub(1);
            return;
        }
    }
}

// A fresh mapping (so zero), with the header 16 bytes into its first page
// for the default alignment, as copies in arenas have it.
void* LargeHeap::dedicated_alloc(size_t size, size_t align) {
    if (align > (1u << 30)) return nullptr;
    size_t need = size + 16 + (align > 16 ? align : 0);
    size_t len = round_up(need, kPage);
    long r = be_.map(nullptr, len);
    if (sys::failed(r)) return nullptr;
    uintptr_t base = (uintptr_t)r;
    uintptr_t p = (base + 16 + align - 1) & ~(uintptr_t)(align - 1);
    if ((p & (kPage - 1)) == 0 && !aligned_insert(p)) {  // table full: let the next allocator serve it
        be_.unmap((void*)base, len);
        return nullptr;
    }
    write_header(p, p - base, base + len - p);
    dedicated_.fetch_add(1, std::memory_order_relaxed);
    return reinterpret_cast<void*>(p);
}

// The mapping of a block with a mapping of its own: from the header, the
// pointer's offset into it and its end (usable bytes run to the end).
static void dedicated_mapping(void* p, uintptr_t* base, size_t* len) {
    const uint64_t* h = header(p);
    *base = (uintptr_t)p - (uintptr_t)(h[0] & 0xffffffffull);
    *len = (size_t)(((uintptr_t)p + (size_t)(h[1] & ~uint64_t(15))) - *base);
}

// Only pointers less than a page into their mapping (alignments up to 2048):
// the new mapping starts on a page, so the pointer at the same offset keeps
// its alignment. A page-aligned one may need more (and has a table entry).
void* LargeHeap::remap(void* p, size_t n) {
    if (!be_.remap || radix_slot((uintptr_t)p) >= 0 || ((uintptr_t)p & (kPage - 1)) == 0) return nullptr;
    uintptr_t base;
    size_t old_len;
    dedicated_mapping(p, &base, &old_len);
    size_t off = (uintptr_t)p - base;
    if (off < 16 || off >= kPage || n > (SIZE_MAX >> 1)) return nullptr;
    size_t new_len = round_up(off + n, kPage);
    long r = be_.remap((void*)base, old_len, new_len);
    if (sys::failed(r)) return nullptr;
    uintptr_t q = (uintptr_t)r + off;
    write_header(q, off, (uintptr_t)r + new_len - q);
    return reinterpret_cast<void*>(q);
}

void LargeHeap::dedicated_free(void* p) {
    uintptr_t base;
    size_t len;
    dedicated_mapping(p, &base, &len);
    if (((uintptr_t)p & (kPage - 1)) == 0) aligned_erase((uintptr_t)p);
    dedicated_.fetch_sub(1, std::memory_order_relaxed);
    be_.unmap((void*)base, len);
}

}  // namespace dedup
