#include "scanner/meta_alloc.h"

#include <atomic>
#include <sys/mman.h>

#include "scanner/os/sys.h"

namespace dedup {
namespace {
std::atomic<size_t> g_in_use{0};
size_t round_page(size_t n) { return (n + 4095) & ~size_t(4095); }
}  // namespace

void* meta_alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    size_t n = round_page(bytes);
    void* p = sys::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, nullptr);
    if (p == MAP_FAILED) return nullptr;
    g_in_use.fetch_add(n, std::memory_order_relaxed);
    return p;
}

void meta_free(void* p, size_t bytes) {
    if (!p || bytes == 0) return;
    size_t n = round_page(bytes);
    sys::munmap(p, n);
    g_in_use.fetch_sub(n, std::memory_order_relaxed);
}

void* meta_realloc(void* p, size_t old_bytes, size_t new_bytes) {
    if (!p) return meta_alloc(new_bytes);
    size_t o = round_page(old_bytes), n = round_page(new_bytes);
    if (n == 0) { meta_free(p, old_bytes); return nullptr; }
    if (o == n) return p;
    long r = sys::mremap(p, o, n, MREMAP_MAYMOVE, nullptr);
    if (sys::failed(r)) return nullptr;
    if (n > o) g_in_use.fetch_add(n - o, std::memory_order_relaxed);
    else g_in_use.fetch_sub(o - n, std::memory_order_relaxed);
    return (void*)r;
}

void meta_discard(void* p, size_t bytes) {
    if (p && bytes) sys::call(SYS_madvise, (long)p, (long)round_page(bytes), MADV_DONTNEED);
}

size_t meta_bytes_in_use() { return g_in_use.load(std::memory_order_relaxed); }

}  // namespace dedup
