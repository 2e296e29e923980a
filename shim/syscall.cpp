// syscall(2): programs (and libraries) reach the calls the shim keeps its
// view through with glibc's generic wrapper, which none of the other symbols
// see. Each number the shim cares about goes to the same runtime entry as its
// libc wrapper, with syscall()'s convention (-1 and errno); the calls that
// write into a buffer pin it as their wrappers do; io_uring's three calls,
// io_submit, and the calls that open, duplicate and close descriptors tell
// the runtime's tracking of kernel writers (scanner/kernel_writers.cpp and
// kw_*.cpp); every other number goes to glibc's syscall() unchanged. A
// `syscall` instruction in the program's own code stays out of reach
// (README, limitations).
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/kernel_writes.h"
#include "shim/span.h"

using namespace dedup;

namespace {

const void* p_of(long v) { return (const void*)v; }

using SyscallFn = long (*)(long, long, long, long, long, long, long);
NextSymbol<SyscallFn> next_syscall("syscall");

long raw(long nr, const long* a) { return next_syscall.get()(nr, a[0], a[1], a[2], a[3], a[4], a[5]); }

// The numbers that write into the caller's memory before they return, one
// family a function (pin_*): each adds what its calls write to ps and says
// whether nr was one of its own.


// Reads and receives into a buffer, and copies between processes.
bool pin_reads(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_read:
        case SYS_pread64:
        case SYS_getdents64:
        case SYS_getdents:
            ps.add(p_of(a[1]), (size_t)a[2]);
            break;
        case SYS_readv:
        case SYS_preadv:
        case SYS_preadv2:
        case SYS_vmsplice:
            ps.add((const struct iovec*)a[1], a[2]);
            break;
        case SYS_recvfrom:
            ps.add(p_of(a[1]), (size_t)a[2]);
            ps.add_sockaddr(p_of(a[4]), (const socklen_t*)p_of(a[5]));
            break;
        case SYS_recvmsg:
            ps.add((const struct msghdr*)a[1]);
            break;
        case SYS_recvmmsg: {
            const struct mmsghdr* vec = (const struct mmsghdr*)a[1];
            unsigned long n = (unsigned long)a[2] < 1024 ? (unsigned long)a[2] : 1024;
            if (vec && n) ps.add(vec, n * sizeof *vec);
            Span bufs;
            for (unsigned long i = 0; vec && i < n; ++i) bufs.add(&vec[i].msg_hdr);
            ps.add(bufs);
            break;
        }
        case SYS_getrandom:
            ps.add(p_of(a[0]), (size_t)a[1]);
            break;
        // copies between processes (ours, maybe)
        case SYS_process_vm_readv:
            ps.add((const struct iovec*)a[1], a[2]);
            break;
        case SYS_process_vm_writev:
            ps.add((const struct iovec*)a[3], a[4]);
            break;
        default:
            return false;
    }
    return true;
}

// File status.
bool pin_file_status(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_fstat:
        case SYS_stat:
        case SYS_lstat:
            ps.add(p_of(a[1]), sizeof(struct stat));
            break;
        case SYS_newfstatat:
            ps.add(p_of(a[2]), sizeof(struct stat));
            break;
        case SYS_statx:
            ps.add(p_of(a[4]), 256);  // struct statx
            break;
        case SYS_statfs:
        case SYS_fstatfs:
            ps.add(p_of(a[1]), 120);  // struct statfs
            break;
        default:
            return false;
    }
    return true;
}

