// Kernel writes (read, pread, preadv, recv into registered memory) must never
// fail with EFAULT because the scanner write-protected the page — and the
// test must be able to catch a library that lets them.
#include "harness.h"

using namespace dt;

namespace {

std::vector<std::string> args() { return {"--ms", "3000", "--threads", "3", "--pages", "64"}; }

TEST(KernelWrites, NeverSeeEfaultWhileMerging) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    for (int run_no = 1; run_no <= 2; run_no++) {
        Result r = run(prog("read_window"), with_lib(args()), tmp);
        ASSERT_TRUE(r.started);
        ASSERT_FALSE(r.timed_out) << r.describe();
        EXPECT_EQ(r.num("efaults"), 0) << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        EXPECT_GT(r.num("calls"), 10000) << r.describe();
        Stats st = load_stats(r);
        ASSERT_TRUE(st.parsed) << st.error;
        // The scanner really merged the pages the kernel was writing into.
        EXPECT_GT(st["pages_merged"], 100) << st.text;
        EXPECT_GT(st["cow_breaks"], 100) << st.text;
    }
}

TEST(KernelWrites, LibraryWithoutPinsIsCaught) {
    const char* nopin = getenv("DEDUP_LIB_NOPIN");
    if (!nopin || !file_exists(nopin)) GTEST_SKIP() << "DEDUP_LIB_NOPIN not built";
    TempDir tmp;
    int caught_in = 0;
    std::string last;
    for (int run_no = 1; run_no <= 5 && !caught_in; run_no++) {
        Options o = with_lib(args());
        o.preload = nopin;
        Result r = run(prog("read_window"), o, tmp);
        ASSERT_TRUE(r.started);
        last = r.describe();
        if (r.num("efaults") > 0) caught_in = run_no;
    }
    EXPECT_GT(caught_in, 0) << "no EFAULT seen without pins; last run:\n" << last;
}

}  // namespace
