// Hostile lifecycle tests: how a preloaded process ends (signals, exit from
// a handler, core dumps), what it does with its privileges (set-user-ID,
// namespaces, set*id), the files it writes on behalf of a possibly hostile
// environment, and the resources it takes from the program (address space,
// memory cgroup). Each test compares with the same program without the
// shim where that is cheap, and checks that the shim was really active.
#include "harness.h"

#include <algorithm>
#include <sys/resource.h>

using namespace dt;

namespace {

// The thread names of a live process include the scanner's.
// Whether the shim's scanner thread runs in pid (it names itself a moment
// after it starts: looked for up to 2 s).
bool scanner_running(pid_t pid) {
    for (double t0 = now_s(); now_s() - t0 < 2.0; usleep(5000))
        for (auto& n : thread_names(pid))
            if (n == "dedup-scan") return true;
    return false;
}

void info(const std::string& m) { fprintf(stderr, "    [info] %s\n", m.c_str()); }

std::string live_file(pid_t pid) { return dt::live_file_path(pid); }

// A program that was killed (or hung and was killed) leaves its live file
// behind today; tests that may kill one remove it, so /dev/shm does not fill
// up with them.
void drop_live_file(pid_t pid) {
    if (pid > 0) unlink(live_file(pid).c_str());
}

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
        drop_live_file(r.pid);
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
    ASSERT_TRUE(before.count("merge_wait_ms") && atof(before["merge_wait_ms"].c_str()) >= 0)
        << "nothing merged: the shim is not active\n" << c.out_so_far();
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
    drop_live_file(pid);
}

INSTANTIATE_TEST_SUITE_P(HostileLifecycle, HostileLifecycleKilled, testing::Values(SIGTERM, SIGINT, SIGHUP),
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
    drop_live_file(r.pid);
    ASSERT_EQ(r.str("scanner"), "1") << "the scanner was not running before the call\n" << r.describe();
    EXPECT_EQ(r.str("op_result"), "0") << c.op << " failed with the shim (without: 0)\n" << r.describe();
    EXPECT_EQ(r.str("uid"), ref.str("uid")) << r.describe();
    EXPECT_EQ(r.num("threads_other_creds"), 0)
        << "a thread kept other credentials than the program's\n" << r.describe();
    EXPECT_EQ(r.str("after_ok"), "1") << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
}

INSTANTIATE_TEST_SUITE_P(HostileLifecycle, HostileLifecycleCreds,
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
    drop_live_file(r.pid);
    EXPECT_EQ(r.exit_code, 0) << "setpriv under the shim\n" << r.describe();
    EXPECT_EQ(r.str("scanner"), "1") << "the shim was not active in the program\n" << r.describe();
    EXPECT_EQ(r.str("uid"), "65534 65534 65534") << r.describe();
    EXPECT_EQ(r.num("threads_other_creds"), 0) << r.describe();
}


// ---- row 5: abort() with merged pages, then gdb on the core -------------------

std::string shell_out(const std::string& cmd, int* status = nullptr) {
    std::string out;
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    int st = pclose(f);
    if (status) *status = st;
    return out;
}

struct CoreRun {
    Result r;
    std::string core;  // path, "" when none was written
    double size_mib = 0, alloc_mib = 0;
    size_t pages = 0, bad_pages = 0, zero_pages = 0;
    std::string gdb_out;
};

// Runs hostile_life_core in dir (its core lands there), then has gdb read
// the merged region back from the core and compares every page with the
// content the program wrote.
CoreRun core_run(bool shim, const TempDir& dir) {
    CoreRun c;
    std::vector<std::string> args = {"--dir", dir.path(), "--copies", "4", "--buf-kib", "2048"};
    if (!shim) args.push_back("--no-wait");  // nothing would merge: do not wait for it
    Options o = shim ? with_lib(args) : without_lib(args);
    o.stats = false;
    o.timeout_ms = 30000;
    c.r = run(prog("hostile_life_core"), o, dir);
    drop_live_file(c.r.pid);
    if (DIR* d = opendir(dir.path().c_str())) {
        while (struct dirent* e = readdir(d))
            if (!strncmp(e->d_name, "core", 4)) c.core = dir.file(e->d_name);
        closedir(d);
    }
    if (c.core.empty()) return c;
    struct stat st;
    if (stat(c.core.c_str(), &st) == 0) {
        c.size_mib = st.st_size / 1048576.0;
        c.alloc_mib = st.st_blocks * 512 / 1048576.0;
    }
    std::string mem = dir.file("mem.bin");
    std::string addr = c.r.str("region_addr");
    std::string cmd = "timeout 60 gdb -nx -batch -ex 'dump binary memory " + mem + " " + addr + " " + addr + "+" +
                      c.r.str("region_len") + "' " + prog("hostile_life_core") + " " + c.core + " 2>&1";
    c.gdb_out = shell_out(cmd);
    std::string got = read_file(mem), want = read_file(dir.file("expected.bin"));
    if (want.empty() || got.size() != size_t(c.r.num("region_len"))) return c;
    for (size_t off = 0; off < got.size(); off += 4096) {
        c.pages++;
        size_t in_copy = off % want.size();
        if (got.compare(off, 4096, want, in_copy, 4096) != 0) {
            c.bad_pages++;
            if (got.compare(off, 4096, std::string(4096, '\0')) == 0) c.zero_pages++;
        }
    }
    unlink(mem.c_str());
    unlink(c.core.c_str());
    return c;
}

