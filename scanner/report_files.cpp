#include "scanner/report_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scanner/os/clock.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {

// A file's modification time may lag the clock by a tick (the kernel
// stamps files with a coarse clock): a report written just after this
// process started still counts as written since.
constexpr uint64_t kMtimeSlackNs = 20 * 1000000ull;

// The number after "key": in a report's JSON, or false if there is none.
bool json_number(const char* text, const char* key, uint64_t* out) {
    char pattern[40];
    snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
    const char* at = strstr(text, pattern);
    if (!at) return false;
    at += strlen(pattern);
    if (*at < '0' || *at > '9') return false;
    *out = strtoull(at, nullptr, 10);
    return true;
}

// When this process started, on CLOCK_REALTIME (the clock of file times).
uint64_t started_realtime_ns(const Report& rep) {
    uint64_t now = clock_ns(CLOCK_REALTIME);
    uint64_t age = (uint64_t)(rep.seconds * 1e9);
    return now > age ? now - age : 0;
}

}  // namespace

void report_path(const char* pattern, char* out, size_t cap) {
    const char* pp = strstr(pattern, "%p");
    if (pp) snprintf(out, cap, "%.*s%ld%s", (int)(pp - pattern), pattern, sys::getpid(), pp + 2);
    else snprintf(out, cap, "%s", pattern);
}

bool stats_file_ours_to_write(const Report& rep, const char* existing, size_t n, uint64_t mtime_ns,
                              uint64_t started_ns) {
    if (report_worth_telling(rep)) return true;
    char text[512];  // pid and pidns come first in a report
    if (n >= sizeof(text)) n = sizeof(text) - 1;
    memcpy(text, existing, n);
    text[n] = 0;
    uint64_t pid = 0, pidns = 0;
    if (!json_number(text, "pid", &pid)) return true;  // not a report of ours: replace it
    json_number(text, "pidns", &pidns);
    if (pid == rep.pid && pidns == rep.pidns) return true;
    return mtime_ns + kMtimeSlackNs < started_ns;  // an earlier run's
}

long stats_file_write(const Report& rep, const char* path) {
    // Not through a link, and never blocking on a FIFO planted there.
    long fd = sys::call(SYS_open, (long)path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (!sys::failed(fd)) {
        struct stat st;
        char head[512];
        long got = 0;
        bool regular = !sys::failed(sys::call(SYS_fstat, fd, (long)&st)) && S_ISREG(st.st_mode);
        if (regular) got = sys::pread((int)fd, head, sizeof(head), 0);
        sys::close((int)fd);
        uint64_t mtime = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
        if (regular && got > 0 && !stats_file_ours_to_write(rep, head, (size_t)got, mtime, started_realtime_ns(rep)))
            return 1;
    }
    return report_write_file(rep, path);
}

long series_append(const Report& rep, const char* path) {
    char json[8192];
    size_t n = report_to_json(rep, json, sizeof(json));  // one line, newline included
    if (!n) return -ENOSPC;
    // O_NONBLOCK: a FIFO without a reader fails rather than stop the scanner.
    long fd = sys::call(SYS_open, (long)path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (sys::failed(fd)) return fd;
    long w = sys::write((int)fd, json, n);
    sys::close((int)fd);
    return w == (long)n ? 0 : w < 0 ? w : -EIO;
}

}  // namespace dedup
