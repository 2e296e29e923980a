// Merging, copy-on-write, unmerge, discard, and a program without duplicates.
#include "harness.h"

using namespace dt;

namespace {

struct NCopiesCase {
    const char* alloc;
    int copies;
    int buf_kib;
};

std::string case_name(const testing::TestParamInfo<NCopiesCase>& i) {
    return std::string(i.param.alloc) + "_" + std::to_string(i.param.copies) + "x" +
           std::to_string(i.param.buf_kib) + "KiB";
}

void PrintTo(const NCopiesCase& c, std::ostream* os) {
    *os << c.alloc << " " << c.copies << " x " << c.buf_kib << " KiB";
}

class NCopies : public testing::TestWithParam<NCopiesCase> {};

// Case 1: N copies of a random buffer end at about 1/N of their size.
TEST_P(NCopies, RegionPssNearOneOverNAndBytesIntact) {
    DT_REQUIRE_LIB();
    const NCopiesCase c = GetParam();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib({"--alloc", c.alloc, "--copies", std::to_string(c.copies), "--buf-kib",
                             std::to_string(c.buf_kib)}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    const double size_kb = double(c.copies) * c.buf_kib;
    const double pages = r.num("pages");
    const bool is_malloc = std::string(c.alloc) == "malloc";
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("merge_wait_ms"), 0) << r.describe();
    // pagemap: after reading everything back, the pages are shared memfd pages
    EXPECT_GE(r.num("file_pages_after_verify"), 0.9 * pages) << r.describe();
    // Pss of the copies: ~1/N of the size. A few pages of slack, plus for
    // mallocs one header page and one tail page per buffer.
    double limit = 2.0 * size_kb / c.copies + 64 + (is_malloc ? 8.0 * c.copies : 0);
    EXPECT_LE(r.num("region_pss_kb"), limit) << "region Pss (kB) above 2/N of " << size_kb
                                             << " kB\n" << r.describe();
    // the whole process, shim metadata included, saved most of the region
    EXPECT_LE(r.num("pss_delta_kb"), size_kb / 4) << r.describe();

    Stats st = load_stats(r);
    ASSERT_TRUE(st.present) << "no stats file at " << r.stats_path;
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    const double bpages = c.buf_kib / 4.0;
    EXPECT_GE(st["pages_sharing"], 0.85 * (c.copies - 1) * bpages) << st.text;
    EXPECT_LE(st["pages_sharing"], pages) << st.text;
    EXPECT_GE(st["pages_shared"], 1) << st.text;
    EXPECT_GE(st["pages_registered"], 0.99 * size_kb / 4) << st.text;
    EXPECT_GE(st["full_scans"], 2) << st.text;
    EXPECT_EQ(st["bytes_saved"], (st["pages_sharing"] + st["zero_pages"]) * 4096) << st.text;
    EXPECT_GE(st["bytes_saved_peak"], st["bytes_saved"]) << st.text;
    EXPECT_EQ(st["merge_failures"], 0) << st.text;
}

INSTANTIATE_TEST_SUITE_P(Dedup, NCopies,
                         testing::Values(NCopiesCase{"mmap", 16, 1024},
                                         NCopiesCase{"mmap", 64, 1024},
                                         NCopiesCase{"malloc", 16, 1024},
                                         NCopiesCase{"malloc", 32, 2048}),
                         case_name);

// Case 2: a write after merging changes only that page.
TEST(CopyOnWrite, WriteAfterMergeChangesOnlyThatPage) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    const int copies = 16, kib = 1024, writes = 8;
    Result r = run(prog("cow_write"),
                   with_lib({"--copies", std::to_string(copies), "--buf-kib", std::to_string(kib),
                             "--writes", std::to_string(writes), "--hold-ms", "500"}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("written_pages_still_shared"), 0) << r.describe();
    EXPECT_EQ(r.num("written_pages_not_present"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches_after_writes"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches_after_hold"), 0) << r.describe();
    EXPECT_EQ(r.num("written_pages_reshared"), 0) << r.describe();
    // the pages around each written page are still shared
    EXPECT_LE(r.num("neighbours_unshared"), 2) << r.describe();
    const double total = r.num("total_pages");
    EXPECT_GE(r.num("file_pages_after_hold"), 0.9 * total - writes) << r.describe();

    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    const double max_sharing = total - total / copies;
    EXPECT_GT(st["pages_sharing"], 0) << st.text;
    EXPECT_LE(st["pages_sharing"], max_sharing) << st.text;
    EXPECT_TRUE(st["cow_breaks"] >= writes || st["pages_sharing"] <= max_sharing - writes)
        << "neither cow_breaks >= " << writes << " nor pages_sharing <= " << max_sharing - writes
        << "\n" << st.text;
}

// Case 3: MADV_UNMERGEABLE gives private pages back.
TEST(Unmerge, MadvUnmergeableRestoresPrivatePages) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib({"--copies", "16", "--buf-kib", "1024", "--unmerge"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("madv_unmergeable_failures"), 0) << r.describe();
    EXPECT_EQ(r.num("unmerged_file_pages"), 0) << r.describe();
    EXPECT_EQ(r.num("unmerged_mismatches"), 0) << r.describe();
    EXPECT_GE(r.num("unmerged_region_pss_kb"), 0.9 * 16 * 1024) << r.describe();
    // it had merged before
    EXPECT_GE(r.num("file_pages_after_verify"), 0.9 * r.num("pages")) << r.describe();
}

TEST(Unmerge, MadvUnmergeableOnMallocBuffers) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib({"--alloc", "malloc", "--copies", "8", "--buf-kib", "512", "--unmerge"}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("unmerged_file_pages"), 0) << r.describe();
    EXPECT_EQ(r.num("unmerged_mismatches"), 0) << r.describe();
}

