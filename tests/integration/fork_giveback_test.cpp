// Store rotation: canonical pages that existed at a fork are given back once
// the parent no longer uses them (it moves its merged pages to a new memfd
// and drops every view of the old one), and a forked child that still maps
// them keeps its bytes. Program: tests/programs/fork_giveback.c.
#include "harness.h"

using namespace dt;

namespace {

// The program on plain memory: contents right, child fine, nothing waited for.
void run_reference(const std::string& mode, const TempDir& tmp) {
    Result r = run(prog("fork_giveback"), without_lib({mode}), tmp);
    ASSERT_TRUE(r.started) << r.describe();
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << "reference run (no shim) failed\n" << r.describe();
    EXPECT_EQ(r.num("with_shim"), 0) << r.describe();
}

Result run_shim(const std::string& mode, const TempDir& tmp) {
    return run(prog("fork_giveback"), with_lib({mode}, {{"DEDUP_SLEEP_MS", "0"}}), tmp);
}

// Exit stats: the rotation counters exist, at least one rotation, and no page
// is still kept for a child.
void check_exit_stats(const Result& r) {
    Stats st = load_stats(r);
    ASSERT_TRUE(st.present) << "no exit stats file at " << r.stats_path << "\n" << r.describe();
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_TRUE(st.has("store_rotations")) << "exit stats have no \"store_rotations\"\n" << st.text;
    EXPECT_TRUE(st.has("fork_kept_pages")) << "exit stats have no \"fork_kept_pages\"\n" << st.text;
    if (st.has("store_rotations")) {
        EXPECT_GE(st["store_rotations"], 1) << "the parent never rotated its store\n" << st.text;
    }
    if (st.has("fork_kept_pages")) {
        EXPECT_EQ(st["fork_kept_pages"], 0) << "canonical pages still kept for a child at exit\n" << st.text;
    }
}

void check_common(const Result& r) {
    ASSERT_TRUE(r.started) << r.describe();
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << "content mismatch or child failure\n" << r.describe();
    EXPECT_EQ(r.num("with_shim"), 1) << "the shim was not loaded\n" << r.describe();
    // merged before the fork, else nothing was pinned and the test proves nothing
    EXPECT_GE(r.num("merged_before"), 0.95 * r.num("pages")) << r.describe();
}

TEST(ForkGiveBack, ExitedChildLetsTheParentFreeTheOldStore) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    run_reference("exit_then_free", tmp);
    Result r = run_shim("exit_then_free", tmp);
    check_common(r);
    EXPECT_EQ(r.num("child_status"), 0) << r.describe();
    EXPECT_EQ(r.num("parent_bad_words"), 0) << r.describe();
    EXPECT_GE(r.num("store_rotations"), 1) << "no store rotation seen in the live stats (-1: no such key)\n"
                                           << r.describe();
    EXPECT_GE(r.num("shmem_freed_kb"), 24 * 1024)
        << "the 32 MiB of canonical pages the exited child was the only reason to keep were not given back\n"
        << r.describe();
    EXPECT_LE(r.num("canonical_inodes"), 1) << "the old memfd is still mapped\n" << r.describe();
    // the same without other processes' noise: shmem pages this process maps
    // (its store views) after the region is gone; 32 MiB without a rotation
    EXPECT_LE(r.num("rss_shmem_after_kb"), 8 * 1024)
        << "the process still maps the canonical pages it no longer uses\n" << r.describe();
    check_exit_stats(r);
}

TEST(ForkGiveBack, LiveChildKeepsItsBytesWhileTheParentRotates) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    run_reference("live_child", tmp);
    Result r = run_shim("live_child", tmp);
    check_common(r);
    EXPECT_EQ(r.num("child_status"), 0) << "the child saw wrong bytes\n" << r.describe();
    EXPECT_EQ(r.num("child_bad_words"), 0) << r.describe();
    EXPECT_EQ(r.num("parent_intact"), 1) << "the parent lost or corrupted writes\n" << r.describe();
    EXPECT_GT(r.num("writes"), 1000) << r.describe();
    EXPECT_GE(r.num("store_rotations"), 1) << "no store rotation seen in the live stats (-1: no such key)\n"
                                           << r.describe();
    EXPECT_EQ(r.num("child_saw_rotation"), 1)
        << "the child did not live through a rotation of its parent's store\n"
        << r.describe();
    EXPECT_LE(r.num("canonical_inodes"), 1)
        << "after the rotation the parent still maps the old memfd, so it is never freed\n"
        << r.describe();
    EXPECT_GE(r.num("r2_remerged_pct"), 90) << "R2's unwritten pages are not merged after the rotation\n"
                                            << r.describe();
    check_exit_stats(r);
}

TEST(ForkGiveBack, RepeatedForksDoNotAccumulateCanonicalPages) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    run_reference("repeated", tmp);
    Result r = run_shim("repeated", tmp);
    ASSERT_TRUE(r.started) << r.describe();
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << "content mismatch or child failure\n" << r.describe();
    EXPECT_EQ(r.num("with_shim"), 1) << r.describe();
    EXPECT_EQ(r.num("rounds_ok"), 1) << r.describe();
    for (int i = 1; i <= 12; i++) {
        std::string k = "round" + std::to_string(i);
        ASSERT_TRUE(r.has(k)) << r.describe();
        EXPECT_NE(r.str(k).find(" child=0 parent_bad_words=0 "), std::string::npos) << k << "\n" << r.describe();
        long merged = strtol(r.str(k).c_str() + strlen("merged="), nullptr, 10);
        EXPECT_GE(merged, 2048 * 95 / 100) << k << " did not merge\n" << r.describe();
    }
    EXPECT_GE(r.num("store_rotations"), 1) << "no store rotation seen in the live stats (-1: no such key)\n"
                                           << r.describe();
    EXPECT_LE(r.num("shmem_end_kb"), r.num("shmem_round1_kb") + 16 * 1024)
        << "Shmem kept growing with every fork round (each round leaves 4 MiB of canonical pages)\n"
        << r.describe();
    // per process, free of other processes' noise: every round's region is
    // gone, so the store views should hold next to nothing (48 MiB without
    // rotation)
    EXPECT_LE(r.num("rss_shmem_end_kb"), 8 * 1024)
        << "the process still maps the canonical pages of earlier rounds\n" << r.describe();
    check_exit_stats(r);
}

}  // namespace
