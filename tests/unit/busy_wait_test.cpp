// BusyWait: when the scanner waits for the program's threads to calm down,
// for how long, and that it never waits for good.
#include <gtest/gtest.h>

#include "scanner/busy_wait.h"

using namespace dedup;

namespace {

constexpr uint64_t kMs = 1000000ull;

// A program whose other threads use `others_percent` of a CPU and a scanner
// using `own_percent`, looked at every `step_ms`; counts the waits.
struct Sim {
    BusyWait w;
    uint64_t wall = 1000 * kMs, process = 0, own = 0;
    explicit Sim(uint64_t limit_ms) {
        w.set_limit_ms(limit_ms);
        // The first look starts the clocks and waits a slice to see.
        EXPECT_EQ(w.should_wait(wall, process, own), limit_ms > 0);
    }
    // Advances step_ms and looks: whether the scanner waits.
    bool step(uint64_t step_ms, uint64_t others_percent, uint64_t own_percent = 0) {
        wall += step_ms * kMs;
        own += step_ms * kMs * own_percent / 100;
        process += step_ms * kMs * (others_percent + own_percent) / 100;
        return w.should_wait(wall, process, own);
    }
    // Waits in `ms` of a program at others_percent, looking every slice.
    uint64_t waited_ms(uint64_t ms, uint64_t others_percent) {
        uint64_t waited = 0;
        for (uint64_t t = 0; t < ms; t += BusyWait::kSliceMs)
            if (step(BusyWait::kSliceMs, others_percent)) waited += BusyWait::kSliceMs;
        return waited;
    }
};

TEST(BusyWait, WaitsWhileOtherThreadsUseHalfACpuOrMore) {
    Sim a(2000);
    EXPECT_TRUE(a.step(10, 50));
    EXPECT_TRUE(a.step(10, 180));
    EXPECT_FALSE(a.step(10, 40));
    EXPECT_FALSE(a.step(10, 0));
    EXPECT_TRUE(a.step(10, 100));
}

TEST(BusyWait, TheScannersOwnCpuDoesNotCount) {
    Sim a(2000);
    // The process uses 130% of a CPU, 100 of it the scanner: the program 30.
    EXPECT_FALSE(a.step(20, 30, 100));
    EXPECT_FALSE(a.w.busy());
    EXPECT_TRUE(a.step(20, 60, 100));
}

TEST(BusyWait, ZeroLimitNeverWaits) {
    Sim a(0);
    EXPECT_EQ(a.waited_ms(5000, 200), 0u);
}

TEST(BusyWait, ShortLooksKeepTheLastVerdictAndDoNotWait) {
    Sim a(2000);
    EXPECT_FALSE(a.step(1, 200));  // under 2 ms: tells nothing yet
    EXPECT_FALSE(a.w.busy());
    EXPECT_TRUE(a.step(1, 200));  // 2 ms since the last look that counted
    EXPECT_TRUE(a.w.busy());
}

TEST(BusyWait, WaitsAboutTheLimitInARowThenAnEighthOfTheTime) {
    Sim a(2000);
    // The first two seconds of a busy program: all waited (an eighth of the
    // time refilled meanwhile: about 2.25 s in a row).
    EXPECT_EQ(a.waited_ms(2000, 100), 2000u);
    uint64_t rest = a.waited_ms(60000, 100);
    // Busy for a minute more: about an eighth of it waited.
    EXPECT_LE(rest, 60000u / 8 + 500u);
    EXPECT_GE(rest, 60000u / 8 - 500u);
}

TEST(BusyWait, CalmTimeGivesTheAllowanceBack) {
    Sim a(1000);
    EXPECT_GE(a.waited_ms(5000, 100), 1000u);
    // Spent: a busy look now waits only as the refill allows.
    EXPECT_LE(a.waited_ms(400, 100), 60u);
    EXPECT_EQ(a.waited_ms(1000, 0), 0u);  // calm for a second: the whole second back
    EXPECT_GE(a.waited_ms(1000, 100), 990u);
}

}  // namespace
