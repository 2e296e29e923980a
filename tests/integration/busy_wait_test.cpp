// While the program's own threads keep the CPUs busy, the scanner waits for
// them to calm down, for at most DEDUP_BUSY_WAIT_MS in a row (busy_wait.h);
// a program that stays busy is merged anyway.
#include "harness.h"

using namespace dt;

namespace {

// busy_dups: 64 MiB of one page written, then two threads spinning.
Result run_busy(TempDir& tmp, const std::string& limit_ms, const std::string& spin_ms) {
    Options o = with_lib({"--mib", "64", "--threads", "2", "--spin-ms", spin_ms},
                         {{"DEDUP_BUSY_WAIT_MS", limit_ms}});
    o.timeout_ms = 60000;
    return run(prog("busy_dups"), o, tmp);
}

TEST(BusyWait, ScannerWaitsWhileTheProgramIsBusyThenMerges) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run_busy(tmp, "3000", "1500");
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    // The program was busy from its start: the scanner waited throughout.
    // (Up to a wake-up of 2,048 pages of 16,384 may have merged if the
    // first look missed it.)
    EXPECT_LE(r.num("merged_at_spin_end"), 2048) << r.describe();
    // Calm: merged at once.
    EXPECT_GE(r.num("calm_ms"), 0) << "not merged after the threads stopped\n" << r.describe();
    EXPECT_GE(r.num("merged_after"), r.num("pages") * 9 / 10) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_GE(st["busy_wait_ms"], 1000) << st.text;
    EXPECT_LE(st["busy_wait_ms"], 3000) << st.text;
}

TEST(BusyWait, ProgramThatStaysBusyIsMergedAnyway) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run_busy(tmp, "300", "4000");
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("merged_at_spin_end"), r.num("pages") * 9 / 10) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    // About 300 ms in a row, then at most an eighth of the rest.
    EXPECT_GE(st["busy_wait_ms"], 200) << st.text;
    EXPECT_LE(st["busy_wait_ms"], 300 + 4000 / 8 + 200) << st.text;
}

TEST(BusyWait, ZeroMergesWhileTheProgramIsBusy) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run_busy(tmp, "0", "1500");
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("merged_at_spin_end"), r.num("pages") * 9 / 10) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_EQ(st["busy_wait_ms"], 0) << st.text;
}

}  // namespace
