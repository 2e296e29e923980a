// Sockets, pipes and message queues: the calls that write a message, an
// address or a pair of descriptors into the caller's memory before they
// return. Each wrapper pins those buffers for the call, as reads.cpp
// explains (a write-protected page would make the call fail with EFAULT).
#include <mqueue.h>
#include <sys/msg.h>
#include <sys/socket.h>
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

NEXT(recv, ssize_t, int, void*, size_t, int);
EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    KernelWritePin pin(buf, n);
    return next_recv.get()(fd, buf, n, flags);
}

NEXT(recvfrom, ssize_t, int, void*, size_t, int, struct sockaddr*, socklen_t*);
EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    ps.add(buf, n);
    ps.add_sockaddr(addr, alen);
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

// _FORTIFY_SOURCE builds call these, which reach recv/recvfrom inside libc
// without going through the symbols above.
using RecvChk = ssize_t (*)(int, void*, size_t, size_t, int);
using RecvfromChk = ssize_t (*)(int, void*, size_t, size_t, int, struct sockaddr*, socklen_t*);
static NextSymbol<RecvChk> next_recv_chk("__recv_chk");
static NextSymbol<RecvfromChk> next_recvfrom_chk("__recvfrom_chk");

EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    KernelWritePin pin(buf, n);
    return next_recv_chk.get()(fd, buf, n, buflen, flags);
}
EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, struct sockaddr* addr,
                              socklen_t* alen) {
    PinSet ps;
    ps.add(buf, n);
    ps.add_sockaddr(addr, alen);
    ps.pin();
    return next_recvfrom_chk.get()(fd, buf, n, buflen, flags, addr, alen);
}

NEXT(accept, int, int, struct sockaddr*, socklen_t*);
EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    ps.add_sockaddr(addr, alen);
    ps.pin();
    return next_accept.get()(fd, addr, alen);
}

NEXT(accept4, int, int, struct sockaddr*, socklen_t*, int);
EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* alen, int flags) {
    PinSet ps;
    ps.add_sockaddr(addr, alen);
    ps.pin();
    return next_accept4.get()(fd, addr, alen, flags);
}

NEXT(getsockname, int, int, struct sockaddr*, socklen_t*);
EXPORT int getsockname(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    ps.add_sockaddr(addr, alen);
    ps.pin();
    return next_getsockname.get()(fd, addr, alen);
}

NEXT(getpeername, int, int, struct sockaddr*, socklen_t*);
EXPORT int getpeername(int fd, struct sockaddr* addr, socklen_t* alen) {
    PinSet ps;
    ps.add_sockaddr(addr, alen);
    ps.pin();
    return next_getpeername.get()(fd, addr, alen);
}

NEXT(getsockopt, int, int, int, int, void*, socklen_t*);
EXPORT int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
    PinSet ps;
    ps.add_sockaddr(val, len);
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

// ---- message queues -------------------------------------------------------------------

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
