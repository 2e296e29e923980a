// Signals: the shim's SIGSEGV handling must be invisible to the program.
#include "harness.h"

using namespace dt;

namespace {

Result run_mode(const std::string& mode, bool preload, TempDir& tmp) {
    Options o = preload ? with_lib({mode}) : without_lib({mode});
    return run(prog("signals"), o, tmp);
}

TEST(Signals, ThreadsThatBlockEverySignalSurviveMerging) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run_mode("blocked-writers", true, tmp);
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.term_sig, 0) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.num("survived"), 1) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_GT(st["cow_breaks"], 100) << "the writers never met a merged page\n" << st.text;
}

TEST(Signals, OwnFaultsBehaveExactlyAsWithoutTheShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    for (const char* mode : {"segv-default", "segv-handler", "segv-blocked"}) {
        Result ref = run_mode(mode, false, tmp);
        Result got = run_mode(mode, true, tmp);
        EXPECT_EQ(got.term_sig, ref.term_sig) << mode << "\n" << got.describe();
        EXPECT_EQ(got.exit_code, ref.exit_code) << mode << "\n" << got.describe();
    }
    Result r = run_mode("segv-default", true, tmp);
    EXPECT_EQ(r.term_sig, SIGSEGV) << r.describe();
    r = run_mode("segv-handler", true, tmp);
    EXPECT_EQ(r.exit_code, 42) << r.describe();
}

}  // namespace