// Children, events, signals, sleeps: what the wait writes back.
bool pin_waits(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_wait4:
            ps.add(p_of(a[1]), sizeof(int));
            ps.add(p_of(a[3]), 144);  // struct rusage
            break;
        case SYS_waitid:
            ps.add(p_of(a[2]), 128);  // siginfo_t
            ps.add(p_of(a[4]), 144);
            break;
        case SYS_poll:
        case SYS_ppoll:
            ps.add(p_of(a[0]), (size_t)a[1] * 8);  // struct pollfd
            break;
        case SYS_select:
        case SYS_pselect6: {
            size_t n = a[0] > 0 ? ((size_t)a[0] + 63) / 64 * 8 : 0;
            ps.add(p_of(a[1]), n);
            ps.add(p_of(a[2]), n);
            ps.add(p_of(a[3]), n);
            ps.add(p_of(a[4]), 16);  // the time left
            break;
        }
        case SYS_epoll_wait:
        case SYS_epoll_pwait:
        case SYS_epoll_pwait2:
            if (a[2] > 0) ps.add(p_of(a[1]), (size_t)a[2] * 12);  // struct epoll_event
            break;
        case SYS_rt_sigtimedwait:
            ps.add(p_of(a[1]), 128);
            break;
        case SYS_nanosleep:
            ps.add(p_of(a[1]), 16);
            break;
        case SYS_clock_nanosleep:
            ps.add(p_of(a[3]), 16);
            break;
        default:
            return false;
    }
    return true;
}

// Sockets and pipes: addresses, descriptor pairs.
bool pin_sockets_and_pipes(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_accept:
        case SYS_accept4:
        case SYS_getsockname:
        case SYS_getpeername:
            ps.add_sockaddr(p_of(a[1]), (const socklen_t*)p_of(a[2]));
            break;
        case SYS_getsockopt:
            ps.add_sockaddr(p_of(a[3]), (const socklen_t*)p_of(a[4]));
            break;
        case SYS_socketpair:
            ps.add(p_of(a[3]), 2 * sizeof(int));
            break;
        case SYS_pipe:
        case SYS_pipe2:
            ps.add(p_of(a[0]), 2 * sizeof(int));
            break;
        default:
            return false;
    }
    return true;
}

// Names, limits, attributes, messages.
bool pin_names_limits_messages(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_readlink:
            ps.add(p_of(a[1]), (size_t)a[2]);
            break;
        case SYS_readlinkat:
            ps.add(p_of(a[2]), (size_t)a[3]);
            break;
        case SYS_getcwd:
        case SYS_getxattr:
        case SYS_lgetxattr:
        case SYS_fgetxattr:
            if (nr == SYS_getcwd) ps.add(p_of(a[0]), (size_t)a[1]);
            else ps.add(p_of(a[2]), (size_t)a[3]);
            break;
        case SYS_listxattr:
        case SYS_llistxattr:
        case SYS_flistxattr:
            ps.add(p_of(a[1]), (size_t)a[2]);
            break;
        case SYS_uname:
            ps.add(p_of(a[0]), 390);  // struct utsname
            break;
        case SYS_getrlimit:
            ps.add(p_of(a[1]), 16);
            break;
        case SYS_prlimit64:
            ps.add(p_of(a[3]), 16);
            break;
        case SYS_getrusage:
            ps.add(p_of(a[1]), 144);
            break;
        case SYS_sysinfo:
            ps.add(p_of(a[0]), 112);
            break;
        case SYS_sched_getaffinity:
            ps.add(p_of(a[2]), (size_t)a[1]);
            break;
        case SYS_getgroups:
            if (a[0] > 0) ps.add(p_of(a[1]), (size_t)a[0] * sizeof(gid_t));
            break;
        case SYS_msgrcv:
            ps.add(p_of(a[1]), sizeof(long) + (size_t)a[2]);
            break;
        case SYS_mq_timedreceive:
            ps.add(p_of(a[1]), (size_t)a[2]);
            ps.add(p_of(a[3]), sizeof(unsigned));
            break;
        default:
            return false;
    }
    return true;
}