// Case 4: MADV_DONTNEED / MADV_FREE on merged pages read zeros.
class Discard : public testing::TestWithParam<const char*> {};

TEST_P(Discard, MergedPagesReadZerosAndMadviseReturnsZero) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("discard"), with_lib({GetParam()}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.str("madvise_ret_1"), "0:0") << r.describe();
    EXPECT_EQ(r.str("madvise_ret_2"), "0:0") << r.describe();
    EXPECT_EQ(r.num("discarded_wrong"), 0) << r.describe();
    EXPECT_EQ(r.num("discarded_showing_canonical"), 0) << r.describe();
    EXPECT_EQ(r.num("kept_mismatches"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches_after_rewrite"), 0) << r.describe();
    // the discard really hit merged pages
    EXPECT_GE(r.num("discarded_were_merged"), 0.9 * r.num("discarded_pages")) << r.describe();
    EXPECT_EQ(r.num("discarded_read_zero") + r.num("discarded_read_old"),
              r.num("discarded_pages")) << r.describe();
}

INSTANTIATE_TEST_SUITE_P(Dedup, Discard, testing::Values("dontneed", "free"),
                         [](const testing::TestParamInfo<const char*>& i) {
                             return std::string(i.param);
                         });

// Case 5: without duplicates nothing changes.
TEST(Unaffected, UniquePagesSameOutputNothingShared) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("unique_pages"), without_lib({"--hold-ms", "1000"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    Result r = run(prog("unique_pages"), with_lib({"--hold-ms", "1000"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.out, plain.out) << "stdout differs with the shim";
    EXPECT_EQ(r.num("file_pages_seen"), 0);
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_EQ(st["pages_sharing"], 0) << st.text;
    EXPECT_EQ(st["pages_shared"], 0) << st.text;
    EXPECT_EQ(st["zero_pages"], 0) << st.text;
    EXPECT_EQ(st["bytes_saved"], 0) << st.text;
    // the scanner did look at the pages (otherwise 0 proves nothing)
    EXPECT_GE(st["full_scans"], 2) << st.text;
    EXPECT_GE(st["pages_registered"], 4096) << st.text;
    EXPECT_GE(st["pages_scanned"], 2 * 4096) << st.text;
}

}  // namespace
