// Reads: the calls through which the kernel (or glibc's stdio) copies data
// into the caller's buffer before it returns, from a descriptor, a pipe
// (vmsplice) or a process (process_vm_readv). Each wrapper pins the buffer for
// the duration of the call, so the scanner never write-protects it meanwhile
// (a write-protected page would make the call fail with EFAULT; see
// scanner/write_window.h). The real libc function is called, so cancellation
// points and errno are unchanged. The other calls that write into a buffer
// before returning are in ipc.cpp, waits.cpp, file_status.cpp, queries.cpp
// (and fds.cpp for the fstat family); calls whose writes outlive the call
// (io_uring, AIO, registered memory) are in io_uring.cpp, aio.cpp, ioctl.cpp.
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/span.h"

using dedup::KernelWritePin;
using dedup::NextSymbol;
using dedup::PinSet;
using dedup::Span;

#define NEXT(name, ret, ...) static NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

NEXT(read, ssize_t, int, void*, size_t);
EXPORT ssize_t read(int fd, void* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_read.get()(fd, buf, n);
}

NEXT(pread, ssize_t, int, void*, size_t, off_t);
EXPORT ssize_t pread(int fd, void* buf, size_t n, off_t off) {
    KernelWritePin pin(buf, n);
    return next_pread.get()(fd, buf, n, off);
}

NEXT(pread64, ssize_t, int, void*, size_t, off64_t);
EXPORT ssize_t pread64(int fd, void* buf, size_t n, off64_t off) {
    KernelWritePin pin(buf, n);
    return next_pread64.get()(fd, buf, n, off);
}

NEXT(readv, ssize_t, int, const struct iovec*, int);
EXPORT ssize_t readv(int fd, const struct iovec* iov, int cnt) {
    Span sp;
    sp.add(iov, cnt);
    KernelWritePin pin(sp.start(), sp.len());
    return next_readv.get()(fd, iov, cnt);
}

NEXT(preadv, ssize_t, int, const struct iovec*, int, off_t);
EXPORT ssize_t preadv(int fd, const struct iovec* iov, int cnt, off_t off) {
    Span sp;
    sp.add(iov, cnt);
    KernelWritePin pin(sp.start(), sp.len());
    return next_preadv.get()(fd, iov, cnt, off);
}

NEXT(preadv64, ssize_t, int, const struct iovec*, int, off64_t);
EXPORT ssize_t preadv64(int fd, const struct iovec* iov, int cnt, off64_t off) {
    Span sp;
    sp.add(iov, cnt);
    KernelWritePin pin(sp.start(), sp.len());
    return next_preadv64.get()(fd, iov, cnt, off);
}

NEXT(preadv2, ssize_t, int, const struct iovec*, int, off_t, int);
EXPORT ssize_t preadv2(int fd, const struct iovec* iov, int cnt, off_t off, int flags) {
    Span sp;
    sp.add(iov, cnt);
    KernelWritePin pin(sp.start(), sp.len());
    return next_preadv2.get()(fd, iov, cnt, off, flags);
}

NEXT(preadv64v2, ssize_t, int, const struct iovec*, int, off64_t, int);
EXPORT ssize_t preadv64v2(int fd, const struct iovec* iov, int cnt, off64_t off, int flags) {
    Span sp;
    sp.add(iov, cnt);
    KernelWritePin pin(sp.start(), sp.len());
    return next_preadv64v2.get()(fd, iov, cnt, off, flags);
}

NEXT(getdents64, ssize_t, int, void*, size_t);
EXPORT ssize_t getdents64(int fd, void* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_getdents64.get()(fd, buf, n);
}

NEXT(getrandom, ssize_t, void*, size_t, unsigned);
EXPORT ssize_t getrandom(void* buf, size_t n, unsigned flags) {
    KernelWritePin pin(buf, n);
    return next_getrandom.get()(buf, n, flags);
}

