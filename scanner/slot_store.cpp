#include "scanner/slot_store.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "scanner/os/linux_compat.h"
#include "scanner/log.h"
#include "scanner/meta_alloc.h"
#include "scanner/page_meta.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {
// The memfd's size: 16 Mi distinct canonical pages at most (sparse: tmpfs
// allocates a page only when a slot is filled).
constexpr uint64_t kMaxStoreBytes = 64ull << 30;
// The views start this big and double as slots run out, so that the
// process's address space (VSZ, RLIMIT_AS) grows with use, not up front.
constexpr uint64_t kFirstViewBytes = 2ull << 20;
constexpr uint64_t kMinStoreBytes = 16ull << 20;  // below this, not worth having

// Maps bytes of fd from offset inaccessible, unlocked, then opens it up:
// after the program's mlockall(MCL_FUTURE) an accessible mapping would be
// locked and populated in full at once.
void* map_view(int fd, uint64_t offset, uint64_t bytes, int flags, int prot, long* err) {
    void* v = sys::mmap(nullptr, bytes, PROT_NONE, flags | MAP_NORESERVE, fd, (off_t)offset, err);
    if (v == MAP_FAILED) return v;
    sys::call(SYS_munlock, (long)v, (long)bytes);
    if (sys::failed(sys::mprotect(v, bytes, prot))) {
        sys::munmap(v, bytes);
        *err = ENOMEM;
        return MAP_FAILED;
    }
    return v;
}
}  // namespace

// A generation's memfd is sized once, mapped twice, and its descriptor
// closed: the store holds no fd the application could close, dup2 over, or
// see.
//  - shared: MAP_SHARED, where the scanner writes slots and punches them out;
//  - priv: MAP_PRIVATE, never touched, from which merges take their pieces
//    with mremap(MREMAP_DONTUNMAP): the piece is a private file mapping of
//    the slots, exactly as mmap(MAP_PRIVATE, fd, offset) made it.
// Both views cover the first view_slots slots and grow with mremap, which
// needs no descriptor either.
long SlotStore::open_generation(Generation* g, bool* created) {
    long fd = sys::call(SYS_memfd_create, (long)kMemfdName, MFD_CLOEXEC);
    *created = !sys::failed(fd);
    if (sys::failed(fd)) return fd;
    // Growing a file past RLIMIT_FSIZE raises SIGXFSZ, which kills by
    // default; and the views must leave the program most of RLIMIT_AS.
    uint64_t file = kMaxStoreBytes, fsize = rlimit_soft(RLIMIT_FSIZE), as = rlimit_soft(RLIMIT_AS);
    if (file > fsize) file = fsize;
    if (as != UINT64_MAX && file > as / 16) file = (as / 16) & ~(kPageSize - 1);
    uint64_t view = file < kFirstViewBytes ? file : kFirstViewBytes;
    long err = 0;
    bool sized = file >= kMinStoreBytes && !sys::failed(err = sys::call(SYS_ftruncate, fd, (long)file));
    if (sized) err = map_views(g, (int)fd, 0, view);
    struct stat st;
    uint64_t ino = sys::failed(sys::call(SYS_fstat, fd, (long)&st)) ? 0 : (uint64_t)st.st_ino;
    sys::close((int)fd);
    if (!sized) return file < kMinStoreBytes ? -EFBIG : err < 0 ? err : -(err ? err : ENOMEM);
    if (err) return err;
    g->file_slots = file / kPageSize;
    g->ino = ino;
    return 0;
}

// Both views of fd's slots from offset, view bytes of them. 0 or -errno.
long SlotStore::map_views(Generation* g, int fd, uint64_t offset, uint64_t view) {
    long err = 0;
    void* shared = map_view(fd, offset, view, MAP_SHARED, PROT_READ | PROT_WRITE, &err);
    if (shared == MAP_FAILED) return -(err ? err : ENOMEM);
    // The private view writable, so that merged pages are; read-only (made
    // writable piece by piece by the merge) if strict overcommit will not
    // have it writable.
    void* priv = map_view(fd, offset, view, MAP_PRIVATE, PROT_READ | PROT_WRITE, &err);
    g->priv_writable = priv != MAP_FAILED;
    if (priv == MAP_FAILED) priv = map_view(fd, offset, view, MAP_PRIVATE, PROT_READ, &err);
    if (priv == MAP_FAILED) {
        sys::munmap(shared, view);
        return -(err ? err : ENOMEM);
    }
    // The shared view is the store's, not the program's memory: not in a
    // core dump (it would be dumped whole, as shared memory).
    sys::madvise(shared, view, MADV_DONTDUMP);
    g->shared = static_cast<char*>(shared);
    g->priv = static_cast<char*>(priv);
    g->view_slots = view / kPageSize;
    return 0;
}

