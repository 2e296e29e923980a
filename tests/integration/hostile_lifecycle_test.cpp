// Hostile lifecycle tests: how a preloaded process ends (signals, exit from
// a handler, core dumps), what it does with its privileges (set-user-ID,
// namespaces, set*id), the files it writes on behalf of a possibly hostile
// environment, and the resources it takes from the program (address space,
// memory cgroup). Each test compares with the same program without the
// shim where that is cheap, and checks that the shim was really active.
#include "harness.h"

#include <grp.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/resource.h>

using namespace dt;

namespace {

// The thread names of a live process include the scanner's.
bool scanner_running(pid_t pid) {
    for (auto& n : thread_names(pid))
        if (n == "dedup-scan") return true;
    return false;
}

std::string live_file(pid_t pid) { return "/dev/shm/libdedup." + std::to_string(pid) + ".json"; }

// ---- row 1: a SIGTERM handler that calls exit() ---------------------------

// One worker thread maps and unmaps registered-size regions (and mallocs
// and frees 128 KiB blocks) in a tight loop; the main thread blocks SIGTERM,
// so the signal lands in the worker, nearly always inside an interposed
// call. The handler calls exit(3). The process must end with status 3, as it
// does without the shim, every time: the exit path must not wait for a lock
// that the interrupted wrapper holds.
TEST(HostileLifecycleSignals, SigtermHandlerCallingExitDuringMmapChurnExitsWithItsStatus) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    const std::vector<std::string> args = {"--threads", "1", "--malloc"};
    for (int i = 0; i < 3; i++) {
        Options o = without_lib(args);
        o.timeout_ms = 5000;
        Child c(prog("hostile_life_sigexit"), o, tmp);
        ASSERT_TRUE(c.wait_ready("churning", 4000)) << c.out_so_far();
        kill(c.pid(), SIGTERM);
        Result r = c.finish();
        ASSERT_EQ(r.exit_code, 3) << "control without the shim\n" << r.describe();
    }
    const int kRuns = 6;
    for (int i = 0; i < kRuns; i++) {
        Options o = with_lib(args, {{"DEDUP_SLEEP_MS", "20"}});
        o.timeout_ms = 5000;
        Child c(prog("hostile_life_sigexit"), o, tmp);
        ASSERT_TRUE(c.wait_ready("churning", 4000)) << c.out_so_far();
        ASSERT_TRUE(scanner_running(c.pid())) << "the shim is not active in run " << i;
        usleep(20 * 1000);
        double t0 = now_s();
        kill(c.pid(), SIGTERM);
        Result r = c.finish();
        ASSERT_FALSE(r.timed_out) << "run " << i + 1 << " of " << kRuns << ": still running "
                                  << now_s() - t0 << " s after SIGTERM (exit() from the handler hung)\n"
                                  << r.describe();
        ASSERT_EQ(r.exit_code, 3) << "run " << i + 1 << "\n" << r.describe();
    }
}

// ---- row 2: death by a signal's default action -----------------------------

class HostileLifecycleKilled : public testing::TestWithParam<int> {};

// A process killed by SIGTERM/SIGINT/SIGHUP (default action) still gets its
// summary and stats file written and its live file removed, and still dies
// of that signal. The program sees the default disposition throughout.
TEST_P(HostileLifecycleKilled, SummaryStatsAndLiveFileThenDiesOfTheSameSignal) {
    DT_REQUIRE_LIB();
    const int sig = GetParam();
    TempDir tmp;
    const std::vector<std::string> args = {"--copies", "8", "--buf-kib", "512", "--wait-live"};
    {
        Options o = without_lib({"--copies", "8", "--buf-kib", "512", "--no-wait-merge"});
        o.timeout_ms = 15000;
        Child c(prog("hostile_life_hold"), o, tmp);
        ASSERT_TRUE(c.wait_ready("held", 12000)) << c.out_so_far();
        kill(c.pid(), sig);
        Result r = c.finish();
        ASSERT_EQ(r.term_sig, sig) << "control without the shim\n" << r.describe();
    }
    std::string log = tmp.file("dedup.log");
    Options o = with_lib(args, {{"DEDUP_LOG", log}});
    o.timeout_ms = 15000;
    Child c(prog("hostile_life_hold"), o, tmp);
    ASSERT_TRUE(c.wait_ready("held", 12000)) << c.out_so_far();
    pid_t pid = c.pid();
    auto before = parse_kv(c.out_so_far());
    ASSERT_GE(atof(before["merge_wait_ms"].c_str()), 0) << "nothing merged: the shim is not active\n"
                                                         << c.out_so_far();
    ASSERT_EQ(before["live_file"], "1") << "no live file before the signal\n" << c.out_so_far();
    EXPECT_EQ(before["disp_" + std::to_string(sig)], "default") << c.out_so_far();
    kill(pid, sig);
    Result r = c.finish();
    EXPECT_EQ(r.exit_code, -1) << r.describe();
    EXPECT_EQ(r.term_sig, sig) << "must die of the signal it was sent\n" << r.describe();
    Stats st = load_stats(r);
    EXPECT_TRUE(st.present) << "no stats file at " << r.stats_path;
    EXPECT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_GT(st["pages_sharing"], 0) << st.text;
    std::string text = read_file(log);
    EXPECT_NE(text.find("summary after"), std::string::npos) << "no summary in DEDUP_LOG:\n" << text;
    EXPECT_FALSE(file_exists(live_file(pid))) << live_file(pid) << " left behind";
    unlink(live_file(pid).c_str());
}