// After abort(), gdb on the core must show the program's data in merged
// pages (they read as zeros today: a private file mapping nobody wrote is
// left out of the dump), and the core must not carry the shim's store
// (today the 256 MiB MAP_SHARED view of the memfd is dumped whole: 260 MiB
// written, and allocated in tmpfs, against 10 MiB without the shim).
TEST(HostileLifecycleCore, GdbReadsMergedPagesFromTheCoreAndTheCoreIsNoBigger) {
    DT_REQUIRE_LIB();
    std::string pattern = read_file("/proc/sys/kernel/core_pattern");
    if (pattern.empty() || pattern[0] == '|' || pattern[0] == '/')
        GTEST_SKIP() << "core_pattern '" << pattern << "' does not write the core into the working directory";
    if (shell_out("command -v gdb").empty()) GTEST_SKIP() << "gdb not installed";
    struct rlimit rl;
    getrlimit(RLIMIT_CORE, &rl);
    if (rl.rlim_max != RLIM_INFINITY && geteuid() != 0) GTEST_SKIP() << "hard RLIMIT_CORE is limited";

    TempDir d0, d1;
    CoreRun ref = core_run(false, d0);
    ASSERT_EQ(ref.r.term_sig, SIGABRT) << ref.r.describe();
    ASSERT_FALSE(ref.core.empty()) << "no core without the shim in " << d0.path();
    ASSERT_GT(ref.pages, 0u) << "gdb could not dump the region\n" << ref.gdb_out;
    ASSERT_EQ(ref.bad_pages, 0u) << "control without the shim\n" << ref.gdb_out;

    CoreRun c = core_run(true, d1);
    ASSERT_EQ(c.r.term_sig, SIGABRT) << c.r.describe();
    ASSERT_GE(c.r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << c.r.describe();
    ASSERT_EQ(c.r.num("mismatches"), 0) << c.r.describe();
    ASSERT_FALSE(c.core.empty()) << "no core with the shim in " << d1.path();
    EXPECT_GT(c.pages, 0u) << "gdb could not dump the region\n" << c.gdb_out;
    EXPECT_EQ(c.bad_pages, 0u) << c.bad_pages << " of " << c.pages << " pages differ in the core ("
                               << c.zero_pages << " read as zeros)\n" << c.gdb_out;
    const double kMarginMiB = 16;
    EXPECT_LE(c.size_mib, ref.size_mib + kMarginMiB)
        << "core size: " << c.size_mib << " MiB with the shim, " << ref.size_mib << " MiB without";
    EXPECT_LE(c.alloc_mib, ref.alloc_mib + kMarginMiB)
        << "core blocks: " << c.alloc_mib << " MiB with the shim, " << ref.alloc_mib << " MiB without";
    info("core: " + std::to_string(c.size_mib) + " MiB with the shim (" + std::to_string(c.alloc_mib) +
         " allocated), " + std::to_string(ref.size_mib) + " MiB without");
}


// ---- row 6: a memory cgroup limit ---------------------------------------------

bool write_text(const std::string& path, const std::string& v) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = write(fd, v.data(), v.size()) == ssize_t(v.size());
    close(fd);
    return ok;
}

double read_num(const std::string& path) {
    bool ok = false;
    std::string t = read_file(path, &ok);
    return ok ? strtod(t.c_str(), nullptr) : -1;
}

