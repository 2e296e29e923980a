#include "scanner/control.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "scanner/config.h"
#include "scanner/live_file.h"
#include "scanner/os/sys.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

constexpr size_t kFileBytes = 4096;
constexpr size_t kText = 256;  // byte 0 the state, then the text
constexpr char kRequest = '?', kDone = '+', kRefused = '-';
constexpr uintptr_t kWholeSpace = ~uintptr_t(0) & ~uintptr_t(kPageSize - 1);

// The mapped control file; guarded by the mm lock.
char* g_map = nullptr;

// Values set at run time (kUnset: config()'s), read by the scanner.
constexpr uint64_t kUnset = ~0ull;
const char* const kPaceKeys[] = {"pages_to_scan", "sleep_ms", "cpu_percent"};
std::atomic<uint64_t> g_pace[3] = {{kUnset}, {kUnset}, {kUnset}};
std::atomic<uint64_t> g_run{1};

void control_path(char* out, size_t cap) {
    snprintf(out, cap, "/dev/shm/libdedup.%lu.%ld.ctl", live_file_pidns(), sys::getpid());
}

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

// One request: "unmerge", "merge" or "KEY=VALUE". Lock held.
bool apply(State& s, char* request, char* answer, size_t cap) {
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
    MmLockGuard g(state().lock);
    return g_map && __atomic_load_n(&g_map[0], __ATOMIC_ACQUIRE) == kRequest;
}

void control_tick() {
    State& s = state();
    MmLockGuard g(s.lock);
    if (!g_map || __atomic_load_n(&g_map[0], __ATOMIC_ACQUIRE) != kRequest) return;
    char request[kText], answer[kText];
    size_t n = 0;
    for (; n + 1 < kText && g_map[1 + n] && g_map[1 + n] != '\n'; ++n) request[n] = g_map[1 + n];
    request[n] = 0;
    bool ok = apply(s, request, answer, sizeof(answer));
    size_t len = strnlen(answer, kText - 2);
    memcpy(g_map + 1, answer, len);
    memset(g_map + 1 + len, 0, kText - 1 - len);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);  // the answer whole before its state shows
    __atomic_store_n(&g_map[0], ok ? kDone : kRefused, __ATOMIC_RELEASE);
}

void control_file_link() {
    if (g_map) return;
    char path[96];
    control_path(path, sizeof(path));
    sys::call(SYS_unlink, (long)path);  // an earlier process's with our pid (only ours can go: /dev/shm is sticky)
    long fd = sys::call(SYS_open, (long)path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (sys::failed(fd)) return;  // someone else's file is there: no control, rather than theirs
    long err = 0;
    void* m = MAP_FAILED;
    if (!sys::failed(sys::call(SYS_fchmod, fd, 0600)) && !sys::failed(sys::call(SYS_ftruncate, fd, (long)kFileBytes)))
        m = sys::mmap(nullptr, kFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, (int)fd, 0, &err);
    sys::close((int)fd);
    if (m == MAP_FAILED) {
        sys::call(SYS_unlink, (long)path);
        return;
    }
    sys::madvise(m, kFileBytes, MADV_DONTFORK);  // a forked child must not answer for us
    g_map = static_cast<char*>(m);
}

void control_file_unlink() {
    if (!g_map) return;
    char path[96];
    control_path(path, sizeof(path));
    sys::call(SYS_unlink, (long)path);
    sys::munmap(g_map, kFileBytes);
    g_map = nullptr;
}

void control_reset_in_child() { g_map = nullptr; }

}  // namespace dedup
