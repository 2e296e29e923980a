// Large allocations served from memory the shim maps itself, so that the
// registry sees every change to them (glibc's own mmaps are invisible to an
// interposer). Each block has a 16-byte header just before the pointer,
// shaped like a glibc mmapped chunk: [magic | offset][usable size | 2].
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

namespace large_detail {
constexpr uint32_t kMagicTag = 0xded0a11c;
constexpr uint64_t kMagic = (uint64_t)kMagicTag << 32;
constexpr uint64_t kMagicMask = 0xffffffffull << 32;
constexpr uint64_t kMmappedBit = 2;  // glibc's IS_MMAPPED
// large_owns for a page-aligned pointer: a table lookup (out of line, rare).
bool owns_page_aligned(uintptr_t p);
}  // namespace large_detail

// nullptr if the mapping failed (the caller falls back to libc). *fresh
// (if given) says the memory is a new mapping, i.e. zero; a block reused
// from the cache holds old contents.
void* large_alloc(size_t size, size_t align, bool* fresh = nullptr);
// True if p came from large_alloc. p must be a live pointer from some
// malloc-family function (the header words are then readable). Inline: every
// free and realloc asks. It reads only the 16 bytes before p, which are on
// p's own page; a page-aligned pointer is looked up in a table instead.
inline bool large_owns(const void* p) {
    uintptr_t a = (uintptr_t)p;
    // Within 16 bytes of a page start (nullptr and page-aligned pointers
    // included): the header would be on another page, which for a foreign
    // allocator may not be mapped. Ours are 16-aligned there, so only a
    // page-aligned one can be ours, and the table knows it.
    if (__builtin_expect((a & 4095) < 16, 0)) return p && (a & 4095) == 0 && large_detail::owns_page_aligned(a);
    const uint64_t* h = static_cast<const uint64_t*>(p) - 2;
    if (__builtin_expect(!(h[1] & large_detail::kMmappedBit), 1)) return false;  // a glibc heap chunk: never ours
    return !(a & 15) && (h[0] & large_detail::kMagicMask) == large_detail::kMagic;
}

// The common case of !large_owns(p) in two tests, for free's fast path: p is
// not near a page start (so not nullptr), and the upper half of the word
// 16 bytes before it is not our magic, which every header of ours has, and
// the shim's bootstrap blocks too (see next_allocator.cpp). False means "ask
// large_owns", not "ours". The magic rather than the IS_MMAPPED bit: below a
// jemalloc or tcmalloc block lies the neighbour's data, where that bit is a
// coin toss and the branch would mispredict on every other free.
inline bool large_surely_foreign(const void* p) {
    uintptr_t a = (uintptr_t)p;
    if (__builtin_expect((a & 4095) < 16, 0)) return false;
    uint32_t tag;
    __builtin_memcpy(&tag, static_cast<const char*>(p) - 12, sizeof(tag));  // h[0] >> 32 (little-endian)
    return __builtin_expect(tag != large_detail::kMagicTag, 1);
}

size_t large_usable(const void* p);
void large_free(void* p);

}  // namespace dedup
