// The runtime's API: the one header the interposition layer (shim/) includes.
// One entry point per intercepted operation. Results are kernel-style (value
// or -errno) where the operation is a system call, so that the shim alone
// decides what errno the application sees; allocation entries behave as the
// libc functions they stand for. Everything here is safe to call before
// initialisation and from any thread.
//
// Where each entry lives (docs/DESIGN.md has the map):
//   runtime.cpp       memory calls (mmap ... prctl), start and exit
//   advice.cpp        madvise, process_madvise
//   allocator.cpp     malloc and friends
//   signals.cpp       sigaction, sigprocmask
//   write_window.cpp  pins for syscalls the kernel writes through
//   kernel_writers.cpp  kernel writers a pin cannot hold off: leaving
//                     everything alone; kw_uring*.cpp io_uring, kw_aio.cpp AIO,
//                     kw_devices.cpp userfaultfd and devices, kw_proc_mem.cpp
//                     /proc/self/mem
//   descriptors.cpp   the shim's own file descriptors
#pragma once
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace dedup {

// ---- start, exit, processes ------------------------------------------------------
// The library's constructor: initialises (reads DEDUP_*). False when
// DEDUP_DISABLE=1.
bool rt_start();
// The library's destructor: stops the scanner, writes the summary and stats.
void rt_shutdown();
// A new process made without fork() (clone(), clone3, a raw fork syscall)
// gets the handlers fork() runs: prepare before the call, then parent or
// child after it. Only without CLONE_VM.
void rt_fork_prepare();
void rt_fork_parent();
void rt_fork_child();
// Calls that need a single-threaded process (unshare(CLONE_NEWUSER), setns)
// or change only the calling thread's credentials (capset, raw set*id,
// prctl(PR_SET_KEEPCAPS ...)): the scanner thread is stopped around fn and
// started again after it, so that the new one inherits the caller's
// credentials and namespaces. Returns fn's result, with the errno fn left.
long rt_without_scanner(long (*fn)(void*), void* ctx);
// A seccomp filter is about to be installed (prctl(PR_SET_SECCOMP),
// seccomp(2)): the scanner stops using system calls a filter may not expect
// (zero_giveback.h), from before the install on.
void rt_before_seccomp();
// exec runs no destructor: the live file goes before it, and comes back if
// the exec fails.
void rt_before_exec();
void rt_exec_failed();
// Whether a prctl option changes only the calling thread's credentials.
bool rt_prctl_is_per_thread_credential(int option);

// ---- memory calls -------------------------------------------------------------
long rt_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);
long rt_munmap(void* addr, size_t len);
long rt_mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr);
// The large heap's realloc of a block with a mapping of its own: the kernel
// resizes or moves it (MREMAP_MAYMOVE) and the records follow, when the block
// is one anonymous VMA. A block with merged pages, or split into several
// VMAs, is left as it is (-EAGAIN): making it one mapping again
// (prepare_remap) copies every present page, no cheaper than the caller's
// copy. Also -EAGAIN before the runtime is up.
long rt_remap_block(void* addr, size_t old_len, size_t new_len);
long rt_mprotect(void* addr, size_t len, int prot);
long rt_madvise(void* addr, size_t len, int advice);
// process_madvise(2): on this process, prepares merged ranges for COLLAPSE.
long rt_process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags);
long rt_mlock(void* addr, size_t len, unsigned flags);  // mlock / mlock2
long rt_munlock(void* addr, size_t len);
long rt_mlockall(int flags);
long rt_munlockall();
// prctl(PR_SET_MEMORY_MERGE / PR_GET_MEMORY_MERGE), as the kernel documents
// them since 6.4: 1 merges every registered region (as DEDUP_SCOPE=all), 0
// stops merging and unmerges everything. Returns the prctl result or -errno;
// *handled is false for every other option (the shim passes those on).
long rt_prctl_memory_merge(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5,
                           bool* handled);