// A child of this process's cgroup v1 memory cgroup with a limit on memory
// (and memory+swap when swap is accounted), removed on destruction whatever
// happened. Only the program under test is moved into it.
class MemCgroup {
public:
    explicit MemCgroup(uint64_t limit) {
        const std::string root = "/sys/fs/cgroup/memory";
        if (!file_exists(root + "/memory.limit_in_bytes")) {
            why_ = "no cgroup v1 memory controller at " + root;
            return;
        }
        std::string self;
        for (auto& l : lines(read_file("/proc/self/cgroup"))) {
            size_t a = l.find(':'), b = l.find(':', a + 1);
            if (a == std::string::npos || b == std::string::npos) continue;
            std::string ctl = l.substr(a + 1, b - a - 1);
            if (ctl == "memory" || ctl.find("memory,") == 0 || ctl.find(",memory") != std::string::npos)
                self = l.substr(b + 1);
        }
        static int seq = 0;
        std::string parent = root + (self == "/" ? "" : self);
        dir_ = parent + "/hostile-life-" + std::to_string(getpid()) + "-" + std::to_string(++seq);
        if (mkdir(dir_.c_str(), 0755) != 0) {
            why_ = "cannot create " + dir_ + ": " + strerror(errno);
            dir_.clear();
            return;
        }
        std::string lim = std::to_string(limit);
        if (!write_text(dir_ + "/memory.limit_in_bytes", lim)) {
            why_ = "cannot set memory.limit_in_bytes";
            return;
        }
        if (file_exists(dir_ + "/memory.memsw.limit_in_bytes") &&
            !write_text(dir_ + "/memory.memsw.limit_in_bytes", lim)) {
            why_ = "cannot set memory.memsw.limit_in_bytes";
            return;
        }
        ok_ = true;
    }
    ~MemCgroup() {
        if (dir_.empty()) return;
        for (int i = 0; i < 100; i++) {
            if (rmdir(dir_.c_str()) == 0 || errno == ENOENT) return;
            usleep(20 * 1000);
        }
        ADD_FAILURE() << "could not remove " << dir_ << ": " << strerror(errno);
    }
    bool ok() const { return ok_; }
    const std::string& why() const { return why_; }
    bool add(pid_t pid) { return write_text(dir_ + "/cgroup.procs", std::to_string(pid)); }
    double peak_mib() const { return read_num(dir_ + "/memory.max_usage_in_bytes") / 1048576; }
    std::string oom_control() const { return read_file(dir_ + "/memory.oom_control"); }

private:
    std::string dir_, why_;
    bool ok_ = false;
};

struct CgRun {
    Result r;
    double peak_mib = -1;
    std::string oom;
};

CgRun run_in_cgroup(uint64_t limit, const Options& o, const std::string& program, const TempDir& tmp) {
    CgRun c;
    MemCgroup cg(limit);
    if (!cg.ok()) {
        c.oom = "SKIP: " + cg.why();
        return c;
    }
    Child ch(program, o, tmp);
    if (!ch.wait_ready("start", 10000) || !cg.add(ch.pid())) {
        c.oom = "could not move the program into the cgroup";
        c.r = ch.finish();
        return c;
    }
    ch.release();
    c.r = ch.finish();
    drop_live_file(c.r.pid);
    c.peak_mib = cg.peak_mib();
    c.oom = cg.oom_control();
    return c;
}

// 2 x 96 MiB of identical data, merged (96 MiB of canonical pages), in a
// cgroup limited to 224 MiB. MADV_UNMERGEABLE of the whole 192 MiB must
// leave the program alive with its data intact: without the shim the
// program never holds more than 192 MiB. Today the copies are made while
// every canonical page is still held (their slots are punched only at the
// end of the call), so the program needs 288 MiB and is OOM-killed.
TEST(HostileLifecycleCgroup, UnmergeableOf192MiBMergedUnder224MiBLimitSurvives) {
    DT_REQUIRE_LIB();
    const uint64_t kLimit = 224ull << 20;
    TempDir tmp;
    std::vector<std::string> args = {"--copies", "2", "--mib", "96", "--ready-early"};
    Options ctl = without_lib(args);
    ctl.args.push_back("--no-wait");
    ctl.timeout_ms = 20000;
    CgRun ref = run_in_cgroup(kLimit, ctl, prog("hostile_life_unmerge"), tmp);
    if (ref.oom.rfind("SKIP: ", 0) == 0) GTEST_SKIP() << ref.oom;
    ASSERT_EQ(ref.r.exit_code, 0) << "control without the shim\n" << ref.oom << "\n" << ref.r.describe();
    ASSERT_EQ(ref.r.str("unmerge_result"), "0") << ref.r.describe();

    Options o = with_lib(args);
    o.timeout_ms = 20000;
    o.stats = false;
    CgRun c = run_in_cgroup(kLimit, o, prog("hostile_life_unmerge"), tmp);
    info("peak " + std::to_string(c.peak_mib) + " MiB with the shim, " + std::to_string(ref.peak_mib) +
         " MiB without");
    ASSERT_GE(c.r.num("merge_wait_ms"), 0) << "the copies did not merge: the shim is not active\n"
                                           << c.r.describe();
    ASSERT_EQ(c.r.exit_code, 0) << "peak " << c.peak_mib << " MiB (limit 224, without the shim "
                                << ref.peak_mib << ")\n" << c.oom << "\n" << c.r.describe();
    EXPECT_EQ(c.r.str("unmerge_result"), "0") << c.r.describe();
    EXPECT_EQ(c.r.str("shared_after"), "0") << c.r.describe();
    EXPECT_EQ(c.r.str("mismatches"), "0") << c.r.describe();
}

