// Wrappers for the system calls through which the kernel writes into a user
// buffer. Each pins the buffer for the duration of the call, so the scanner
// never write-protects it meanwhile (a write-protected page would make the
// call fail with EFAULT; see scanner/kernel_write_guard.h). The real libc
// function is called, so cancellation points and errno are unchanged.
#include <dirent.h>
#include <stdio.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "shim/export.h"
#include "scanner/runtime.h"
#include "shim/hook.h"
#include "shim/span.h"


using dedup::KernelWritePin;
using dedup::NextSymbol;
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

NEXT(recv, ssize_t, int, void*, size_t, int);
EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    KernelWritePin pin(buf, n);
    return next_recv.get()(fd, buf, n, flags);
}

NEXT(recvfrom, ssize_t, int, void*, size_t, int, struct sockaddr*, socklen_t*);
EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    Span sp;
    sp.add(buf, n);
    if (addr && alen) sp.add(addr, *alen);
    KernelWritePin pin(sp.start(), sp.len());
    return next_recvfrom.get()(fd, buf, n, flags, addr, alen);
}

NEXT(recvmsg, ssize_t, int, struct msghdr*, int);
EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
    Span sp;
    sp.add(msg);
    KernelWritePin pin(sp.start(), sp.len());
    return next_recvmsg.get()(fd, msg, flags);
}

NEXT(recvmmsg, int, int, struct mmsghdr*, unsigned, int, struct timespec*);
EXPORT int recvmmsg(int fd, struct mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout) {
    Span sp;
    for (unsigned i = 0; vec && i < vlen && i < 1024; ++i) sp.add(&vec[i].msg_hdr);
    KernelWritePin pin(sp.start(), sp.len());
    return next_recvmmsg.get()(fd, vec, vlen, flags, timeout);
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

// _FORTIFY_SOURCE builds call these, which reach read/pread/recv inside libc
// without going through the symbols above.
using ReadChk = ssize_t (*)(int, void*, size_t, size_t);
using PreadChk = ssize_t (*)(int, void*, size_t, off_t, size_t);
using RecvChk = ssize_t (*)(int, void*, size_t, size_t, int);
using RecvfromChk = ssize_t (*)(int, void*, size_t, size_t, int, struct sockaddr*, socklen_t*);
static NextSymbol<ReadChk> next_read_chk("__read_chk");
static NextSymbol<PreadChk> next_pread_chk("__pread_chk");
static NextSymbol<PreadChk> next_pread64_chk("__pread64_chk");
static NextSymbol<RecvChk> next_recv_chk("__recv_chk");
static NextSymbol<RecvfromChk> next_recvfrom_chk("__recvfrom_chk");

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
EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    KernelWritePin pin(buf, n);
    return next_recv_chk.get()(fd, buf, n, buflen, flags);
}
EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, struct sockaddr* addr,
                              socklen_t* alen) {
    KernelWritePin pin(buf, n);
    return next_recvfrom_chk.get()(fd, buf, n, buflen, flags, addr, alen);
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
