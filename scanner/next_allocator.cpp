#include "scanner/next_allocator.h"

#include <atomic>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "scanner/large_alloc.h"
#include "scanner/large_bss.h"

extern "C" {
void* __libc_malloc(size_t);
void __libc_free(void*);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void* __libc_valloc(size_t);
void* __libc_pvalloc(size_t);
}

namespace dedup {
namespace next_detail {
NextAllocator g_next;
std::atomic<int> g_state{0};
DEDUP_LARGE_BSS alignas(64) unsigned char g_boot[kBootBytes];
}  // namespace next_detail

namespace {
void free_before_ready(void* p) {
    if (const NextAllocator* a = next_detail::resolve_slow()) a->free(p);
}
}  // namespace

namespace next_detail {
std::atomic<FreeFn> g_free{&free_before_ready};
}  // namespace next_detail

namespace {
using next_detail::g_boot;
using next_detail::g_next;
using next_detail::g_state;

__thread bool t_resolving = false;
std::atomic<size_t> g_boot_used{0};

template <typename T>
void resolve(T* slot, const char* name, T fallback) {
    void* p = dlsym(RTLD_NEXT, name);
    *slot = p ? reinterpret_cast<T>(p) : fallback;
}

int libc_posix_memalign(void** out, size_t align, size_t n) {
    void* p = __libc_memalign(align, n);
    if (!p) return 12;  // ENOMEM
    *out = p;
    return 0;
}
size_t no_usable_size(void*) { return 0; }

// The six entry points few programs call are looked up on their first call,
// not with the four every program uses: each dlsym is paid by every process
// the shim is preloaded into. Until then the slot holds one of these, which
// looks the function up, stores it in its slot and calls it.
template <typename Fn>
Fn lookup(Fn* slot, const char* name, Fn fallback) {
    Fn f = fallback;
    resolve(&f, name, fallback);
    __atomic_store_n(slot, f, __ATOMIC_RELAXED);
    return f;
}
void* first_memalign(size_t a, size_t n) { return lookup(&g_next.memalign, "memalign", &__libc_memalign)(a, n); }
int first_posix_memalign(void** out, size_t a, size_t n) {
    return lookup(&g_next.posix_memalign, "posix_memalign", &libc_posix_memalign)(out, a, n);
}
void* first_aligned_alloc(size_t a, size_t n) {
    return lookup(&g_next.aligned_alloc, "aligned_alloc", &__libc_memalign)(a, n);
}
void* first_valloc(size_t n) { return lookup(&g_next.valloc, "valloc", &__libc_valloc)(n); }
void* first_pvalloc(size_t n) { return lookup(&g_next.pvalloc, "pvalloc", &__libc_pvalloc)(n); }
size_t first_malloc_usable_size(void* p) {
    return lookup(&g_next.malloc_usable_size, "malloc_usable_size", &no_usable_size)(p);
}

}  // namespace

const NextAllocator* next_detail::resolve_slow() {
    if (g_state.load(std::memory_order_acquire) == 2) return &g_next;
    if (t_resolving) return nullptr;
    int expected = 0;
    if (g_state.compare_exchange_strong(expected, 1)) {
        t_resolving = true;
        NextAllocator n;
        // Not string literals: in a process that stays off, nothing else
        // reads .rodata, whose first read is a page fault (mapping 16 pages).
        static char names[4][8] = {"malloc", "free", "calloc", "realloc"};
        resolve(&n.malloc, names[0], &__libc_malloc);
        resolve(&n.free, names[1], &__libc_free);
        resolve(&n.calloc, names[2], &__libc_calloc);
        resolve(&n.realloc, names[3], &__libc_realloc);
        n.memalign = &first_memalign;
        n.posix_memalign = &first_posix_memalign;
        n.aligned_alloc = &first_aligned_alloc;
        n.valloc = &first_valloc;
        n.pvalloc = &first_pvalloc;
        n.malloc_usable_size = &first_malloc_usable_size;
        g_next = n;
        next_detail::g_free.store(n.free, std::memory_order_relaxed);
        t_resolving = false;
        g_state.store(2, std::memory_order_release);
        return &g_next;
    }
    while (g_state.load(std::memory_order_acquire) != 2) {
    }
    return &g_next;
}

void* bootstrap_alloc(size_t n, size_t align) {
    if (align < 16) align = 16;
    for (;;) {
        size_t used = g_boot_used.load();
        uintptr_t base = (uintptr_t)g_boot;
        uintptr_t p = (base + used + 16 + align - 1) & ~(uintptr_t)(align - 1);
        size_t end = p + n - base;
        if (end > sizeof(g_boot)) return nullptr;
        if (g_boot_used.compare_exchange_weak(used, end)) {
            // large_alloc's magic in the word before the size sends free's
            // fast path (large_surely_foreign) to the full path, which knows
            // this buffer. The size, for realloc/usable_size, is shifted past
            // IS_MMAPPED (bit 1), so large_owns never takes the block for one
            // of large_alloc's.
            reinterpret_cast<uint64_t*>(p)[-2] = large_detail::kMagic;
            reinterpret_cast<uint64_t*>(p)[-1] = (uint64_t)n << 4;
            memset(reinterpret_cast<void*>(p), 0, n);
            return reinterpret_cast<void*>(p);
        }
    }
}

size_t bootstrap_size(const void* p) { return (size_t)(reinterpret_cast<const uint64_t*>(p)[-1] >> 4); }

}  // namespace dedup
