#include "scanner/large_alloc.h"

#include <stdint.h>
#include <sys/mman.h>

#include "scanner/runtime.h"

namespace dedup {
namespace {
constexpr uint64_t kMagic = 0xded0a11cull << 32;
constexpr uint64_t kMagicMask = 0xffffffffull << 32;
constexpr uint64_t kMmappedBit = 2;  // glibc's IS_MMAPPED

uint64_t* header(const void* p) { return reinterpret_cast<uint64_t*>(const_cast<void*>(p)) - 2; }
}  // namespace

void* large_alloc(size_t size, size_t align) {
    if (align < 16) align = 16;
    if (size > (SIZE_MAX >> 2) || align > (1u << 30)) return nullptr;
    size_t need = size + 16 + (align > 16 ? align : 0);
    size_t len = (need + 4095) & ~size_t(4095);
    long r = rt_mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r < 0 && r > -4096) return nullptr;
    uintptr_t base = (uintptr_t)r;
    uintptr_t p = (base + 16 + align - 1) & ~(uintptr_t)(align - 1);
    uint64_t* h = header(reinterpret_cast<void*>(p));
    h[0] = kMagic | (uint64_t)(p - base);
    h[1] = (uint64_t)(base + len - p) | kMmappedBit;
    return reinterpret_cast<void*>(p);
}

bool large_owns(const void* p) {
    if (!p || ((uintptr_t)p & 15)) return false;
    const uint64_t* h = header(p);
    if (!(h[1] & kMmappedBit)) return false;  // a glibc heap chunk: never ours
    return (h[0] & kMagicMask) == kMagic;
}

size_t large_usable(const void* p) { return (size_t)(header(p)[1] & ~uint64_t(15)); }

void large_free(void* p) {
    const uint64_t* h = header(p);
    uintptr_t base = (uintptr_t)p - (uintptr_t)(h[0] & 0xffffffffull);
    size_t len = (size_t)(((uintptr_t)p + large_usable(p)) - base);
    rt_munmap(reinterpret_cast<void*>(base), len);
}

}  // namespace dedup
