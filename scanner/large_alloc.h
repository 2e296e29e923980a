// Large allocations served from memory the shim maps itself, so that the
// registry sees every change to them (glibc's own mmaps are invisible to an
// interposer). Each block has a 16-byte header just before the pointer,
// shaped like a glibc mmapped chunk: [magic | offset][usable size | 2].
#pragma once
#include <stddef.h>

namespace dedup {

// nullptr if the mapping failed (the caller falls back to libc). *fresh
// (if given) says the memory is a new mapping, i.e. zero; a block reused
// from the cache holds old contents.
void* large_alloc(size_t size, size_t align, bool* fresh = nullptr);
// True if p came from large_alloc. p must be a live pointer from some
// malloc-family function (the header words are then readable).
bool large_owns(const void* p);
size_t large_usable(const void* p);
void large_free(void* p);

}  // namespace dedup
