// What the scanner remembers about one registered 4 KiB page: 8 bytes.
#pragma once
#include <stdint.h>

namespace dedup {

constexpr uintptr_t kPageSize = 4096;

struct PageMeta {
    uint32_t hash32;  // the last look: fingerprint and back-off level (below); 0 = not looked at
    uint32_t state;   // see below
};

// hash32 layout: bits 2..31 = the page's fingerprint, bits 2..31 of its
// XXH3's low word (never 0: a hash whose bits are all 0 there is filed as
// 1 << 2) at the last look; bits 0..1 = the scan's back-off level L for a
// page found unchanged and unique (batch_scan.cpp, KSM's smart scan): it is
// hashed only in one pass out of 2^L. Anything that sets hash32 to 0, or a
// look that finds another fingerprint, also puts the level back to 0.
constexpr uint32_t kBackoffMask = 3u;
constexpr uint32_t kMaxBackoff = 3u;  // a page is looked at at least every 8th pass
constexpr uint32_t kBackoffPeriod = 1u << kMaxBackoff;
inline uint32_t fingerprint_of(uint64_t hash) {
    uint32_t v = (uint32_t)hash & ~kBackoffMask;
    return v ? v : kBackoffMask + 1;
}
inline uint32_t fingerprint(const PageMeta& m) { return m.hash32 & ~kBackoffMask; }
inline bool same_fingerprint(const PageMeta& m, uint64_t hash) { return fingerprint(m) == fingerprint_of(hash); }
inline uint32_t backoff(const PageMeta& m) { return m.hash32 & kBackoffMask; }
// One level up (the page was looked at, found unchanged and unique again).
inline void backoff_climb(PageMeta& m) {
    if (m.hash32 && backoff(m) < kMaxBackoff) ++m.hash32;
}
// Whether pass number `pass` is one of the page's look passes at level L:
// the multiples of 2^L. A level's look passes are among every lower level's,
// so two pages, whatever their levels, are both looked at in one pass out of
// every kBackoffPeriod consecutive passes (at most); and the pages of a run
// written together climb together and are looked at in the same passes, so
// a copied run still merges as one run. (A phase per page, to spread the
// looks over the passes, cut the runs mix into 20 times as many VMAs.)
inline bool backoff_look_pass(const PageMeta& m, uint64_t pass) {
    uint64_t period_mask = (1u << backoff(m)) - 1;
    return (pass & period_mask) == 0;
}

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