// Linux AIO, writes into our own memory through /proc/self/mem, ioctl: the
// calls whose pins helpers of aio.cpp, proc_mem.cpp and ioctl.cpp work out.
bool pin_aio_self_mem_ioctl(PinSet& ps, long nr, const long* a) {
    switch (nr) {
        case SYS_io_setup:
            ps.add(p_of(a[1]), sizeof(long));
            break;
        case SYS_io_getevents:
        case SYS_io_pgetevents:
            if (a[2] > 0) ps.add(p_of(a[3]), (size_t)a[2] * 32);  // struct io_event
            break;
        case SYS_io_submit:
            aio_before_submit(ps, a[1], p_of(a[2]));
            break;
        // writes into our own memory through /proc/self/mem
        case SYS_write:
            add_self_mem_write(ps, (int)a[0], -1, (size_t)a[2]);
            break;
        case SYS_pwrite64:
            add_self_mem_write(ps, (int)a[0], a[3], (size_t)a[2]);
            break;
        case SYS_writev:
            if (rt_is_self_mem_fd((int)a[0]))
                add_self_mem_write(ps, (int)a[0], -1, iov_bytes((const struct iovec*)a[1], a[2]));
            break;
        case SYS_pwritev:
        case SYS_pwritev2:
            if (rt_is_self_mem_fd((int)a[0]))
                add_self_mem_write(ps, (int)a[0], a[3], iov_bytes((const struct iovec*)a[1], a[2]));
            break;
        case SYS_ioctl:
            ioctl_before(ps, (unsigned long)a[1], (void*)a[2]);
            break;
        default:
            return false;
    }
    return true;
}

// What the call writes into before it returns, as its libc wrapper pins it
// (reads.cpp, ipc.cpp, waits.cpp, file_status.cpp, queries.cpp, fds.cpp,
// proc_mem.cpp, ioctl.cpp, aio.cpp).
void kernel_writes(PinSet& ps, long nr, const long* a) {
    (void)(pin_reads(ps, nr, a) || pin_file_status(ps, nr, a) || pin_waits(ps, nr, a) ||
           pin_sockets_and_pipes(ps, nr, a) || pin_names_limits_messages(ps, nr, a) ||
           pin_aio_self_mem_ioctl(ps, nr, a));
}

// A new process without fork(): the fork handlers fork() would have run.
// With CLONE_VM the child shares our memory (a thread, or vfork): none.
long fork_like(long nr, const long* a, unsigned long flags) {
    if (flags & CLONE_VM) return raw(nr, a);
    rt_fork_prepare();
    long r = raw(nr, a);
    if (r == 0) rt_fork_child();
    else rt_fork_parent();
    return r;
}

// Calls that need a single-threaded process, or change the calling thread's
// credentials alone: without the scanner thread (a new one inherits them).
long without_scanner(long nr, const long* a) {
    struct Call {
        long nr;
        const long* a;
    } call = {nr, a};
    return rt_without_scanner([](void* c) {
        Call* k = static_cast<Call*>(c);
        return raw(k->nr, k->a);
    }, &call);
}

// The result of a runtime entry (value or -errno) with syscall()'s convention.
long as_syscall(long r) { return set_errno(r); }

// A result of raw(), kernel-style (value or -errno), for the runtime's hooks.
long kernel_style(long r) { return r == -1 ? -errno : r; }

// Runs f after the call, with errno as the call left it.
template <typename F>
long then(long r, F f) {
    int saved = errno;
    f();
    errno = saved;
    return r;
}

// io_uring's three calls: the runtime looks at the ring before and after.
long uring(long nr, const long* a) {
    RtUringCall c;
    if (nr == SYS_io_uring_setup) {
        rt_uring_setup_begin(p_of(a[1]));
        long r = raw(nr, a);
        return then(r, [&] { rt_uring_setup_end(kernel_style(r), p_of(a[1])); });
    }
    if (nr == SYS_io_uring_enter) {
        rt_uring_enter_begin(&c, (unsigned)a[0], (unsigned)a[1], (unsigned)a[3]);
        long r = raw(nr, a);
        return then(r, [&] { rt_uring_end(&c); });
    }
    rt_uring_register_begin(&c, (unsigned)a[0], (unsigned)a[1], p_of(a[2]), (unsigned)a[3]);
    long r = raw(nr, a);
    return then(r, [&] { rt_uring_register_end(&c, (unsigned)a[1], p_of(a[2]), kernel_style(r)); });
}

