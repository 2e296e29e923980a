// The shim's own memory for metadata: page-granular arrays straight from
// mmap (raw syscalls), never malloc, so metadata work is safe inside
// interposed malloc and never recurses. Metadata mappings are never
// registered for deduplication.
#pragma once
#include <stddef.h>

namespace dedup {

// Zero-filled, page-rounded. Returns nullptr on failure.
void* meta_alloc(size_t bytes);
void meta_free(void* p, size_t bytes);
// Grows (or shrinks) an allocation, keeping contents; new bytes are zero.
void* meta_realloc(void* p, size_t old_bytes, size_t new_bytes);

// Gives the memory back but keeps the range mapped: it reads zero again.
void meta_discard(void* p, size_t bytes);

// Bytes of metadata currently mapped (for the stats).
size_t meta_bytes_in_use();

}  // namespace dedup
