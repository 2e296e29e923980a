// malloc and friends: each forwards to the runtime's allocator
// (scanner/allocator.cpp), which decides where a block comes from.
#include <stddef.h>

#include "scanner/runtime.h"
#include "shim/export.h"

using namespace dedup;

EXPORT void* malloc(size_t n) { return rt_malloc(n); }
EXPORT void free(void* p) { rt_free(p); }
EXPORT void* calloc(size_t n, size_t size) { return rt_calloc(n, size); }
EXPORT void* realloc(void* p, size_t n) { return rt_realloc(p, n); }
EXPORT void* reallocarray(void* p, size_t n, size_t size) { return rt_reallocarray(p, n, size); }
EXPORT int posix_memalign(void** out, size_t align, size_t n) { return rt_posix_memalign(out, align, n); }
EXPORT void* aligned_alloc(size_t align, size_t n) { return rt_aligned_alloc(align, n); }
EXPORT void* memalign(size_t align, size_t n) { return rt_memalign(align, n); }
EXPORT void* valloc(size_t n) { return rt_valloc(n); }
EXPORT void* pvalloc(size_t n) { return rt_pvalloc(n); }
EXPORT size_t malloc_usable_size(void* p) { return rt_malloc_usable_size(p); }
