// The interposition layer: every symbol libdedup.so overrides, and nothing
// else. Each wrapper saves errno, calls one runtime entry point (scanner/),
// and sets errno only from the result of the operation the application asked
// for. Allocation wrappers reach the next allocator through
// shim/next_allocator.h, whose start-up allocations come from a static buffer,
// so start-up cannot recurse.
#include <atomic>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <dlfcn.h>
#include <fcntl.h>

#include "shim/export.h"
#include "scanner/config.h"
#include "scanner/large_alloc.h"
#include "scanner/runtime.h"
#include "scanner/scanner_thread.h"
#include "scanner/sites.h"
#include "scanner/sys.h"
#include "shim/hook.h"
#include "shim/next_allocator.h"



namespace {

using namespace dedup;


// Allocations below this go to the next allocator (the hot path below tests
// g_fast_limit instead). SIZE_MAX until the runtime is ready (and when it
// is disabled).
std::atomic<size_t> g_big_threshold{SIZE_MAX};

bool big(size_t n) {
    if (__builtin_expect(n < g_big_threshold.load(std::memory_order_relaxed), 1)) {
        if (g_big_threshold.load(std::memory_order_relaxed) != SIZE_MAX) return false;
        // Not initialised yet (or disabled): ask the runtime once.
        if (!rt_active()) return false;
        // Release: a thread that sees the threshold also sees the runtime's
        // init, sites_enabled() included (decide_fast_path).
        g_big_threshold.store(config().malloc_min, std::memory_order_release);
        return n >= config().malloc_min;
    }
    return true;
}


}  // namespace

// ---- the mmap family ---------------------------------------------------

EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    long r = rt_mmap(addr, len, prot, flags, fd, off);
    if (sys::failed(r)) { errno = (int)-r; return MAP_FAILED; }
    return (void*)r;
}
EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    return mmap(addr, len, prot, flags, fd, off);
}
EXPORT int munmap(void* addr, size_t len) { return (int)set_errno(rt_munmap(addr, len)); }
EXPORT int mprotect(void* addr, size_t len, int prot) { return (int)set_errno(rt_mprotect(addr, len, prot)); }
EXPORT int madvise(void* addr, size_t len, int advice) { return (int)set_errno(rt_madvise(addr, len, advice)); }
EXPORT ssize_t process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags) {
    return set_errno(rt_process_madvise(pidfd, iov, n, advice, flags));
}
EXPORT int posix_madvise(void* addr, size_t len, int advice) {
    // Returns the error number instead of setting errno; POSIX_MADV_DONTNEED
    // is a no-op in glibc, so only the hints reach the kernel.
    if (advice == POSIX_MADV_DONTNEED) return 0;
    int saved = errno;
    long r = rt_madvise(addr, len, advice);
    errno = saved;
    return r < 0 ? (int)-r : 0;
}
EXPORT void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) {
    void* new_addr = nullptr;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void*);
        va_end(ap);
    }
    long r = rt_mremap(old_addr, old_len, new_len, flags, new_addr);
    if (sys::failed(r)) { errno = (int)-r; return MAP_FAILED; }
    return (void*)r;
}
EXPORT int mlock(const void* addr, size_t len) { return (int)set_errno(rt_mlock((void*)addr, len, 0)); }
EXPORT int mlock2(const void* addr, size_t len, unsigned flags) {
    return (int)set_errno(rt_mlock((void*)addr, len, flags));
}
EXPORT int munlock(const void* addr, size_t len) { return (int)set_errno(rt_munlock((void*)addr, len)); }
EXPORT int mlockall(int flags) { return (int)set_errno(rt_mlockall(flags)); }
EXPORT int munlockall(void) { return (int)set_errno(rt_munlockall()); }

// ---- prctl: KSM's process-wide switch -------------------------------------

namespace {
using PrctlFn = int (*)(int, unsigned long, unsigned long, unsigned long, unsigned long);
NextSymbol<PrctlFn> next_prctl("prctl");
}  // namespace

EXPORT int prctl(int option, ...) {
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    bool handled = false;
    int saved = errno;
    long r = rt_prctl_memory_merge(option, a2, a3, a4, a5, &handled);
    errno = saved;
    if (handled) return (int)set_errno(r);
    return next_prctl.get()(option, a2, a3, a4, a5);
}

// ---- malloc and friends ------------------------------------------------
// Blocks of at least DEDUP_MALLOC_MIN come from the shim's own mappings
// (large_alloc); everything else goes to the allocator the program would
// have used (shim/next_allocator.h). free/realloc/malloc_usable_size tell
// the kinds apart with large_owns, which never reads outside the block's
// own page.

