// The scan's back-off of unchanged unique pages (KSM's smart scan), end to
// end: pages the scanner passed over show in pages_skipped, a duplicate
// written late over a backed-off page still merges within the stated bound
// (docs/DESIGN.md: 2 * 8 passes), and every byte stays as written.
#include "harness.h"

using namespace dt;

namespace {

TEST(Backoff, LateDuplicateOfBackedOffPagesMergesWithinTheBound) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // 32 MiB, 1024 pages a wake-up every 60 ms: a pass takes about half a
    // second, so the live file (rewritten every second) counts passes to
    // within one or two.
    Options o = with_lib({"--mib", "32", "--warm-passes", "12", "--pairs", "16"},
                         {{"DEDUP_SLEEP_MS", "60"}, {"DEDUP_PAGES_TO_SCAN", "1024"}});
    o.timeout_ms = 120000;
    Result r = run(prog("late_duplicate"), o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("warm_passes_seen"), 12) << r.describe();
    // Backed off: most of 12 passes over 8192 unique pages passed over.
    EXPECT_GT(r.num("skipped_before_write"), 8192 * 4) << r.describe();
    EXPECT_EQ(r.num("pairs_merged"), r.num("pairs")) << r.describe();
    // The bound is 16 passes; the live file's count may lag by a pass at
    // each end.
    EXPECT_GE(r.num("passes_to_merge"), 0) << r.describe();
    EXPECT_LE(r.num("passes_to_merge"), 16 + 2) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_GT(st["pages_skipped"], 0) << st.text;
    EXPECT_GE(st["pages_sharing"], 16) << st.text;
}

// Without the back-off's help a unique page would be hashed every pass: the
// scanner hashes far fewer pages than it passes over once nothing changes.
TEST(Backoff, UniqueUnchangingPagesAreHashedLessThanOncePerPass) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("unique_pages"), with_lib({"--mib", "64", "--hold-ms", "3000"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("file_pages_seen"), 0) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    double passes = st["full_scans"], registered_pages = 64 * 256;
    ASSERT_GE(passes, 16) << st.text;
    EXPECT_LT(st["pages_scanned"], 0.5 * passes * registered_pages) << st.text;
    EXPECT_GT(st["pages_skipped"], 0.4 * passes * registered_pages) << st.text;
    EXPECT_EQ(st["pages_sharing"], 0) << st.text;
}

}  // namespace
