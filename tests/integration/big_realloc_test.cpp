// realloc of blocks with a mapping of their own (over 4 MiB): the mapping
// moves with its pages, as glibc's mmapped chunks do, and the registry
// follows it; merged blocks are copied. Every byte is checked.
#include "harness.h"

using namespace dt;

TEST(BigRealloc, GrowsByMovingItsMappingAndKeepsEveryByte) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("big_realloc"), without_lib({"--no-wait"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    Result r = run(prog("big_realloc"), with_lib({}, {{"DEDUP_SLEEP_MS", "0"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("grow_bad_bytes"), 0) << r.describe();
    // A copy into a new mapping faults in its 2048 pages; glibc's mremap and
    // ours take none of them (a few for the shim's own metadata).
    EXPECT_LT(plain.num("grow_faults"), 256) << plain.describe();
    EXPECT_LT(r.num("grow_faults"), 256) << r.describe();
    // The registry followed the block: its new pages merge.
    EXPECT_GE(r.num("grow_merge_wait_ms"), 0) << r.describe();
    // Writes, merges, moves and copies racing the scanner lose nothing.
    EXPECT_EQ(r.num("race_rounds"), 40) << r.describe();
    EXPECT_EQ(r.num("race_bad_bytes"), 0) << r.describe();
}
