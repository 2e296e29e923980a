#include "scanner/parent_process.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scanner/os/sys.h"

namespace dedup {
namespace {

constexpr size_t kChunk = 2048;
constexpr size_t kMaxNeedle = 600;  // a path of the library, or NAME=value (values are at most 255)

long read_some(int fd, char* buf, size_t n) {
    long r;
    do r = sys::call(SYS_read, fd, (long)buf, (long)n);
    while (r == -EINTR);
    return r;
}

// Whether the file's bytes, after one NUL when lead_nul, contain needle[0, n):
// 1 yes, 0 no, -1 the file cannot be read.
int file_contains(const char* path, const char* needle, size_t n, bool lead_nul) {
    if (n == 0 || n > kMaxNeedle) return -1;
    long fd = sys::call(SYS_open, (long)path, O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return -1;
    char buf[kMaxNeedle + kChunk];
    size_t have = 0;
    if (lead_nul) buf[have++] = 0;
    int found = 0;
    for (;;) {
        long r = read_some((int)fd, buf + have, kChunk);
        if (r < 0) found = -1;
        if (r <= 0) break;
        have += (size_t)r;
        if (memmem(buf, have, needle, n)) {
            found = 1;
            break;
        }
        size_t keep = n - 1 < have ? n - 1 : have;  // a match may straddle two reads
        memmove(buf, buf + have - keep, keep);
        have = keep;
    }
    sys::close((int)fd);
    return found;
}

// The path of the file mapped at addr in /proc/self/maps, into out.
bool mapped_path(uintptr_t addr, char* out, size_t cap) {
    long fd = sys::call(SYS_open, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return false;
    char buf[kChunk + kMaxNeedle + 128];
    size_t have = 0;
    bool found = false;
    for (;;) {
        long r = read_some((int)fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0) break;
        have += (size_t)r;
        buf[have] = 0;
        char* line = buf;
        char* nl;
        while (!found && (nl = strchr(line, '\n'))) {
            *nl = 0;
            char* end;
            uintptr_t lo = strtoull(line, &end, 16), hi = *end == '-' ? strtoull(end + 1, nullptr, 16) : 0;
            const char* path = strchr(line, '/');
            if (addr >= lo && addr < hi && path && strlen(path) < cap) {
                memcpy(out, path, strlen(path) + 1);
                found = true;
            }
            line = nl + 1;
        }
        if (found) break;
        have = (size_t)(buf + have - line);
        if (have == sizeof(buf) - 1) have = 0;  // a line longer than the buffer: not ours
        memmove(buf, line, have);
    }
    sys::close((int)fd);
    return found;
}

void parent_file(const char* what, char* out, size_t cap) {
    snprintf(out, cap, "/proc/%ld/%s", sys::call(SYS_getppid), what);
}

}  // namespace

bool parent_runs_this_library() {
    static int known = -1;  // (races only compute the same answer twice)
    if (known >= 0) return known;
    char needle[kMaxNeedle];
    needle[0] = ' ';
    bool runs = false;
    if (sys::call(SYS_getppid) > 1 &&
        mapped_path((uintptr_t)&parent_runs_this_library, needle + 1, sizeof(needle) - 2)) {
        size_t n = strlen(needle);
        needle[n++] = '\n';  // the whole path: " /usr/lib/libdedup.so.1\n", not a prefix of another
        char maps[64];
        parent_file("maps", maps, sizeof(maps));
        runs = file_contains(maps, needle, n, false) == 1;
    }
    known = runs;
    return runs;
}

bool parent_started_with(const char* name, const char* value) {
    char needle[kMaxNeedle];
    // Entries are NUL-separated (the first one is preceded by the NUL
    // file_contains puts in front): "\0NAME=value\0", or "\0NAME=".
    int n = value ? snprintf(needle, sizeof(needle), "%c%s=%s%c", 0, name, value, 0)
                  : snprintf(needle, sizeof(needle), "%c%s=", 0, name);
    if (n <= 0 || (size_t)n >= sizeof(needle)) return false;
    char environ_path[64];
    parent_file("environ", environ_path, sizeof(environ_path));
    int has = file_contains(environ_path, needle, (size_t)n, true);
    return value ? has == 1 : has == 0;  // unreadable proves nothing
}

}  // namespace dedup
