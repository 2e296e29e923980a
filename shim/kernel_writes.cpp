// Wrappers for the system calls through which the kernel writes into a user
// buffer before it returns. Each pins the buffers for the duration of the
// call, so the scanner never write-protects them meanwhile (a write-protected
// page would make the call fail with EFAULT; see scanner/write_window.h).
// The real libc function is called, so cancellation points and errno are
// unchanged. Calls whose writes outlive the call (io_uring, AIO, registered
// memory) are in io_uring.cpp, aio.cpp and ioctl.cpp; the fstat family with
// the descriptor checks in fds.cpp.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <mqueue.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/msg.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "shim/export.h"
#include "scanner/runtime.h"
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

NEXT(recv, ssize_t, int, void*, size_t, int);
EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    KernelWritePin pin(buf, n);
    return next_recv.get()(fd, buf, n, flags);
}

namespace {
// A sockaddr and its length, written back (the length read without faulting:
// a bad pointer is the kernel's EFAULT to report, not a crash in the shim).
void add_sockaddr(PinSet& ps, const void* addr, const socklen_t* alen) {
    socklen_t n = 0;
    if (addr && alen && dedup::rt_read_user(&n, alen, sizeof n)) ps.add(addr, n);
    ps.add(alen, sizeof *alen);
}
}  // namespace

NEXT(recvfrom, ssize_t, int, void*, size_t, int, struct sockaddr*, socklen_t*);
EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    ps.add(buf, n);
    add_sockaddr(ps, addr, alen);
    ps.pin();
    return next_recvfrom.get()(fd, buf, n, flags, addr, alen);
}

NEXT(recvmsg, ssize_t, int, struct msghdr*, int);
EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
    PinSet ps;
    ps.add(msg);
    ps.pin();
    return next_recvmsg.get()(fd, msg, flags);
}

