// Writes into this process's own memory through the kernel: a descriptor
// open on /proc/self/mem (/proc/thread-self/mem, /proc/<our pid>/mem), and
// process_vm_writev. A write through /proc/self/mem is forced (FOLL_FORCE):
// it lands even in a page the scanner has write-protected, and the merge
// then remaps the page onto the canonical copy it compared before the write,
// so the write is lost; process_vm_writev is not forced and fails with
// EFAULT. Both pin the destination range for the call, as read(2) pins its
// buffer. Descriptors are recognised when opened (open, openat and their
// variants), followed through dup and close (fds.cpp); every write costs one
// load while no such descriptor is open.
#include <fcntl.h>
#include <stdarg.h>
#include <sys/uio.h>
#include <unistd.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/kernel_writes.h"
#include "shim/span.h"

using namespace dedup;

#define NEXT(name, ret, ...) static NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

namespace dedup {

size_t iov_bytes(const struct iovec* iov, long cnt) {
    size_t total = 0;
    for (long i = 0; iov && i < cnt && i < 1024; ++i) {
        struct iovec v;
        if (!rt_read_user(&v, iov + i, sizeof v)) break;
        total += v.iov_len;
    }
    return total;
}

void add_self_mem_write(PinSet& ps, int fd, long long off, size_t len) {
    if (!rt_is_self_mem_fd(fd)) return;
    uintptr_t at = off == -1 ? rt_fd_position(fd) : (uintptr_t)off;
    ps.add((const void*)at, len);
}

}  // namespace dedup

namespace {

bool has_mode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

// The optional mode argument of an open whose last named parameter is
// flags (read only when flags say it was passed, as glibc does).
#define OPEN_MODE(flags)                                     \
    ({                                                       \
        mode_t mode_ = 0;                                    \
        if (has_mode(flags)) {                               \
            va_list ap_;                                     \
            va_start(ap_, flags);                            \
            mode_ = va_arg(ap_, mode_t);                     \
            va_end(ap_);                                     \
        }                                                    \
        mode_;                                               \
    })

int opened(int fd, const char* path, int flags) {
    if (fd >= 0) {
        int saved = errno;
        rt_note_open(fd, path, flags);
        errno = saved;
    }
    return fd;
}

}  // namespace

// ---- opening -------------------------------------------------------------------

NEXT(open, int, const char*, int, ...);
EXPORT int open(const char* path, int flags, ...) {
    mode_t mode = OPEN_MODE(flags);
    return opened(next_open.get()(path, flags, mode), path, flags);
}

NEXT(open64, int, const char*, int, ...);
EXPORT int open64(const char* path, int flags, ...) {
    mode_t mode = OPEN_MODE(flags);
    return opened(next_open64.get()(path, flags, mode), path, flags);
}

NEXT(openat, int, int, const char*, int, ...);
EXPORT int openat(int dirfd, const char* path, int flags, ...) {
    mode_t mode = OPEN_MODE(flags);
    return opened(next_openat.get()(dirfd, path, flags, mode), path, flags);
}

NEXT(openat64, int, int, const char*, int, ...);
EXPORT int openat64(int dirfd, const char* path, int flags, ...) {
    mode_t mode = OPEN_MODE(flags);
    return opened(next_openat64.get()(dirfd, path, flags, mode), path, flags);
}

// _FORTIFY_SOURCE builds call these.
NEXT(__open_2, int, const char*, int);
EXPORT int __open_2(const char* path, int flags) { return opened(next___open_2.get()(path, flags), path, flags); }

NEXT(__open64_2, int, const char*, int);
EXPORT int __open64_2(const char* path, int flags) { return opened(next___open64_2.get()(path, flags), path, flags); }

NEXT(__openat_2, int, int, const char*, int);
EXPORT int __openat_2(int dirfd, const char* path, int flags) {
    return opened(next___openat_2.get()(dirfd, path, flags), path, flags);
}

NEXT(__openat64_2, int, int, const char*, int);
EXPORT int __openat64_2(int dirfd, const char* path, int flags) {
    return opened(next___openat64_2.get()(dirfd, path, flags), path, flags);
}

// ---- writing -------------------------------------------------------------------

