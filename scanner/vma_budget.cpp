#include "scanner/vma_budget.h"

#include <fcntl.h>
#include <time.h>

#include "scanner/config.h"
#include "scanner/log.h"
#include "scanner/sys.h"

namespace dedup {

uint64_t monotonic_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t read_small_number(const char* path, uint64_t fallback) {
    long fd = sys::call(SYS_open, (long)path, O_RDONLY | O_CLOEXEC);
    if (sys::failed(fd)) return fallback;
    char buf[32];
    long n = sys::call(SYS_read, fd, (long)buf, sizeof(buf) - 1);
    sys::close((int)fd);
    if (n <= 0) return fallback;
    buf[n] = 0;
    uint64_t v = 0;
    bool any = false;
    for (char* p = buf; *p >= '0' && *p <= '9'; ++p) { v = v * 10 + (uint64_t)(*p - '0'); any = true; }
    return any ? v : fallback;
}

bool open_maps() { return kept_files().maps.ensure("/proc/self/maps", O_RDONLY); }

uint64_t count_vmas() {
    if (!open_maps()) return 0;
    char buf[65536];
    uint64_t lines = 0;
    for (off_t off = 0;;) {
        long n = kept_files().maps.pread(buf, sizeof(buf), off);
        if (n <= 0) break;
        for (long i = 0; i < n; ++i) lines += buf[i] == '\n';
        off += n;
    }
    return lines;
}

void VmaBudget::init(uint64_t reserve) {
    max_ = read_small_number("/proc/sys/vm/max_map_count", 65530);
    if (reserve == 0) reserve = max_ / 8;
    if (reserve >= max_) {
        log_warning("DEDUP_VMA_RESERVE=%llu is not below vm.max_map_count=%llu; using default %llu",
                    (unsigned long long)reserve, (unsigned long long)max_, (unsigned long long)(max_ / 8));
        reserve = max_ / 8;
    }
    limit_ = max_ - reserve;
    recount();
}

void VmaBudget::recount() {
    uint64_t n = count_vmas();
    if (n) estimate_ = n;
    last_recount_ns_ = monotonic_ns();
}

void VmaBudget::recount_if_older(uint64_t min_age_ns) {
    if (monotonic_ns() - last_recount_ns_ >= min_age_ns) recount();
}

void VmaBudget::hold_off(uint64_t ns) { hold_until_ns_ = monotonic_ns() + ns; }

bool VmaBudget::can_afford(uint64_t cost) {
    if (hold_until_ns_ && monotonic_ns() < hold_until_ns_) return false;
    if (estimate_ + cost <= limit_) return true;
    // The estimate only grows between recounts; look again, at most every 50 ms.
    if (monotonic_ns() - last_recount_ns_ > 50 * 1000000ull) recount();
    return estimate_ + cost <= limit_;
}

}  // namespace dedup
