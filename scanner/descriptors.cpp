// The shim's own file descriptors, as the fd layer of the shim asks about
// them: its kept files (os/kept_file.h) and the DEDUP_LOG file.
#include <errno.h>
#include <fcntl.h>

#include "scanner/lifecycle.h"
#include "scanner/log.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"
#include "scanner/state.h"

namespace dedup {

bool rt_owns_fd(int fd) {
    if (fd < 0 || !runtime_initialised()) return false;
    for (KeptFile* f : kept_files().all())
        if (fd == f->fd()) return true;
    int dom[3];
    int n = state().domain.fds(dom);
    for (int i = 0; i < n; ++i)
        if (fd == dom[i]) return true;
    return fd == log_file_fd();
}

int rt_fds(int out[kMaxShimFds]) {
    if (!runtime_initialised()) return 0;
    int n = 0;
    for (KeptFile* f : kept_files().all())
        if (f->fd() >= 0) out[n++] = f->fd();
    if (log_file_fd() >= 0) out[n++] = log_file_fd();
    n += state().domain.fds(out + n);
    for (int i = 1; i < n; ++i)
        for (int j = i; j > 0 && out[j - 1] > out[j]; --j) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

void rt_vacate_fd(int fd) {
    if (!rt_owns_fd(fd)) return;
    MmLockGuard g(state().lock);
    for (KeptFile* f : kept_files().all()) {
        if (fd == f->fd()) {  // reopened on demand
            f->close();
            return;
        }
    }
    state().domain.vacate_fd(fd);
    if (fd != log_file_fd()) return;
    long nfd = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
    if (!sys::failed(nfd)) nfd = park_fd((int)nfd);
    if (!sys::failed(nfd)) {
        log_set_file_fd((int)nfd);
        log_set_fd((int)nfd);
    } else {
        log_set_fd(-1);
    }
    sys::close(fd);
}

long rt_close(int fd) {
    if (rt_owns_fd(fd)) return -EBADF;
    return sys::close(fd);
}

long rt_dup3(int oldfd, int newfd, int flags) {
    if (rt_owns_fd(oldfd)) return -EBADF;
    if (oldfd != newfd) rt_vacate_fd(newfd);
    if (flags >= 0) return sys::call(SYS_dup3, oldfd, newfd, flags);
    if (oldfd == newfd) {  // dup2(fd, fd) checks that fd is valid
        long r = sys::call(SYS_fcntl, oldfd, F_GETFD);
        return r < 0 ? r : newfd;
    }
    return sys::call(SYS_dup2, oldfd, newfd);
}

long rt_close_range(unsigned first, unsigned last, int flags) {
    // Close everything asked for except the shim's descriptors.
    int ours[kMaxShimFds];
    int n = rt_fds(ours);
    unsigned lo = first;
    for (int i = 0; i < n; ++i) {
        unsigned fd = (unsigned)ours[i];
        if (fd < lo || fd > last) continue;
        if (fd > lo) {
            long r = sys::call(SYS_close_range, lo, fd - 1, flags);
            if (r < 0) return r;
        }
        lo = fd + 1;
        if (lo == 0) return 0;  // wrapped
    }
    if (lo > last) return 0;
    return sys::call(SYS_close_range, lo, last, flags);
}

}  // namespace dedup
