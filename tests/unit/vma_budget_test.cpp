// VmaBudget and count_vmas.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/vma_budget.h"

using namespace dedup;

namespace {

uint64_t maps_lines() {
    std::ifstream f("/proc/self/maps");
    std::string line;
    uint64_t n = 0;
    while (std::getline(f, line)) ++n;
    return n;
}

uint64_t read_max_map_count() {
    std::ifstream f("/proc/sys/vm/max_map_count");
    uint64_t v = 0;
    f >> v;
    return v ? v : 65530;
}

void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, nullptr);
}

}  // namespace

TEST(VmaBudget, CountVmasMatchesProcMaps) {
    uint64_t a = maps_lines();
    uint64_t c = count_vmas();
    uint64_t b = maps_lines();
    ASSERT_GT(c, 0u);
    uint64_t lo = std::min(a, b), hi = std::max(a, b);
    EXPECT_GE(c + 3, lo);
    EXPECT_LE(c, hi + 3);
}

TEST(VmaBudget, CountVmasSeesNewMappings) {
    const int k = 20;
    void* maps[k];
    uint64_t before = count_vmas();
    // Alternate protections so that neighbouring mappings cannot merge.
    for (int i = 0; i < k; ++i) {
        maps[i] = mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT_NE(maps[i], MAP_FAILED);
        mprotect(maps[i], 4096, PROT_READ);
    }
    uint64_t after = count_vmas();
    EXPECT_GE(after, before + k) << "each mapping adds at least one VMA";
    for (int i = 0; i < k; ++i) munmap(maps[i], 2 * 4096);
    EXPECT_LT(count_vmas(), after);
}

TEST(VmaBudget, InitDefaultReserve) {
    VmaBudget b;
    b.init(0);
    uint64_t max = read_max_map_count();
    EXPECT_EQ(b.max_map_count(), max);
    EXPECT_EQ(b.limit(), max - max / 8);
    uint64_t c = count_vmas();
    EXPECT_GE(b.estimate() + 3, c);
    EXPECT_LE(b.estimate(), c + 3);
    EXPECT_TRUE(b.can_afford(2));
}

TEST(VmaBudget, CanAffordRespectsLimit) {
    VmaBudget b;
    b.init(0);
    uint64_t max = b.max_map_count();
    uint64_t now = count_vmas();
    ASSERT_LT(now + 10, max);
    // Limit 10 above the current count.
    b.init(max - (now + 10));
    ASSERT_EQ(b.limit(), now + 10);
    uint64_t est = b.estimate();
    ASSERT_LE(est, now + 2);
    uint64_t room = b.limit() - est;
    EXPECT_TRUE(b.can_afford(1));
    EXPECT_TRUE(b.can_afford(room));
    EXPECT_FALSE(b.can_afford(room + 1));
    EXPECT_FALSE(b.can_afford(1000));
    // Spending moves the estimate.
    b.spent(room);
    EXPECT_EQ(b.estimate(), b.limit());
    EXPECT_FALSE(b.can_afford(1)) << "estimate at the limit, recount too recent";
    // After 50 ms can_afford recounts and finds the real (lower) count.
    sleep_ms(60);
    EXPECT_TRUE(b.can_afford(1));
    EXPECT_LE(b.estimate(), now + 3);
    // recount() resets the estimate to the real count.
    b.spent(1000);
    b.recount();
    EXPECT_LE(b.estimate(), now + 3);
}

TEST(VmaBudget, ReserveAtOrAboveMaxFallsBackToDefaultWithWarning) {
    // In a child, so the process-wide warning counter of this binary is untouched.
    int mfd = memfd_create("vma-log", MFD_CLOEXEC);
    ASSERT_GE(mfd, 0);
    uint64_t* shared = static_cast<uint64_t*>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(shared, MAP_FAILED);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        log_set_fd(mfd);
        VmaBudget b;
        b.init(1ull << 40);
        shared[0] = b.limit();
        shared[1] = b.max_map_count();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    uint64_t max = shared[1];
    EXPECT_EQ(shared[0], max - max / 8);
    char buf[1024] = {0};
    ssize_t n = pread(mfd, buf, sizeof(buf) - 1, 0);
    close(mfd);
    munmap(shared, 4096);
    ASSERT_GT(n, 0);
    std::string log(buf, (size_t)n);
    EXPECT_NE(log.find("DEDUP_VMA_RESERVE"), std::string::npos) << log;
    EXPECT_NE(log.find("default"), std::string::npos) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
}

TEST(VmaBudget, MonotonicClockAdvances) {
    uint64_t a = monotonic_ns();
    sleep_ms(2);
    uint64_t b = monotonic_ns();
    EXPECT_GE(b - a, 1000000u);
}

TEST(VmaBudget, BriefWindowsMayUseTheReserveButNotTheLastVmas) {
    VmaBudget b;
    b.init(0);
    uint64_t max = b.max_map_count();
    uint64_t now = count_vmas();
    ASSERT_LT(now + 200, max);
    b.init(max - (now + 10));  // budget: 10 VMAs above the current count
    b.spent(b.limit() - b.estimate());
    EXPECT_FALSE(b.can_afford(2)) << "the budget is spent";
    EXPECT_TRUE(b.can_afford_briefly(2)) << "a window that closes at once may use the reserve";
    // Short of the hard limit by a margin, even for a moment.
    b.spent(max - 64 - b.estimate());
    EXPECT_FALSE(b.can_afford_briefly(1)) << "estimate " << b.estimate() << " of " << max;
}

TEST(VmaBudget, RecountIsNoMoreFrequentThanItsCostAllows) {
    // Enough VMAs that a count takes measurable time.
    const int k = 4000;
    char* area = static_cast<char*>(mmap(nullptr, 2 * k * 4096, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(area, MAP_FAILED);
    for (int i = 0; i < k; ++i) mprotect(area + 2 * i * 4096, 4096, PROT_READ);
    VmaBudget b;
    b.init(0);
    uint64_t counted = b.last_count();
    EXPECT_GE(counted, (uint64_t)2 * k);
    EXPECT_FALSE(b.recount_if_older(0)) << "a count was just taken: the next waits 50 times its cost";
    munmap(area, 2 * k * 4096);
    // Once that has passed (a count of 8000 lines takes a few ms), it counts again.
    sleep_ms(900);
    sleep_ms(900);
    EXPECT_TRUE(b.recount_if_older(0));
    EXPECT_LT(b.last_count(), counted - k);
}
