// DEDUP_SCOPE=advised and madvise's return values (case 7); munmap/mremap
// under a full-speed scanner and read-only regions (case 11).
#include "harness.h"

using namespace dt;

namespace {

// Case 7: only the MADV_MERGEABLE region merges.
TEST(ScopeAdvised, OnlyTheAdvisedRegionMerges) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("advised"), with_lib({}, {{"DEDUP_SCOPE", "advised"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.str("madv_mergeable_a"), "0:0");
    EXPECT_EQ(r.str("madv_unmergeable_a"), "0:0");
    EXPECT_EQ(r.str("madv_unmergeable_b"), "0:0");
    EXPECT_GE(r.num("merge_wait_ms_a"), 0) << r.describe();
    const double pages = 16 * 512 / 4;
    EXPECT_GE(r.num("file_pages_a"), 0.9 * pages) << r.describe();
    EXPECT_EQ(r.num("file_pages_b"), 0) << r.describe();
    EXPECT_EQ(r.num("merged_like_b_max"), 0) << r.describe();
    EXPECT_EQ(r.num("file_pages_a_after_unmerge"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0);
    EXPECT_EQ(r.num("mismatches_after_unmerge"), 0);
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_GT(st["full_scans"], 0) << st.text;
    EXPECT_GE(st["bytes_saved_peak"], 0.85 * (pages - pages / 16) * 4096) << st.text;
    // Interface: "with DEDUP_SCOPE=advised only ranges given MADV_MERGEABLE
    // are registered": B (2048 pages) must not count as registered. (+32:
    // small start-up allocations of the runtime itself)
    EXPECT_LE(st["pages_registered"], pages + 32)
        << "the non-advised region is counted in pages_registered\n" << st.text;
}

// Case 7: invalid madvise arguments fail exactly as without the shim.
class MadviseErrors : public testing::TestWithParam<const char*> {};

TEST_P(MadviseErrors, SameResultsAsWithoutTheShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("advised"), without_lib({"--invalid-only"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    // the reference run really produced errors (else the comparison is moot)
    ASSERT_EQ(plain.str("madv_mergeable_unaligned"), "-1:EINVAL") << plain.describe();
    ASSERT_EQ(plain.str("madv_mergeable_unmapped"), "-1:ENOMEM") << plain.describe();
    Result r = run(prog("advised"), with_lib({"--invalid-only"}, {{"DEDUP_SCOPE", GetParam()}}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    int compared = 0;
    for (auto& kv : plain.kv) {
        if (kv.first.rfind("madv_", 0) != 0) continue;
        compared++;
        EXPECT_EQ(r.str(kv.first), kv.second) << kv.first << " differs from the kernel's answer";
    }
    EXPECT_GE(compared, 10);
}

INSTANTIATE_TEST_SUITE_P(Dedup, MadviseErrors, testing::Values("advised", "all"),
                         [](const testing::TestParamInfo<const char*>& i) {
                             return std::string("scope_") + i.param;
                         });

// Case 11: munmap / partial munmap / mremap of registered regions while the
// scanner runs at full speed.
TEST(RemapStress, MunmapMremapWhileScanningNeverCrashesOrLosesData) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    double grows = 0, moves = 0, partial = 0, shrinks = 0, unmaps = 0;
    for (int seed = 1; seed <= 2; seed++) {
        Result r = run(prog("remap_stress"),
                       with_lib({"--ms", "3000", "--seed", std::to_string(seed)}), tmp);
        ASSERT_TRUE(r.ok()) << "seed " << seed << "\n" << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        // merging did happen under the remaps
        EXPECT_GT(r.num("shared_pages_max"), 0) << r.describe();
        grows += r.num("grows");
        moves += r.num("moves");
        partial += r.num("partial_unmaps");
        shrinks += r.num("shrinks");
        unmaps += r.num("unmaps");
        Stats st = load_stats(r);
        ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
        EXPECT_GT(st["full_scans"], 0) << st.text;
    }
    // every kind of operation was exercised (counts are low when the library
    // makes munmap/mremap of merged regions slow)
    EXPECT_GE(grows, 2);
    EXPECT_GE(moves, 1);
    EXPECT_GE(partial, 2);
    EXPECT_GE(shrinks, 2);
    EXPECT_GE(unmaps, 2);
}

// An unmerge leaves its range in VMAs the kernel keeps apart (each piece has
// its own anon_vma), and mremap refuses to resize or move several VMAs
// (EFAULT: stress-ng --mremap found it). Every mremap answers as without the
// shim, including the EFAULT of a range the program split itself.
TEST(RemapSplit, MremapOfAnUnmergedRangeAnswersAsWithoutTheShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("remap_split"), without_lib({}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    ASSERT_EQ(plain.str("split_by_prog"), "-1:EFAULT") << plain.describe();
    Result r = run(prog("remap_split"), with_lib({}, {{"DEDUP_SLEEP_MS", "0"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    for (const char* c : {"grow", "shrink_fixed", "move_fixed", "split_by_prog"}) {
        EXPECT_EQ(r.str(c), plain.str(c)) << c << "\n" << r.describe();
        EXPECT_EQ(r.num(std::string(c) + "_bad_bytes"), 0) << c << "\n" << r.describe();
        // The case is only a case if the first half had merged, so that the
        // unmerge left it a VMA apart.
        EXPECT_GE(r.num(std::string("merged_") + c), 0.9 * 1024) << c << "\n" << r.describe();
        EXPECT_GE(r.num(std::string(c) + "_vmas"), 2) << c << "\n" << r.describe();
    }
}

// Case 11: a region that was never writable is never merged and stays
// read-only; a write to it still kills with SIGSEGV.
TEST(ReadOnly, NeverWritableRegionNeverMergesAndWriteSegfaults) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("readonly"), with_lib({"born"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("ro_max_merged_like"), 0) << r.describe();
    EXPECT_EQ(r.num("ro_file_pages"), 0) << r.describe();
    EXPECT_EQ(r.str("ro_perms"), "r--p");
    EXPECT_EQ(r.num("child_signal"), SIGSEGV);
    EXPECT_GE(r.num("control_merge_wait_ms"), 0);
}

TEST(ReadOnly, MprotectReadOnlyStaysReadOnlyAndWriteSegfaultsLikeWithoutShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("readonly"), without_lib({"mprotect", "--no-wait", "--hold-ms", "0"}),
                       tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    ASSERT_EQ(plain.num("child_signal"), SIGSEGV);
    Result r = run(prog("readonly"), with_lib({"mprotect"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.str("ro_perms"), "r--p") << r.describe();
    EXPECT_EQ(r.num("child_signal"), plain.num("child_signal")) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0);
    EXPECT_EQ(r.num("mismatches_after_rw"), 0);
}

}  // namespace
