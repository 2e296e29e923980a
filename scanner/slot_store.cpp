#include "scanner/slot_store.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "scanner/linux_compat.h"
#include "scanner/log.h"
#include "scanner/meta_alloc.h"
#include "scanner/sys.h"
#include "scanner/vma_budget.h"

namespace dedup {
namespace {
// 16 Mi distinct canonical pages; the two views take twice this much
// address space (not memory).
constexpr uint64_t kMaxStoreBytes = 64ull << 30;
constexpr uint64_t kMinStoreBytes = 64ull << 20;   // below this, not worth having

uint64_t file_size_limit() {
    struct rlimit rl;
    if (sys::failed(sys::call(SYS_getrlimit, RLIMIT_FSIZE, (long)&rl)) || rl.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    return rl.rlim_cur & ~4095ull;
}
}  // namespace

// The memfd is sized once (sparse: tmpfs allocates nothing until a slot is
// filled), mapped twice, and its descriptor closed: the store holds no fd the
// application could close, dup2 over, or see.
//  - view_: MAP_SHARED, where the scanner writes slots and punches them out;
//  - private_: MAP_PRIVATE, never touched, from which merges take their
//    pieces with mremap(MREMAP_DONTUNMAP): the piece is a private file
//    mapping of the slots, exactly as mmap(MAP_PRIVATE, fd, offset) made it.
bool SlotStore::ensure_ready() {
    if (view_) return true;
    if (failed_) return false;
    uint64_t now = monotonic_ns();
    if (now < retry_at_ns_) return false;
    long fd = sys::call(SYS_memfd_create, (long)"libdedup-canonical", MFD_CLOEXEC);
    if (fd == -EMFILE || fd == -ENFILE) {
        // The program uses every descriptor it may: try again in a second.
        if (!retry_at_ns_)
            log_warning("memfd_create failed (%s); merging only zero pages until a file descriptor is free",
                        strerror((int)-fd));
        retry_at_ns_ = now + 1000000000ull;
        return false;
    }
    if (sys::failed(fd)) {
        failed_ = true;
        log_warning("memfd_create failed (%s); merging only zero pages from now on", strerror((int)-fd));
        return false;
    }
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ, which kills by default.
    uint64_t bytes = kMaxStoreBytes, limit = file_size_limit();
    if (bytes > limit) bytes = limit;
    long err = 0;
    char* shared = nullptr;
    char* priv = nullptr;
    for (; bytes >= kMinStoreBytes; bytes /= 2) {  // RLIMIT_AS, overcommit: try smaller
        if (sys::failed(sys::call(SYS_ftruncate, fd, (long)bytes))) continue;
        void* v = sys::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, (int)fd, 0, &err);
        if (v == MAP_FAILED) continue;
        // Writable, so that merged pages are; read-only (mprotected by the
        // merge afterwards) if strict overcommit will not have it writable.
        void* p = sys::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, (int)fd, 0, &err);
        if (p == MAP_FAILED) p = sys::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, (int)fd, 0, &err);
        if (p == MAP_FAILED) {
            sys::munmap(v, bytes);
            continue;
        }
        shared = static_cast<char*>(v);
        priv = static_cast<char*>(p);
        break;
    }
    sys::close((int)fd);
    if (!shared) {
        failed_ = true;
        if (limit < kMinStoreBytes)
            log_warning("RLIMIT_FSIZE (%llu bytes) leaves no room for the canonical memfd; merging only zero pages",
                        (unsigned long long)limit);
        else
            log_warning("could not size and map the canonical memfd (%s); merging only zero pages", strerror((int)err));
        return false;
    }
    view_ = shared;
    private_ = priv;
    view_slots_ = bytes / 4096;
    return true;
}

bool SlotStore::map_run(uintptr_t target, uint32_t first, size_t n) {
    size_t len = n * 4096;
    long r = sys::mremap(private_ + (size_t)first * 4096, len, len,
                         MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, reinterpret_cast<void*>(target));
    return !sys::failed(r);
}