// The same data rewritten (new content in every page, copy after copy)
// under the same limit, at the default scanner settings. Without the shim
// the program peaks at 192 MiB. With it, a canonical page stays allocated
// until the scanner notices that both of its sharers were rewritten: 290 MiB
// at the default settings (217 MiB at DEDUP_SLEEP_MS=0), OOM-killed at 224.
TEST(HostileLifecycleCgroup, RewritingMergedDataUnder224MiBLimitSurvives) {
    DT_REQUIRE_LIB();
    const uint64_t kLimit = 224ull << 20;
    TempDir tmp;
    std::vector<std::string> args = {"--copies", "2", "--mib", "96", "--ready-early", "--rewrite"};
    Options ctl = without_lib(args);
    ctl.args.push_back("--no-wait");
    ctl.timeout_ms = 20000;
    CgRun ref = run_in_cgroup(kLimit, ctl, prog("hostile_life_unmerge"), tmp);
    if (ref.oom.rfind("SKIP: ", 0) == 0) GTEST_SKIP() << ref.oom;
    ASSERT_EQ(ref.r.exit_code, 0) << "control without the shim\n" << ref.oom << "\n" << ref.r.describe();

    Options o = with_lib(args);
    o.env.erase("DEDUP_SLEEP_MS");  // the defaults
    o.timeout_ms = 20000;
    o.stats = false;
    CgRun c = run_in_cgroup(kLimit, o, prog("hostile_life_unmerge"), tmp);
    info("peak " + std::to_string(c.peak_mib) + " MiB with the shim, " + std::to_string(ref.peak_mib) +
         " MiB without");
    ASSERT_GE(c.r.num("merge_wait_ms"), 0) << "the copies did not merge: the shim is not active\n"
                                           << c.r.describe();
    ASSERT_EQ(c.r.exit_code, 0) << "peak " << c.peak_mib << " MiB (limit 224, without the shim "
                                << ref.peak_mib << ")\n" << c.oom << "\n" << c.r.describe();
    EXPECT_EQ(c.r.str("mismatches"), "0") << c.r.describe();
}

// ---- row 7: RLIMIT_AS ------------------------------------------------------------

// Under `ulimit -v 1G` the program maps 16 MiB chunks until mmap fails: it
// must get as much address space as without the shim, within one chunk or
// 1%. Today the shim reserves 2 x 64 MiB of views of its store up front
// (1/16 of the limit each): 880 MiB against 1008.
TEST(HostileLifecycleAddressSpace, ProgramGetsTheAddressSpaceItGetsWithoutTheShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--as", std::to_string(1ull << 30), "--mode", "probe"};
    Result ref = run(prog("hostile_life_aslimit"), without_lib(args), tmp);
    ASSERT_EQ(ref.exit_code, 0) << ref.describe();
    ASSERT_GT(ref.num("mib"), 512) << ref.describe();
    Options o = with_lib(args);
    o.stats = false;
    o.env["DEDUP_LOG"] = "off";
    Result r = run(prog("hostile_life_aslimit"), o, tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    double slack = std::max(16.0, ref.num("mib") / 100);
    EXPECT_GE(r.num("mib"), ref.num("mib") - slack)
        << "mapped " << r.num("mib") << " MiB under RLIMIT_AS 1 GiB with the shim, " << ref.num("mib")
        << " MiB without\n" << r.describe();
}

// Merged data (2 x 32 MiB), then the address space filled up to the limit,
// then MADV_UNMERGEABLE of the merged range: 0, as without the shim (the
// kernel's KSM needs no address space to unmerge). Today the shim's copy
// needs a temporary mapping of the run and the call fails with ENOMEM.
TEST(HostileLifecycleAddressSpace, UnmergeableNearTheLimitReturnsZero) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--as", std::to_string(1ull << 30), "--mode", "unmerge"};
    std::vector<std::string> ctl_args = args;
    ctl_args.push_back("--no-wait");
    Result ref = run(prog("hostile_life_aslimit"), without_lib(ctl_args), tmp);
    ASSERT_EQ(ref.exit_code, 0) << ref.describe();
    ASSERT_EQ(ref.str("unmerge_result"), "0") << ref.describe();
    Options o = with_lib(args);
    o.stats = false;
    o.timeout_ms = 20000;
    Result r = run(prog("hostile_life_aslimit"), o, tmp);
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    EXPECT_EQ(r.str("unmerge_result"), "0") << r.describe();
    EXPECT_EQ(r.str("shared_after"), "0") << "pages still merged after MADV_UNMERGEABLE\n" << r.describe();
    EXPECT_EQ(r.str("mismatches"), "0") << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
}