NEXT(write, ssize_t, int, const void*, size_t);
EXPORT ssize_t write(int fd, const void* buf, size_t n) {
    if (!rt_is_self_mem_fd(fd)) return next_write.get()(fd, buf, n);
    PinSet ps;
    add_self_mem_write(ps, fd, -1, n);
    ps.pin();
    return next_write.get()(fd, buf, n);
}

NEXT(pwrite, ssize_t, int, const void*, size_t, off_t);
EXPORT ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
    if (!rt_is_self_mem_fd(fd)) return next_pwrite.get()(fd, buf, n, off);
    KernelWritePin pin((const void*)off, n);
    return next_pwrite.get()(fd, buf, n, off);
}

NEXT(pwrite64, ssize_t, int, const void*, size_t, off64_t);
EXPORT ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
    if (!rt_is_self_mem_fd(fd)) return next_pwrite64.get()(fd, buf, n, off);
    KernelWritePin pin((const void*)off, n);
    return next_pwrite64.get()(fd, buf, n, off);
}

NEXT(writev, ssize_t, int, const struct iovec*, int);
EXPORT ssize_t writev(int fd, const struct iovec* iov, int cnt) {
    if (!rt_is_self_mem_fd(fd)) return next_writev.get()(fd, iov, cnt);
    PinSet ps;
    add_self_mem_write(ps, fd, -1, iov_bytes(iov, cnt));
    ps.pin();
    return next_writev.get()(fd, iov, cnt);
}

NEXT(pwritev, ssize_t, int, const struct iovec*, int, off_t);
EXPORT ssize_t pwritev(int fd, const struct iovec* iov, int cnt, off_t off) {
    if (!rt_is_self_mem_fd(fd)) return next_pwritev.get()(fd, iov, cnt, off);
    KernelWritePin pin((const void*)off, iov_bytes(iov, cnt));
    return next_pwritev.get()(fd, iov, cnt, off);
}

NEXT(pwritev64, ssize_t, int, const struct iovec*, int, off64_t);
EXPORT ssize_t pwritev64(int fd, const struct iovec* iov, int cnt, off64_t off) {
    if (!rt_is_self_mem_fd(fd)) return next_pwritev64.get()(fd, iov, cnt, off);
    KernelWritePin pin((const void*)off, iov_bytes(iov, cnt));
    return next_pwritev64.get()(fd, iov, cnt, off);
}

NEXT(pwritev2, ssize_t, int, const struct iovec*, int, off_t, int);
EXPORT ssize_t pwritev2(int fd, const struct iovec* iov, int cnt, off_t off, int flags) {
    if (!rt_is_self_mem_fd(fd)) return next_pwritev2.get()(fd, iov, cnt, off, flags);
    PinSet ps;
    add_self_mem_write(ps, fd, off, iov_bytes(iov, cnt));
    ps.pin();
    return next_pwritev2.get()(fd, iov, cnt, off, flags);
}

NEXT(pwritev64v2, ssize_t, int, const struct iovec*, int, off64_t, int);
EXPORT ssize_t pwritev64v2(int fd, const struct iovec* iov, int cnt, off64_t off, int flags) {
    if (!rt_is_self_mem_fd(fd)) return next_pwritev64v2.get()(fd, iov, cnt, off, flags);
    PinSet ps;
    add_self_mem_write(ps, fd, off, iov_bytes(iov, cnt));
    ps.pin();
    return next_pwritev64v2.get()(fd, iov, cnt, off, flags);
}

// The remote ranges, whatever the pid: when it is ours (or one of our
// threads) they are our memory; when not, pinning the same numbers here
// only holds off merging there for the call.
NEXT(process_vm_writev, ssize_t, pid_t, const struct iovec*, unsigned long, const struct iovec*, unsigned long,
     unsigned long);
EXPORT ssize_t process_vm_writev(pid_t pid, const struct iovec* local, unsigned long ln, const struct iovec* remote,
                                 unsigned long rn, unsigned long flags) {
    PinSet ps;
    ps.add(remote, (long)rn);
    ps.pin();
    return next_process_vm_writev.get()(pid, local, ln, remote, rn, flags);
}
