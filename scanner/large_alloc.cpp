#include "scanner/large_alloc.h"

#include <atomic>
#include <stdint.h>
#include <sys/mman.h>

#include "scanner/registration.h"

namespace dedup {
namespace {
using large_detail::kMagic;
using large_detail::kMmappedBit;

uint64_t* header(const void* p) { return reinterpret_cast<uint64_t*>(const_cast<void*>(p)) - 2; }

// Freed blocks kept for reuse: a program that frees and allocates big
// buffers in a loop then reuses mappings instead of paying mmap + munmap
// each time (every munmap is a TLB shootdown on each CPU running one of the
// process's threads, the scanner included). Small and bounded, as glibc's
// heap keeps freed memory too.
constexpr int kCacheSlots = 16;
constexpr size_t kCacheMaxBlock = 4u << 20;
constexpr size_t kCacheMaxBytes = 32u << 20;
struct Block {
    uintptr_t base;
    size_t len;
};
Block g_cache[kCacheSlots];
int g_cache_n = 0;
size_t g_cache_bytes = 0;
std::atomic_flag g_cache_lock = ATOMIC_FLAG_INIT;

void cache_lock() {
    while (g_cache_lock.test_and_set(std::memory_order_acquire)) {
    }
}
void cache_unlock() { g_cache_lock.clear(std::memory_order_release); }

// A cached mapping of at least `len` bytes and not much more ({0, 0} if none).
Block cache_take(size_t len) {
    Block b{0, 0};
    cache_lock();
    for (int i = 0; i < g_cache_n; ++i) {
        if (g_cache[i].len >= len && g_cache[i].len <= len + len / 4 + (64u << 10)) {
            b = g_cache[i];
            g_cache_bytes -= b.len;
            g_cache[i] = g_cache[--g_cache_n];
            break;
        }
    }
    cache_unlock();
    return b;
}

bool cache_put(Block b) {
    if (b.len > kCacheMaxBlock) return false;
    bool kept = false;
    cache_lock();
    if (g_cache_n < kCacheSlots && g_cache_bytes + b.len <= kCacheMaxBytes) {
        g_cache[g_cache_n++] = b;
        g_cache_bytes += b.len;
        kept = true;
    }
    cache_unlock();
    return kept;
}
// Our blocks whose pointer is page aligned (alignment >= 4096). For those
// the header sits on the page before the pointer, and reading below a page-
// aligned pointer from another allocator (jemalloc) could fault: such
// pointers are looked up here instead. Rare, so a small table suffices.
constexpr int kAlignedSlots = 1024;
std::atomic<uintptr_t> g_aligned[kAlignedSlots];
std::atomic<int> g_aligned_count{0};

bool aligned_insert(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = 0;
        if (g_aligned[i].load(std::memory_order_relaxed) == 0 && g_aligned[i].compare_exchange_strong(expected, p)) {
            g_aligned_count.fetch_add(1);
            return true;
        }
    }
    return false;
}

bool aligned_contains(uintptr_t p) {
    if (g_aligned_count.load(std::memory_order_acquire) == 0) return false;
    for (int i = 0; i < kAlignedSlots; ++i)
        if (g_aligned[i].load(std::memory_order_relaxed) == p) return true;
    return false;
}

void aligned_erase(uintptr_t p) {
    for (int i = 0; i < kAlignedSlots; ++i) {
        uintptr_t expected = p;
        if (g_aligned[i].compare_exchange_strong(expected, 0)) {
            g_aligned_count.fetch_sub(1);
            return;
        }
    }
}
}  // namespace

void* large_alloc(size_t size, size_t align, bool* fresh) {
    if (align < 16) align = 16;
    if (size > (SIZE_MAX >> 2) || align > (1u << 30)) return nullptr;
    size_t need = size + 16 + (align > 16 ? align : 0);
    size_t len = (need + 4095) & ~size_t(4095);
    Block b = align == 16 ? cache_take(len) : Block{0, 0};
    if (fresh) *fresh = b.base == 0;
    if (!b.base) {
        long r = map_and_register(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r < 0 && r > -4096) return nullptr;
        b = Block{(uintptr_t)r, len};
    }
    uintptr_t p = (b.base + 16 + align - 1) & ~(uintptr_t)(align - 1);
    if ((p & 4095) == 0 && !aligned_insert(p)) {  // table full: let the next allocator serve it
        unmap_and_forget(reinterpret_cast<void*>(b.base), b.len);
        if (fresh) *fresh = false;
        return nullptr;
    }
    uint64_t* h = header(reinterpret_cast<void*>(p));
    h[0] = kMagic | (uint64_t)(p - b.base);
    h[1] = (uint64_t)(b.base + b.len - p) | kMmappedBit;
    return reinterpret_cast<void*>(p);
}

// A page-aligned pointer's header would be on another page, which for a
// foreign allocator may not be mapped: look it up instead.
bool large_detail::owns_page_aligned(uintptr_t p) { return aligned_contains(p); }

size_t large_usable(const void* p) { return (size_t)(header(p)[1] & ~uint64_t(15)); }

void large_free(void* p) {
    uint64_t* h = header(p);
    uintptr_t base = (uintptr_t)p - (uintptr_t)(h[0] & 0xffffffffull);
    size_t len = (size_t)(((uintptr_t)p + large_usable(p)) - base);
    h[0] = 0;  // a stale pointer freed twice is not ours any more
    if (((uintptr_t)p & 4095) == 0) aligned_erase((uintptr_t)p);
    if (cache_put(Block{base, len})) return;
    unmap_and_forget(reinterpret_cast<void*>(base), len);
}

}  // namespace dedup
