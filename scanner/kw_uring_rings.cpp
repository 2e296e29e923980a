// The io_uring rings the shim saw set up (io_uring_setup through glibc's
// syscall() or liburing's functions): where the program mapped them, the
// offsets the kernel gave, and the descriptors that name them. A ring set up
// out of the shim's sight, or polled by a kernel thread (SQPOLL), leaves the
// whole process alone.
#include <atomic>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "scanner/kw_uring.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"

namespace dedup {
namespace uring {

kw::SpinLock g_ring_lock;  // g_rings, and kw_uring_inflight.cpp's requests and cursors

namespace {

using kw::g_all_alone;
using kw::SpinGuard;

// What the shim knows of a ring set up through a call it saw: where the
// program mapped it and the offsets io_uring_setup gave.
struct RingRec {
    int fd = -1;  // -1: free; registered-only rings: kRegOnlyFd + index
    uint32_t flags = 0, features = 0;
    Params p{};
    uintptr_t sq_ring = 0, cq_ring = 0, sqes = 0;  // 0: not mapped (yet)
    size_t sq_len = 0, cq_len = 0, sqes_len = 0;
};
constexpr int kRegOnlyFd = 1 << 30;
RingRec g_rings[kMaxRings];
std::atomic<int> g_nrings{0};  // records in use: descriptor calls skip the table while none is

// Registered ring descriptors (IORING_REGISTER_RING_FDS) are per thread:
// index -> fd + 1.
__thread int t_reg_ring[kRegRingSlots];

void set_shapes(View& v, uint32_t flags) {
    v.sqe_shift = flags & kSetupSqe128 ? 7 : 6;
    v.cqe_shift = flags & kSetupCqe32 ? 5 : 4;
    v.sqe_mixed = flags & kSetupSqeMixed;
    v.cqe_mixed = flags & kSetupCqeMixed;
    v.sqpoll = flags & kSetupSqpoll;
}

// Requires g_ring_lock.
bool view_of_rec(const RingRec& r, View* v) {
    uintptr_t cq = r.cq_ring ? r.cq_ring : (r.features & kFeatSingleMmap ? r.sq_ring : 0);
    if (!r.sq_ring || !cq || !r.sqes) return false;
    const Params& p = r.p;
    v->key = r.sq_ring + p.sq_off.head;
    v->khead = (const unsigned*)(r.sq_ring + p.sq_off.head);
    v->ktail = (const unsigned*)(r.sq_ring + p.sq_off.tail);
    v->mask = *(const unsigned*)(r.sq_ring + p.sq_off.ring_mask);
    v->array = r.flags & kSetupNoSqarray ? nullptr : (const unsigned*)(r.sq_ring + p.sq_off.array);
    v->sqes = (const uint8_t*)r.sqes;
    v->cq_ktail = (const unsigned*)(cq + p.cq_off.tail);
    v->cq_mask = *(const unsigned*)(cq + p.cq_off.ring_mask);
    v->cqes = (const uint8_t*)(cq + p.cq_off.cqes);
    set_shapes(*v, r.flags);
    return true;
}

// Requires g_ring_lock.
RingRec* rec_of_fd(int fd) {
    if (fd < 0) return nullptr;
    for (RingRec& r : g_rings)
        if (r.fd == fd) return &r;
    return nullptr;
}

// Requires g_ring_lock.
RingRec* new_rec(int fd) {
    RingRec* r = rec_of_fd(fd);
    if (!r)
        for (RingRec& x : g_rings)
            if (x.fd < 0) {
                r = &x;
                g_nrings.fetch_add(1);
                break;
            }
    if (r) {
        *r = RingRec{};
        r->fd = fd;
    }
    return r;
}

// Requires g_ring_lock.
void free_rec(RingRec& r) {
    if (r.fd < 0) return;
    r = RingRec{};
    g_nrings.fetch_sub(1);
}

// Requires g_ring_lock.
int fd_of_registered(unsigned index) {
    if (index >= (unsigned)kRegRingSlots) return -1;
    return t_reg_ring[index] - 1;
}

// The bound of what io_uring_setup pins of the program's memory with
// IORING_SETUP_NO_MMAP, before the kernel has said the sizes.
void leave_alone_no_mmap_memory(const Params* p) {
    uint64_t sq = p->sq_entries ? p->sq_entries : 1, cq = p->cq_entries;
    sq = sq > 32768 ? 32768 : sq;
    uint64_t sq2 = 1;
    while (sq2 < sq) sq2 <<= 1;
    if (!cq || !(p->flags & (1u << 3))) cq = 2 * sq2;  // IORING_SETUP_CQSIZE
    cq = cq > 65536 ? 65536 : cq;
    uint64_t sqe_size = p->flags & kSetupSqe128 ? 128 : 64, cqe_size = p->flags & kSetupCqe32 ? 32 : 16;
    if (p->cq_off.user_addr) rt_leave_alone((const void*)p->cq_off.user_addr, 4096 + cq * 2 * cqe_size + sq2 * 4);
    if (p->sq_off.user_addr) rt_leave_alone((const void*)p->sq_off.user_addr, sq2 * sqe_size * 2);
}

}  // namespace

bool view_of_liburing(const void* ring, View* v) {
    const LibRing* r = (const LibRing*)ring;
    if (!r || !r->sq.khead || !r->sq.ktail || !r->sq.kring_mask || !r->sq.sqes || !r->cq.ktail ||
        !r->cq.kring_mask || !r->cq.cqes)
        return false;
    v->key = (uintptr_t)r->sq.khead;
    v->khead = r->sq.khead;
    v->ktail = r->sq.ktail;
    v->mask = *r->sq.kring_mask;
    v->array = r->flags & kSetupNoSqarray ? nullptr : r->sq.array;
    v->sqes = (const uint8_t*)r->sq.sqes;
    v->cq_ktail = r->cq.ktail;
    v->cq_mask = *r->cq.kring_mask;
    v->cqes = (const uint8_t*)r->cq.cqes;
    set_shapes(*v, r->flags);
    return true;
}

bool view_of_entered(unsigned fd, unsigned enter_flags, View* v) {
    SpinGuard g(g_ring_lock);
    int real = enter_flags & kEnterRegisteredRing ? fd_of_registered(fd) : (int)fd;
    RingRec* r = rec_of_fd(real);
    bool known = r && view_of_rec(*r, v);
    if (known && r->flags & kSetupSqpoll) v->sqpoll = true;
    return known;
}

bool view_of_key(uintptr_t key, View* v) {
    SpinGuard g(g_ring_lock);
    for (RingRec& r : g_rings) {
        View x;
        if (r.fd >= 0 && view_of_rec(r, &x) && x.key == key) {
            *v = x;
            return true;
        }
    }
    return false;
}

void set_registered_ring(unsigned index, int fd) { t_reg_ring[index] = fd + 1; }

void ring_fds_closed(unsigned first, unsigned last) {
    if (!g_nrings.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_ring_lock);
    for (RingRec& r : g_rings) {
        if (r.fd < 0 || r.fd >= kRegOnlyFd || (unsigned)r.fd < first || (unsigned)r.fd > last) continue;
        View v;
        if (view_of_rec(r, &v)) forget_ring(v.key);
        free_rec(r);
    }
    unpin_dropped();
}

void ring_fd_dup(int oldfd, int newfd) {
    if (!g_nrings.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_ring_lock);
    RingRec* o = rec_of_fd(oldfd);
    if (!o || oldfd == newfd) return;
    RingRec copy = *o;
    RingRec* n = new_rec(newfd);
    if (!n) return;
    *n = copy;
    n->fd = newfd;
}

}  // namespace uring

using namespace uring;
using kw::g_all_alone;
using kw::SpinGuard;

void rt_uring_setup_begin(const void* params) {
    const Params* p = (const Params*)params;
    if (!p || g_all_alone.load(std::memory_order_relaxed)) return;
    if (p->flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (p->flags & kSetupNoMmap) leave_alone_no_mmap_memory(p);
}

void rt_uring_setup_end(long result, const void* params) {
    const Params* p = (const Params*)params;
    if (result < 0 || !p || (p->flags & kSetupSqpoll) || g_all_alone.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_ring_lock);
    int fd = (int)result;
    if (p->flags & kSetupRegisteredFdOnly) {
        if (result >= kRegRingSlots) return;
        fd = kRegOnlyFd + (int)result;
        t_reg_ring[result] = fd + 1;
    }
    RingRec* r = new_rec(fd);
    if (!r) return;  // more rings than the shim tracks: their submissions leave everything alone
    r->flags = p->flags;
    r->features = p->features;
    r->p = *p;
    if (p->flags & kSetupNoMmap) {
        r->sq_ring = r->cq_ring = (uintptr_t)p->cq_off.user_addr;
        r->sqes = (uintptr_t)p->sq_off.user_addr;
    }
}

void rt_liburing_init_begin(unsigned setup_flags, const void* mem, size_t mem_len) {
    if (g_all_alone.load(std::memory_order_relaxed)) return;
    if (setup_flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (mem && mem_len) rt_leave_alone(mem, mem_len);  // io_uring_queue_init_mem: the rings themselves
}

void rt_liburing_init_end(long result, const void* ring) {
    if (result < 0 || !ring || g_all_alone.load(std::memory_order_relaxed)) return;
    const LibRing* lr = (const LibRing*)ring;
    if (lr->flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (lr->ring_fd < 0) return;
    // Known by its descriptor too, for syscall(__NR_io_uring_enter, ring->ring_fd, ...).
    SpinGuard g(g_ring_lock);
    RingRec* r = new_rec(lr->ring_fd);
    if (!r) return;
    r->flags = lr->flags;
    r->features = lr->features;
    uintptr_t sq = (uintptr_t)lr->sq.ring_ptr, cq = (uintptr_t)lr->cq.ring_ptr;
    if (!sq || !cq) return;
    r->sq_ring = sq;
    r->cq_ring = cq;
    r->sqes = (uintptr_t)lr->sq.sqes;
    Params& p = r->p;
    p.sq_off.head = (uint32_t)((uintptr_t)lr->sq.khead - sq);
    p.sq_off.tail = (uint32_t)((uintptr_t)lr->sq.ktail - sq);
    p.sq_off.ring_mask = (uint32_t)((uintptr_t)lr->sq.kring_mask - sq);
    p.sq_off.array = lr->sq.array ? (uint32_t)((uintptr_t)lr->sq.array - sq) : 0;
    p.cq_off.tail = (uint32_t)((uintptr_t)lr->cq.ktail - cq);
    p.cq_off.ring_mask = (uint32_t)((uintptr_t)lr->cq.kring_mask - cq);
    p.cq_off.cqes = (uint32_t)((uintptr_t)lr->cq.cqes - cq);
}

void rt_liburing_exit(const void* ring) {
    View v;
    if (!view_of_liburing(ring, &v)) return;
    SpinGuard g(g_ring_lock);
    forget_ring(v.key);
    const LibRing* lr = (const LibRing*)ring;
    if (RingRec* r = rec_of_fd(lr->ring_fd)) free_rec(*r);
    unpin_dropped();
}

void rt_note_mapping(uintptr_t addr, size_t len, int flags, int fd, off_t off) {
    if (fd < 0 || (flags & MAP_TYPE) != MAP_SHARED) return;
    uint64_t o = (uint64_t)off;
    if (o != kOffSqRing && o != kOffCqRing && o != kOffSqes) return;
    if (g_nrings.load(std::memory_order_relaxed)) {
        SpinGuard g(g_ring_lock);
        if (RingRec* r = rec_of_fd(fd)) {
            if (o == kOffSqRing) r->sq_ring = addr, r->sq_len = len;
            else if (o == kOffCqRing) r->cq_ring = addr, r->cq_len = len;
            else r->sqes = addr, r->sqes_len = len;
            return;
        }
    }
    // The SQE array of a ring set up by a system call the shim did not see
    // (a `syscall` instruction): its submissions will be invisible.
    if (o != kOffSqes || g_all_alone.load(std::memory_order_relaxed)) return;
    char path[32] = "/proc/self/fd/", target[32];
    size_t at = strlen(path);
    char digits[12];
    int k = 0, n = fd;
    do digits[k++] = (char)('0' + n % 10);
    while ((n /= 10) && k < 11);
    while (k) path[at++] = digits[--k];
    path[at] = 0;
    long r = sys::call(SYS_readlink, (long)path, (long)target, sizeof target - 1);
    if (r > 0 && (size_t)r < sizeof target) {
        target[r] = 0;
        if (strcmp(target, "anon_inode:[io_uring]") == 0)
            rt_leave_all_alone("an io_uring ring set up out of the shim's sight");
    }
}

void rt_note_unmapping(uintptr_t addr, size_t len) {
    if (!g_nrings.load(std::memory_order_relaxed)) return;
    uintptr_t end = addr + len;
    SpinGuard g(g_ring_lock);
    for (RingRec& r : g_rings) {
        if (r.fd < 0) continue;
        bool hit = (r.sq_ring >= addr && r.sq_ring < end) || (r.cq_ring >= addr && r.cq_ring < end) ||
                   (r.sqes >= addr && r.sqes < end);
        if (!hit) continue;
        View v;
        if (view_of_rec(r, &v)) forget_ring(v.key);
        if (r.sq_ring >= addr && r.sq_ring < end) r.sq_ring = 0;
        if (r.cq_ring >= addr && r.cq_ring < end) r.cq_ring = 0;
        if (r.sqes >= addr && r.sqes < end) r.sqes = 0;
    }
    unpin_dropped();
}

}  // namespace dedup
