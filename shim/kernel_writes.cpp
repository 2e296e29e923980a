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


using dedup::KernelWritePin;
using dedup::NextSymbol;

namespace {

// One range covering every iovec (an over-approximation is safe: the
// scanner merely skips more pages while the call runs).
struct Span {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    void add(const void* p, size_t n) {
        if (!p || !n) return;
        uintptr_t s = (uintptr_t)p;
        if (s < lo) lo = s;
        if (s + n > hi) hi = s + n;
    }
    void add(const struct iovec* iov, long cnt) {
        if (!iov || cnt <= 0 || cnt > 1024) return;
        for (long i = 0; i < cnt; ++i) add(iov[i].iov_base, iov[i].iov_len);
    }
    void add(const struct msghdr* m) {
        if (!m) return;
        add(m->msg_iov, (long)m->msg_iovlen);
        add(m->msg_control, m->msg_controllen);
        add(m->msg_name, m->msg_namelen);
    }
    const void* start() const { return hi ? (const void*)lo : nullptr; }
    size_t len() const { return hi ? hi - lo : 0; }
};

}  // namespace

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

// syscall(2): programs (and libraries such as liburing's helpers) reach the
// same calls through glibc's generic wrapper, which none of the symbols above
// see. The calls that write into a buffer are pinned like their wrappers;
// every other number goes to glibc's syscall() unchanged. A raw `syscall`
// instruction in the program itself, ioctl and io_uring's asynchronous
// completions stay out of reach (docs/DESIGN.md, "Kernel writes").
namespace {
Span kernel_write_span(long nr, const long* a) {
    Span sp;
    switch (nr) {
        case SYS_read:
        case SYS_pread64:
        case SYS_getdents64:
#ifdef SYS_getdents
        case SYS_getdents:
#endif
            sp.add((const void*)a[1], (size_t)a[2]);
            break;
        case SYS_readv:
        case SYS_preadv:
        case SYS_preadv2:
            sp.add((const struct iovec*)a[1], a[2]);
            break;
        case SYS_recvfrom:
            sp.add((const void*)a[1], (size_t)a[2]);
            if (a[4] && a[5]) sp.add((const void*)a[4], *(const socklen_t*)a[5]);
            break;
        case SYS_recvmsg:
            sp.add((const struct msghdr*)a[1]);
            break;
        case SYS_recvmmsg: {
            const struct mmsghdr* vec = (const struct mmsghdr*)a[1];
            for (unsigned long i = 0; vec && i < (unsigned long)a[2] && i < 1024; ++i) sp.add(&vec[i].msg_hdr);
            break;
        }
        case SYS_getrandom:
            sp.add((const void*)a[0], (size_t)a[1]);
            break;
        default:
            break;
    }
    return sp;
}
}  // namespace

NEXT(syscall, long, long, long, long, long, long, long, long);
EXPORT long syscall(long nr, ...) {
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (long& v : a) v = va_arg(ap, long);  // as glibc's: six registers, used or not
    va_end(ap);
    Span sp = kernel_write_span(nr, a);
    if (!sp.len()) return next_syscall.get()(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    KernelWritePin pin(sp.start(), sp.len());
    return next_syscall.get()(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
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
