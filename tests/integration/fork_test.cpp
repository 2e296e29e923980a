// fork: the child deduplicates its own memory with its own scanner and
// store, and the parent's bytes are never touched.
#include "harness.h"

using namespace dt;

namespace {

TEST(Fork, ChildMergesItsOwnCopiesAndParentStaysIntact) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("fork_child"), with_lib({}, {{"DEDUP_SLEEP_MS", "1"}}), tmp);
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_GE(r.num("parent_merged"), 900) << r.describe();
    EXPECT_GE(r.num("child_merged"), 900) << "the child's scanner did not merge its own pages\n" << r.describe();
    EXPECT_EQ(r.num("parent_intact"), 1) << r.describe();
}

}  // namespace
