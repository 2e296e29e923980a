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

// Formats one line into buf (at most 1024 bytes, newline included);
// returns its length, 0 on error. Control characters in it (a value from the
// environment may hold a newline) are escaped, so a line is always one line:
// nobody can inject one.
size_t format_line(char* buf, size_t cap, const char* fmt, va_list ap) {
    char text[1024];
    int m = vsnprintf(text, sizeof(text), fmt, ap);
    if (m < 0) return 0;
    // The pid tells apart the lines of the processes of one tree (a shell,
    // its commands) sharing one stderr or DEDUP_LOG.
    int p = snprintf(buf, cap, "libdedup[%ld]: ", sys::getpid());
    if (p < 0) return 0;
    size_t n = (size_t)p;
    for (const char* c = text; *c && n + 5 < cap; ++c) {
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
    return n;
}

void write_line(const char* buf, size_t n) {
    int fd = g_log_fd.load(std::memory_order_relaxed);
    size_t off = 0;
    while (fd >= 0 && off < n) {
        long w = sys::write(fd, buf + off, n - off);
        if (w == -EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
}

void vlog(const char* fmt, va_list ap) {
    if (g_log_fd.load(std::memory_order_relaxed) < 0) return;
    char buf[1024];
    if (size_t n = format_line(buf, sizeof(buf), fmt, ap)) write_line(buf, n);
}

// The warnings printed so far, by a hash of their text (after the prefix).
std::atomic<uint64_t> g_warned[kMaxWarnings];

uint64_t text_hash(const char* s, size_t n) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (size_t i = 0; i < n; ++i) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h | 1;  // never 0, the empty slot
}

// Whether this text was printed before; if not, it is recorded (and true
// is returned when no slot is left: the cap is reached anyway).
bool warned_before(uint64_t h) {
    for (auto& slot : g_warned) {
        uint64_t seen = slot.load(std::memory_order_relaxed);
        if (seen == h) return true;
        if (seen == 0 && slot.compare_exchange_strong(seen, h)) return false;
        if (seen == h) return true;
    }
    return true;
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

void log_vwarning(const char* fmt, va_list ap) {
    if (g_log_fd.load(std::memory_order_relaxed) < 0) return;
    char buf[1024];
    size_t len = format_line(buf, sizeof(buf), fmt, ap);
    const char* text = strchr(buf, ' ');  // after "libdedup[PID]:": the same in a forked child
    if (!len || !text || warned_before(text_hash(text, len - (size_t)(text - buf)))) return;
    int n = g_warnings.fetch_add(1, std::memory_order_relaxed);
    if (n >= kMaxWarnings) return;
    write_line(buf, len);
    if (n + 1 == kMaxWarnings) log_line("further warnings suppressed");
}

void log_warning(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_vwarning(fmt, ap);
    va_end(ap);
}

}  // namespace dedup