INSTANTIATE_TEST_SUITE_P(Signals, HostileLifecycleKilled, testing::Values(SIGTERM, SIGINT, SIGHUP),
                         [](const testing::TestParamInfo<int>& i) {
                             return std::string(sigabbrev_np(i.param));
                         });


// ---- row 4: single-threaded-only calls and set*id --------------------------

bool is_root() { return geteuid() == 0; }

struct CredOp {
    const char* op;
    bool needs_root;
};

void PrintTo(const CredOp& c, std::ostream* os) { *os << c.op; }

class HostileLifecycleCreds : public testing::TestWithParam<CredOp> {};

// The program registers memory (the scanner runs), then makes a call that
// the kernel allows only in a single-threaded process (unshare/setns of a
// user namespace, setns of a mount namespace), or changes its credentials.
// It must get what it gets without the shim, and afterwards no thread of
// the process may keep other credentials than the caller's.
TEST_P(HostileLifecycleCreds, CallSucceedsAsWithoutTheShimAndEveryThreadHasTheNewCredentials) {
    DT_REQUIRE_LIB();
    const CredOp c = GetParam();
    if (c.needs_root && !is_root()) GTEST_SKIP() << c.op << " needs root";
    TempDir tmp;
    Options ctl = without_lib({"--op", c.op});
    ctl.timeout_ms = 15000;
    Result ref = run(prog("hostile_life_creds"), ctl, tmp);
    ASSERT_EQ(ref.exit_code, 0) << ref.describe();
    ASSERT_EQ(ref.str("op_result"), "0") << "control without the shim\n" << ref.describe();
    ASSERT_EQ(ref.num("threads_other_creds"), 0) << ref.describe();

    Options o = with_lib({"--op", c.op});
    o.timeout_ms = 15000;
    Result r = run(prog("hostile_life_creds"), o, tmp);
    ASSERT_EQ(r.str("scanner"), "1") << "the scanner was not running before the call\n" << r.describe();
    EXPECT_EQ(r.str("op_result"), "0") << c.op << " failed with the shim (without: 0)\n" << r.describe();
    EXPECT_EQ(r.str("uid"), ref.str("uid")) << r.describe();
    EXPECT_EQ(r.num("threads_other_creds"), 0)
        << "a thread kept other credentials than the program's\n" << r.describe();
    EXPECT_EQ(r.str("after_ok"), "1") << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
}

INSTANTIATE_TEST_SUITE_P(Ops, HostileLifecycleCreds,
                         testing::Values(CredOp{"unshare-user", false}, CredOp{"setns-mnt", true},
                                         CredOp{"setns-user", true}, CredOp{"setuid", true},
                                         CredOp{"raw-setuid", true}),
                         [](const testing::TestParamInfo<CredOp>& i) {
                             std::string n = i.param.op;
                             for (auto& ch : n)
                                 if (ch == '-') ch = '_';
                             return n;
                         });

// util-linux setpriv, itself preloaded: it sets PR_SET_KEEPCAPS and its
// capabilities on its own thread only, then setresuid/setresgid, which
// glibc repeats on every thread. The scanner thread, without the kept
// capabilities, fails the setresgid and glibc aborts the process. The
// program it runs (preloaded too) must run as nobody, every thread of it.
TEST(HostileLifecycleCredsSetpriv, SetprivReuidNobodyRunsTheProgramAsNobody) {
    DT_REQUIRE_LIB();
    if (!is_root()) GTEST_SKIP() << "needs root";
    const std::string setpriv = "/usr/bin/setpriv";
    if (!file_exists(setpriv)) GTEST_SKIP() << "no " << setpriv;
    TempDir tmp;
    std::vector<std::string> args = {"--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                                     prog("hostile_life_creds"), "--op", "report"};
    Options ctl = without_lib(args);
    ctl.timeout_ms = 15000;
    Result ref = run(setpriv, ctl, tmp);
    ASSERT_EQ(ref.exit_code, 0) << "control without the shim\n" << ref.describe();
    ASSERT_EQ(ref.str("uid"), "65534 65534 65534") << ref.describe();

    Options o = with_lib(args);
    o.timeout_ms = 15000;
    o.stats = false;  // nobody cannot write into the test's directory
    Result r = run(setpriv, o, tmp);
    EXPECT_EQ(r.exit_code, 0) << "setpriv under the shim\n" << r.describe();
    EXPECT_EQ(r.str("scanner"), "1") << "the shim was not active in the program\n" << r.describe();
    EXPECT_EQ(r.str("uid"), "65534 65534 65534") << r.describe();
    EXPECT_EQ(r.num("threads_other_creds"), 0) << r.describe();
}

}  // namespace
