// What the scanner remembers about one registered 4 KiB page: 8 bytes.
#pragma once
#include <stdint.h>

namespace dedup {

constexpr uintptr_t kPageSize = 4096;

struct PageMeta {
    uint32_t hash32;  // low 32 bits of the page's XXH3 at the last look; 0 = not looked at
    uint32_t state;   // see below
};

// state layout: bit 31 = the page lives in a memfd (file) VMA, i.e. it was
// merged at some point and has not been made anonymous again. Bits 0..30:
// 0 = no canonical slot (private content), kZeroFreed = zero page given back
// with MADV_DONTNEED, otherwise canonical slot index + 1.
constexpr uint32_t kFileVma = 0x80000000u;
constexpr uint32_t kSlotMask = 0x7fffffffu;
constexpr uint32_t kZeroFreed = 0x7fffffffu;

inline bool in_file_vma(uint32_t st) { return st & kFileVma; }
inline bool is_zero_freed(uint32_t st) { return (st & kSlotMask) == kZeroFreed; }
inline bool has_slot(uint32_t st) {
    uint32_t s = st & kSlotMask;
    return s != 0 && s != kZeroFreed;
}
inline uint32_t slot_of(uint32_t st) { return (st & kSlotMask) - 1; }
inline uint32_t merged_state(uint32_t slot) { return kFileVma | (slot + 1); }

}  // namespace dedup
