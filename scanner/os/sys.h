// The OS layer's system calls: raw, returning -errno instead of touching
// errno, so the shim can call the kernel from inside interposed functions and
// signal handlers without disturbing the application's errno, and without
// going through (interposed) libc symbols. x86-64 only: the raw syscall ABI
// is the one place the library is architecture-specific.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>

namespace dedup::sys {

#if defined(__x86_64__)
static inline long raw6(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#else
#error "libdedup's raw system calls are written for x86-64"
#endif

static inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0,
                        long f = 0) {
    return raw6(n, a, b, c, d, e, f);
}

static inline bool failed(long r) { return r < 0 && r > -4096; }

static inline void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off, long* err) {
    long r = call(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
    if (failed(r)) { if (err) *err = -r; return (void*)-1; }
    return (void*)r;
}
static inline long munmap(void* addr, size_t len) { return call(SYS_munmap, (long)addr, (long)len); }
static inline long mprotect(void* addr, size_t len, int prot) {
    return call(SYS_mprotect, (long)addr, (long)len, prot);
}
static inline long madvise(void* addr, size_t len, int advice) {
    return call(SYS_madvise, (long)addr, (long)len, advice);
}
static inline long mremap(void* old, size_t old_len, size_t new_len, int flags, void* new_addr) {
    return call(SYS_mremap, (long)old, (long)old_len, (long)new_len, flags, (long)new_addr);
}
static inline long msync(void* addr, size_t len, int flags) {
    return call(SYS_msync, (long)addr, (long)len, flags);
}
static inline long pread(int fd, void* buf, size_t n, off_t off) {
    return call(SYS_pread64, fd, (long)buf, (long)n, (long)off);
}
static inline long write(int fd, const void* buf, size_t n) { return call(SYS_write, fd, (long)buf, (long)n); }
static inline long close(int fd) { return call(SYS_close, fd); }
static inline long gettid() { return call(SYS_gettid); }
static inline long getpid() { return call(SYS_getpid); }

}  // namespace dedup::sys