NEXT(recvmmsg, int, int, struct mmsghdr*, unsigned, int, struct timespec*);
EXPORT int recvmmsg(int fd, struct mmsghdr* vec, unsigned vlen, int flags, struct timespec* timeout) {
    PinSet ps;
    if (vec && vlen) ps.add(vec, (size_t)(vlen < 1024 ? vlen : 1024) * sizeof *vec);  // msg_len, headers
    Span bufs;
    for (unsigned i = 0; vec && i < vlen && i < 1024; ++i) bufs.add(&vec[i].msg_hdr);
    ps.add(bufs);
    ps.pin();
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
    PinSet ps;
    ps.add(buf, n);
    add_sockaddr(ps, addr, alen);
    ps.pin();
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

// ---- waiting for children ----------------------------------------------------

NEXT(wait, pid_t, int*);
EXPORT pid_t wait(int* status) {
    KernelWritePin pin(status, sizeof *status);
    return next_wait.get()(status);
}

NEXT(waitpid, pid_t, pid_t, int*, int);
EXPORT pid_t waitpid(pid_t pid, int* status, int options) {
    KernelWritePin pin(status, sizeof *status);
    return next_waitpid.get()(pid, status, options);
}

NEXT(wait3, pid_t, int*, int, struct rusage*);
EXPORT pid_t wait3(int* status, int options, struct rusage* ru) {
    PinSet ps;
    ps.add(status, sizeof *status);
    ps.add(ru, sizeof *ru);
    ps.pin();
    return next_wait3.get()(status, options, ru);
}

NEXT(wait4, pid_t, pid_t, int*, int, struct rusage*);
EXPORT pid_t wait4(pid_t pid, int* status, int options, struct rusage* ru) {
    PinSet ps;
    ps.add(status, sizeof *status);
    ps.add(ru, sizeof *ru);
    ps.pin();
    return next_wait4.get()(pid, status, options, ru);
}

NEXT(waitid, int, idtype_t, id_t, siginfo_t*, int);
EXPORT int waitid(idtype_t type, id_t id, siginfo_t* info, int options) {
    KernelWritePin pin(info, sizeof *info);
    return next_waitid.get()(type, id, info, options);
}

// ---- file status by path (by descriptor: fds.cpp) ------------------------------

NEXT(stat, int, const char*, struct stat*);
EXPORT int stat(const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_stat.get()(path, st);
}

NEXT(stat64, int, const char*, struct stat64*);
EXPORT int stat64(const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_stat64.get()(path, st);
}

NEXT(lstat, int, const char*, struct stat*);
EXPORT int lstat(const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_lstat.get()(path, st);
}

NEXT(lstat64, int, const char*, struct stat64*);
EXPORT int lstat64(const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_lstat64.get()(path, st);
}

// glibc before 2.33 compiled calls to these.
NEXT(__xstat, int, int, const char*, struct stat*);
EXPORT int __xstat(int ver, const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___xstat.get()(ver, path, st);
}

NEXT(__xstat64, int, int, const char*, struct stat64*);
EXPORT int __xstat64(int ver, const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___xstat64.get()(ver, path, st);
}

NEXT(__lxstat, int, int, const char*, struct stat*);
EXPORT int __lxstat(int ver, const char* path, struct stat* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___lxstat.get()(ver, path, st);
}

NEXT(__lxstat64, int, int, const char*, struct stat64*);
EXPORT int __lxstat64(int ver, const char* path, struct stat64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next___lxstat64.get()(ver, path, st);
}

NEXT(__fxstatat, int, int, int, const char*, struct stat*, int);
EXPORT int __fxstatat(int ver, int dirfd, const char* path, struct stat* st, int flags) {
    KernelWritePin pin(st, sizeof *st);
    return next___fxstatat.get()(ver, dirfd, path, st, flags);
}

NEXT(__fxstatat64, int, int, int, const char*, struct stat64*, int);
EXPORT int __fxstatat64(int ver, int dirfd, const char* path, struct stat64* st, int flags) {
    KernelWritePin pin(st, sizeof *st);
    return next___fxstatat64.get()(ver, dirfd, path, st, flags);
}

NEXT(statfs, int, const char*, struct statfs*);
EXPORT int statfs(const char* path, struct statfs* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_statfs.get()(path, st);
}

NEXT(statfs64, int, const char*, struct statfs64*);
EXPORT int statfs64(const char* path, struct statfs64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_statfs64.get()(path, st);
}

NEXT(fstatfs, int, int, struct statfs*);
EXPORT int fstatfs(int fd, struct statfs* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_fstatfs.get()(fd, st);
}

NEXT(fstatfs64, int, int, struct statfs64*);
EXPORT int fstatfs64(int fd, struct statfs64* st) {
    KernelWritePin pin(st, sizeof *st);
    return next_fstatfs64.get()(fd, st);
}

// ---- waiting for events: the descriptor sets and arrays are written back --------

NEXT(poll, int, struct pollfd*, nfds_t, int);
EXPORT int poll(struct pollfd* fds, nfds_t n, int timeout) {
    KernelWritePin pin(fds, n * sizeof *fds);
    return next_poll.get()(fds, n, timeout);
}

NEXT(__poll_chk, int, struct pollfd*, nfds_t, int, size_t);
EXPORT int __poll_chk(struct pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
    KernelWritePin pin(fds, n * sizeof *fds);
    return next___poll_chk.get()(fds, n, timeout, fdslen);
}

NEXT(ppoll, int, struct pollfd*, nfds_t, const struct timespec*, const sigset_t*);
EXPORT int ppoll(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask) {
    KernelWritePin pin(fds, n * sizeof *fds);
    return next_ppoll.get()(fds, n, ts, mask);
}

NEXT(__ppoll_chk, int, struct pollfd*, nfds_t, const struct timespec*, const sigset_t*, size_t);
EXPORT int __ppoll_chk(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask, size_t fdslen) {
    KernelWritePin pin(fds, n * sizeof *fds);
    return next___ppoll_chk.get()(fds, n, ts, mask, fdslen);
}

namespace {
// The bytes of an fd_set the kernel writes back for nfds descriptors.
size_t fd_set_bytes(int nfds) { return nfds <= 0 ? 0 : ((size_t)nfds + 63) / 64 * 8; }
}  // namespace

NEXT(select, int, int, fd_set*, fd_set*, fd_set*, struct timeval*);
EXPORT int select(int nfds, fd_set* r, fd_set* w, fd_set* e, struct timeval* tv) {
    PinSet ps;
    ps.add(r, fd_set_bytes(nfds));
    ps.add(w, fd_set_bytes(nfds));
    ps.add(e, fd_set_bytes(nfds));
    ps.add(tv, sizeof *tv);  // Linux writes the time left back
    ps.pin();
    return next_select.get()(nfds, r, w, e, tv);
}

NEXT(pselect, int, int, fd_set*, fd_set*, fd_set*, const struct timespec*, const sigset_t*);
EXPORT int pselect(int nfds, fd_set* r, fd_set* w, fd_set* e, const struct timespec* ts, const sigset_t* mask) {
    PinSet ps;
    ps.add(r, fd_set_bytes(nfds));
    ps.add(w, fd_set_bytes(nfds));
    ps.add(e, fd_set_bytes(nfds));
    ps.pin();
    return next_pselect.get()(nfds, r, w, e, ts, mask);
}

NEXT(epoll_wait, int, int, struct epoll_event*, int, int);
EXPORT int epoll_wait(int epfd, struct epoll_event* ev, int max, int timeout) {
    KernelWritePin pin(ev, max > 0 ? (size_t)max * sizeof *ev : 0);
    return next_epoll_wait.get()(epfd, ev, max, timeout);
}

NEXT(epoll_pwait, int, int, struct epoll_event*, int, int, const sigset_t*);
EXPORT int epoll_pwait(int epfd, struct epoll_event* ev, int max, int timeout, const sigset_t* mask) {
    KernelWritePin pin(ev, max > 0 ? (size_t)max * sizeof *ev : 0);
    return next_epoll_pwait.get()(epfd, ev, max, timeout, mask);
}

NEXT(epoll_pwait2, int, int, struct epoll_event*, int, const struct timespec*, const sigset_t*);
EXPORT int epoll_pwait2(int epfd, struct epoll_event* ev, int max, const struct timespec* ts, const sigset_t* mask) {
    KernelWritePin pin(ev, max > 0 ? (size_t)max * sizeof *ev : 0);
    return next_epoll_pwait2.get()(epfd, ev, max, ts, mask);
}

NEXT(sigtimedwait, int, const sigset_t*, siginfo_t*, const struct timespec*);
EXPORT int sigtimedwait(const sigset_t* set, siginfo_t* info, const struct timespec* ts) {
    KernelWritePin pin(info, sizeof *info);
    return next_sigtimedwait.get()(set, info, ts);
}

NEXT(sigwaitinfo, int, const sigset_t*, siginfo_t*);
EXPORT int sigwaitinfo(const sigset_t* set, siginfo_t* info) {
    KernelWritePin pin(info, sizeof *info);
    return next_sigwaitinfo.get()(set, info);
}

NEXT(nanosleep, int, const struct timespec*, struct timespec*);
EXPORT int nanosleep(const struct timespec* req, struct timespec* rem) {
    KernelWritePin pin(rem, sizeof *rem);
    return next_nanosleep.get()(req, rem);
}

NEXT(clock_nanosleep, int, clockid_t, int, const struct timespec*, struct timespec*);
EXPORT int clock_nanosleep(clockid_t clk, int flags, const struct timespec* req, struct timespec* rem) {
    KernelWritePin pin(rem, sizeof *rem);
    return next_clock_nanosleep.get()(clk, flags, req, rem);
}

// ---- sockets and pipes -----------------------------------------------------------

NEXT(accept, int, int, struct sockaddr*, socklen_t*);
EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    add_sockaddr(ps, addr, alen);
    ps.pin();
    return next_accept.get()(fd, addr, alen);
}

