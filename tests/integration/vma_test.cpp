// The VMA budget: merging never goes within DEDUP_VMA_RESERVE of
// vm.max_map_count, says what it left unmerged, and gives VMAs back when the
// program itself needs them.
#include "harness.h"

using namespace dt;

namespace {

long max_map_count() { return atol(read_file("/proc/sys/vm/max_map_count").c_str()); }

TEST(VmaBudget, ScatteredMergesStopAtTheReserve) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    long max = max_map_count();
    // Leave room for only ~1000 of the 8192 VMAs the scattered merges want.
    long reserve = max - 1500;
    Result r = run(prog("vma_pressure"), with_lib({"budget"}, {{"DEDUP_VMA_RESERVE", std::to_string(reserve)}}), tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    // The shim stops at the budget; the program's own few mappings made
    // between two exact counts may add a handful on top.
    EXPECT_LE(r.num("vmas"), max - reserve + 32) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_GT(st["vma_budget_skips"], 0) << st.text;
    EXPECT_GT(st["pages_sharing"], 100) << "some merging within the budget\n" << st.text;
    EXPECT_NE(r.err.find("left unmerged: VMA budget"), std::string::npos) << r.err;
}

TEST(VmaBudget, ProgramGrowingToTheLimitGetsItsVmasBack) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    long max = max_map_count();
    if (max > 200000) GTEST_SKIP() << "vm.max_map_count is raised (" << max << "): too slow to fill";
    Options o = with_lib({"grow"}, {{"DEDUP_SLEEP_MS", "1"}});
    o.timeout_ms = 180000;
    Result r = run(prog("vma_pressure"), o, tmp);
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.num("failures"), 0) << r.describe();
    EXPECT_GE(r.num("grown_to"), max - 201) << r.describe();
    EXPECT_GT(r.num("vmas"), 4000) << "the scattered merges did not happen first\n" << r.describe();
    EXPECT_NE(r.err.find("merged regions were unmerged to give VMAs back"), std::string::npos) << r.err;
}

}  // namespace
