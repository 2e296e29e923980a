// Process lifecycle: the shim's thread never keeps a process alive.
#include "harness.h"

using namespace dt;

namespace {

TEST(Lifecycle, LastProgramThreadLeavingWithPthreadExitEndsTheProcess) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result ref = run(prog("last_thread_exit"), without_lib({}), tmp);
    ASSERT_EQ(ref.exit_code, 0) << ref.describe();
    ASSERT_EQ(ref.out.find("child_status=0"), ref.out.find("child_status=")) << ref.describe();
    Result r = run(prog("last_thread_exit"), with_lib({}, {{"DEDUP_SLEEP_MS", "1"}}), tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_NE(r.out.find("child_status=0"), std::string::npos)
        << "the child's scanner thread kept it alive after its last thread exited\n" << r.describe();
}

}  // namespace
