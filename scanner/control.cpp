#include "scanner/control.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "scanner/config.h"
#include "scanner/live_file.h"
#include "scanner/os/clock.h"
#include "scanner/os/sys.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

constexpr size_t kText = 256;  // byte 0 the state, then the text
constexpr char kRequest = '?', kDone = '+', kRefused = '-';
constexpr uintptr_t kWholeSpace = ~uintptr_t(0) & ~uintptr_t(kPageSize - 1);
constexpr uint64_t kLookEveryNs = 100 * 1000000ull, kPendingEveryNs = 50 * 1000000ull;

// Values set at run time (kUnset: config()'s), read by the scanner.
constexpr uint64_t kUnset = ~0ull;
const char* const kPaceKeys[] = {"pages_to_scan", "sleep_ms", "cpu_percent"};
std::atomic<uint64_t> g_pace[3] = {{kUnset}, {kUnset}, {kUnset}};
std::atomic<uint64_t> g_run{1};

void control_path(char* out, size_t cap) {
    snprintf(out, cap, "/dev/shm/libdedup.%lu.%ld.ctl", live_file_pidns(), sys::getpid());
}

// ---- the requests ----------------------------------------------------------------

// run=2: every merged page private now, through the runtime's unmerge path
// (what prctl(PR_SET_MEMORY_MERGE, 0) runs), then no merging until run=1.
void unmerge_everything(State& s, char* answer, size_t cap) {
    uint64_t before = s.stats.unmerged_pages.load(std::memory_order_relaxed);
    g_run.store(2, std::memory_order_relaxed);  // first: nothing merges again meanwhile
    long r = unmerge_range(s, 0, kWholeSpace, Unmerge::kPrivateNow);
    uint64_t pages = s.stats.unmerged_pages.load(std::memory_order_relaxed) - before;
    if (r == 0) snprintf(answer, cap, "run=2: %llu pages unmerged; merging stopped", (unsigned long long)pages);
    else snprintf(answer, cap, "run=2: %llu pages unmerged, then failed (%s); merging stopped",
                  (unsigned long long)pages, strerror((int)-r));
}

bool set_run(State& s, const char* value, char* answer, size_t cap) {
    uint64_t was = g_run.load(std::memory_order_relaxed);
    if (!strcmp(value, "2")) {
        unmerge_everything(s, answer, cap);
        return true;
    }
    if (strcmp(value, "0") && strcmp(value, "1")) {
        snprintf(answer, cap, "run=%.40s: want 0 (stop), 1 (merge) or 2 (unmerge everything and stop)", value);
        return false;
    }
    g_run.store((uint64_t)(value[0] - '0'), std::memory_order_relaxed);
    snprintf(answer, cap, "run=%c (was %llu)", value[0], (unsigned long long)was);
    return true;
}

// KEY=VALUE for a pace setting, checked with the option's range.
bool set_pace(const char* key, const char* value, char* answer, size_t cap) {
    for (size_t i = 0; i < sizeof(kPaceKeys) / sizeof(kPaceKeys[0]); ++i) {
        if (strcmp(key, kPaceKeys[i]) != 0) continue;
        uint64_t v;
        if (!config_parse_runtime(key, value, &v, answer, cap)) return false;
        ScanPace was = control_pace();
        uint64_t old = i == 0 ? was.pages_to_scan : i == 1 ? was.sleep_ms : was.cpu_percent;
        g_pace[i].store(v, std::memory_order_relaxed);
        snprintf(answer, cap, "%.40s=%llu (was %llu)", key, (unsigned long long)v, (unsigned long long)old);
        return true;
    }
    snprintf(answer, cap, "%.64s cannot be changed at run time (pages_to_scan, sleep_ms, cpu_percent, run can)", key);
    return false;
}

