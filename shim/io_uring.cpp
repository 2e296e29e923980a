// io_uring through liburing's functions. liburing (2.3 here) makes its system
// calls with inline `syscall` instructions, not glibc's syscall(), so its
// exported functions are where the shim can see a program's rings: set-up
// (queue_init*), submission and reaping (submit*, get_events, wait_cqes,
// __io_uring_get_cqe...), buffer registration and teardown. The raw
// io_uring_setup/enter/register it also exports go where syscall()'s
// numbers go. Everything is decided by the runtime (kw_uring*.cpp): the
// SQEs about to be submitted are read from the ring, their buffers pinned
// until their completions are seen, registered buffers left alone, and a
// ring polled by a kernel thread (SQPOLL) leaves the process alone.
// The functions return what liburing returns (-errno on failure).
#include <linux/io_uring.h>
#include <signal.h>
#include <stdint.h>
#include <sys/uio.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"

using namespace dedup;

namespace {

// liburing's opcodes for io_uring_register(2), as the runtime knows them.
constexpr unsigned kRegBuffers = 0, kRegProbe = 8, kRegIowqMaxWorkers = 19, kRegPbufRing = 22, kRegNapi = 27,
                   kUnregNapi = 28, kRegZcrxIfq = 32, kRegResizeRings = 33, kRegMemRegion = 34;

// A call that may submit or reap: the runtime looks before and after.
template <typename R, typename F>
R around(const void* ring, F call) {
    RtUringCall c;
    rt_liburing_begin(&c, ring);
    R r = call();
    rt_uring_end(&c);
    return r;
}

// A registration whose policy is that of io_uring_register(opcode, arg, nr).
template <typename F>
int registering(unsigned opcode, const void* arg, unsigned nr, F call) {
    RtUringCall c;
    rt_uring_register_begin(&c, ~0u, opcode, arg, nr);
    int r = call();
    rt_uring_register_end(&c, opcode, arg, r);
    return r;
}

#define LIBURING(name, ret, ...) NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

LIBURING(io_uring_queue_init, int, unsigned, void*, unsigned);
LIBURING(io_uring_queue_init_params, int, unsigned, void*, struct io_uring_params*);
LIBURING(io_uring_queue_init_mem, int, unsigned, void*, struct io_uring_params*, void*, size_t);
LIBURING(io_uring_queue_mmap, int, int, struct io_uring_params*, void*);
LIBURING(io_uring_queue_exit, void, void*);
LIBURING(io_uring_submit, int, void*);
LIBURING(io_uring_submit_and_wait, int, void*, unsigned);
LIBURING(io_uring_submit_and_wait_timeout, int, void*, void**, unsigned, void*, sigset_t*);
LIBURING(io_uring_submit_and_wait_min_timeout, int, void*, void**, unsigned, void*, unsigned, sigset_t*);
LIBURING(io_uring_submit_and_wait_reg, int, void*, void**, unsigned, int);
LIBURING(io_uring_submit_and_get_events, int, void*);
LIBURING(io_uring_get_events, int, void*);
LIBURING(__io_uring_get_cqe, int, void*, void**, unsigned, unsigned, sigset_t*);
LIBURING(io_uring_wait_cqes, int, void*, void**, unsigned, void*, sigset_t*);
LIBURING(io_uring_wait_cqes_min_timeout, int, void*, void**, unsigned, void*, unsigned, sigset_t*);
LIBURING(io_uring_wait_cqe_timeout, int, void*, void**, void*);
LIBURING(io_uring_peek_batch_cqe, unsigned, void*, void**, unsigned);
LIBURING(io_uring_register_buffers, int, void*, const struct iovec*, unsigned);
LIBURING(io_uring_register_buffers_tags, int, void*, const struct iovec*, const uint64_t*, unsigned);
LIBURING(io_uring_register_buffers_update_tag, int, void*, unsigned, const struct iovec*, const uint64_t*, unsigned);
LIBURING(io_uring_register_buf_ring, int, void*, void*, unsigned);
LIBURING(io_uring_setup_buf_ring, void*, void*, unsigned, int, unsigned, int*);
LIBURING(io_uring_register_ifq, int, void*, void*);
LIBURING(io_uring_register_region, int, void*, void*);
LIBURING(io_uring_resize_rings, int, void*, struct io_uring_params*);
LIBURING(io_uring_register_probe, int, void*, void*, unsigned);
LIBURING(io_uring_register_iowq_max_workers, int, void*, unsigned*);
LIBURING(io_uring_register_napi, int, void*, void*);
LIBURING(io_uring_unregister_napi, int, void*, void*);
LIBURING(io_uring_setup, int, unsigned, struct io_uring_params*);
LIBURING(io_uring_enter, int, unsigned, unsigned, unsigned, unsigned, sigset_t*);
LIBURING(io_uring_enter2, int, unsigned, unsigned, unsigned, unsigned, sigset_t*, size_t);
LIBURING(io_uring_register, int, unsigned, unsigned, const void*, unsigned);

}  // namespace

