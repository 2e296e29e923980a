// Linux AIO (io_setup/io_submit/io_getevents): through glibc's syscall()
// (syscall.cpp) and libaio's functions of the same names. A read submitted
// with io_submit on a buffered file, a pipe or a socket is copied inside
// io_submit: its buffer is pinned for the call. On an O_DIRECT descriptor
// (or a device) the kernel pins the pages and the data arrives after
// io_submit returned, into the pages it pinned: the runtime leaves those
// buffers alone before the call (rt_aio_read_completes_later).
#include <linux/aio_abi.h>
#include <stdint.h>
#include <sys/uio.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/kernel_writes.h"
#include "shim/span.h"

using namespace dedup;

namespace dedup {

void aio_before_submit(PinSet& ps, long nr, const void* iocbpp) {
    for (long i = 0; i < nr && i < 1024; ++i) {
        struct iocb* p = nullptr;
        struct iocb cb;
        if (!rt_read_user(&p, (struct iocb* const*)iocbpp + i, sizeof p) || !rt_read_user(&cb, p, sizeof cb)) return;
        if (cb.aio_lio_opcode != IOCB_CMD_PREAD && cb.aio_lio_opcode != IOCB_CMD_PREADV) continue;
        bool later = rt_aio_read_completes_later((int)cb.aio_fildes);
        if (cb.aio_lio_opcode == IOCB_CMD_PREAD) {
            if (later) rt_leave_alone((const void*)(uintptr_t)cb.aio_buf, cb.aio_nbytes);
            else ps.add((const void*)(uintptr_t)cb.aio_buf, cb.aio_nbytes);
            continue;
        }
        const struct iovec* iov = (const struct iovec*)(uintptr_t)cb.aio_buf;
        for (uint64_t k = 0; k < cb.aio_nbytes && k < 1024; ++k) {
            struct iovec v;
            if (!rt_read_user(&v, iov + k, sizeof v)) break;
            if (later) rt_leave_alone(v.iov_base, v.iov_len);
            else ps.add(v.iov_base, v.iov_len);
        }
    }
}

}  // namespace dedup

// libaio's functions (io_context_t is a pointer there); they return -errno.
namespace {
using SetupFn = int (*)(int, void*);
using SubmitFn = int (*)(void*, long, struct iocb**);
using GeteventsFn = int (*)(void*, long, long, struct io_event*, struct timespec*);
NextSymbol<SetupFn> next_io_setup("io_setup");
NextSymbol<SubmitFn> next_io_submit("io_submit");
NextSymbol<GeteventsFn> next_io_getevents("io_getevents");
}  // namespace

EXPORT int io_setup(int maxevents, void* ctxp) {
    SetupFn f = next_io_setup.get();
    if (!f) return -ENOSYS;
    KernelWritePin pin(ctxp, sizeof(void*));
    return f(maxevents, ctxp);
}

EXPORT int io_submit(void* ctx, long nr, struct iocb** iocbs) {
    SubmitFn f = next_io_submit.get();
    if (!f) return -ENOSYS;
    PinSet ps;
    aio_before_submit(ps, nr, iocbs);
    ps.pin();
    return f(ctx, nr, iocbs);
}

EXPORT int io_getevents(void* ctx, long min_nr, long nr, struct io_event* events, struct timespec* timeout) {
    GeteventsFn f = next_io_getevents.get();
    if (!f) return -ENOSYS;
    KernelWritePin pin(events, nr > 0 ? (size_t)nr * sizeof *events : 0);
    return f(ctx, min_nr, nr, events, timeout);
}
