#include "scanner/log.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "scanner/os/sys.h"

namespace dedup {
namespace {
std::atomic<int> g_log_fd{2};
std::atomic<int> g_warnings{0};
constexpr int kMaxWarnings = 32;

// Formats one line and writes it whole. Control characters in it (a value
// from the environment may hold a newline) are escaped, so a line is always
// one line: nobody can inject one.
void vlog(const char* fmt, va_list ap) {
    int fd = g_log_fd.load(std::memory_order_relaxed);
    if (fd < 0) return;
    char text[1024];
    int m = vsnprintf(text, sizeof(text), fmt, ap);
    if (m < 0) return;
    char buf[1024];  // a line is at most this long, newline included
    // The pid tells apart the lines of the processes of one tree (a shell,
    // its commands) sharing one stderr or DEDUP_LOG.
    int p = snprintf(buf, sizeof(buf), "libdedup[%ld]: ", sys::getpid());
    if (p < 0) return;
    size_t n = (size_t)p;
    for (const char* c = text; *c && n + 5 < sizeof(buf); ++c) {
        unsigned char u = (unsigned char)*c;
        if (u >= 0x20 && u != 0x7f) {
            buf[n++] = *c;
            continue;
        }
        static const char hex[] = "0123456789abcdef";
        buf[n++] = '\\';
        buf[n++] = 'x';
        buf[n++] = hex[u >> 4];
        buf[n++] = hex[u & 15];
    }
    buf[n++] = '\n';
    size_t off = 0;
    while (off < n) {
        long w = sys::write(fd, buf + off, n - off);
        if (w == -EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
}
}  // namespace

std::atomic<int> g_log_file{-1};

void log_set_fd(int fd) { g_log_fd.store(fd, std::memory_order_relaxed); }
int log_file_fd() { return g_log_file.load(std::memory_order_relaxed); }
void log_set_file_fd(int fd) { g_log_file.store(fd, std::memory_order_relaxed); }

bool log_open(const char* spec) {
    if (!spec || !*spec || !strcmp(spec, "stderr")) { log_set_fd(2); return true; }
    if (!strcmp(spec, "off")) { log_set_fd(-1); return true; }
    // Not through a symbolic link: a root process must not append to a file
    // someone planted a link to.
    long fd = sys::call(SYS_open, (long)spec, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (sys::failed(fd)) { log_set_fd(2); return false; }
    long high = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 1000);
    if (!sys::failed(high)) { sys::close((int)fd); fd = high; }
    log_set_file_fd((int)fd);
    log_set_fd((int)fd);
    return true;
}
int log_fd() { return g_log_fd.load(std::memory_order_relaxed); }

void log_line(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

namespace {
void vwarn(const char* fmt, va_list ap) {
    int n = g_warnings.fetch_add(1, std::memory_order_relaxed);
    if (n >= kMaxWarnings) return;
    vlog(fmt, ap);
    if (n + 1 == kMaxWarnings) log_line("further warnings suppressed");
}
}  // namespace

void log_warning(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
}

void log_config_warning(const char* /*var*/, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
}

}  // namespace dedup