// A name that is not there (an older liburing) is never called: the program
// could not have linked against it.
#define CALL(name, ...) (next_##name.get() ? next_##name.get()(__VA_ARGS__) : -ENOSYS)

// ---- set-up and teardown ----------------------------------------------------------

EXPORT int io_uring_queue_init(unsigned entries, void* ring, unsigned flags) {
    rt_liburing_init_begin(flags, nullptr, 0);
    int r = CALL(io_uring_queue_init, entries, ring, flags);
    rt_liburing_init_end(r, ring);
    return r;
}

EXPORT int io_uring_queue_init_params(unsigned entries, void* ring, struct io_uring_params* p) {
    rt_liburing_init_begin(p ? p->flags : 0, nullptr, 0);
    int r = CALL(io_uring_queue_init_params, entries, ring, p);
    rt_liburing_init_end(r, ring);
    return r;
}

EXPORT int io_uring_queue_init_mem(unsigned entries, void* ring, struct io_uring_params* p, void* buf, size_t size) {
    rt_liburing_init_begin(p ? p->flags : 0, buf, size);  // the rings live in buf
    int r = CALL(io_uring_queue_init_mem, entries, ring, p, buf, size);
    rt_liburing_init_end(r, ring);
    return r;
}

EXPORT int io_uring_queue_mmap(int fd, struct io_uring_params* p, void* ring) {
    int r = CALL(io_uring_queue_mmap, fd, p, ring);
    rt_liburing_init_end(r, ring);
    return r;
}

EXPORT void io_uring_queue_exit(void* ring) {
    rt_liburing_exit(ring);
    if (next_io_uring_queue_exit.get()) next_io_uring_queue_exit.get()(ring);
}

// ---- submitting and reaping ---------------------------------------------------------

EXPORT int io_uring_submit(void* ring) {
    return around<int>(ring, [&] { return CALL(io_uring_submit, ring); });
}

EXPORT int io_uring_submit_and_wait(void* ring, unsigned wait_nr) {
    return around<int>(ring, [&] { return CALL(io_uring_submit_and_wait, ring, wait_nr); });
}

EXPORT int io_uring_submit_and_wait_timeout(void* ring, void** cqe, unsigned wait_nr, void* ts, sigset_t* mask) {
    return around<int>(ring, [&] { return CALL(io_uring_submit_and_wait_timeout, ring, cqe, wait_nr, ts, mask); });
}

EXPORT int io_uring_submit_and_wait_min_timeout(void* ring, void** cqe, unsigned wait_nr, void* ts, unsigned min_wait,
                                                sigset_t* mask) {
    return around<int>(ring, [&] {
        return CALL(io_uring_submit_and_wait_min_timeout, ring, cqe, wait_nr, ts, min_wait, mask);
    });
}

EXPORT int io_uring_submit_and_wait_reg(void* ring, void** cqe, unsigned wait_nr, int reg_index) {
    return around<int>(ring, [&] { return CALL(io_uring_submit_and_wait_reg, ring, cqe, wait_nr, reg_index); });
}

EXPORT int io_uring_submit_and_get_events(void* ring) {
    return around<int>(ring, [&] { return CALL(io_uring_submit_and_get_events, ring); });
}

EXPORT int io_uring_get_events(void* ring) {
    return around<int>(ring, [&] { return CALL(io_uring_get_events, ring); });
}

EXPORT int __io_uring_get_cqe(void* ring, void** cqe, unsigned submit, unsigned wait_nr, sigset_t* mask) {
    return around<int>(ring, [&] { return CALL(__io_uring_get_cqe, ring, cqe, submit, wait_nr, mask); });
}

EXPORT int io_uring_wait_cqes(void* ring, void** cqe, unsigned wait_nr, void* ts, sigset_t* mask) {
    return around<int>(ring, [&] { return CALL(io_uring_wait_cqes, ring, cqe, wait_nr, ts, mask); });
}

EXPORT int io_uring_wait_cqes_min_timeout(void* ring, void** cqe, unsigned wait_nr, void* ts, unsigned min_us,
                                          sigset_t* mask) {
    return around<int>(ring, [&] {
        return CALL(io_uring_wait_cqes_min_timeout, ring, cqe, wait_nr, ts, min_us, mask);
    });
}

EXPORT int io_uring_wait_cqe_timeout(void* ring, void** cqe, void* ts) {
    return around<int>(ring, [&] { return CALL(io_uring_wait_cqe_timeout, ring, cqe, ts); });
}