// The calls below each take one family of numbers: for one of theirs they
// make the call, put its result in *r (with syscall()'s convention: -1 and
// errno) and return true; for any other number they return false and do
// nothing.

// Mappings and their protection, advice and locks: the runtime's own entries.
bool memory_call(long nr, const long* a, long* r) {
    switch (nr) {
        case SYS_mmap: {
            long m = rt_mmap((void*)a[0], (size_t)a[1], (int)a[2], (int)a[3], (int)a[4], a[5]);
            if (a[4] >= 0 && !(m < 0 && m > -4096))
                rt_note_mapping((uintptr_t)m, (size_t)a[1], (int)a[3], (int)a[4], a[5]);
            *r = as_syscall(m);
            return true;
        }
        case SYS_munmap:
            rt_note_unmapping((uintptr_t)a[0], (size_t)a[1]);
            *r = as_syscall(rt_munmap((void*)a[0], (size_t)a[1]));
            return true;
        case SYS_mprotect: *r = as_syscall(rt_mprotect((void*)a[0], (size_t)a[1], (int)a[2])); return true;
        case SYS_madvise: {
            long m = rt_madvise((void*)a[0], (size_t)a[1], (int)a[2]);
            rt_keep_left_alone();
            *r = as_syscall(m);
            return true;
        }
        case SYS_mremap:
            *r = as_syscall(rt_mremap((void*)a[0], (size_t)a[1], (size_t)a[2], (int)a[3], (void*)a[4]));
            return true;
        case SYS_mlock: *r = as_syscall(rt_mlock((void*)a[0], (size_t)a[1], 0)); return true;
        case SYS_mlock2: *r = as_syscall(rt_mlock((void*)a[0], (size_t)a[1], (unsigned)a[2])); return true;
        case SYS_munlock: {
            long m = rt_munlock((void*)a[0], (size_t)a[1]);
            rt_keep_left_alone();
            *r = as_syscall(m);
            return true;
        }
        case SYS_mlockall: *r = as_syscall(rt_mlockall((int)a[0])); return true;
        case SYS_munlockall: {
            long m = rt_munlockall();
            rt_keep_left_alone();
            *r = as_syscall(m);
            return true;
        }
        case SYS_process_madvise:
            *r = as_syscall(rt_process_madvise((int)a[0], (const struct iovec*)a[1], (size_t)a[2], (int)a[3],
                                               (unsigned)a[4]));
            return true;
        default:
            return false;
    }
}

// Descriptors opened, duplicated, closed: the runtime follows which are
// rings or open on /proc/self/mem, and hides its own (fds.cpp).
bool descriptor_call(long nr, const long* a, long* r) {
    switch (nr) {
        case SYS_close: {
            long c = rt_close((int)a[0]);
            if (a[0] >= 0) rt_note_closed((unsigned)a[0], (unsigned)a[0]);
            *r = as_syscall(c);
            return true;
        }
        case SYS_dup2:
        case SYS_dup3: {
            long d = rt_dup3((int)a[0], (int)a[1], nr == SYS_dup2 ? -1 : (int)a[2]);
            if (d >= 0) rt_note_dup((int)a[0], (int)d);
            *r = as_syscall(d);
            return true;
        }
        case SYS_close_range: {
            long c = rt_close_range((unsigned)a[0], (unsigned)a[1], (int)a[2]);
            if (c == 0 && !(a[2] & CLOSE_RANGE_CLOEXEC)) rt_note_closed((unsigned)a[0], (unsigned)a[1]);
            *r = as_syscall(c);
            return true;
        }
        case SYS_dup: {
            long d = raw(nr, a);
            *r = d < 0 ? d : then(d, [&] { rt_note_dup((int)a[0], (int)d); });
            return true;
        }
        case SYS_fcntl: {
            long d = raw(nr, a);
            if (d < 0 || (a[1] != F_DUPFD && a[1] != F_DUPFD_CLOEXEC)) *r = d;
            else *r = then(d, [&] { rt_note_dup((int)a[0], (int)d); });
            return true;
        }
        case SYS_open:
        case SYS_openat:
        case SYS_openat2: {
            long o = raw(nr, a);
            const char* path = (const char*)(nr == SYS_open ? a[0] : a[1]);
            int flags = nr == SYS_open     ? (int)a[1]
                        : nr == SYS_openat ? (int)a[2]
                        : a[2]             ? (int)*(const uint64_t*)a[2]  // struct open_how
                                           : 0;
            *r = o < 0 ? o : then(o, [&] { rt_note_open((int)o, path, flags); });
            return true;
        }
        default:
            return false;
    }
}