// ---- allocation (as the libc functions) ----------------------------------------
// Blocks of at least DEDUP_MALLOC_MIN come from the shim's own registered
// mappings; everything else from the allocator the program would have used.
void* rt_malloc(size_t n);
void rt_free(void* p);
void* rt_calloc(size_t n, size_t size);
void* rt_realloc(void* p, size_t n);
void* rt_reallocarray(void* p, size_t n, size_t size);
int rt_posix_memalign(void** out, size_t align, size_t n);
void* rt_aligned_alloc(size_t align, size_t n);
void* rt_memalign(size_t align, size_t n);
void* rt_valloc(size_t n);
void* rt_pvalloc(size_t n);
size_t rt_malloc_usable_size(void* p);

// ---- signals --------------------------------------------------------------------
// `next` is the libc function the shim would otherwise have called.
using RtSigmaskFn = int (*)(int, const sigset_t*, sigset_t*);
long rt_sigaction(int sig, const struct sigaction* act, struct sigaction* old);
int rt_sigmask(RtSigmaskFn next, int how, const sigset_t* set, sigset_t* old);

// ---- syscalls the kernel writes through ---------------------------------------------
// Pins [buf, buf+len) for the duration of a call such as read(2), so that no
// write-protect window opens over it (the call would fail with EFAULT).
int rt_kernel_write_pin(uintptr_t buf, size_t len);
// False when no window will ever open in this process (the runtime is off
// for good): a wrapper then need not read the program's memory to pin it.
bool rt_windows_may_open();
void rt_kernel_write_unpin(int token);
// Up to four ranges one call writes into (pinned, or left alone, together).
// A fifth widens the nearest: the pin then covers a gap too, which only
// holds merges off it for the call.
struct WriteRanges {
    static constexpr int kMax = 4;
    uintptr_t lo[kMax], hi[kMax];
    int n = 0;
    void add(uintptr_t start, size_t len) {
        if (!start || !len) return;
        uintptr_t s = start, e = s + len;
        if (e < s) e = UINTPTR_MAX;
        if (n < kMax) {
            lo[n] = s;
            hi[n++] = e;
            return;
        }
        int best = 0;
        uintptr_t best_gap = UINTPTR_MAX;
        for (int i = 0; i < n; ++i) {
            uintptr_t gap = s > hi[i] ? s - hi[i] : (lo[i] > e ? lo[i] - e : 0);
            if (gap < best_gap) best_gap = gap, best = i;
        }
        if (s < lo[best]) lo[best] = s;
        if (e > hi[best]) hi[best] = e;
    }
};
class KernelWritePin {
public:
    KernelWritePin(const void* buf, size_t len) : token_(rt_kernel_write_pin((uintptr_t)buf, len)) {}
    ~KernelWritePin() { rt_kernel_write_unpin(token_); }
    KernelWritePin(const KernelWritePin&) = delete;
    KernelWritePin& operator=(const KernelWritePin&) = delete;

private:
    int token_;
};

// Memory a kernel writer the shim cannot hold off writes into: io_uring and
// AIO buffers (written after the submitting call returned), buffers pinned
// for the long term (io_uring registered buffers), ranges of the program's
// own userfaultfd. Its merged pages become the program's own anonymous
// memory again (waiting for syscalls writing into them), and the range never
// merges again. 0 or -errno.
long rt_leave_alone(const void* addr, size_t len);