namespace {
// The shim's own work that may run inside the program's allocator (it maps
// memory under its lock): starting the scanner thread, capturing a site.
// Allocations made there never go back into that allocator.
inline bool inside_shim_work() {
    return __builtin_expect(t_starting, 0) || site_capture_in_progress();
}

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
// threshold is set once the runtime is ready (not when it is disabled: then
// the full path stays).
void decide_fast_path() {
    if (__builtin_expect(g_fast_decided.load(std::memory_order_relaxed), 1)) return;
    size_t t = g_big_threshold.load(std::memory_order_acquire);
    if (t == SIZE_MAX || !next_ready()) return;  // not yet
    if (!sites_enabled()) g_fast_limit.store(t, std::memory_order_release);
    g_fast_decided.store(true, std::memory_order_relaxed);
}

// Small allocation from the next allocator, or from the bootstrap buffer
// while dlsym is resolving it on this thread or the shim itself is at work.
void* next_malloc(size_t n) {
    const NextAllocator* a = inside_shim_work() ? nullptr : next_allocator();
    return a ? a->malloc(n) : bootstrap_alloc(n, 16);
}

__attribute__((noinline)) void* malloc_full(size_t n) {
    if (big(n)) {
        int saved = errno;
        if (void* p = large_alloc(n, 16)) { errno = saved; return p; }
        errno = saved;
    }
    void* p = next_malloc(n);
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
}  // namespace

EXPORT void* malloc(size_t n) {
    if (fast_small(n)) return next_fns().malloc(n);
    return malloc_full(n);
}

EXPORT void free(void* p) {
    // Neither nullptr, nor ours, nor bootstrap memory passes this test.
    if (large_surely_foreign(p)) return next_free(p);
    free_full(p);
}

namespace {
__attribute__((noinline)) void* calloc_full(size_t n, size_t size, size_t total) {
    if (big(total)) {
        int saved = errno;
        bool fresh = false;
        if (void* p = large_alloc(total, 16, &fresh)) {
            if (!fresh) memset(p, 0, total);  // reused block; a fresh mapping is zero already
            errno = saved;
            return p;
        }
        errno = saved;
    }
    const NextAllocator* a = inside_shim_work() ? nullptr : next_allocator();
    void* p = a ? a->calloc(n, size) : bootstrap_alloc(total, 16);
    decide_fast_path();
    return p;
}
}  // namespace

EXPORT void* calloc(size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return nullptr; }
    if (fast_small(total)) return next_fns().calloc(n, size);
    return calloc_full(n, size, total);
}

namespace {
size_t usable_size(void* p) {
    if (is_bootstrap(p)) return bootstrap_size(p);
    if (large_owns(p)) return large_usable(p);
    const NextAllocator* a = next_allocator();
    return a ? a->malloc_usable_size(p) : 0;
}

__attribute__((noinline)) void* realloc_full(void* p, size_t n) {
    if (!p) return malloc(n);
    bool ours = large_owns(p), boot = is_bootstrap(p);
    if (!ours && !boot && !big(n)) {
        const NextAllocator* a = inside_shim_work() ? nullptr : next_allocator();
        if (a) return a->realloc(p, n);
    }
    if (n == 0) { free(p); return nullptr; }
    size_t old = usable_size(p);
    if (ours && n <= old && n >= old / 2 && n >= config().malloc_min) return p;
    void* q = malloc(n);
    if (!q) return nullptr;  // p untouched, errno from malloc
    memcpy(q, p, old < n ? old : n);
    free(p);
    return q;
}
}  // namespace

EXPORT void* realloc(void* p, size_t n) {
    // A foreign (next allocator's) block staying small: the next allocator's
    // realloc, as the full path would call it.
    if (fast_small(n) && large_surely_foreign(p)) return next_fns().realloc(p, n);
    return realloc_full(p, n);
}

EXPORT void* reallocarray(void* p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) { errno = ENOMEM; return nullptr; }
    return realloc(p, total);
}

namespace {
bool power_of_two(size_t a) { return a && !(a & (a - 1)); }
void* big_aligned(size_t align, size_t n) {
    if (!big(n)) return nullptr;
    int saved = errno;
    void* p = large_alloc(n, align);
    errno = saved;
    return p;
}
}  // namespace

EXPORT int posix_memalign(void** out, size_t align, size_t n) {
    if (!power_of_two(align) || align % sizeof(void*)) return EINVAL;
    if (void* p = big_aligned(align, n)) { *out = p; return 0; }
    const NextAllocator* a = next_allocator();
    if (!a) {
        void* p = bootstrap_alloc(n, align);
        if (!p) return ENOMEM;
        *out = p;
        return 0;
    }
    return a->posix_memalign(out, align, n);
}
EXPORT void* aligned_alloc(size_t align, size_t n) {
    if (!power_of_two(align)) { errno = EINVAL; return nullptr; }
    if (void* p = big_aligned(align, n)) return p;
    const NextAllocator* a = next_allocator();
    return a ? a->aligned_alloc(align, n) : bootstrap_alloc(n, align);
}
EXPORT void* memalign(size_t align, size_t n) {
    if (power_of_two(align))
        if (void* p = big_aligned(align, n)) return p;
    const NextAllocator* a = next_allocator();
    return a ? a->memalign(align, n) : bootstrap_alloc(n, power_of_two(align) ? align : 16);
}
EXPORT void* valloc(size_t n) {
    if (void* p = big_aligned(4096, n)) return p;
    const NextAllocator* a = next_allocator();
    return a ? a->valloc(n) : bootstrap_alloc(n, 4096);
}
EXPORT void* pvalloc(size_t n) {
    size_t r = (n + 4095) & ~size_t(4095);
    if (n && r < n) { errno = ENOMEM; return nullptr; }
    if (void* p = big_aligned(4096, r ? r : 4096)) return p;
    const NextAllocator* a = next_allocator();
    return a ? a->pvalloc(n) : bootstrap_alloc(r ? r : 4096, 4096);
}

EXPORT size_t malloc_usable_size(void* p) {
    if (!p) return 0;
    return usable_size(p);
}

// ---- start and end -------------------------------------------------------

__attribute__((constructor)) static void dedup_constructor() {
    int saved = errno;
    rt_active();
    errno = saved;
}

__attribute__((destructor)) static void dedup_destructor() {
    int saved = errno;
    rt_shutdown();
    errno = saved;
}
