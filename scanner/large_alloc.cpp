// The process's large heap: one LargeHeap, built on the first large
// allocation, whose arenas are registered mappings (map_and_register), so
// that the registry sees every change to them. large_alloc.h has the entry
// points; the heap itself is in the large_heap*.cpp files.
#include "scanner/large_alloc.h"

#include <errno.h>
#include <new>
#include <pthread.h>
#include <sys/mman.h>

#include "scanner/large_bss.h"
#include "scanner/lifecycle.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/sites.h"

namespace dedup {

namespace {

long runtime_map(void* addr, size_t len) {
    // An arena counts toward DEDUP_START_MIN by the blocks it hands out.
    return map_and_register(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED : 0), -1, 0,
                            false);
}
long runtime_unmap(void* addr, size_t len) { return unmap_and_forget(addr, len); }
// What madvise(MADV_DONTNEED) from the program does: merged pages become
// fresh anonymous memory first (on them the kernel's DONTNEED would bring
// back the canonical contents, not zeros), under the mm lock.
long runtime_discard(void* addr, size_t len) { return rt_madvise(addr, len, MADV_DONTNEED); }
// The registry's records move with the pages; a merged or split block is
// not moved (the caller copies it).
long runtime_remap(void* addr, size_t old_len, size_t new_len) { return rt_remap_block(addr, old_len, new_len); }

std::atomic<int> g_built{0};  // 0 no, 1 being built, 2 built
DEDUP_LARGE_BSS alignas(LargeHeap) unsigned char g_storage[sizeof(LargeHeap)];

LargeHeap* built_heap() {
    return g_built.load(std::memory_order_acquire) == 2 ? reinterpret_cast<LargeHeap*>(g_storage) : nullptr;
}


// Built on the first large allocation (never destroyed: other threads may
// free into it while the process exits). The fork handlers are registered
// then, outside every lock, after the runtime's own (so that fork takes our
// lock before the mm lock; we never wait for the mm lock while holding ours
// anyway).
LargeHeap& heap() {
    if (LargeHeap* h = built_heap()) return *h;
    int expected = 0;
    if (g_built.compare_exchange_strong(expected, 1)) {
        // Default-initialised, not value-initialised: the storage is zero
        // already, and clearing 200 KiB of it cost every process that makes
        // one large allocation 50 page faults.
        LargeHeap* h = new (g_storage) LargeHeap;
        h->init(LargeBackend{runtime_map, runtime_unmap, runtime_discard, runtime_remap});
        int saved = errno;
        pthread_atfork(large_fork_prepare, large_fork_parent, large_fork_child);
        errno = saved;
        g_built.store(2, std::memory_order_release);
    }
    while (g_built.load(std::memory_order_acquire) != 2) sys::call(SYS_sched_yield);
    return *reinterpret_cast<LargeHeap*>(g_storage);
}

// What p counts toward DEDUP_START_MIN: its usable size until the runtime is
// active, then nothing (runtime_heap_use ignores it, and the size of a
// page-aligned block would cost a look-up under the heap's lock).
long counted_usable(const void* p) { return runtime_active() ? 0 : (long)heap().usable(p); }

}  // namespace

// Whether this thread's fork took the heap's lock: a heap built by another
// thread between prepare and parent/child must not be unlocked.
static __thread bool t_fork_locked;

void large_fork_prepare() {
    LargeHeap* h = built_heap();
    t_fork_locked = h != nullptr;
    if (h) h->fork_prepare();
}
void large_fork_parent() {
    if (t_fork_locked) built_heap()->fork_parent();
    t_fork_locked = false;
}
void large_fork_child() {
    if (t_fork_locked) built_heap()->fork_child();
    t_fork_locked = false;
}

void* large_alloc(size_t size, size_t align, bool zero) {
    LargeHeap& h = heap();
    // While allocation sites are captured, each block keeps a mapping (and
    // so a registered region and a site) of its own, as before arenas.
    void* p = h.alloc(size, align, zero, sites_enabled());
    if (p) runtime_heap_use(counted_usable(p));
    return p;
}

bool large_detail::owns_page_aligned(uintptr_t p) {
    LargeHeap* h = built_heap();
    return h && h->owns_page_aligned(p);
}

size_t large_usable(const void* p) { return heap().usable(p); }
void large_free(void* p) {
    runtime_heap_use(-counted_usable(p));
    heap().free(p);
}
bool large_resize(void* p, size_t n) {
    long before = counted_usable(p);
    bool ok = heap().resize(p, n);
    if (ok) runtime_heap_use(counted_usable(p) - before);
    return ok;
}
void* large_remap(void* p, size_t n) {
    long before = counted_usable(p);
    void* q = heap().remap(p, n);
    if (q) runtime_heap_use(counted_usable(q) - before);
    return q;
}

void large_trim() {
    if (LargeHeap* h = built_heap()) h->trim(LargeHeap::kTrimAgeMs, true);
}

}  // namespace dedup
