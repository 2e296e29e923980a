#include "scanner/vma_budget.h"

#include <fcntl.h>
#include <string.h>
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

namespace {
uint64_t parse_number(const char*& p, const char* end, int base) {
    uint64_t v = 0;
    for (; p < end; ++p) {
        int d;
        if (*p >= '0' && *p <= '9') d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f') d = *p - 'a' + 10;
        else break;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    return v;
}
const char* skip_field(const char* p, const char* end) {  // past the field and the spaces after it
    while (p < end && *p != ' ') ++p;
    while (p < end && *p == ' ') ++p;
    return p;
}
}  // namespace

// Lines look like "lo-hi perms offset dev inode path".
long find_vmas_of_file(uint64_t ino, const char* name, uintptr_t* lo, uintptr_t* hi, long max) {
    if (!open_maps()) return -1;
    char buf[65536];
    long found = 0;
    size_t have = 0;  // bytes of an unfinished line kept at the front of buf
    for (off_t off = 0;;) {
        long n = kept_files().maps.pread(buf + have, sizeof(buf) - have, off);
        if (n < 0) return -1;
        if (n == 0) break;
        off += n;
        const char* p = buf;
        const char* end = buf + have + n;
        for (const char* nl; (nl = (const char*)memchr(p, '\n', (size_t)(end - p))) != nullptr; p = nl + 1) {
            const char* q = p;
            uint64_t a = parse_number(q, nl, 16);
            ++q;
            uint64_t b = parse_number(q, nl, 16);
            q = skip_field(skip_field(skip_field(skip_field(q, nl), nl), nl), nl);  // end, perms, offset, dev
            if (parse_number(q, nl, 10) == ino && memmem(q, (size_t)(nl - q), name, strlen(name))) {
                if (found < max) {
                    lo[found] = (uintptr_t)a;
                    hi[found] = (uintptr_t)b;
                }
                ++found;
            }
        }
        have = (size_t)(end - p);
        if (have == sizeof(buf)) have = 0;  // a line longer than buf: drop it
        memmove(buf, p, have);
    }
    return found;
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
    uint64_t t0 = monotonic_ns();
    uint64_t n = count_vmas();
    if (n) estimate_ = last_count_ = n;
    last_recount_ns_ = monotonic_ns();
    last_cost_ns_ = last_recount_ns_ - t0;
}

bool VmaBudget::recount_if_older(uint64_t min_age_ns, uint64_t cost_factor) {
    uint64_t age = cost_factor * last_cost_ns_;
    if (age < min_age_ns) age = min_age_ns;
    if (monotonic_ns() - last_recount_ns_ < age) return false;
    recount();
    return true;
}

void VmaBudget::hold_off(uint64_t ns) { hold_until_ns_ = monotonic_ns() + ns; }

bool VmaBudget::can_afford(uint64_t cost) {
    if (hold_until_ns_ && monotonic_ns() < hold_until_ns_) return false;
    return can_afford_under(cost, limit_);
}

bool VmaBudget::can_afford_briefly(uint64_t cost) {
    constexpr uint64_t kMargin = 64;  // VMAs the program's other threads may add meanwhile
    return can_afford_under(cost, max_ > kMargin ? max_ - kMargin : 0);
}

bool VmaBudget::can_afford_under(uint64_t cost, uint64_t ceiling) {
    if (estimate_ + cost <= ceiling) return true;
    // The estimate only grows between recounts; look again, at most every
    // 50 ms and no more than a tenth of the time.
    recount_if_older(50 * 1000000ull, kAtBudgetCostFactor);
    return estimate_ + cost <= ceiling;
}

}  // namespace dedup
