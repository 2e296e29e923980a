// MADV_MERGEABLE on memory the shim never saw mapped keeps the advice the
// memory already had (issue 7: merging never clears a flag).
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