EXPORT unsigned io_uring_peek_batch_cqe(void* ring, void** cqes, unsigned count) {
    return around<unsigned>(ring, [&] {
        return next_io_uring_peek_batch_cqe.get() ? next_io_uring_peek_batch_cqe.get()(ring, cqes, count) : 0u;
    });
}

// ---- registering memory ----------------------------------------------------------------

EXPORT int io_uring_register_buffers(void* ring, const struct iovec* iov, unsigned nr) {
    return registering(kRegBuffers, iov, nr, [&] { return CALL(io_uring_register_buffers, ring, iov, nr); });
}

EXPORT int io_uring_register_buffers_tags(void* ring, const struct iovec* iov, const uint64_t* tags, unsigned nr) {
    return registering(kRegBuffers, iov, nr, [&] { return CALL(io_uring_register_buffers_tags, ring, iov, tags, nr); });
}

EXPORT int io_uring_register_buffers_update_tag(void* ring, unsigned off, const struct iovec* iov,
                                                const uint64_t* tags, unsigned nr) {
    return registering(kRegBuffers, iov, nr,
                       [&] { return CALL(io_uring_register_buffers_update_tag, ring, off, iov, tags, nr); });
}

EXPORT int io_uring_register_buf_ring(void* ring, void* reg, unsigned flags) {
    return registering(kRegPbufRing, reg, 1, [&] { return CALL(io_uring_register_buf_ring, ring, reg, flags); });
}

EXPORT void* io_uring_setup_buf_ring(void* ring, unsigned nentries, int bgid, unsigned flags, int* err) {
    RtUringCall c;
    rt_uring_register_begin(&c, ~0u, kRegPbufRing, nullptr, 0);
    void* r = next_io_uring_setup_buf_ring.get() ? next_io_uring_setup_buf_ring.get()(ring, nentries, bgid, flags, err)
                                                 : nullptr;
    rt_uring_register_end(&c, kRegPbufRing, nullptr, r ? 0 : -1);
    return r;
}

EXPORT int io_uring_register_ifq(void* ring, void* reg) {
    return registering(kRegZcrxIfq, reg, 1, [&] { return CALL(io_uring_register_ifq, ring, reg); });
}

EXPORT int io_uring_register_region(void* ring, void* reg) {
    return registering(kRegMemRegion, reg, 1, [&] { return CALL(io_uring_register_region, ring, reg); });
}

EXPORT int io_uring_resize_rings(void* ring, struct io_uring_params* p) {
    return registering(kRegResizeRings, p, 1, [&] { return CALL(io_uring_resize_rings, ring, p); });
}

EXPORT int io_uring_register_probe(void* ring, void* p, unsigned nr) {
    return registering(kRegProbe, p, nr, [&] { return CALL(io_uring_register_probe, ring, p, nr); });
}

EXPORT int io_uring_register_iowq_max_workers(void* ring, unsigned* values) {
    return registering(kRegIowqMaxWorkers, values, 2,
                       [&] { return CALL(io_uring_register_iowq_max_workers, ring, values); });
}

EXPORT int io_uring_register_napi(void* ring, void* napi) {
    return registering(kRegNapi, napi, 1, [&] { return CALL(io_uring_register_napi, ring, napi); });
}

EXPORT int io_uring_unregister_napi(void* ring, void* napi) {
    return registering(kUnregNapi, napi, 1, [&] { return CALL(io_uring_unregister_napi, ring, napi); });
}

// ---- the system calls, as liburing exports them ------------------------------------------

EXPORT int io_uring_setup(unsigned entries, struct io_uring_params* p) {
    rt_uring_setup_begin(p);
    int r = CALL(io_uring_setup, entries, p);
    rt_uring_setup_end(r, p);
    return r;
}

EXPORT int io_uring_enter(unsigned fd, unsigned to_submit, unsigned min_complete, unsigned flags, sigset_t* sig) {
    RtUringCall c;
    rt_uring_enter_begin(&c, fd, to_submit, flags);
    int r = CALL(io_uring_enter, fd, to_submit, min_complete, flags, sig);
    rt_uring_end(&c);
    return r;
}

EXPORT int io_uring_enter2(unsigned fd, unsigned to_submit, unsigned min_complete, unsigned flags, sigset_t* sig,
                           size_t sz) {
    RtUringCall c;
    rt_uring_enter_begin(&c, fd, to_submit, flags);
    int r = CALL(io_uring_enter2, fd, to_submit, min_complete, flags, sig, sz);
    rt_uring_end(&c);
    return r;
}

EXPORT int io_uring_register(unsigned fd, unsigned opcode, const void* arg, unsigned nr) {
    return registering(opcode, arg, nr, [&] { return CALL(io_uring_register, fd, opcode, arg, nr); });
}