void SlotStore::unmap_generation(Generation* g) {
    if (g->shared) sys::munmap(g->shared, g->view_slots * kPageSize);
    if (g->priv) sys::munmap(g->priv, g->view_slots * kPageSize);
    *g = Generation();
}

bool SlotStore::ensure_ready() {
    if (ready()) return true;
    if (failed_) return false;
    if (domain_) return open_domain();
    uint64_t now = monotonic_ns();
    if (now < retry_at_ns_) return false;
    uint64_t base = next_;
    bool created = false;
    long err = open_generation(&cur_, &created);
    if (err == -EMFILE || err == -ENFILE) {
        // The program uses every descriptor it may: try again in a second.
        if (!retry_at_ns_)
            log_warning("memfd_create failed (%s); merging only zero pages until a file descriptor is free",
                        strerror((int)-err));
        retry_at_ns_ = now + 1000000000ull;
        return false;
    }
    if (err) {
        failed_ = true;
        if (err == -EFBIG)
            log_warning("RLIMIT_FSIZE or RLIMIT_AS leaves no room for the canonical memfd; merging only zero pages");
        else if (!created)
            log_warning("memfd_create failed (%s); merging only zero pages from now on", strerror((int)-err));
        else
            log_warning("could not size and map the canonical memfd (%s); merging only zero pages",
                        strerror((int)-err));
        return false;
    }
    cur_.base = base;
    return true;
}

// The current generation's views to at least min_slots (doubling), with
// mremap: they may move.
bool SlotStore::grow_views(uint64_t min_slots) {
    Generation& g = cur_;
    uint64_t want = g.view_slots;
    while (want < min_slots) want *= 2;
    if (want > g.file_slots) want = g.file_slots;
    if (want < min_slots) return false;
    size_t old_len = g.view_slots * kPageSize, new_len = want * kPageSize;
    long v = sys::mremap(g.shared, old_len, new_len, MREMAP_MAYMOVE, nullptr);
    if (sys::failed(v)) return false;
    g.shared = reinterpret_cast<char*>(v);
    long p = sys::mremap(g.priv, old_len, new_len, MREMAP_MAYMOVE, nullptr);
    if (sys::failed(p)) {
        // Keep both views the same size.
        long back = sys::mremap(g.shared, new_len, old_len, 0, nullptr);
        if (!sys::failed(back)) g.shared = reinterpret_cast<char*>(back);
        return false;
    }
    g.priv = reinterpret_cast<char*>(p);
    g.view_slots = want;
    return true;
}

