// Descriptors open on this process's memory (/proc/self/mem, and the same
// file by the pid or a thread's id): writes through them are forced into
// write-protected pages, so the shim pins their destination
// (shim/proc_mem.cpp). Here the table of such descriptors, one bit each,
// which the shim asks about on every write while one is open.
#include <atomic>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "scanner/kernel_writers.h"
#include "scanner/large_bss.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"

namespace dedup {
namespace {

using kw::SpinGuard;
using kw::SpinLock;

constexpr int kFdBits = 1 << 16;
DEDUP_LARGE_BSS std::atomic<uint64_t> g_mem_fds[kFdBits / 64];
std::atomic<int> g_mem_fd_count{0};
SpinLock g_fd_lock;

bool mem_bit(int fd) {
    return fd >= 0 && fd < kFdBits && (g_mem_fds[fd / 64].load(std::memory_order_relaxed) >> (fd % 64) & 1);
}

// Requires g_fd_lock.
void set_mem_bit(int fd, bool on) {
    if (fd < 0 || fd >= kFdBits || mem_bit(fd) == on) return;
    uint64_t bit = 1ull << (fd % 64);
    if (on) g_mem_fds[fd / 64].fetch_or(bit);
    else g_mem_fds[fd / 64].fetch_and(~bit);
    g_mem_fd_count.fetch_add(on ? 1 : -1);
}

bool skip_prefix(const char*& p, const char* prefix) {
    size_t n = strlen(prefix);
    if (strncmp(p, prefix, n) != 0) return false;
    p += n;
    return true;
}

bool parse_num(const char*& p, long* out) {
    if (*p < '0' || *p > '9') return false;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < (1l << 40)) v = v * 10 + (*p++ - '0');
    *out = v;
    return true;
}

// Whether /proc/<n> is this process: its pid, or one of its threads.
bool is_our_task(long n) {
    if (n == sys::getpid()) return true;
    char path[64] = "/proc/self/task/";
    char digits[24];
    int k = 0;
    do digits[k++] = (char)('0' + n % 10);
    while ((n /= 10) && k < 20);
    size_t at = strlen(path);
    while (k) path[at++] = digits[--k];
    path[at] = 0;
    return !sys::failed(sys::call(SYS_faccessat, AT_FDCWD, (long)path, F_OK, 0));
}

// /proc/self/mem, /proc/thread-self/mem, /proc/<ours>/mem, and the same
// below task/<tid>/.
bool is_self_mem_path(const char* p) {
    if (!p || !skip_prefix(p, "/proc/")) return false;
    long n = 0;
    if (!skip_prefix(p, "self/") && !skip_prefix(p, "thread-self/")) {
        if (!parse_num(p, &n) || *p++ != '/' || !is_our_task(n)) return false;
    }
    if (skip_prefix(p, "task/")) {
        if (!parse_num(p, &n) || *p++ != '/') return false;
    }
    return strcmp(p, "mem") == 0;
}

}  // namespace

void kw::self_mem_fd_opened(int fd, const char* path, int flags) {
    if ((flags & O_ACCMODE) == O_RDONLY || !is_self_mem_path(path)) return;
    SpinGuard g(g_fd_lock);
    set_mem_bit(fd, true);
}

void kw::self_mem_fd_dup(int oldfd, int newfd) {
    if (!g_mem_fd_count.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_fd_lock);
    set_mem_bit(newfd, mem_bit(oldfd));
}

void kw::self_mem_fds_closed(unsigned first, unsigned last) {
    if (!g_mem_fd_count.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_fd_lock);
    for (unsigned fd = first; fd <= last && fd < (unsigned)kFdBits && g_mem_fd_count.load(); ++fd)
        set_mem_bit((int)fd, false);
}

bool rt_is_self_mem_fd(int fd) {
    if (g_mem_fd_count.load(std::memory_order_relaxed) == 0) return false;
    return mem_bit(fd);
}

uintptr_t rt_fd_position(int fd) { return (uintptr_t)sys::call(SYS_lseek, fd, 0, SEEK_CUR); }

}  // namespace dedup
