// Seccomp filters and the scanner's one unusual system call: a batch's zero
// pages go back with one process_madvise (scanner/zero_giveback.h), which a
// program's filter may answer by killing the process. The program
// (seccomp_zero) installs a filter that does exactly that and checks that
// its zero pages are still given back, and every byte kept.
#include "harness.h"

#include <sys/mman.h>
#include <sys/syscall.h>

using namespace dt;

namespace {

// Why the scanner could not use process_madvise here (then every test below
// would pass without showing anything): the kernel does not take
// PIDFD_SELF_THREAD_GROUP (before 6.15), or this process runs under a
// seccomp filter, which its children inherit. "" if it can.
std::string vector_call_unavailable() {
    if (read_file("/proc/self/status").find("Seccomp:\t0") == std::string::npos)
        return "the tests run under a seccomp filter";
    if (syscall(SYS_process_madvise, -10001L, nullptr, 0, MADV_DONTNEED, 0) != 0)
        return std::string("process_madvise(PIDFD_SELF_THREAD_GROUP): ") + strerror(errno);
    return "";
}

#define REQUIRE_VECTOR_CALL()                                                 \
    do {                                                                      \
        std::string why = vector_call_unavailable();                          \
        if (!why.empty()) GTEST_SKIP() << why << ": the scanner never makes it"; \
    } while (0)

// Zero pages of each half, and every half's given back, every byte intact.
void expect_all_given_back(const Result& r) {
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("bad_bytes"), 0) << r.describe();
    EXPECT_GT(r.num("zero_pages"), 0) << r.describe();
    EXPECT_EQ(r.num("given_back_1"), r.num("zero_pages")) << r.describe();
    EXPECT_EQ(r.num("given_back_2"), r.num("zero_pages")) << r.describe();
}

}  // namespace

// The control: the filter kills the process on process_madvise when it is
// installed where no interposer sees it (inline). So the scanner does use
// the call for the second half's zero pages, and the filter bites: the tests
// below would fail if the shim did not stop using it.
TEST(Seccomp, AFilterInstalledInlineKillsTheBatchCall) {
    DT_REQUIRE_LIB();
    REQUIRE_VECTOR_CALL();
    TempDir tmp;
    Result plain = run(prog("seccomp_zero"), without_lib({"--install", "raw", "--wait-ms", "0"}), tmp);
    ASSERT_TRUE(plain.ok()) << "without the shim\n" << plain.describe();
    Result r = run(prog("seccomp_zero"), with_lib({"--install", "raw"}), tmp);
    EXPECT_EQ(r.num("given_back_1"), r.num("zero_pages")) << r.describe();
    EXPECT_EQ(r.term_sig, SIGSYS) << "the shim made no process_madvise after the filter\n" << r.describe();
}

// seccomp(2) with TSYNC through libc while the scanner runs (and has given
// zero pages back with process_madvise): from then on it uses madvise.
TEST(Seccomp, ZeroPagesGoBackAfterAFilterForbidsTheBatchCall) {
    DT_REQUIRE_LIB();
    REQUIRE_VECTOR_CALL();
    TempDir tmp;
    for (int i = 0; i < 3; i++) expect_all_given_back(run(prog("seccomp_zero"), with_lib({"--install", "tsync"}), tmp));
}

// A process that starts under a filter (installed before exec, as a
// container runtime or systemd does): its scanner never makes the call.
TEST(Seccomp, AScannerStartedUnderAFilterNeverMakesTheBatchCall) {
    DT_REQUIRE_LIB();
    REQUIRE_VECTOR_CALL();
    TempDir tmp;
    expect_all_given_back(run(prog("seccomp_zero"), with_lib({"--install", "exec"}), tmp));
}
