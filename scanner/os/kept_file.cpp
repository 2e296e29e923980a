#include "scanner/os/kept_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {
// Above this the kernel's descriptor table would cost more than the
// descriptor is worth (8 bytes per number up to the highest open one).
constexpr rlim_t kHighestParking = 4096;
}  // namespace

KeptFiles& kept_files() {
    static KeptFiles files;
    return files;
}

int park_fd(int fd) {
    struct rlimit rl;
    if (sys::failed(sys::call(SYS_getrlimit, RLIMIT_NOFILE, (long)&rl))) return fd;
    rlim_t soft = rl.rlim_cur;
    constexpr rlim_t kRoom = 8;  // for every kept file and the DEDUP_LOG file
    if (rl.rlim_max >= soft + kRoom && soft <= kHighestParking) {
        // Raise the soft limit for the one call that places it at the lowest
        // free number from `soft` up, then put it back.
        struct rlimit raised = {soft + kRoom, rl.rlim_max};
        if (!sys::failed(sys::call(SYS_setrlimit, RLIMIT_NOFILE, (long)&raised))) {
            long high = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, (long)soft);
            sys::call(SYS_setrlimit, RLIMIT_NOFILE, (long)&rl);
            if (!sys::failed(high)) {
                sys::close(fd);
                return (int)high;
            }
        }
    }
    // Below a small hard limit every descriptor counts: say so, once.
    static std::atomic<bool> said{false};
    if (soft <= 256 && !said.exchange(true))
        log_warning("RLIMIT_NOFILE is %llu and cannot be raised: the shim keeps up to 3 descriptors below it "
                    "(pagemap, maps, live stats), which the program cannot use",
                    (unsigned long long)soft);
    rlim_t top = soft < kHighestParking ? soft : kHighestParking;
    for (rlim_t want = top - 1; want > (rlim_t)fd && want + 64 > top; --want) {
        long high = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, (long)want);
        if (!sys::failed(high)) {
            sys::close(fd);
            return (int)high;
        }
    }
    return fd;
}

bool KeptFile::still_ours(int fd) const {
    struct stat st;
    return !sys::failed(sys::call(SYS_fstat, fd, (long)&st)) && st.st_ino == ino_.load(std::memory_order_relaxed) &&
           st.st_dev == dev_.load(std::memory_order_relaxed);
}

bool KeptFile::ensure(const char* path, int flags, int mode) {
    int cur = fd();
    if (cur >= 0) {
        if (still_ours(cur)) return true;
        int expected = cur;
        fd_.compare_exchange_strong(expected, -1);  // not ours to close
    }
    uint64_t now = monotonic_ns();
    if (now < retry_at_ns_.load(std::memory_order_relaxed)) return false;
    long nfd = sys::call(SYS_open, (long)path, flags | O_CLOEXEC, mode);
    if (sys::failed(nfd)) {
        retry_at_ns_.store(now + 1000000000ull, std::memory_order_relaxed);
        // Out of descriptors, every kept file fails at once: one line for all.
        static std::atomic<bool> warned_no_fds{false};
        bool no_fds = nfd == -EMFILE || nfd == -ENFILE;
        if (no_fds ? !warned_no_fds.exchange(true) : !warned_.exchange(true))
            log_warning("cannot open %s (%s); trying again each second", no_fds ? "the shim's files" : what_,
                        strerror((int)-nfd));
        return false;
    }
    int parked = park_fd((int)nfd);
    struct stat st;
    sys::call(SYS_fstat, parked, (long)&st);
    ino_.store(st.st_ino, std::memory_order_relaxed);  // the same file whoever wins below
    dev_.store(st.st_dev, std::memory_order_relaxed);
    int expected = -1;
    if (!fd_.compare_exchange_strong(expected, parked)) sys::close(parked);  // another thread was quicker
    return true;
}

long KeptFile::pread(void* buf, size_t n, off_t off) {
    return sys::pread(fd(), buf, n, off);
}

void KeptFile::close() {
    int cur = fd_.exchange(-1);
    if (cur >= 0) sys::close(cur);
}

}  // namespace dedup
