// Kernel writers that a pin held for the length of one system call cannot
// hold off (docs/DESIGN.md, "Kernel writers the shim cannot hold off"):
//
//   io_uring     requests complete after io_uring_enter returned, from
//                io-wq workers; registered buffers are pinned for good.
//                Buffers of requests in flight stay pinned until the shim
//                sees their completion (CQE); long-lived targets (registered
//                and provided buffers, multishot accept addresses, requests
//                that post no CQE) are left alone; what the shim cannot see
//                (SQPOLL, rings set up out of its sight, provided-buffer
//                rings, uring_cmd) leaves the whole process alone
//                (kw_uring*.cpp).
//   Linux AIO    reads on O_DIRECT descriptors (and devices) complete later
//                (kw_aio.cpp).
//   userfaultfd  the program's registrations must keep their mapping, as
//                must memory handed to devices (kw_devices.cpp).
//   /proc/self/mem  writes through it are forced into write-protected pages:
//                the shim pins the destination (shim/proc_mem.cpp);
//                kw_proc_mem.cpp keeps the table of such descriptors.
//
// Here, what they share: leaving the whole process alone, reading the
// program's memory without faulting, and the descriptor events (open, dup,
// close) handed on to the tables that follow descriptors.
#include <atomic>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

#include "scanner/kernel_writers.h"
#include "scanner/kw_uring.h"
#include "scanner/lifecycle.h"
#include "scanner/log.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {

std::atomic<bool> kw::g_all_alone{false};

using kw::g_all_alone;
using kw::kWholeSpace;

// The program's memory, read without faulting: a pointer the kernel would
// answer with EFAULT must not crash the program in the shim instead.
bool rt_read_user(void* dst, const void* src, size_t n) {
    if (!src || !n) return false;
    struct iovec l = {dst, n}, r = {(void*)src, n};
    return sys::call(SYS_process_vm_readv, sys::getpid(), (long)&l, 1, (long)&r, 1, 0) == (long)n;
}

// ---- the whole process ---------------------------------------------------------

void rt_leave_all_alone(const char* why) {
    if (g_all_alone.load(std::memory_order_acquire) || !runtime_ready()) return;
    bool expected = false;
    if (!g_all_alone.compare_exchange_strong(expected, true)) return;
    log_warning("%s: the kernel may write where the shim cannot see; this process is left alone from now on "
                "(merged pages made private again, nothing merges)", why);
    State& s = state();
    {
        MmLockGuard g(s.lock);
        unmerge_range(s, 0, kWholeSpace, Unmerge::kAnonymousNow);
        for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegLeftAlone;
        // New registrations come in excluded (as under mlockall(MCL_FUTURE)):
        // the one flag registration.cpp gives new regions.
        s.mlock_future = true;
    }
    // Nothing merges any more, so no window opens over a buffer in flight.
    uring::release_all_inflight();
}

void rt_keep_left_alone() {
    if (!g_all_alone.load(std::memory_order_acquire)) return;
    State& s = state();
    MmLockGuard g(s.lock);
    for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegLeftAlone;
    s.mlock_future = true;
}

// ---- descriptor events -----------------------------------------------------------

void rt_note_open(int fd, const char* path, int flags) {
    if (fd < 0 || !path) return;
    // RDMA: memory registered with the device (ibv_reg_mr) is pinned and
    // written by the NIC for as long as the registration lives, and
    // registrations go to the kernel in command buffers the shim does not
    // parse.
    if (strncmp(path, "/dev/infiniband/uverbs", 22) == 0) {
        rt_leave_all_alone("an RDMA verbs device was opened");
        return;
    }
    kw::self_mem_fd_opened(fd, path, flags);
}

void rt_note_dup(int oldfd, int newfd) {
    kw::self_mem_fd_dup(oldfd, newfd);
    uring::ring_fd_dup(oldfd, newfd);
}

void rt_note_closed(unsigned first, unsigned last) {
    kw::self_mem_fds_closed(first, last);
    uring::ring_fds_closed(first, last);
}

}  // namespace dedup