// One request: "unmerge", "merge" or "KEY=VALUE". Takes the lock.
bool apply(char* request, char* answer, size_t cap) {
    State& s = state();
    MmLockGuard g(s.lock);
    if (!strcmp(request, "unmerge")) return set_run(s, "2", answer, cap);
    if (!strcmp(request, "merge")) return set_run(s, "1", answer, cap);
    char* eq = strchr(request, '=');
    if (!eq) {
        snprintf(answer, cap, "unknown request '%.64s'", request);
        return false;
    }
    *eq = 0;
    if (!strcmp(request, "run")) return set_run(s, eq + 1, answer, cap);
    return set_pace(request, eq + 1, answer, cap);
}

// ---- the request file ------------------------------------------------------------

// The request file last answered or ignored (the scanner thread's alone):
// it is not looked at again until it changes.
unsigned long g_seen_ino = 0;
uint64_t g_seen_mtime = 0;
uint64_t g_last_look_ns = 0, g_last_pending_ns = 0;
bool g_waiting = false;  // control_pending() saw one: look at once

uint64_t mtime_ns(const struct stat& st) { return (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec; }

void mark_seen(const struct stat& st) {
    g_seen_ino = st.st_ino;
    g_seen_mtime = mtime_ns(st);
}

// A request file is there that we have not answered (stat: no descriptor).
bool request_there(struct stat* st) {
    char path[96];
    control_path(path, sizeof(path));
    if (sys::failed(sys::call(SYS_lstat, (long)path, (long)st))) return false;
    return st->st_ino != g_seen_ino || mtime_ns(*st) != g_seen_mtime;
}

// Only a file no other user could have written: a regular file of our own
// effective user, mode 0600 or less.
bool acceptable(const struct stat& st) {
    return S_ISREG(st.st_mode) && st.st_uid == (uid_t)sys::call(SYS_geteuid) && !(st.st_mode & 077);
}

// Reads the request of the file described by seen, applies it, answers.
void answer_request(const struct stat& seen) {
    mark_seen(seen);
    if (!acceptable(seen)) return;  // someone else's: ignored (and not opened)
    char path[96];
    control_path(path, sizeof(path));
    long fd = sys::call(SYS_open, (long)path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (sys::failed(fd)) return;
    struct stat st;
    char request[kText], answer[kText];
    if (!sys::failed(sys::call(SYS_fstat, fd, (long)&st)) && st.st_ino == seen.st_ino && acceptable(st) &&
        sys::pread((int)fd, request, kText - 1, 0) > 1 && request[0] == kRequest) {
        request[kText - 1] = 0;
        char* end = request + 1 + strcspn(request + 1, "\n");
        *end = 0;
        bool ok = apply(request + 1, answer, sizeof(answer));
        sys::call(SYS_pwrite64, fd, (long)answer, (long)strnlen(answer, kText - 2) + 1, 1);  // the text, then
        char state = ok ? kDone : kRefused;
        sys::call(SYS_pwrite64, fd, (long)&state, 1, 0);  // its state: whole when it shows
        if (!sys::failed(sys::call(SYS_fstat, fd, (long)&st))) mark_seen(st);
    }
    sys::close((int)fd);
}

}  // namespace

ScanPace control_pace() {
    const Config& c = config();
    ScanPace p = {c.pages_to_scan, c.sleep_ms, c.cpu_percent};
    uint64_t* fields[] = {&p.pages_to_scan, &p.sleep_ms, &p.cpu_percent};
    for (int i = 0; i < 3; ++i) {
        uint64_t v = g_pace[i].load(std::memory_order_relaxed);
        if (v != kUnset) *fields[i] = v;
    }
    return p;
}

uint64_t control_run() { return g_run.load(std::memory_order_relaxed); }

bool control_pending() {
    uint64_t now = monotonic_ns();
    if (now - g_last_pending_ns < kPendingEveryNs) return g_waiting;
    g_last_pending_ns = now;
    struct stat st;
    g_waiting = request_there(&st);
    return g_waiting;
}

void control_tick() {
    uint64_t now = monotonic_ns();
    if (!g_waiting && now - g_last_look_ns < kLookEveryNs) return;
    g_last_look_ns = now;
    g_waiting = false;
    struct stat st;
    if (request_there(&st)) answer_request(st);
}

}  // namespace dedup