// ---- rows 3 and 8: files named by the environment -------------------------

const uid_t kNobody = 65534;
const gid_t kNogroup = 65534;

bool write_new_file(const std::string& path, const std::string& text, mode_t mode) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return false;
    bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
    close(fd);
    return ok && chmod(path.c_str(), mode) == 0;
}

std::vector<std::string> dir_entries(const std::string& dir) {
    std::vector<std::string> v;
    if (DIR* d = opendir(dir.c_str())) {
        while (struct dirent* e = readdir(d))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) v.push_back(e->d_name);
        closedir(d);
    }
    std::sort(v.begin(), v.end());
    return v;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (auto& e : v) s += (s.empty() ? "" : ", ") + e;
    return s;
}

// Removes a directory the test made inside its TempDir (which removes only
// plain files) with everything in it, whatever happened.
class SubdirCleanup {
public:
    explicit SubdirCleanup(std::string d) : d_(std::move(d)) {}
    ~SubdirCleanup() {
        for (auto& e : dir_entries(d_)) unlink((d_ + "/" + e).c_str());
        rmdir(d_.c_str());
    }

private:
    std::string d_;
};

// A symlink in dir, owned by nobody (as if another user planted it).
bool plant_symlink(const std::string& link, const std::string& target) {
    unlink(link.c_str());
    return symlink(target.c_str(), link.c_str()) == 0 && lchown(link.c_str(), kNobody, kNogroup) == 0;
}