// ---- kernel writers the shim cannot hold off (kernel_writers.cpp, kw_*.cpp) ----
// The whole process, from now on: every merged page becomes the program's
// own memory again and nothing merges any more (an io_uring SQPOLL thread, a
// ring set up out of the shim's sight, provided-buffer rings, RDMA: kernel
// writers whose targets the shim cannot see). `why` is logged once.
void rt_leave_all_alone(const char* why);
// After munlock, munlockall or madvise, which may make memory mergeable
// again: keeps everything left alone if the process is.
void rt_keep_left_alone();
// userfaultfd: [addr, addr+len) is about to be registered. Left alone, and
// zero pages the scanner gave back are made present again, as the program
// left them (a read would raise a MISSING fault it never caused).
long rt_uffd_will_register(const void* addr, size_t len);
// Memory handed to a device or another kernel writer by ioctl (userfaultfd
// registration, VFIO/iommufd DMA maps, vhost memory tables) or setsockopt
// (AF_XDP umem): left alone before the call.
void rt_ioctl_will_call(unsigned long request, const void* arg);
void rt_setsockopt_will_call(int level, int optname, const void* optval, unsigned optlen);
// Reads the program's memory without faulting (false where it is not mapped).
bool rt_read_user(void* dst, const void* src, size_t n);
// Linux AIO: whether a read on fd may complete after io_submit returned
// (O_DIRECT, character devices). Buffered reads complete inside io_submit.
bool rt_aio_read_completes_later(int fd);
// Descriptors open on this process's memory (/proc/self/mem, ...), through
// which writes are forced into write-protected pages. rt_is_self_mem_fd is
// one load while none is open.
void rt_note_open(int fd, const char* path, int flags);
void rt_note_dup(int oldfd, int newfd);
void rt_note_closed(unsigned first, unsigned last);
bool rt_is_self_mem_fd(int fd);
// The file position of fd (for /proc/self/mem: the address the next write goes to).
uintptr_t rt_fd_position(int fd);
// io_uring, around io_uring_setup/enter/register (glibc's syscall(), the
// raw functions liburing exports) and liburing's functions (`ring` is its
// struct io_uring). Buffers of requests in flight stay pinned until the
// shim sees their completion; registered buffers are left alone.
struct RtUringCall {
    uintptr_t ring = 0;  // the ring (0: nothing to do after the call)
    uint32_t head = 0;   // its SQ head before the call
    uint32_t gen = 0;
    int pins[4] = {-2, -2, -2, -2};  // what the call itself writes back
};
void rt_uring_setup_begin(const void* params);
void rt_uring_setup_end(long result, const void* params);
void rt_uring_enter_begin(RtUringCall* c, unsigned fd, unsigned to_submit, unsigned flags);
void rt_uring_register_begin(RtUringCall* c, unsigned fd, unsigned opcode, const void* arg, unsigned nr_args);
void rt_uring_register_end(RtUringCall* c, unsigned opcode, const void* arg, long result);
void rt_liburing_init_begin(unsigned setup_flags, const void* mem, size_t mem_len);
void rt_liburing_init_end(long result, const void* ring);
void rt_liburing_begin(RtUringCall* c, const void* ring);  // a call that may submit or reap
void rt_liburing_exit(const void* ring);
void rt_uring_end(RtUringCall* c);  // after any of the calls above
// After a successful mmap of a descriptor / before munmap: where rings live.
void rt_note_mapping(uintptr_t addr, size_t len, int flags, int fd, off_t off);
void rt_note_unmapping(uintptr_t addr, size_t len);

// ---- the shim's own file descriptors --------------------------------------------------
// Its kept files (os/kept_file.h) and the DEDUP_LOG file: invisible to the
// program (the shim answers EBADF for them).
bool rt_owns_fd(int fd);
// The shim's descriptors, ascending; returns how many (at most kMaxShimFds).
constexpr int kMaxShimFds = 8;  // kept files, the log, a domain's
int rt_fds(int out[kMaxShimFds]);
// Moves the shim's descriptor away from `fd` (the program dup2s onto it).
void rt_vacate_fd(int fd);
// close(2), dup2/dup3 (flags -1: dup2) and close_range(2) that treat the
// shim's descriptors as not open, and close everything else asked for.
long rt_close(int fd);
long rt_dup3(int oldfd, int newfd, int flags);
long rt_close_range(unsigned first, unsigned last, int flags);

}  // namespace dedup
