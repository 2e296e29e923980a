// io_uring's calls that submit, reap and register, raw (glibc's syscall(),
// the functions liburing exports for them) or through liburing's own
// functions: before the call, the requests about to be submitted are looked
// at (kw_uring_sqe.cpp) and their buffers pinned or left alone; after it,
// the completions posted release them (kw_uring_inflight.cpp).
#include <stdint.h>
#include <sys/uio.h>

#include "scanner/kw_uring.h"
#include "scanner/runtime.h"

namespace dedup {

using namespace uring;
using kw::g_all_alone;

void rt_uring_enter_begin(RtUringCall* c, unsigned fd, unsigned to_submit, unsigned flags) {
    if (!to_submit || g_all_alone.load(std::memory_order_relaxed)) {
        // Only waiting: completions may release buffers afterwards.
        if (inflight_count() == 0) return;
    }
    View v;
    bool known = view_of_entered(fd, flags, &v);
    if (!known) {
        if (to_submit && !g_all_alone.load(std::memory_order_relaxed))
            rt_leave_all_alone("io_uring submissions to a ring the shim did not see set up");
        return;
    }
    if (!to_submit || g_all_alone.load(std::memory_order_relaxed)) {
        c->ring = v.key;  // scan completions after the call
        return;
    }
    unsigned head = load_acquire(v.khead), tail = load_acquire(v.ktail);
    unsigned n = tail - head < to_submit ? tail - head : to_submit;
    c->ring = v.key;
    before_submit(c, v, head, head + n);
}

namespace {

// A liburing call carries its ring; calls it makes to other exported
// liburing functions are not looked at twice.
__thread const void* t_liburing_ring = nullptr;
__thread int t_liburing_depth = 0;

void unpin_call(RtUringCall* c) {
    for (int& t : c->pins) {
        if (t != -2) rt_kernel_write_unpin(t);
        t = -2;
    }
}

void raw_end(RtUringCall* c) {
    unpin_call(c);
    if (!c->ring) return;
    View v;
    if (view_of_key(c->ring, &v)) after_call(c, v);
    c->ring = 0;
}

void liburing_end(RtUringCall* c) {
    unpin_call(c);
    const void* ring = t_liburing_ring;
    t_liburing_ring = nullptr;
    View v;
    if (ring && c->ring && view_of_liburing(ring, &v)) after_call(c, v);
    c->ring = 0;
}

}  // namespace

void rt_uring_end(RtUringCall* c) {
    if (t_liburing_depth > 0) {
        if (--t_liburing_depth == 0) liburing_end(c);
        return;
    }
    raw_end(c);
}

void rt_liburing_begin(RtUringCall* c, const void* ring) {
    if (t_liburing_depth++ > 0) return;  // one liburing function calling another
    t_liburing_ring = nullptr;
    if (g_all_alone.load(std::memory_order_relaxed)) return;
    View v;
    if (!view_of_liburing(ring, &v)) return;
    t_liburing_ring = ring;
    c->ring = v.key;
    const LibRing* lr = (const LibRing*)ring;
    unsigned head = load_acquire(v.khead);
    unsigned end = lr->sq.sqe_tail;  // queued with io_uring_get_sqe, flushed or not
    unsigned ktail = load_acquire(v.ktail);
    if ((int)(ktail - end) > 0) end = ktail;
    if (end != head) before_submit(c, v, head, end);
}

void rt_uring_register_begin(RtUringCall* c, unsigned fd, unsigned opcode, const void* arg, unsigned nr_args) {
    (void)fd;
    unsigned op = opcode & ~kRegisterUseRegisteredRing;
    int np = 0;
    auto pin = [&](const void* p, size_t len) {
        if (p && len && np < 4) c->pins[np++] = rt_kernel_write_pin((uintptr_t)p, len);
    };
    auto leave_iovecs = [](uint64_t iov, uint64_t n) {
        for (uint64_t i = 0; iov && i < n && i < 65536; ++i) {
            struct iovec v;
            if (!rt_read_user(&v, (const struct iovec*)iov + i, sizeof v)) return;
            if (v.iov_base && v.iov_len) rt_leave_alone(v.iov_base, v.iov_len);
        }
    };
    switch (op) {
        case kRegBuffers:  // pinned for as long as they are registered: never remapped again
            leave_iovecs((uintptr_t)arg, nr_args);
            break;
        case kRegBuffers2: {
            RsrcRegister rr;
            if (rt_read_user(&rr, arg, sizeof rr) && !(rr.flags & kRsrcRegisterSparse)) leave_iovecs(rr.data, rr.nr);
            break;
        }
        case kRegBuffersUpdate: {
            RsrcUpdate2 up;
            if (rt_read_user(&up, arg, sizeof up)) leave_iovecs(up.data, up.nr);
            break;
        }
        case kRegPbufRing:
            rt_leave_all_alone("an io_uring provided-buffer ring (buffers are added without a system call)");
            break;
        case kRegZcrxIfq:
        case kRegMemRegion:
        case kRegResizeRings:
            rt_leave_all_alone("io_uring memory registered for the kernel to write into later");
            break;
        case kRegRingFds:
            pin(arg, (size_t)nr_args * sizeof(RsrcUpdate));  // offsets written back
            break;
        case kRegProbe:
            pin(arg, 16 + (size_t)nr_args * 8);
            break;
        case kRegIowqMaxWorkers:
            pin(arg, 2 * sizeof(uint32_t));
            break;
        case kRegPbufStatus:
            pin(arg, 32);
            break;
        case kRegNapi:
        case kUnregNapi:
            pin(arg, 16);
            break;
        case kRegQuery: {
            const void* at = arg;
            QueryHdr h;
            for (int i = 0; at && i < 2 && rt_read_user(&h, at, sizeof h); ++i, at = (const void*)h.next_entry) {
                pin(at, sizeof h);
                pin((const void*)h.query_data, h.size);
            }
            break;
        }
        default:
            if (op > kRegLastKnown) rt_leave_all_alone("an io_uring registration the shim does not know");
            break;
    }
}

void rt_uring_register_end(RtUringCall* c, unsigned opcode, const void* arg, long result) {
    unsigned op = opcode & ~kRegisterUseRegisteredRing;
    if (result > 0 && arg && (op == kRegRingFds || op == kUnregRingFds)) {
        for (long i = 0; i < result && i < kRegRingSlots; ++i) {
            RsrcUpdate up;
            if (!rt_read_user(&up, (const RsrcUpdate*)arg + i, sizeof up)) break;
            if (up.offset >= (unsigned)kRegRingSlots) continue;
            set_registered_ring(up.offset, op == kRegRingFds ? (int)up.data : -1);
        }
    }
    raw_end(c);
}

}  // namespace dedup
