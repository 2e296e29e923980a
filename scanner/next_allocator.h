// The allocator the program would use without the shim: glibc's, or the one
// it links (jemalloc in Debian's redis, tcmalloc, ...), found with
// dlsym(RTLD_NEXT) on first use. Allocations the shim does not serve itself
// go there, so every pointer reaches the allocator that made it. dlsym may
// allocate while it resolves: those few bytes come from a static buffer.
//
// The checks every small malloc/free makes are inline here: once resolved,
// reaching the next allocator is one acquire load (a plain load on x86) and
// a call through a function pointer.
#pragma once
#include <atomic>
#include <stddef.h>
#include <stdint.h>

#define DEDUP_HIDDEN __attribute__((visibility("hidden")))

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

namespace next_detail {
// Defined in next_allocator.cpp; read inline by the accessors below.
extern NextAllocator g_next DEDUP_HIDDEN;
extern std::atomic<int> g_state DEDUP_HIDDEN;  // 0 unresolved, 1 resolving, 2 ready
constexpr size_t kBootBytes = 256 * 1024;
extern unsigned char g_boot[kBootBytes] DEDUP_HIDDEN;
const NextAllocator* resolve_slow();
// The next allocator's free once resolved; before, a function that resolves
// it first (and drops p while this thread is the one resolving).
using FreeFn = void (*)(void*);
extern std::atomic<FreeFn> g_free DEDUP_HIDDEN;
}  // namespace next_detail

// next_allocator()->free(p), resolving first if need be, without a test.
inline void next_free(void* p) { next_detail::g_free.load(std::memory_order_relaxed)(p); }

// True once the next allocator is resolved (then for good): g_next is
// complete and next_allocator() returns it.
inline bool next_ready() { return next_detail::g_state.load(std::memory_order_acquire) == 2; }

// A function of the next allocator, read as its first call may be storing
// it (memalign and the other rarely used ones are looked up then).
template <typename Fn>
inline Fn next_fn(const Fn& slot) {
    return __atomic_load_n(&slot, __ATOMIC_RELAXED);
}

// The resolved allocator; only after next_ready() returned true.
inline const NextAllocator& next_fns() { return next_detail::g_next; }

// Resolves on first use. Returns nullptr while this thread is resolving
// (the caller then uses bootstrap_alloc).
inline const NextAllocator* next_allocator() {
    if (__builtin_expect(next_ready(), 1)) return &next_detail::g_next;
    return next_detail::resolve_slow();
}

// Start-up memory for dlsym's own allocations; never freed.
void* bootstrap_alloc(size_t n, size_t align);
// One unsigned compare: nullptr and every other pointer are outside.
inline bool is_bootstrap(const void* p) {
    return (uintptr_t)p - (uintptr_t)next_detail::g_boot < next_detail::kBootBytes;
}
size_t bootstrap_size(const void* p);

}  // namespace dedup