NEXT(accept4, int, int, struct sockaddr*, socklen_t*, int);
EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* alen, int flags) {
    PinSet ps;
    add_sockaddr(ps, addr, alen);
    ps.pin();
    return next_accept4.get()(fd, addr, alen, flags);
}

NEXT(getsockname, int, int, struct sockaddr*, socklen_t*);
EXPORT int getsockname(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    add_sockaddr(ps, addr, alen);
    ps.pin();
    return next_getsockname.get()(fd, addr, alen);
}

NEXT(getpeername, int, int, struct sockaddr*, socklen_t*);
EXPORT int getpeername(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    add_sockaddr(ps, addr, alen);
    ps.pin();
    return next_getpeername.get()(fd, addr, alen);
}

NEXT(getsockopt, int, int, int, int, void*, socklen_t*);
EXPORT int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
    PinSet ps;
    add_sockaddr(ps, val, len);
    ps.pin();
    return next_getsockopt.get()(fd, level, name, val, len);
}

NEXT(socketpair, int, int, int, int, int*);
EXPORT int socketpair(int domain, int type, int proto, int sv[2]) {
    KernelWritePin pin(sv, 2 * sizeof(int));
    return next_socketpair.get()(domain, type, proto, sv);
}

NEXT(pipe, int, int*);
EXPORT int pipe(int fds[2]) {
    KernelWritePin pin(fds, 2 * sizeof(int));
    return next_pipe.get()(fds);
}

