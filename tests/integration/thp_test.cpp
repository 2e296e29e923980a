// Transparent huge pages (issue 7, item 3): huge pages of duplicates merge
// whole without splitting, a huge-page region without duplicates keeps its
// huge pages, and merging part of a huge page is counted in thp_splits.
#include "harness.h"

using namespace dt;

namespace {

Result run_thp(const char* mode, const TempDir& tmp) {
    return run(prog("thp_merge"), with_lib({mode, "shim"}), tmp);
}

bool thp_available() {
    std::string e = read_file("/sys/kernel/mm/transparent_hugepage/enabled");
    return e.find("[always]") != std::string::npos || e.find("[madvise]") != std::string::npos;
}

}  // namespace

TEST(Thp, WholeHugePagesOfDuplicatesMergeWithoutSplitting) {
    DT_REQUIRE_LIB();
    if (!thp_available()) GTEST_SKIP() << "transparent huge pages are off";
    TempDir tmp;
    Result r = run_thp("dups", tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("merged_pages"), 4096 - 8) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_EQ(st["thp_splits"], 0) << st.text;
}

TEST(Thp, RegionWithoutDuplicatesKeepsItsHugePages) {
    DT_REQUIRE_LIB();
    if (!thp_available()) GTEST_SKIP() << "transparent huge pages are off";
    TempDir tmp;
    Result base = run(prog("thp_merge"), without_lib({"unique", "plain"}), tmp);
    ASSERT_TRUE(base.ok()) << base.describe();
    if (base.num("huge_kb_after") < 8192) GTEST_SKIP() << "the kernel gave few huge pages even without the shim";
    Result r = run_thp("unique", tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_EQ(r.num("merged_pages"), 0) << r.describe();
    // Every huge page the kernel gave is still there after the scanner's passes.
    EXPECT_GE(r.num("huge_kb_after"), r.num("huge_kb_before")) << r.describe();
    EXPECT_GE(r.num("huge_kb_after"), base.num("huge_kb_after") - 4096) << r.describe() << base.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_EQ(st["thp_splits"], 0) << st.text;
}

TEST(Thp, MergingPartOfAHugePageIsCountedAsASplit) {
    DT_REQUIRE_LIB();
    if (!thp_available()) GTEST_SKIP() << "transparent huge pages are off";
    TempDir tmp;
    Result r = run_thp("partial", tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("merged_pages"), 2048 - 8) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    // One split per huge page the kernel gave (AnonHugePages before the
    // merge), each merged in part.
    EXPECT_GE(r.num("huge_kb_before"), 2048) << r.describe();
    EXPECT_EQ(st["thp_splits"], r.num("huge_kb_before") / 2048) << st.text;
    EXPECT_NE(r.err.find("huge pages split"), std::string::npos) << r.err;
}

// process_madvise(MADV_COLLAPSE) on this process over merged memory: the
// kernel refuses a range of memfd pieces (EINVAL, as a raw process_madvise
// system call, which the shim cannot see, shows); the shim makes the range
// one anonymous mapping first, so the call does what it does on plain memory.
TEST(Thp, ProcessMadviseCollapseOnMergedMemoryWorksAsOnPlainMemory) {
    DT_REQUIRE_LIB();
    if (!thp_available()) GTEST_SKIP() << "transparent huge pages are off";
    TempDir tmp;
    Result plain = run(prog("pmadv_collapse"), without_lib({"plain"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    if (plain.num("ret") < 0) GTEST_SKIP() << "MADV_COLLAPSE fails even without the shim: " << plain.describe();
    Result r = run(prog("pmadv_collapse"), with_lib({"shim"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_GE(r.num("merged_pages"), 1000) << r.describe();
    EXPECT_EQ(r.num("ret"), plain.num("ret")) << r.describe();
    EXPECT_EQ(r.num("err"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
}
