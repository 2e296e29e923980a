// The shim's own file descriptors (the canonical memfd, /proc/self/pagemap,
// a DEDUP_LOG file) are invisible to the application: every call that names
// one of them behaves as if the number were not open (EBADF), closing
// everything skips them, and dup2/dup3 onto one of them first moves ours
// out of the way. A program that probes its descriptors with fstat or fcntl
// (daemons, Python's subprocess tests) sees exactly the set it opened.
// /proc/self/fd still lists them: see README, limitations.
//
// The runtime also follows which descriptors are rings (io_uring) or open on
// this process's memory (/proc/self/mem): closing and duplicating tell it
// (rt_note_closed, rt_note_dup). The fstat family pins the buffer it fills
// (file_status.cpp has the rest of that family).
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim/export.h"
#include "scanner/runtime.h"
#include "shim/hook.h"


namespace {

using namespace dedup;


int not_open() {
    errno = EBADF;
    return -1;
}

// fstatat/statx name the descriptor itself only with an empty path.
bool names_fd_itself(const char* path, int flags) {
    return (flags & AT_EMPTY_PATH) && path && path[0] == '\0';
}

using FstatFn = int (*)(int, struct stat*);
using Fstat64Fn = int (*)(int, struct stat64*);
using FstatatFn = int (*)(int, const char*, struct stat*, int);
using Fstatat64Fn = int (*)(int, const char*, struct stat64*, int);
using FxstatFn = int (*)(int, int, struct stat*);
using Fxstat64Fn = int (*)(int, int, struct stat64*);
using StatxFn = int (*)(int, const char*, int, unsigned, struct statx*);
using FcntlFn = int (*)(int, int, ...);
using LseekFn = off_t (*)(int, off_t, int);
using Lseek64Fn = off64_t (*)(int, off64_t, int);
using DupFn = int (*)(int);

NextSymbol<FstatFn> next_fstat("fstat");
NextSymbol<Fstat64Fn> next_fstat64("fstat64");
NextSymbol<FstatatFn> next_fstatat("fstatat");
NextSymbol<Fstatat64Fn> next_fstatat64("fstatat64");
NextSymbol<FxstatFn> next_fxstat("__fxstat");
NextSymbol<Fxstat64Fn> next_fxstat64("__fxstat64");
NextSymbol<StatxFn> next_statx("statx");
NextSymbol<FcntlFn> next_fcntl("fcntl"), next_fcntl64("fcntl64");
NextSymbol<LseekFn> next_lseek("lseek");
NextSymbol<Lseek64Fn> next_lseek64("lseek64");
NextSymbol<DupFn> next_dup("dup");

// fcntl's third argument is an int or a pointer: passing it on as a long
// (the register it arrived in) is what glibc itself does.
int forward_fcntl(NextSymbol<FcntlFn>& next, int fd, int cmd, va_list ap) {
    if (rt_owns_fd(fd)) return not_open();
    long arg = va_arg(ap, long);
    int r = next.get()(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) rt_note_dup(fd, r);
    return r;
}

// A result, with the runtime told that [first, last] are closed; errno as
// the call left it.
long closed(long r, unsigned first, unsigned last) {
    int saved = errno;
    rt_note_closed(first, last);
    errno = saved;
    return r;
}

}  // namespace

// ---- closing and duplicating ----------------------------------------------

EXPORT int close(int fd) {
    long r = rt_close(fd);
    if (fd >= 0) closed(0, (unsigned)fd, (unsigned)fd);  // closed even on EINTR
    return (int)set_errno(r);
}

EXPORT int dup(int fd) {
    if (rt_owns_fd(fd)) return not_open();
    int r = next_dup.get()(fd);
    if (r >= 0) {
        int saved = errno;
        rt_note_dup(fd, r);
        errno = saved;
    }
    return r;
}

EXPORT int dup2(int oldfd, int newfd) {
    long r = rt_dup3(oldfd, newfd, -1);
    if (r >= 0) rt_note_dup(oldfd, (int)r);
    return (int)set_errno(r);
}
EXPORT int dup3(int oldfd, int newfd, int flags) {
    long r = rt_dup3(oldfd, newfd, flags);
    if (r >= 0) rt_note_dup(oldfd, (int)r);
    return (int)set_errno(r);
}

EXPORT int close_range(unsigned first, unsigned last, int flags) {
    long r = rt_close_range(first, last, flags);
    if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC)) closed(0, first, last);
    return (int)set_errno(r);
}

EXPORT void closefrom(int lowfd) {
    int saved = errno;
    unsigned first = lowfd < 0 ? 0 : (unsigned)lowfd;
    rt_close_range(first, ~0u, 0);
    rt_note_closed(first, ~0u);
    errno = saved;
}

// ---- probing ---------------------------------------------------------------

EXPORT int fstat(int fd, struct stat* st) {
    if (rt_owns_fd(fd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fstat.get()(fd, st);
}

EXPORT int fstat64(int fd, struct stat64* st) {
    if (rt_owns_fd(fd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fstat64.get()(fd, st);
}

EXPORT int __fxstat(int ver, int fd, struct stat* st) {
    if (rt_owns_fd(fd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fxstat.get()(ver, fd, st);
}

EXPORT int __fxstat64(int ver, int fd, struct stat64* st) {
    if (rt_owns_fd(fd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fxstat64.get()(ver, fd, st);
}

EXPORT int fstatat(int dirfd, const char* path, struct stat* st, int flags) {
    if (names_fd_itself(path, flags) && rt_owns_fd(dirfd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fstatat.get()(dirfd, path, st, flags);
}

EXPORT int fstatat64(int dirfd, const char* path, struct stat64* st, int flags) {
    if (names_fd_itself(path, flags) && rt_owns_fd(dirfd)) return not_open();
    KernelWritePin pin(st, sizeof *st);
    return next_fstatat64.get()(dirfd, path, st, flags);
}

EXPORT int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out) {
    if (names_fd_itself(path, flags) && rt_owns_fd(dirfd)) return not_open();
    KernelWritePin pin(out, sizeof *out);
    return next_statx.get()(dirfd, path, flags, mask, out);
}

EXPORT int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    int r = forward_fcntl(next_fcntl, fd, cmd, ap);
    va_end(ap);
    return r;
}

EXPORT int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    int r = forward_fcntl(next_fcntl64, fd, cmd, ap);
    va_end(ap);
    return r;
}

EXPORT off_t lseek(int fd, off_t off, int whence) {
    if (rt_owns_fd(fd)) return not_open();
    return next_lseek.get()(fd, off, whence);
}

EXPORT off64_t lseek64(int fd, off64_t off, int whence) {
    if (rt_owns_fd(fd)) return not_open();
    return next_lseek64.get()(fd, off, whence);
}