NEXT(pipe2, int, int*, int);
EXPORT int pipe2(int fds[2], int flags) {
    KernelWritePin pin(fds, 2 * sizeof(int));
    return next_pipe2.get()(fds, flags);
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

// ---- names, limits, attributes, messages -------------------------------------------

NEXT(readlink, ssize_t, const char*, char*, size_t);
EXPORT ssize_t readlink(const char* path, char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_readlink.get()(path, buf, n);
}

NEXT(readlinkat, ssize_t, int, const char*, char*, size_t);
EXPORT ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_readlinkat.get()(dirfd, path, buf, n);
}

NEXT(__readlink_chk, ssize_t, const char*, char*, size_t, size_t);
EXPORT ssize_t __readlink_chk(const char* path, char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___readlink_chk.get()(path, buf, n, buflen);
}

NEXT(__readlinkat_chk, ssize_t, int, const char*, char*, size_t, size_t);
EXPORT ssize_t __readlinkat_chk(int dirfd, const char* path, char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___readlinkat_chk.get()(dirfd, path, buf, n, buflen);
}

NEXT(getcwd, char*, char*, size_t);
EXPORT char* getcwd(char* buf, size_t n) {
    KernelWritePin pin(buf, n);
    return next_getcwd.get()(buf, n);
}

NEXT(__getcwd_chk, char*, char*, size_t, size_t);
EXPORT char* __getcwd_chk(char* buf, size_t n, size_t buflen) {
    KernelWritePin pin(buf, n);
    return next___getcwd_chk.get()(buf, n, buflen);
}

NEXT(uname, int, struct utsname*);
EXPORT int uname(struct utsname* u) {
    KernelWritePin pin(u, sizeof *u);
    return next_uname.get()(u);
}

NEXT(getrlimit, int, int, struct rlimit*);
EXPORT int getrlimit(__rlimit_resource_t res, struct rlimit* rl) {
    KernelWritePin pin(rl, sizeof *rl);
    return next_getrlimit.get()(res, rl);
}

NEXT(getrlimit64, int, int, struct rlimit64*);
EXPORT int getrlimit64(__rlimit_resource_t res, struct rlimit64* rl) {
    KernelWritePin pin(rl, sizeof *rl);
    return next_getrlimit64.get()(res, rl);
}

NEXT(prlimit, int, pid_t, int, const struct rlimit*, struct rlimit*);
EXPORT int prlimit(pid_t pid, __rlimit_resource res, const struct rlimit* nl, struct rlimit* old) {
    KernelWritePin pin(old, sizeof *old);
    return next_prlimit.get()(pid, res, nl, old);
}