bool SlotStore::grow_arrays(uint64_t min_slots) {
    if (min_slots <= capacity_) return true;
    uint64_t cap = capacity_ ? capacity_ * 2 : 8192;
    while (cap < min_slots) cap *= 2;
    void* h = meta_realloc(hashes_, capacity_ * sizeof(uint64_t), cap * sizeof(uint64_t));
    if (!h) return false;
    hashes_ = static_cast<uint64_t*>(h);
    void* r = meta_realloc(refs_, capacity_ * sizeof(uint32_t), cap * sizeof(uint32_t));
    if (!r) return false;
    refs_ = static_cast<uint32_t*>(r);
    void* f = meta_realloc(free_, capacity_ * sizeof(uint32_t), cap * sizeof(uint32_t));
    if (!f) return false;
    free_ = static_cast<uint32_t*>(f);
    void* pn = meta_realloc(pinned_, capacity_, cap);
    if (!pn) return false;
    pinned_ = static_cast<uint8_t*>(pn);
    void* pd = meta_realloc(pending_, capacity_ * sizeof(uint32_t), cap * sizeof(uint32_t));
    if (!pd) return false;
    pending_ = static_cast<uint32_t*>(pd);
    capacity_ = cap;
    return true;
}

int64_t SlotStore::alloc_run(uint32_t n) {
    if (n == 0 || !ensure_ready()) return -1;
    if (n == 1 && free_count_ > 0) return free_[--free_count_];
    if (next_ + n > view_slots_) {
        if (!full_warned_)
            log_warning("the canonical store is full (%llu distinct pages); no new merges until some are freed",
                        (unsigned long long)view_slots_);
        full_warned_ = true;
        return -1;
    }
    if (!grow_arrays(next_ + n)) return -1;
    int64_t first = (int64_t)next_;
    next_ += n;
    return first;
}

void SlotStore::fill(uint32_t slot, const void* page, uint64_t hash) {
    memcpy(view_ + (size_t)slot * 4096, page, 4096);
    hashes_[slot] = hash;
}

void SlotStore::pin_for_fork() {
    for (uint64_t i = 0; i < next_; ++i)
        if (refs_[i]) pinned_[i] = 1;
}

void SlotStore::release_unused(uint32_t slot) {
    if (refs_[slot] != 0 || pinned_[slot]) return;
    sys::madvise(view_ + (size_t)slot * 4096, 4096, MADV_REMOVE);
    free_[free_count_++] = slot;
}

bool SlotStore::unref(uint32_t slot) {
    if (refs_[slot] == 0) return false;
    --total_refs_;
    if (--refs_[slot] != 0) return false;
    --in_use_;
    if (pinned_[slot]) return true;  // a forked child may still map it: keep
    pending_[pending_count_++] = slot;
    return true;
}

void SlotStore::flush_punches() {
    uint64_t i = 0;
    while (i < pending_count_) {
        uint64_t j = i + 1;
        while (j < pending_count_ && pending_[j] == pending_[j - 1] + 1) ++j;
        sys::madvise(view_ + (size_t)pending_[i] * 4096, (j - i) * 4096, MADV_REMOVE);
        for (uint64_t k = i; k < j; ++k) free_[free_count_++] = pending_[k];
        i = j;
    }
    pending_count_ = 0;
}

void SlotStore::reset_in_child() {
    if (view_) sys::munmap(view_, view_slots_ * 4096);
    if (private_) sys::munmap(private_, view_slots_ * 4096);
    meta_free(hashes_, capacity_ * sizeof(uint64_t));
    meta_free(refs_, capacity_ * sizeof(uint32_t));
    meta_free(free_, capacity_ * sizeof(uint32_t));
    meta_free(pinned_, capacity_);
    meta_free(pending_, capacity_ * sizeof(uint32_t));
    *this = SlotStore();
}

void SlotStore::shutdown_for_test() { reset_in_child(); }

}  // namespace dedup
