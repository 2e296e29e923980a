#include "scanner/slot_store.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "scanner/log.h"
#include "scanner/meta_alloc.h"
#include "scanner/sys.h"

namespace dedup {
namespace {
constexpr uint64_t kViewReserveSlots = (256ull << 30) / 4096;  // 256 GiB of address space
constexpr uint64_t kFileGrowSlots = 4096;                       // grow the memfd 16 MiB at a time
}  // namespace

bool SlotStore::ensure_ready() {
    if (fd_ >= 0) return true;
    if (failed_) return false;
    long fd = sys::call(SYS_memfd_create, (long)"libdedup-canonical", MFD_CLOEXEC);
    if (sys::failed(fd)) {
        failed_ = true;
        log_warning("memfd_create failed (%s); merging only zero pages from now on", strerror((int)-fd));
        return false;
    }
    // Keep clear of the low fd numbers that programs dup2 onto deliberately.
    long high = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 1000);
    if (!sys::failed(high)) { sys::close((int)fd); fd = high; }
    long err = 0;
    void* v = sys::mmap(nullptr, kViewReserveSlots * 4096, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, &err);
    if (v == MAP_FAILED) {
        sys::close((int)fd);
        failed_ = true;
        log_warning("could not reserve address space for the canonical store (%s); merging only zero pages", strerror((int)err));
        return false;
    }
    struct stat st;
    sys::call(SYS_fstat, fd, (long)&st);
    ino_ = st.st_ino;
    dev_ = st.st_dev;
    fd_ = (int)fd;
    view_ = static_cast<char*>(v);
    view_slots_ = kViewReserveSlots;
    return true;
}

bool SlotStore::fd_is_ours() const {
    if (fd_ < 0) return false;
    struct stat st;
    if (sys::failed(sys::call(SYS_fstat, fd_, (long)&st))) return false;
    return st.st_ino == ino_ && st.st_dev == dev_;
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

bool SlotStore::grow_file(uint64_t min_slots) {
    if (min_slots <= file_slots_) return true;
    uint64_t want = (min_slots + kFileGrowSlots - 1) / kFileGrowSlots * kFileGrowSlots;
    if (want > view_slots_ || want > 0x7ffffffeull) return false;
    long r = sys::call(SYS_ftruncate, fd_, (long)(want * 4096));
    if (sys::failed(r)) {
        log_warning("growing the canonical memfd failed (%s); no new merges until memory is freed", strerror((int)-r));
        return false;
    }
    long err = 0;
    void* p = sys::mmap(view_ + file_slots_ * 4096, (want - file_slots_) * 4096, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, fd_, (off_t)(file_slots_ * 4096), &err);
    if (p == MAP_FAILED) {
        log_warning("mapping the canonical store view failed (%s)", strerror((int)err));
        return false;
    }
    file_slots_ = want;
    return true;
}

int64_t SlotStore::alloc_run(uint32_t n) {
    if (n == 0 || !ensure_ready()) return -1;
    if (n == 1 && free_count_ > 0) return free_[--free_count_];
    if (!grow_arrays(next_ + n) || !grow_file(next_ + n)) return -1;
    int64_t first = (int64_t)next_;
    next_ += n;
    return first;
}

void SlotStore::fill(uint32_t slot, const void* page, uint64_t hash) {
    memcpy(view_ + (size_t)slot * 4096, page, 4096);
    hashes_[slot] = hash;
}

void SlotStore::move_fd() {
    if (fd_ < 0) return;
    long nfd = sys::call(SYS_fcntl, fd_, F_DUPFD_CLOEXEC, 1000);
    if (sys::failed(nfd)) nfd = sys::call(SYS_fcntl, fd_, F_DUPFD_CLOEXEC, 3);
    if (sys::failed(nfd)) {
        log_warning("could not move the canonical memfd off fd %d; merging stops", fd_);
        failed_ = true;
        nfd = -1;
    }
    sys::close(fd_);
    fd_ = (int)nfd;
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
    if (fd_ >= 0) sys::close(fd_);
    meta_free(hashes_, capacity_ * sizeof(uint64_t));
    meta_free(refs_, capacity_ * sizeof(uint32_t));
    meta_free(free_, capacity_ * sizeof(uint32_t));
    meta_free(pinned_, capacity_);
    meta_free(pending_, capacity_ * sizeof(uint32_t));
    *this = SlotStore();
}

void SlotStore::shutdown_for_test() { reset_in_child(); }

}  // namespace dedup
