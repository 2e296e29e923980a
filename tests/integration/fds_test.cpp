// The shim's descriptors: invisible to the program, and the shim survives a
// program that closes or dup2s over every descriptor (issue 3, item 4).
#include "harness.h"

using namespace dt;

TEST(ShimFds, InvisibleAndSurviveCloseAllAndDup2) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("shim_fds"), with_lib({"shim"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    // fstat/fcntl over every descriptor number see exactly the program's own.
    EXPECT_EQ(r.kv["probe_fds"], r.kv["expected_fds"]) << r.describe();
    // The shim holds at most its kept files (pagemap, maps, live stats; the
    // memfd is closed once mapped), and answers EBADF to close/fstat/dup/lseek.
    EXPECT_LE(r.num("shim_fds"), 3) << r.describe();
    EXPECT_EQ(r.num("close_ebadf"), r.num("shim_fds")) << r.describe();
    EXPECT_EQ(r.num("dup2_ok"), 1) << r.describe();
    // Merging goes on after each step (512 pages, 8 distinct).
    for (const char* step : {"start", "dup2", "close_loop", "raw_close_range", "closefrom"})
        EXPECT_GE(r.num(std::string("merged_after_") + step), 500) << step << "\n" << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
}

TEST(ShimFds, SameProgramWithoutShimAgrees) {
    TempDir tmp;
    Result r = run(prog("shim_fds"), without_lib({"plain"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.kv["probe_fds"], r.kv["expected_fds"]) << r.describe();
    EXPECT_EQ(r.num("shim_fds"), 0) << r.describe();
    EXPECT_EQ(r.num("dup2_ok"), 1) << r.describe();
}
