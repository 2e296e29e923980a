// malloc and friends: the allocation policy. Blocks of at least
// DEDUP_MALLOC_MIN come from the shim's own registered mappings
// (large_alloc.h): glibc's own mmaps are invisible to an interposer, so big
// blocks must come from the shim to be merged (brief, trap 4). Everything
// else goes to the allocator the program would have used (next_allocator.h),
// so every pointer reaches the allocator that made it. free, realloc and
// malloc_usable_size tell the kinds apart with large_owns(), which never reads
// outside the block's own page.
#include <errno.h>
#include <string.h>

#include "scanner/config.h"
#include "scanner/large_alloc.h"
#include "scanner/lifecycle.h"
#include "scanner/next_allocator.h"
#include "scanner/runtime.h"
#include "scanner/scanner_thread.h"
#include "scanner/sites.h"

namespace dedup {
namespace {

// Allocations below this go to the next allocator (the fast path tests
// g_fast_limit instead). SIZE_MAX until the runtime is ready (and when it
// is disabled).
std::atomic<size_t> g_big_threshold{SIZE_MAX};

bool big(size_t n) {
    if (__builtin_expect(n < g_big_threshold.load(std::memory_order_relaxed), 1)) {
        if (g_big_threshold.load(std::memory_order_relaxed) != SIZE_MAX) return false;
        // Not initialised yet (or disabled): ask the runtime once.
        if (!runtime_ready()) return false;
        // Release: a thread that sees the threshold also sees the runtime's
        // init, sites_enabled() included (decide_fast_path).
        g_big_threshold.store(config().malloc_min, std::memory_order_release);
        return n >= config().malloc_min;
    }
    return true;
}

// The shim's own work that may run inside the program's allocator (it maps
// memory under its lock): starting the scanner thread, capturing a site.
// Allocations made then never go back into that allocator.
inline bool inside_shim_work() { return __builtin_expect(t_starting, 0) || site_capture_in_progress(); }

// The fast path. Small requests (n < g_fast_limit) go straight to the next
// allocator; 0 until that is known to be exactly what the full path would
// do, i.e. until all of these hold for good:
//  - the runtime is ready, so g_big_threshold is final and big(n) is false
//    for every n below it;
//  - the next allocator is resolved, so next_allocator() returns &g_next
//    (the acquire/release pair on this variable publishes its pointers);
//  - sites are off, so no thread is ever inside a site capture. They are
//    set once, in the runtime's init before it is ready, and captured only
//    once it is: sites_enabled() is final when we ask. With sites on, every
//    allocation takes the full path (one call more).
// What remains is the scanner start on this thread: one TLS load.
std::atomic<size_t> g_fast_limit{0};
std::atomic<bool> g_fast_decided{false};

inline bool fast_small(size_t n) {
    return __builtin_expect(n < g_fast_limit.load(std::memory_order_acquire), 1) && __builtin_expect(!t_starting, 1);
}

// Called at the end of the full path until the decision is made. The
// threshold is set once the runtime is ready. A disabled runtime
// (DEDUP_DISABLE=1, AT_SECURE) serves nothing and captures no site, for
// good: every size takes the fast path, as the full path would have sent
// every size to the next allocator (a shell's start makes ~900 mallocs).
void decide_fast_path() {
    if (__builtin_expect(g_fast_decided.load(std::memory_order_relaxed), 1)) return;
    if (!next_ready()) return;  // not yet
    if (runtime_disabled()) {
        g_fast_limit.store(SIZE_MAX, std::memory_order_release);
        g_fast_decided.store(true, std::memory_order_relaxed);
        return;
    }
    size_t t = g_big_threshold.load(std::memory_order_acquire);
    if (t == SIZE_MAX) return;  // not yet
    if (!sites_enabled()) g_fast_limit.store(t, std::memory_order_release);
    g_fast_decided.store(true, std::memory_order_relaxed);
}

// The next allocator, or nullptr where its memory must not be used: while
// dlsym is resolving it on this thread, or the shim itself is at work
// (then the bootstrap buffer serves).
const NextAllocator* usable_next() { return inside_shim_work() ? nullptr : next_allocator(); }

// A large block from the shim's own memory, errno untouched; nullptr if
// n is small or no memory could be mapped (the caller falls back to the
// next allocator). With `zero` it reads zero (calloc).
void* large(size_t n, size_t align, bool zero = false) {
    if (!big(n)) return nullptr;
    int saved = errno;
    void* p = large_alloc(n, align, zero);
    errno = saved;
    return p;
}

__attribute__((noinline)) void* malloc_full(size_t n) {
    if (void* p = large(n, 16)) return p;
    const NextAllocator* a = usable_next();
    void* p = a ? a->malloc(n) : bootstrap_alloc(n, 16);
    decide_fast_path();
    return p;
}

__attribute__((noinline)) void free_full(void* p) {
    if (!p || is_bootstrap(p)) return;
    if (large_owns(p)) {
        int saved = errno;
        large_free(p);
        errno = saved;
        return;
    }
    if (const NextAllocator* a = next_allocator()) a->free(p);
}

__attribute__((noinline)) void* calloc_full(size_t n, size_t size, size_t total) {
    if (void* p = large(total, 16, true)) return p;
    const NextAllocator* a = usable_next();
    void* p = a ? a->calloc(n, size) : bootstrap_alloc(total, 16);
    decide_fast_path();
    return p;
}

size_t usable_size(void* p) {
    if (is_bootstrap(p)) return bootstrap_size(p);
    if (large_owns(p)) return large_usable(p);
    const NextAllocator* a = next_allocator();
    return a ? next_fn(a->malloc_usable_size)(p) : 0;
}

__attribute__((noinline)) void* realloc_full(void* p, size_t n) {
    if (!p) return rt_malloc(n);
    bool ours = large_owns(p), boot = is_bootstrap(p);
    if (!ours && !boot && !big(n))
        if (const NextAllocator* a = usable_next()) return a->realloc(p, n);
    if (n == 0) {
        rt_free(p);
        return nullptr;
    }
    if (ours && big(n)) {  // in place: shrinking, or growing into free memory after the block
        int saved = errno;
        bool in_place = large_resize(p, n);
        // A block with a mapping of its own moves with its mapping instead:
        // copying it faulted in every page of the new one (sqlite3 growing a
        // buffer to 256 MiB took 67,000 page faults more than with glibc).
        void* moved = in_place ? nullptr : large_remap(p, n);
        errno = saved;
        if (in_place) return p;
        if (moved) return moved;
    }
    size_t old = usable_size(p);
    void* q = rt_malloc(n);
    if (!q) return nullptr;  // p untouched, errno from malloc
    memcpy(q, p, old < n ? old : n);
    rt_free(p);
    return q;
}

bool power_of_two(size_t a) { return a && !(a & (a - 1)); }

}  // namespace

void* rt_malloc(size_t n) {
    if (fast_small(n)) return next_fns().malloc(n);
    return malloc_full(n);
}

void rt_free(void* p) {
    // Neither nullptr, nor ours, nor bootstrap memory passes this test.
    if (large_surely_foreign(p)) return next_free(p);
    free_full(p);
}

void* rt_calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return nullptr;
    }
    if (fast_small(total)) return next_fns().calloc(n, size);
    return calloc_full(n, size, total);
}