// A world-writable sticky directory (like /tmp) in tmp, and whether the
// kernel lets root follow another user's symlink there (fs.protected_symlinks
// would stop the attack by itself, and the test would prove nothing).
std::string shared_dir(const TempDir& tmp, std::string* why) {
    std::string d = tmp.file("shared");
    if (mkdir(d.c_str(), 0777) != 0 || chmod(d.c_str(), 01777) != 0) {
        *why = "cannot create " + d;
        return "";
    }
    std::string target = tmp.file("probe-target"), link = d + "/probe";
    write_new_file(target, "", 0644);
    plant_symlink(link, target);
    int fd = open(link.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    unlink(link.c_str());
    unlink(target.c_str());
    if (fd < 0) {
        *why = "the kernel refuses to follow another user's symlink here (fs.protected_symlinks)";
        return "";
    }
    close(fd);
    return d;
}

// A root process with DEDUP_STATS_FILE in a world-writable directory. While
// it runs, another user plants a symlink at the name of the temporary file
// the shim writes before its rename (today "<path>.tmp.<pid>"), pointing at
// a root-owned file. The root-owned file must stay as it was. The stats must
// still be written, or a log line must say why not.
TEST(HostileLifecycleSymlink, StatsTempFileSymlinkPlantedByAnotherUserIsNotFollowed) {
    DT_REQUIRE_LIB();
    if (geteuid() != 0) GTEST_SKIP() << "needs root (the attacker is another user)";
    TempDir tmp;
    SubdirCleanup cleanup(tmp.file("shared"));
    std::string why, shared = shared_dir(tmp, &why);
    if (shared.empty()) GTEST_SKIP() << why;
    const std::string precious = "root's precious data\n";
    std::string victim = tmp.file("victim");
    ASSERT_TRUE(write_new_file(victim, precious, 0644));
    std::string stats = shared + "/stats.json", log = tmp.file("dedup.log");
    Options o = with_lib({"--copies", "8", "--buf-kib", "256"}, {{"DEDUP_STATS_FILE", stats}, {"DEDUP_LOG", log}});
    o.timeout_ms = 20000;
    Child c(prog("hostile_life_hold"), o, tmp);
    ASSERT_TRUE(c.wait_ready("held", 15000)) << c.out_so_far();
    std::string planted = stats + ".tmp." + std::to_string(c.pid());
    ASSERT_TRUE(plant_symlink(planted, victim)) << strerror(errno);
    c.release();
    Result r = c.finish();
    unlink(planted.c_str());
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    EXPECT_EQ(read_file(victim), precious) << "the root-owned file behind the planted symlink "
                                           << planted << " was overwritten";
    Stats st = load_stats(stats);
    std::string text = read_file(log);
    EXPECT_TRUE((st.parsed && st["pages_sharing"] > 0) || text.find("DEDUP_STATS_FILE") != std::string::npos)
        << "no stats and no line saying why\n" << st.text << "\n" << text;
}

// DEDUP_LOG names a file in a world-writable directory where another user
// planted a symlink to a root-owned file: the root process must not append
// its log to that file.
TEST(HostileLifecycleSymlink, LogFileSymlinkPlantedByAnotherUserIsNotFollowed) {
    DT_REQUIRE_LIB();
    if (geteuid() != 0) GTEST_SKIP() << "needs root (the attacker is another user)";
    TempDir tmp;
    SubdirCleanup cleanup(tmp.file("shared"));
    std::string why, shared = shared_dir(tmp, &why);
    if (shared.empty()) GTEST_SKIP() << why;
    const std::string precious = "root's precious data\n";
    std::string victim = tmp.file("victim");
    ASSERT_TRUE(write_new_file(victim, precious, 0644));
    std::string log = shared + "/app.log";
    ASSERT_TRUE(plant_symlink(log, victim));
    Options o = with_lib({"--copies", "8", "--buf-kib", "256"}, {{"DEDUP_LOG", log}});
    o.timeout_ms = 20000;
    Result r = run(prog("hostile_life_hold"), o, tmp);
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    EXPECT_EQ(read_file(victim), precious) << "the log was written through the planted symlink " << log;
    unlink(log.c_str());
}

// A newline in a variable's value must not start a line of its own in the
// log: whoever reads the log (an administrator, a log collector) would take
// it for a line of the shim's.
struct Injection {
    const char* var;
    const char* value;
};

void PrintTo(const Injection& i, std::ostream* os) { *os << i.var; }

class HostileLifecycleLogInjection : public testing::TestWithParam<Injection> {};

TEST_P(HostileLifecycleLogInjection, NewlineInAValueCannotForgeALogLine) {
    DT_REQUIRE_LIB();
    const Injection inj = GetParam();
    TempDir tmp;
    std::string log = tmp.file("dedup.log");
    std::string value = inj.value;
    size_t at = value.find("@TMP@");
    if (at != std::string::npos) value.replace(at, 5, tmp.path());
    Options o = with_lib({"--copies", "8", "--buf-kib", "256"}, {{"DEDUP_LOG", log}, {inj.var, value}});
    o.timeout_ms = 20000;
    Result r = run(prog("hostile_life_hold"), o, tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    std::string text = read_file(log);
    EXPECT_GE(count_lines_with(text, {inj.var}), 1) << "no line names " << inj.var << "\n" << text;
    for (auto& l : lines(text)) {
        EXPECT_NE(log_message(l).find("INJECTED"), 0u) << "forged line in the log:\n" << text;
        EXPECT_NE(l.find("INJECTED"), 0u) << "forged line in the log:\n" << text;
        EXPECT_TRUE(is_log_line(l)) << "line without the prefix: '" << l << "'\n" << text;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Vars, HostileLifecycleLogInjection,
    testing::Values(Injection{"DEDUP_PAGES_TO_SCAN", "12x\nlibdedup[1]: INJECTED summary after 0.0 s: saved 0.0 MiB"},
                    Injection{"DEDUP_STATS_FILE", "@TMP@/no-such-dir\nlibdedup[1]: INJECTED by a path/stats.json"}),
    [](const testing::TestParamInfo<Injection>& i) { return std::string(i.param.var); });

// A set-user-ID root program (and a set-group-ID one) run by nobody, with
// the library preloaded the way the loader honours for AT_SECURE processes:
// a name without a slash in LD_PRELOAD, found in a system library directory,
// with the set-user-ID bit on the file. Nobody chooses DEDUP_LOG and
// DEDUP_STATS_FILE. No file may be created or overwritten at those paths (in
// a directory only root, or group root, may write), and nothing else may
// appear there. Today the log file is created and the "stats" overwrite a
// root-owned file.
class HostileLifecycleSecure : public testing::TestWithParam<const char*> {
protected:
    void SetUp() override {
        if (lib().empty() || !file_exists(lib())) GTEST_SKIP() << "DEDUP_LIB not set";
        if (geteuid() != 0) GTEST_SKIP() << "needs root to install a set-user-ID program and library";
        if (!file_exists("/usr/bin/setpriv") || !file_exists("/usr/bin/env")) GTEST_SKIP() << "no setpriv/env";
        sysdir_ = "/usr/lib/x86_64-linux-gnu";
        struct stat st;
        if (stat(sysdir_.c_str(), &st) != 0) GTEST_SKIP() << "no " << sysdir_;
        // Leftovers of an earlier run that crashed.
        for (auto& e : dir_entries(sysdir_)) {
            if (e.rfind("libdedup-hostile-life-", 0) != 0) continue;
            long pid = atol(e.c_str() + strlen("libdedup-hostile-life-"));
            if (pid > 0 && kill(pid, 0) != 0) unlink((sysdir_ + "/" + e).c_str());
        }
        name_ = "libdedup-hostile-life-" + std::to_string(getpid()) + ".so";
        path_ = sysdir_ + "/" + name_;
        ASSERT_TRUE(copy_file(lib(), path_, 04755)) << path_ << ": " << strerror(errno);
    }
    void TearDown() override {
        if (!path_.empty()) unlink(path_.c_str());
    }
    static bool copy_file(const std::string& from, const std::string& to, mode_t mode) {
        bool ok = false;
        std::string data = read_file(from, &ok);
        if (!ok) return false;
        return write_new_file(to, data, mode) && chown(to.c_str(), 0, 0) == 0 && chmod(to.c_str(), mode) == 0;
    }
    std::string sysdir_, name_, path_;
};

TEST_P(HostileLifecycleSecure, EnvironmentNamedFilesAreNotCreatedOrOverwritten) {
    const bool suid = std::string(GetParam()) == "setuid";
    TempDir tmp;
    ASSERT_EQ(chmod(tmp.path().c_str(), 0755), 0);
    std::string exe = tmp.file("secure-prog");
    ASSERT_TRUE(copy_file(prog("hostile_life_hold"), exe, suid ? 04755 : 02755));
    // Writable by root, and by group root (for the set-group-ID program),
    // never by nobody.
    std::string dir = tmp.file("rootonly");
    SubdirCleanup cleanup(dir);
    ASSERT_EQ(mkdir(dir.c_str(), 0775), 0);
    ASSERT_EQ(chmod(dir.c_str(), 0775), 0);
    const std::string precious = "root's precious data\n";
    std::string stats = dir + "/precious.json", log = dir + "/created.log";
    ASSERT_TRUE(write_new_file(stats, precious, 0664));
    auto before = dir_entries(dir);

    Options o;
    o.args = {"--reuid", std::to_string(kNobody), "--regid", std::to_string(kNogroup), "--clear-groups",
              "/usr/bin/env", "LD_PRELOAD=" + name_, exe, "--copies", "8", "--buf-kib", "256",
              "--timeout-ms", "3000"};
    if (!suid) o.args.push_back("--no-pagemap");  // not dumpable: its pagemap is root's
    o.env = {{"DEDUP_LOG", log}, {"DEDUP_STATS_FILE", stats}, {"DEDUP_SLEEP_MS", "0"}};
    o.stats = false;
    o.timeout_ms = 20000;
    Child c("/usr/bin/setpriv", o, tmp);
    ASSERT_TRUE(c.wait_ready("held", 15000)) << c.out_so_far();
    std::string maps = read_file("/proc/" + std::to_string(c.pid()) + "/maps");
    c.release();
    Result r = c.finish();
    ASSERT_EQ(r.str("at_secure"), "1") << "the program did not run in secure-execution mode\n" << r.describe();
    ASSERT_NE(maps.find(name_), std::string::npos)
        << "the loader did not preload " << name_ << ": the test proves nothing\n" << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_FALSE(file_exists(log)) << "DEDUP_LOG created " << log << " for nobody:\n" << read_file(log);
    EXPECT_EQ(read_file(stats), precious) << "DEDUP_STATS_FILE overwrote the root-owned " << stats;
    EXPECT_EQ(joined(dir_entries(dir)), joined(before)) << "files appeared in " << dir;
    info(std::string(GetParam()) + ": merged " + r.str("merged") + ", euid " + r.str("euid"));
}

INSTANTIATE_TEST_SUITE_P(HostileLifecycle, HostileLifecycleSecure, testing::Values("setuid", "setgid"),
                         [](const testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ---- further: a child made without glibc's fork() ----------------------------

struct RawFork {
    const char* how;
    const char* mode;
};

void PrintTo(const RawFork& f, std::ostream* os) { *os << f.how << " " << f.mode; }

class HostileLifecycleRawFork : public testing::TestWithParam<RawFork> {};

// syscall(SYS_clone, SIGCHLD), syscall(SYS_clone3) and glibc's clone()
// make a child process without running the shim's fork handlers (both
// calls go through glibc symbols the shim can interpose). Then:
// - punch: the child unmaps its copy of merged memory, and the shim in the
//   child, taking itself for the parent, punches the canonical slots out of
//   the memfd the two processes share: the parent's merged pages read zeros
//   (8,355,786 bad bytes of 8 MiB today);
// - lock: a child made while the scanner holds the mm lock finds it held
//   forever and hangs in its first mmap (4 to 10 children of 40 today).
// glibc's fork() under the shim, and every way without it, is the control.
TEST_P(HostileLifecycleRawFork, ChildWithoutForkHandlersNeitherCorruptsTheParentNorHangs) {
    DT_REQUIRE_LIB();
    const RawFork f = GetParam();
    TempDir tmp;
    Options ctl = without_lib({"--how", f.how, "--mode", f.mode, "--no-wait"});
    ctl.timeout_ms = 20000;
    Result ref = run(prog("hostile_life_rawfork"), ctl, tmp);
    ASSERT_EQ(ref.exit_code, 0) << "control without the shim\n" << ref.describe();
    Options glibc = with_lib({"--how", "fork", "--mode", f.mode});
    glibc.timeout_ms = 20000;
    Result g = run(prog("hostile_life_rawfork"), glibc, tmp);
    ASSERT_EQ(g.exit_code, 0) << "control: glibc's fork() under the shim\n" << g.describe();

    Options o = with_lib({"--how", f.how, "--mode", f.mode});
    o.timeout_ms = 20000;
    Result r = run(prog("hostile_life_rawfork"), o, tmp);
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    if (std::string(f.mode) == "punch") {
        EXPECT_EQ(r.str("parent_bad"), "0") << "the parent's merged data changed\n" << r.describe();
        EXPECT_EQ(r.str("child_status"), "0") << r.describe();
    } else {
        EXPECT_EQ(r.str("hung"), "0") << "a child hung\n" << r.describe();
        EXPECT_EQ(r.str("bad"), "0") << r.describe();
    }
    EXPECT_EQ(r.exit_code, 0) << r.describe();
}

INSTANTIATE_TEST_SUITE_P(HostileLifecycle, HostileLifecycleRawFork,
                         testing::Values(RawFork{"sys-clone", "punch"}, RawFork{"sys-clone3", "punch"},
                                         RawFork{"clone", "punch"}, RawFork{"sys-clone", "lock"},
                                         RawFork{"sys-clone3", "lock"}, RawFork{"clone", "lock"}),
                         [](const testing::TestParamInfo<RawFork>& i) {
                             std::string n = std::string(i.param.how) + "_" + i.param.mode;
                             for (auto& ch : n)
                                 if (ch == '-') ch = '_';
                             return n;
                         });

// ---- further: exec -----------------------------------------------------------

class HostileLifecycleExec : public testing::TestWithParam<bool> {};

// exec runs no destructor: the live file /dev/shm/libdedup.<pidns>.<pid>.json of
// the old image stays behind for good, whether the new program is not
// preloaded (a wrapper stripped LD_PRELOAD; a set-user-ID program) or is
// preloaded but never registers memory (it only unlinks a stale file of its
// pid when it links its own). After the process has ended, the file must be
// gone.
TEST_P(HostileLifecycleExec, LiveFileOfTheOldImageIsGoneWhenTheProcessEnds) {
    DT_REQUIRE_LIB();
    const bool keep = GetParam();
    TempDir tmp;
    std::vector<std::string> args;
    if (keep) args.push_back("--keep-preload");
    Options o = with_lib(args, {{"DEDUP_LOG", "off"}});
    o.stats = false;
    o.timeout_ms = 20000;
    Result r = run(prog("hostile_life_exec"), o, tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    ASSERT_GE(r.num("merge_wait_ms"), 0) << "nothing merged: the shim is not active\n" << r.describe();
    ASSERT_EQ(r.str("live_before"), "1") << "no live file before the exec\n" << r.describe();
    bool left = file_exists(live_file(r.pid));
    drop_live_file(r.pid);
    EXPECT_FALSE(left) << live_file(r.pid) << " left behind after exec and exit";
}

INSTANTIATE_TEST_SUITE_P(HostileLifecycle, HostileLifecycleExec, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& i) {
                             return std::string(i.param ? "KeptInTheNewImage" : "StrippedFromTheNewImage");
                         });

}  // namespace
