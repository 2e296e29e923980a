// Memory the shim never saw mapped, or may not merge: MADV_MERGEABLE on
// memory it never saw keeps the advice the memory already had (issue 7:
// merging never clears a flag); mlockall(MCL_FUTURE) memory stays the
// program's own.
#include "harness.h"

using namespace dt;

TEST(UnseenMemory, AdviceGivenBeforeRegistrationSurvivesTheMerge) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("unseen_advised"), without_lib({"plain"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    ASSERT_EQ(plain.num("child_sigsegv"), 1) << plain.describe();
    Result r = run(prog("unseen_advised"), with_lib({"shim"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_GE(r.num("merged_pages"), 1000) << r.describe();
    EXPECT_GT(r.num("pieces"), 1) << "not merged into pieces?\n" << r.describe();
    EXPECT_EQ(r.num("pieces_dc_dd"), r.num("pieces")) << r.describe();
    EXPECT_EQ(r.num("child_sigsegv"), 1) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
}

// mlockall(MCL_FUTURE): locked memory is never merged, and the shim's own
// store is not locked and populated (it would allocate the whole memfd).
TEST(MlockFuture, LockedMemoryStaysOwnAndTheStoreIsNotLocked) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("mlock_future"), without_lib({}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    Result r = run(prog("mlock_future"), with_lib({}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("file_pages"), 0) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
    EXPECT_LE(r.num("vmlck_kb"), plain.num("vmlck_kb") + 4096) << r.describe() << plain.describe();
}
