// The memory calls: the mmap family, madvise, mlock, and prctl's KSM switch.
// Each wrapper calls one runtime entry point and sets errno only from the
// result of the operation the application asked for. Mappings of descriptors
// and unmappings are also told to the runtime's io_uring tracking (where the
// rings live), and calls that may make memory mergeable again keep a process
// that is left alone left alone.
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"

using namespace dedup;

namespace {
long mapped(long r, size_t len, int flags, int fd, off_t off) {
    if (fd >= 0 && !(r < 0 && r > -4096)) rt_note_mapping((uintptr_t)r, len, flags, fd, off);
    return r;
}
}  // namespace

EXPORT void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    return set_errno_ptr(mapped(rt_mmap(addr, len, prot, flags, fd, off), len, flags, fd, off));
}
EXPORT void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    return set_errno_ptr(mapped(rt_mmap(addr, len, prot, flags, fd, off), len, flags, fd, off));
}
EXPORT int munmap(void* addr, size_t len) {
    rt_note_unmapping((uintptr_t)addr, len);
    return (int)set_errno(rt_munmap(addr, len));
}
EXPORT int mprotect(void* addr, size_t len, int prot) { return (int)set_errno(rt_mprotect(addr, len, prot)); }
EXPORT int madvise(void* addr, size_t len, int advice) {
    long r = rt_madvise(addr, len, advice);
    rt_keep_left_alone();
    return (int)set_errno(r);
}
EXPORT ssize_t process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags) {
    return set_errno(rt_process_madvise(pidfd, iov, n, advice, flags));
}
EXPORT int posix_madvise(void* addr, size_t len, int advice) {
    // Returns the error number instead of setting errno; POSIX_MADV_DONTNEED
    // is a no-op in glibc, so only the hints reach the kernel.
    if (advice == POSIX_MADV_DONTNEED) return 0;
    int saved = errno;
    long r = rt_madvise(addr, len, advice);
    errno = saved;
    return r < 0 ? (int)-r : 0;
}
EXPORT void* mremap(void* old_addr, size_t old_len, size_t new_len, int flags, ...) {
    void* new_addr = nullptr;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void*);
        va_end(ap);
    }
    return set_errno_ptr(rt_mremap(old_addr, old_len, new_len, flags, new_addr));
}
EXPORT int mlock(const void* addr, size_t len) { return (int)set_errno(rt_mlock((void*)addr, len, 0)); }
EXPORT int mlock2(const void* addr, size_t len, unsigned flags) {
    return (int)set_errno(rt_mlock((void*)addr, len, flags));
}
EXPORT int munlock(const void* addr, size_t len) {
    long r = rt_munlock((void*)addr, len);
    rt_keep_left_alone();
    return (int)set_errno(r);
}
EXPORT int mlockall(int flags) { return (int)set_errno(rt_mlockall(flags)); }
EXPORT int munlockall(void) {
    long r = rt_munlockall();
    rt_keep_left_alone();
    return (int)set_errno(r);
}

namespace {
using PrctlFn = int (*)(int, unsigned long, unsigned long, unsigned long, unsigned long);
NextSymbol<PrctlFn> next_prctl("prctl");
}  // namespace

EXPORT int prctl(int option, ...) {
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    bool handled = false;
    int saved = errno;
    long r = rt_prctl_memory_merge(option, a2, a3, a4, a5, &handled);
    errno = saved;
    if (handled) return (int)set_errno(r);
    if (option == PR_SET_SECCOMP) rt_before_seccomp();
    if (!rt_prctl_is_per_thread_credential(option)) return next_prctl.get()(option, a2, a3, a4, a5);
    struct Call {
        int option;
        unsigned long a2, a3, a4, a5;
    } call = {option, a2, a3, a4, a5};
    return (int)rt_without_scanner([](void* c) {
        Call* k = static_cast<Call*>(c);
        return (long)next_prctl.get()(k->option, k->a2, k->a3, k->a4, k->a5);
    }, &call);
}