void* rt_realloc(void* p, size_t n) {
    // A foreign (next allocator's) block staying small: the next allocator's
    // realloc, as the full path would call it.
    if (fast_small(n) && large_surely_foreign(p)) return next_fns().realloc(p, n);
    return realloc_full(p, n);
}

void* rt_reallocarray(void* p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return nullptr;
    }
    return rt_realloc(p, total);
}

int rt_posix_memalign(void** out, size_t align, size_t n) {
    if (!power_of_two(align) || align % sizeof(void*)) return EINVAL;
    if (void* p = large(n, align)) {
        *out = p;
        return 0;
    }
    const NextAllocator* a = next_allocator();
    if (a) return next_fn(a->posix_memalign)(out, align, n);
    void* p = bootstrap_alloc(n, align);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void* rt_aligned_alloc(size_t align, size_t n) {
    if (!power_of_two(align)) {
        errno = EINVAL;
        return nullptr;
    }
    if (void* p = large(n, align)) return p;
    const NextAllocator* a = next_allocator();
    return a ? next_fn(a->aligned_alloc)(align, n) : bootstrap_alloc(n, align);
}

void* rt_memalign(size_t align, size_t n) {
    if (power_of_two(align))
        if (void* p = large(n, align)) return p;
    const NextAllocator* a = next_allocator();
    return a ? next_fn(a->memalign)(align, n) : bootstrap_alloc(n, power_of_two(align) ? align : 16);
}

void* rt_valloc(size_t n) {
    if (void* p = large(n, 4096)) return p;
    const NextAllocator* a = next_allocator();
    return a ? next_fn(a->valloc)(n) : bootstrap_alloc(n, 4096);
}

void* rt_pvalloc(size_t n) {
    size_t r = (n + 4095) & ~size_t(4095);
    if (n && r < n) {
        errno = ENOMEM;
        return nullptr;
    }
    if (void* p = large(r ? r : 4096, 4096)) return p;
    const NextAllocator* a = next_allocator();
    return a ? next_fn(a->pvalloc)(n) : bootstrap_alloc(r ? r : 4096, 4096);
}

size_t rt_malloc_usable_size(void* p) { return p ? usable_size(p) : 0; }

}  // namespace dedup