bool SlotStore::map_run(uintptr_t target, uint32_t first, size_t n) {
    size_t len = n * kPageSize;
    const Generation& g = gen_of(first);
    long r = sys::mremap(g.priv + (size_t)(first - g.base) * kPageSize, len, len,
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
    void* fl = meta_realloc(flags_, capacity_, cap);
    if (!fl) return false;
    flags_ = static_cast<uint8_t*>(fl);
    void* pd = meta_realloc(pending_, capacity_ * sizeof(uint32_t), cap * sizeof(uint32_t));
    if (!pd) return false;
    pending_ = static_cast<uint32_t*>(pd);
    capacity_ = cap;
    return true;
}

int64_t SlotStore::alloc_run(uint32_t n) {
    if (n == 0 || !ensure_ready()) return -1;
    if (domain_) {
        int64_t first = domain_->alloc_run(n);
        if (first >= 0 && !cover((uint64_t)first + n)) {
            for (uint32_t i = 0; i < n; ++i) domain_->drop((uint32_t)first + i);
            return -1;
        }
        return first;
    }
    if (n == 1 && free_count_ > 0) {
        uint32_t slot = free_[--free_count_];
        flags_[slot - array_base_] &= (uint8_t)~kFree;
        return slot;
    }
    uint64_t in_file = next_ - cur_.base;  // slots of the current generation
    if (next_ + n >= kZeroFreed || (in_file + n > cur_.view_slots && !grow_views(in_file + n))) {
        if (!full_warned_)
            log_warning("the canonical store is full (%llu distinct pages; address space or RLIMIT_AS); "
                        "no new merges until some are freed",
                        (unsigned long long)cur_.view_slots);
        full_warned_ = true;
        return -1;
    }
    if (!grow_arrays(next_ + n - array_base_)) return -1;
    int64_t first = (int64_t)next_;
    next_ += n;
    return first;
}

void SlotStore::fill(uint32_t slot, const void* page, uint64_t hash) {
    memcpy(cur_.shared + (size_t)(slot - cur_.base) * kPageSize, page, kPageSize);
    if (!domain_) hashes_[slot - array_base_] = hash;  // a domain's slot table has it
}

void SlotStore::pin_for_fork() {
    if (domain_) return;  // the child is a member holding the same slots
    for (uint64_t i = 0; i < next_ - array_base_; ++i)
        if (refs_[i] && !(flags_[i] & kPinned)) {
            flags_[i] |= kPinned;
            ++pinned_live_;
        }
}

void SlotStore::release_unused(uint32_t slot) {
    uint64_t i = slot - array_base_;
    if (domain_) {
        if (refs_[i] == 0) domain_->drop(slot);
        return;
    }
    if (refs_[i] != 0 || (flags_[i] & (kPinned | kFree)) || slot < cur_.base) return;
    sys::madvise(cur_.shared + (size_t)(slot - cur_.base) * kPageSize, kPageSize, MADV_REMOVE);
    flags_[i] |= kFree;
    free_[free_count_++] = slot;
}

bool SlotStore::unref(uint32_t slot) {
    uint64_t i = slot - array_base_;
    if (refs_[i] == 0) return false;
    --total_refs_;
    if (slot < cur_.base) --retiring_refs_;
    if (--refs_[i] != 0) return false;
    --in_use_;
    if (domain_) {  // back to the domain, which frees it when nobody uses it
        domain_->drop(slot);
        return true;
    }
    if (flags_[i] & kPinned) {  // a forked child may still map it: keep
        --pinned_live_;
        ++pinned_dead_;
        return true;
    }
    if (slot < cur_.base) return true;  // retiring: freed with its file
    flags_[i] |= kFree;
    pending_[pending_count_++] = slot;
    return true;
}

void SlotStore::flush_punches() {
    uint64_t i = 0;
    while (i < pending_count_) {
        uint64_t j = i + 1;
        while (j < pending_count_ && pending_[j] == pending_[j - 1] + 1) ++j;
        sys::madvise(cur_.shared + (size_t)(pending_[i] - cur_.base) * kPageSize, (j - i) * kPageSize, MADV_REMOVE);
        for (uint64_t k = i; k < j; ++k) free_[free_count_++] = pending_[k];
        i = j;
    }
    pending_count_ = 0;
}

bool SlotStore::rotation_due() const {
    return !domain_ && ready() && !retiring() && pinned_dead_ >= kRotateMinKept && pinned_dead_ >= pinned_live_ &&
           next_ < kZeroFreed / 2 && monotonic_ns() >= rotation_retry_ns_;
}

bool SlotStore::begin_rotation() {
    flush_punches();
    Generation fresh;
    bool created = false;
    long err = open_generation(&fresh, &created);
    if (err) {
        if (!rotation_warned_)
            log_warning("%s for a new canonical memfd failed (%s); memory kept for forked children "
                        "stays kept until one can be had",
                        created ? "sizing and mapping" : "memfd_create", strerror((int)-err));
        rotation_warned_ = true;
        rotation_retry_ns_ = monotonic_ns() + 10000000000ull;
        return false;
    }
    old_ = cur_;
    cur_ = fresh;
    cur_.base = next_;
    retiring_refs_ = total_refs_;
    free_count_ = 0;  // free slots are the old file's
    return true;
}

void SlotStore::end_rotation() {
    unmap_generation(&old_);
    // Forget the old generation's slots: shift the arrays down to the
    // current generation's first slot. None is referenced any more.
    uint64_t drop = cur_.base - array_base_, keep = next_ - cur_.base;
    for (uint64_t i = 0; i < drop; ++i)
        if (flags_[i] & kPinned) --pinned_dead_;
    memmove(hashes_, hashes_ + drop, keep * sizeof(uint64_t));
    memmove(refs_, refs_ + drop, keep * sizeof(uint32_t));
    memmove(flags_, flags_ + drop, keep);
    memset(hashes_ + keep, 0, drop * sizeof(uint64_t));
    memset(refs_ + keep, 0, drop * sizeof(uint32_t));
    memset(flags_ + keep, 0, drop);
    array_base_ = cur_.base;
    retiring_refs_ = 0;
}

void SlotStore::reset_in_child() {
    if (domain_ && domain_->joined()) return;  // a member now, with the parent's slots
    domain_ = nullptr;
    unmap_generation(&cur_);
    unmap_generation(&old_);
    meta_free(hashes_, capacity_ * sizeof(uint64_t));
    meta_free(refs_, capacity_ * sizeof(uint32_t));
    meta_free(free_, capacity_ * sizeof(uint32_t));
    meta_free(flags_, capacity_);
    meta_free(pending_, capacity_ * sizeof(uint32_t));
    *this = SlotStore();
}

void SlotStore::shutdown_for_test() {
    domain_ = nullptr;
    reset_in_child();
}

// ---- a merge domain's slots --------------------------------------------------------

bool SlotStore::open_domain() {
    long err = map_views(&cur_, domain_->data_fd(), domain_->data_offset(), kFirstViewBytes);
    if (err) {
        failed_ = true;
        log_warning("could not map the domain's canonical pages (%s); merging only zero pages", strerror((int)-err));
        return false;
    }
    cur_.file_slots = domain_->capacity();
    cur_.base = 0;
    return true;
}

bool SlotStore::cover(uint64_t end) {
    if (end > cur_.file_slots) return false;
    if (end > cur_.view_slots && !grow_views(end)) return false;
    if (end > next_) next_ = end;  // the arrays cover [array_base_, next_)
    return grow_arrays(end - array_base_);
}

bool SlotStore::take(uint32_t slot, uint64_t h) {
    if (!domain_) return true;  // this process's own slots: nobody else frees them
    if (!ensure_ready() || !cover((uint64_t)slot + 1)) return false;
    if (refs_[slot - array_base_] > 0) return hash(slot) == h;  // our bit is set already
    return domain_->take(slot, h);
}

uint64_t SlotStore::pages_shared_with_others() const {
    // (A slot's users are read racily: a figure for the report.)
    uint64_t n = 0;
    for (uint64_t i = 0; domain_ && i < next_ - array_base_; ++i)
        if (refs_[i] && domain_->used_by_others((uint32_t)(array_base_ + i))) n += refs_[i];
    return n;
}

void SlotStore::hide_views(bool hide) {
    Generation* gens[] = {&cur_, &old_};
    for (Generation* g : gens) {
        char* views[] = {g->shared, g->priv};
        int open_prot[] = {PROT_READ | PROT_WRITE, g->priv_writable ? PROT_READ | PROT_WRITE : PROT_READ};
        for (int i = 0; i < 2; ++i) {
            if (!views[i]) continue;
            size_t len = g->view_slots * kPageSize;
            // Unlocked before opened: mprotect populates a locked private
            // mapping that becomes writable.
            if (!hide) sys::call(SYS_munlock, (long)views[i], (long)len);
            sys::mprotect(views[i], len, hide ? PROT_NONE : open_prot[i]);
        }
    }
}

void SlotStore::exclude_views_from_core() {
    Generation* gens[] = {&cur_, &old_};
    for (Generation* g : gens) {
        if (g->shared) sys::madvise(g->shared, g->view_slots * kPageSize, MADV_DONTDUMP);
        if (g->priv) sys::madvise(g->priv, g->view_slots * kPageSize, MADV_DONTDUMP);
    }
}

}  // namespace dedup
