// The shared memfd of a merge domain, as every member maps it: the layout,
// and the small helpers both halves of the domain code use (domain.cpp: slots,
// hints, members' lives; domain_join.cpp: finding and joining the domain).
// Internal to those two files.
#pragma once
#include <atomic>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "scanner/domain.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace domain_layout {

constexpr uint64_t kMagic = 0x6c69626465647570ull;  // "libdedup"
constexpr uint32_t kLayout = 2;
constexpr uint64_t kFreed = 1ull << 63;             // in Slot::users: no member may take it
constexpr uint64_t kStacked = 1ull << 62;           // with kFreed: on the free stack (once)
constexpr uint64_t kSlots = 1ull << 22;             // 16 GiB of canonical pages
// The hint table is small and set-associative: a hash lands in a random bucket,
// so every table page gets touched (allocated) soon; 2 MiB for the whole
// domain. A lost hint only delays a merge to a later pass.
constexpr uint64_t kHintEntries = 1ull << 18;
constexpr int kHintWays = 8;  // entries per bucket: 64 bytes
constexpr int kHintShift = 64 - 15;  // 2^15 buckets
static_assert((kHintEntries >> 15) == kHintWays, "buckets x ways = entries");

// The memfd's layout: header, slot table, free stack, hints, pages. The slot
// table and free stack are filled from the front, so tmpfs allocates only
// what is used.
constexpr uint64_t kHeaderBytes = 64u << 10;
constexpr uint64_t kSlotOff = kHeaderBytes;
constexpr uint64_t kFreeOff = kSlotOff + kSlots * 16;
constexpr uint64_t kHintOff = kFreeOff + kSlots * 4;
constexpr uint64_t kMetaBytes = kHintOff + kHintEntries * 8;
constexpr uint64_t kDataOff = (kMetaBytes + (2u << 20) - 1) & ~uint64_t((2u << 20) - 1);
constexpr uint64_t kFileBytes = kDataOff + kSlots * 4096;

}  // namespace domain_layout

struct DomainMember {
    std::atomic<uint32_t> state;  // 0 free, 1 alive, 2 reserved for a forked child
    std::atomic<uint32_t> pid;
    std::atomic<uint64_t> pages_mapped;
};

struct DomainSlot {
    std::atomic<uint64_t> users;  // member bits, kFreed
    std::atomic<uint64_t> hash;   // 0 until published
};

struct DomainShared {
    uint64_t magic;
    uint32_t layout;
    uint32_t uid;
    char name[72];
    pthread_mutex_t lock;  // robust, process-shared
    uint64_t next_slot;    // bump pointer (lock)
    uint64_t free_count;   // free stack depth (lock)
    std::atomic<uint64_t> live_slots;
    DomainMember members[Domain::kMaxMembers];
};
static_assert(sizeof(DomainShared) <= domain_layout::kHeaderBytes, "the header fits its page");

namespace domain_layout {

inline DomainSlot* slots(DomainShared* d) { return reinterpret_cast<DomainSlot*>(reinterpret_cast<char*>(d) + kSlotOff); }
inline uint32_t* free_stack(DomainShared* d) { return reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(d) + kFreeOff); }
inline std::atomic<uint64_t>* hint_table(DomainShared* d) {
    return reinterpret_cast<std::atomic<uint64_t>*>(reinterpret_cast<char*>(d) + kHintOff);
}

inline bool live_with_hash(DomainShared* d, uint32_t slot, uint64_t hash) {
    if (slot >= kSlots) return false;
    DomainSlot& s = slots(d)[slot];
    uint64_t u = s.users.load(std::memory_order_acquire);
    return u && !(u & kFreed) && s.hash.load(std::memory_order_acquire) == hash;
}

// A byte-range lock on the member's slot of the memfd: held for the life of
// the member (an OFD lock goes when its last descriptor is closed, also by
// the kernel at death).
inline bool lock_byte(int fd, int member, bool take) {
    struct flock lk;
    memset(&lk, 0, sizeof(lk));
    lk.l_type = take ? F_WRLCK : F_UNLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = member;
    lk.l_len = 1;
    return !sys::failed(sys::call(SYS_fcntl, fd, F_OFD_SETLK, (long)&lk));
}

inline bool byte_locked(int fd, int member) {
    struct flock lk;
    memset(&lk, 0, sizeof(lk));
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = member;
    lk.l_len = 1;
    if (sys::failed(sys::call(SYS_fcntl, fd, F_OFD_GETLK, (long)&lk))) return true;  // unknown: alive
    return lk.l_type != F_UNLCK;
}

// A new open file description of the memfd (for a member's lock).
inline int reopen(int fd) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    long r = sys::call(SYS_open, (long)path, O_RDWR | O_CLOEXEC);
    return sys::failed(r) ? -1 : park_fd((int)r);
}

}  // namespace domain_layout
}  // namespace dedup
