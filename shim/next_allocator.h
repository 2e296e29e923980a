// The allocator the program would use without the shim: glibc's, or the one
// it links (jemalloc in Debian's redis, tcmalloc, ...), found with
// dlsym(RTLD_NEXT) on first use. Allocations the shim does not serve itself
// go there, so every pointer reaches the allocator that made it. dlsym may
// allocate while it resolves: those few bytes come from a static buffer.
#pragma once
#include <stddef.h>

namespace dedup {

struct NextAllocator {
    void* (*malloc)(size_t);
    void (*free)(void*);
    void* (*calloc)(size_t, size_t);
    void* (*realloc)(void*, size_t);
    void* (*memalign)(size_t, size_t);
    int (*posix_memalign)(void**, size_t, size_t);
    void* (*aligned_alloc)(size_t, size_t);
    void* (*valloc)(size_t);
    void* (*pvalloc)(size_t);
    size_t (*malloc_usable_size)(void*);
};

// Resolves on first use. Returns nullptr while this thread is resolving
// (the caller then uses bootstrap_alloc).
const NextAllocator* next_allocator();

// Start-up memory for dlsym's own allocations; never freed.
void* bootstrap_alloc(size_t n, size_t align);
bool is_bootstrap(const void* p);
size_t bootstrap_size(const void* p);

}  // namespace dedup
