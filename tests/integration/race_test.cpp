// Case 12: writer threads racing the scanner must never lose a write, and the
// test must be able to catch a library that does.
#include "harness.h"

using namespace dt;

namespace {

const char* kRaceMs = "4000";

std::vector<std::string> race_args(int seed, int pause_us = 200) {
    return {"--ms",   kRaceMs, "--threads", "4", "--mib", "32", "--seed", std::to_string(seed),
            "--pause-us", std::to_string(pause_us)};
}

TEST(Race, WritersNeverLoseAWriteWhileMerging) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // three runs: writers pausing 200 us / 50 us / never between bursts
    const int pauses[] = {200, 50, 0};
    for (int run_no = 1; run_no <= 3; run_no++) {
        Result r = run(prog("race_writers"), with_lib(race_args(run_no, pauses[run_no - 1])), tmp);
        ASSERT_TRUE(r.started);
        ASSERT_FALSE(r.timed_out) << r.describe();
        EXPECT_EQ(r.exit_code, 0) << "run " << run_no << "\n" << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << "run " << run_no << ": writes were lost\n"
                                          << r.describe();
        EXPECT_GT(r.num("ops"), 10000) << r.describe();
        // merges really happened during the run, else the test proves nothing
        EXPECT_GT(r.num("observed_shared"), 0) << "writers never met a merged page\n"
                                               << r.describe();
        Stats st = load_stats(r);
        ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
        EXPECT_TRUE(st["pages_sharing"] > 0 || st["cow_breaks"] > 0) << st.text;
        EXPECT_GT(st["cow_breaks"], 100) << "writes hardly ever met a merged page\n" << st.text;
        if (HasFailure()) break;
    }
}

// The same race where a quarter of the patterns is all zeros: pages are
// given back with MADV_DONTNEED, inside batch windows next to merges, while
// the writers fill, poke and revert them.
TEST(Race, WritersNeverLoseAWriteWhileZeroPagesAreGivenBack) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = race_args(7, 50);
    args.insert(args.end(), {"--zero-pattern", "1"});
    Result r = run(prog("race_writers"), with_lib(args), tmp);
    ASSERT_TRUE(r.started);
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << "writes were lost\n" << r.describe();
    EXPECT_GT(r.num("ops"), 10000) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_GT(st["cow_breaks"], 100) << "writes hardly ever met a merged page\n" << st.text;
    // Writers met pages given back as zero pages, as well as merged ones.
    EXPECT_GT(r.num("observed_zero_freed"), 0) << "no zero page was given back during the run\n"
                                               << r.describe();
    EXPECT_GT(r.num("observed_shared"), 0) << r.describe();
}

TEST(Race, BrokenLibraryLosesWritesAndIsCaught) {
    std::string broken = broken_lib();
    if (broken.empty() || !file_exists(broken))
        GTEST_SKIP() << "no broken library (DEDUP_LIB_BROKEN='" << broken << "')";
    TempDir tmp;
    int caught_in = 0;
    std::string last;
    for (int run_no = 1; run_no <= 5 && !caught_in; run_no++) {
        Options o = with_lib(race_args(100 + run_no));
        o.preload = broken;
        Result r = run(prog("race_writers"), o, tmp);
        ASSERT_TRUE(r.started);
        last = r.describe();
        if (r.exit_code == 1 && r.num("mismatches") > 0) caught_in = run_no;
    }
    EXPECT_GT(caught_in, 0) << "5 runs against the broken library found no lost write; last run:\n"
                            << last;
    if (caught_in) std::cout << "[          ] lost writes caught in run " << caught_in << "\n";
}

}  // namespace