NEXT(prlimit64, int, pid_t, int, const struct rlimit64*, struct rlimit64*);
EXPORT int prlimit64(pid_t pid, __rlimit_resource res, const struct rlimit64* nl, struct rlimit64* old) {
    KernelWritePin pin(old, sizeof *old);
    return next_prlimit64.get()(pid, res, nl, old);
}

NEXT(getrusage, int, int, struct rusage*);
EXPORT int getrusage(__rusage_who_t who, struct rusage* ru) {
    KernelWritePin pin(ru, sizeof *ru);
    return next_getrusage.get()(who, ru);
}

NEXT(sysinfo, int, struct sysinfo*);
EXPORT int sysinfo(struct sysinfo* info) {
    KernelWritePin pin(info, sizeof *info);
    return next_sysinfo.get()(info);
}

NEXT(sched_getaffinity, int, pid_t, size_t, cpu_set_t*);
EXPORT int sched_getaffinity(pid_t pid, size_t size, cpu_set_t* mask) {
    KernelWritePin pin(mask, size);
    return next_sched_getaffinity.get()(pid, size, mask);
}

NEXT(getgroups, int, int, gid_t*);
EXPORT int getgroups(int n, gid_t* list) {
    KernelWritePin pin(list, n > 0 ? (size_t)n * sizeof *list : 0);
    return next_getgroups.get()(n, list);
}

NEXT(__getgroups_chk, int, int, gid_t*, size_t);
EXPORT int __getgroups_chk(int n, gid_t* list, size_t listlen) {
    KernelWritePin pin(list, n > 0 ? (size_t)n * sizeof *list : 0);
    return next___getgroups_chk.get()(n, list, listlen);
}

NEXT(getxattr, ssize_t, const char*, const char*, void*, size_t);
EXPORT ssize_t getxattr(const char* path, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_getxattr.get()(path, name, val, n);
}

NEXT(lgetxattr, ssize_t, const char*, const char*, void*, size_t);
EXPORT ssize_t lgetxattr(const char* path, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_lgetxattr.get()(path, name, val, n);
}

NEXT(fgetxattr, ssize_t, int, const char*, void*, size_t);
EXPORT ssize_t fgetxattr(int fd, const char* name, void* val, size_t n) {
    KernelWritePin pin(val, n);
    return next_fgetxattr.get()(fd, name, val, n);
}

NEXT(listxattr, ssize_t, const char*, char*, size_t);
EXPORT ssize_t listxattr(const char* path, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_listxattr.get()(path, list, n);
}

NEXT(llistxattr, ssize_t, const char*, char*, size_t);
EXPORT ssize_t llistxattr(const char* path, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_llistxattr.get()(path, list, n);
}

NEXT(flistxattr, ssize_t, int, char*, size_t);
EXPORT ssize_t flistxattr(int fd, char* list, size_t n) {
    KernelWritePin pin(list, n);
    return next_flistxattr.get()(fd, list, n);
}

NEXT(msgrcv, ssize_t, int, void*, size_t, long, int);
EXPORT ssize_t msgrcv(int id, void* msg, size_t n, long type, int flags) {
    KernelWritePin pin(msg, msg ? sizeof(long) + n : 0);
    return next_msgrcv.get()(id, msg, n, type, flags);
}

NEXT(mq_receive, ssize_t, mqd_t, char*, size_t, unsigned*);
EXPORT ssize_t mq_receive(mqd_t q, char* buf, size_t n, unsigned* prio) {
    PinSet ps;
    ps.add(buf, n);
    ps.add(prio, sizeof *prio);
    ps.pin();
    return next_mq_receive.get()(q, buf, n, prio);
}

NEXT(mq_timedreceive, ssize_t, mqd_t, char*, size_t, unsigned*, const struct timespec*);
EXPORT ssize_t mq_timedreceive(mqd_t q, char* buf, size_t n, unsigned* prio, const struct timespec* ts) {
    PinSet ps;
    ps.add(buf, n);
    ps.add(prio, sizeof *prio);
    ps.pin();
    return next_mq_timedreceive.get()(q, buf, n, prio, ts);
}