// _FORTIFY_SOURCE builds call these, which reach read/pread inside libc
// without going through the symbols above (recv's: ipc.cpp).
using ReadChk = ssize_t (*)(int, void*, size_t, size_t);
using PreadChk = ssize_t (*)(int, void*, size_t, off_t, size_t);
static NextSymbol<ReadChk> next_read_chk("__read_chk");
static NextSymbol<PreadChk> next_pread_chk("__pread_chk");
static NextSymbol<PreadChk> next_pread64_chk("__pread64_chk");

EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next_read_chk.get()(fd, buf, n, buflen);
}
EXPORT ssize_t __pread_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next_pread_chk.get()(fd, buf, n, off, buflen);
}
EXPORT ssize_t __pread64_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next_pread64_chk.get()(fd, buf, n, off, buflen);
}

// stdio reads a large request straight into the caller's buffer with
// glibc's internal read, which the read wrapper above never sees.
static size_t fread_bytes(const void* buf, size_t size, size_t nmemb) {
    size_t n, room = UINTPTR_MAX - (uintptr_t)buf;
    if (__builtin_mul_overflow(size, nmemb, &n) || n > room) n = room;
    return n;
}

NEXT(fread, size_t, void*, size_t, size_t, FILE*);
EXPORT size_t fread(void* buf, size_t size, size_t nmemb, FILE* f) {
    KernelWritePin pin(buf, fread_bytes(buf, size, nmemb));
    return next_fread.get()(buf, size, nmemb, f);
}

NEXT(fread_unlocked, size_t, void*, size_t, size_t, FILE*);
EXPORT size_t fread_unlocked(void* buf, size_t size, size_t nmemb, FILE* f) {
    KernelWritePin pin(buf, fread_bytes(buf, size, nmemb));
    return next_fread_unlocked.get()(buf, size, nmemb, f);
}

NEXT(_IO_fread, size_t, void*, size_t, size_t, FILE*);
EXPORT size_t _IO_fread(void* buf, size_t size, size_t nmemb, FILE* f) {
    KernelWritePin pin(buf, fread_bytes(buf, size, nmemb));
    return next__IO_fread.get()(buf, size, nmemb, f);
}

using FreadChk = size_t (*)(void*, size_t, size_t, size_t, FILE*);
static NextSymbol<FreadChk> next_fread_chk("__fread_chk");
static NextSymbol<FreadChk> next_fread_unlocked_chk("__fread_unlocked_chk");

EXPORT size_t __fread_chk(void* buf, size_t buflen, size_t size, size_t nmemb, FILE* f) {
    KernelWritePin pin(buf, fread_bytes(buf, size, nmemb));
    return next_fread_chk.get()(buf, buflen, size, nmemb, f);
}
EXPORT size_t __fread_unlocked_chk(void* buf, size_t buflen, size_t size, size_t nmemb, FILE* f) {
    KernelWritePin pin(buf, fread_bytes(buf, size, nmemb));
    return next_fread_unlocked_chk.get()(buf, buflen, size, nmemb, f);
}

// ---- copies into memory: from a pipe, from a process (ours, maybe) ----------------

NEXT(vmsplice, ssize_t, int, const struct iovec*, size_t, unsigned);
EXPORT ssize_t vmsplice(int fd, const struct iovec* iov, size_t n, unsigned flags) {
    PinSet ps;  // written when fd is a pipe's read end
    ps.add(iov, (long)n);
    ps.pin();
    return next_vmsplice.get()(fd, iov, n, flags);
}

NEXT(process_vm_readv, ssize_t, pid_t, const struct iovec*, unsigned long, const struct iovec*, unsigned long,
     unsigned long);
EXPORT ssize_t process_vm_readv(pid_t pid, const struct iovec* local, unsigned long ln, const struct iovec* remote,
                                unsigned long rn, unsigned long flags) {
    PinSet ps;
    ps.add(local, (long)ln);
    ps.pin();
    return next_process_vm_readv.get()(pid, local, ln, remote, rn, flags);
}
