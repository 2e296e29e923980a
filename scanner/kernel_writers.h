// What the files of the kernel writers a pin cannot hold off share (their
// entry points are in runtime.h; docs/DESIGN.md, "Kernel writers the shim
// cannot hold off"). Only those files include this header:
//
//   kernel_writers.cpp  leaving the whole process alone; descriptor events
//                       (open, dup, close) handed to the tables that track them
//   kw_devices.cpp      memory handed to another writer by ioctl/setsockopt:
//                       userfaultfd, VFIO/iommufd DMA, vhost, AF_XDP
//   kw_aio.cpp          Linux AIO reads that complete later
//   kw_proc_mem.cpp     descriptors open on /proc/self/mem
//   kw_uring*.cpp       io_uring (kw_uring.h)
//
// Everything here takes only its own spin lock, never across a system call
// or a call that takes the mm lock.
#pragma once
#include <atomic>
#include <sched.h>
#include <stdint.h>

#include "scanner/registration.h"

namespace dedup {
namespace kw {

constexpr uintptr_t kWholeSpace = ~uintptr_t(0) & ~kPageMask;

class SpinLock {
public:
    void lock() {
        while (flag_.exchange(true, std::memory_order_acquire))
            while (flag_.load(std::memory_order_relaxed)) sched_yield();
    }
    void unlock() { flag_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> flag_{false};
};

struct SpinGuard {
    explicit SpinGuard(SpinLock& l) : l_(l) { l_.lock(); }
    ~SpinGuard() { l_.unlock(); }
    SpinLock& l_;
};

// True once rt_leave_all_alone ran: the whole process is left alone.
extern std::atomic<bool> g_all_alone __attribute__((visibility("hidden")));

// ---- /proc/self/mem descriptors (kw_proc_mem.cpp) --------------------------------
// A descriptor opened on path with flags: tracked if it writes into our memory.
void self_mem_fd_opened(int fd, const char* path, int flags);
void self_mem_fd_dup(int oldfd, int newfd);
void self_mem_fds_closed(unsigned first, unsigned last);

}  // namespace kw
}  // namespace dedup
