// Waiting: for children (the status and rusage written back), for events
// (the descriptor arrays and sets written back), for signals (the siginfo)
// and for time (the time left). The kernel writes these before the call
// returns, maybe long after it started: each wrapper pins them for the call,
// as reads.cpp explains.
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/span.h"

using dedup::KernelWritePin;
using dedup::NextSymbol;
using dedup::PinSet;

#define NEXT(name, ret, ...) static NextSymbol<ret (*)(__VA_ARGS__)> next_##name(#name)

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