// Memory the kernel keeps writing after the call: io_uring's rings and
// buffers, an alternate signal stack, an AF_XDP umem (setsockopt).
bool kernel_memory_call(long nr, const long* a, long* r) {
    switch (nr) {
        case SYS_io_uring_setup:
        case SYS_io_uring_enter:
        case SYS_io_uring_register:
            *r = uring(nr, a);
            return true;
        case SYS_sigaltstack: {
            const stack_t* ss = (const stack_t*)a[0];
            stack_t copy;
            if (ss && rt_read_user(&copy, ss, sizeof copy) && !(copy.ss_flags & SS_DISABLE))
                rt_leave_alone(copy.ss_sp, copy.ss_size);
            KernelWritePin pin(p_of(a[1]), a[1] ? sizeof(stack_t) : 0);
            *r = raw(nr, a);
            return true;
        }
        case SYS_setsockopt:
            rt_setsockopt_will_call((int)a[1], (int)a[2], p_of(a[3]), (unsigned)a[4]);
            *r = raw(nr, a);
            return true;
        default:
            return false;
    }
}

// New processes, and calls that must not meet the scanner thread.
bool process_call(long nr, const long* a, long* r) {
    switch (nr) {
        case SYS_prctl: {
            bool handled = false;
            long m = rt_prctl_memory_merge((int)a[0], a[1], a[2], a[3], a[4], &handled);
            if (handled) *r = as_syscall(m);
            else if (rt_prctl_is_per_thread_credential((int)a[0])) *r = without_scanner(nr, a);
            else {
                if (a[0] == PR_SET_SECCOMP) rt_before_seccomp();
                *r = raw(nr, a);
            }
            return true;
        }
        case SYS_seccomp:
            rt_before_seccomp();
            *r = raw(nr, a);
            return true;
        case SYS_fork: *r = fork_like(nr, a, 0); return true;
        case SYS_clone: *r = fork_like(nr, a, (unsigned long)a[0]); return true;
        case SYS_clone3:
            *r = fork_like(nr, a, a[0] ? ((const struct clone_args*)a[0])->flags : CLONE_VM);
            return true;
        case SYS_unshare:
        case SYS_setns:
        case SYS_setuid:
        case SYS_setgid:
        case SYS_setreuid:
        case SYS_setregid:
        case SYS_setresuid:
        case SYS_setresgid:
        case SYS_setgroups:
        case SYS_capset:
            *r = without_scanner(nr, a);
            return true;
        default:
            return false;
    }
}

}  // namespace

// errno is set only by the call (or by as_syscall on its behalf): nothing
// runs between a helper's return and ours. No allocation here or below
// (async-signal-safe, as glibc's syscall()).
EXPORT long syscall(long nr, ...) {
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (long& v : a) v = va_arg(ap, long);  // as glibc's: six registers, used or not
    va_end(ap);
    long r = 0;
    if (memory_call(nr, a, &r) || descriptor_call(nr, a, &r) || kernel_memory_call(nr, a, &r) ||
        process_call(nr, a, &r))
        return r;
    PinSet ps;
    kernel_writes(ps, nr, a);
    ps.pin();
    return raw(nr, a);
}
