// Robustness (issue 3, items 5 and 6): the shim's own resources fail, and
// threads come and go, exit and _exit while the scanner merges their memory.
//
// Failure injection runs tests/programs/inject_workload through
// tests/programs/fault_inject, which applies one fault to itself and execs
// the workload with the environment it got (LD_PRELOAD included), so the
// fault applies to the shim's own calls in the workload's process.
//
// In every case the program must end exactly as without the shim (status 0,
// not killed), every byte it wrote must read back; where the shim had to
// degrade, stderr must carry one clear "libdedup[PID]: " line naming the problem,
// and what could still be merged (zero pages) must still be merged.
//
// Not repeated here (already covered): the program itself reaching
// vm.max_map_count (vma_test.cpp, VmaBudget.ProgramGrowingToTheLimitGetsItsVmasBack)
// and regions unmapped / mremapped while the scanner works on them
// (advised_remap_test.cpp, RemapStress.MunmapMremapWhileScanningNeverCrashesOrLosesData).
#include "harness.h"

#include <algorithm>
#include <iostream>

using namespace dt;

namespace {

// "libdedup[PID]: ..." lines that are not the exit summary.
std::vector<std::string> shim_warnings(const std::string& err) {
    std::vector<std::string> w;
    for (auto& l : lines(err)) {
        if (!is_log_line(l)) continue;
        std::string m = log_message(l);
        if (m.rfind("summary", 0) == 0 || m.rfind("  ", 0) == 0) continue;
        w.push_back(l);
    }
    return w;
}

bool contains_any(const std::string& s, const std::vector<std::string>& words) {
    for (auto& w : words)
        if (s.find(w) != std::string::npos) return true;
    return false;
}

int count_naming(const std::vector<std::string>& warnings, const std::vector<std::string>& words) {
    int n = 0;
    for (auto& l : warnings) n += contains_any(l, words);
    return n;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (auto& l : v) s += l + "\n";
    return s.empty() ? "(no libdedup line)\n" : s;
}

// Running out of descriptors may stop several things at once (pagemap, the
// memfd, a stats file): one line each is fine, a repeated line or a flood
// is not.
void expect_few_distinct_lines(const std::vector<std::string>& w, size_t max_lines) {
    std::vector<std::string> sorted = w;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_TRUE(std::unique(sorted.begin(), sorted.end()) == sorted.end()) << "a libdedup line repeats\n"
                                                                          << joined(w);
    EXPECT_LE(w.size(), max_lines) << joined(w);
}

void info(const std::string& msg) { std::cout << "[   info   ] " << msg << "\n" << std::flush; }

// fault_inject FAULTS -- inject_workload ARGS, with or without the shim.
Result inject(const std::vector<std::string>& faults, std::vector<std::string> wl_args, bool preload,
              TempDir& tmp, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> args = faults;
    args.push_back("--");
    args.push_back(prog("inject_workload"));
    for (auto& a : wl_args) args.push_back(a);
    Options o = preload ? with_lib(args, env) : without_lib(args);
    o.timeout_ms = 60000;
    return run(prog("fault_inject"), o, tmp);
}

// The same workload without the shim must succeed: the fault itself does
// not break the program (otherwise the test would prove nothing).
void expect_baseline_ok(const std::vector<std::string>& faults, std::vector<std::string> wl_args, TempDir& tmp,
                        Result* out = nullptr) {
    wl_args.push_back("--timeout-ms");
    wl_args.push_back("50");  // nothing merges without the shim: do not wait
    Result b = inject(faults, wl_args, false, tmp);
    ASSERT_TRUE(b.ok()) << "the workload fails under this fault even without the shim\n" << b.describe();
    ASSERT_EQ(b.num("mismatches"), 0) << b.describe();
    if (out) *out = b;
}

// Common checks of a run under the shim: exits 0, not killed, all bytes right.
void expect_program_unharmed(const Result& r) {
    ASSERT_TRUE(r.started);
    ASSERT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.term_sig, 0) << "killed by a signal\n" << r.describe();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0) << "bytes written by the program read back wrong\n" << r.describe();
    EXPECT_EQ(r.str("result"), "ok") << r.describe();
}

std::string merge_summary(const Result& r) {
    std::ostringstream os;
    os << "zero pages merged " << r.num("zero_merged_like") << "/" << r.num("zero_pages") << " (wait "
       << r.num("zero_merge_wait_ms") << " ms), duplicates merged " << r.num("dup_merged_like") << "/"
       << r.num("dup_pages") << " (wait " << r.num("dup_merge_wait_ms") << " ms, shared after reading "
       << r.num("dup_shared_after_read") << ")";
    Stats st = load_stats(r);
    if (st.parsed)
        os << "; stats: pages_merged " << st["pages_merged"] << ", merge_failures " << st["merge_failures"]
           << ", bytes_saved_peak " << st["bytes_saved_peak"];
    else
        os << "; no stats file";
    return os.str();
}

const std::vector<std::string> kWorkload = {"--copies", "16", "--buf-kib", "256", "--malloc-copies", "4",
                                            "--zero-kib", "1024"};

std::vector<std::string> workload(std::vector<std::string> extra) {
    std::vector<std::string> a = kWorkload;
    for (auto& e : extra) a.push_back(e);
    return a;
}

// ---- control ----------------------------------------------------------------

TEST(InjectControl, LauncherWithoutAFaultChangesNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = inject({"none"}, workload({"--timeout-ms", "20000"}), true, tmp);
    expect_program_unharmed(r);
    EXPECT_GE(r.num("dup_merge_wait_ms"), 0) << "duplicates did not merge\n" << r.describe();
    EXPECT_GE(r.num("zero_merge_wait_ms"), 0) << "zero pages were not given back\n" << r.describe();
    EXPECT_GE(r.num("dup_shared_after_read"), r.num("dup_pages") * 0.9) << r.describe();
    EXPECT_TRUE(shim_warnings(r.err).empty()) << joined(shim_warnings(r.err));
    info("no fault: " + merge_summary(r));
}

// ---- 1. memfd_create refused (seccomp) -----------------------------------------

class InjectMemfd : public testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(InjectMemfd, ZeroPagesStillMergeAndOneLineSaysWhy) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string fault = std::string("memfd=") + GetParam().first;
    expect_baseline_ok({fault}, kWorkload, tmp);
    Result r = inject({fault}, workload({"--timeout-ms", "1500"}), true, tmp);
    expect_program_unharmed(r);
    // What needs no memfd still merges.
    EXPECT_GE(r.num("zero_merge_wait_ms"), 0) << "zero pages were not given back\n" << r.describe();
    auto w = shim_warnings(r.err);
    EXPECT_EQ(count_naming(w, {"memfd_create"}), 1) << joined(w);
    EXPECT_EQ(count_naming(w, {GetParam().second}), 1) << "the line should give the error\n" << joined(w);
    EXPECT_EQ(w.size(), 1u) << "exactly one line expected\n" << joined(w);
    Stats st = load_stats(r);
    EXPECT_TRUE(st.parsed) << st.error;
    info(fault + ": " + merge_summary(r));
}

INSTANTIATE_TEST_SUITE_P(Inject, InjectMemfd,
                         testing::Values(std::make_pair("eperm", "Operation not permitted"),
                                         std::make_pair("enosys", "Function not implemented")),
                         [](const testing::TestParamInfo<std::pair<const char*, const char*>>& i) {
                             return std::string(i.param.first);
                         });

// ---- 2. EMFILE --------------------------------------------------------------------

const std::vector<std::string> kFdWords = {"descriptor", "open files", "RLIMIT_NOFILE", "EMFILE"};

// A low soft limit (the hard limit stays high): the shim cannot put its
// descriptors at 1000 and above. Merging must go on, and the program must
// still get every descriptor it would get without the shim: with a hard
// limit above the soft one the shim can keep its own above the soft limit.
// Only when it cannot (hard limit = soft limit) may it take some, and then
// one line must say so.
TEST(InjectNofile, LowLimitMergingGoesOnAndTheProgramKeepsItsDescriptors) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result base;
    expect_baseline_ok({"nofile=20"}, workload({"--count-fds"}), tmp, &base);
    Result r = inject({"nofile=20"}, workload({"--count-fds", "--timeout-ms", "20000"}), true, tmp);
    expect_program_unharmed(r);
    EXPECT_GE(r.num("dup_merge_wait_ms"), 0) << "duplicates did not merge under RLIMIT_NOFILE=20\n" << r.describe();
    EXPECT_GE(r.num("zero_merge_wait_ms"), 0) << r.describe();
    auto w = shim_warnings(r.err);
    bool same = r.num("fds_free") == base.num("fds_free");
    bool hard_allows = r.num("rlimit_nofile_max") >= r.num("rlimit_nofile") + 64;
    if (hard_allows) {
        EXPECT_TRUE(same) << "with RLIMIT_NOFILE=20 (hard limit " << r.str("rlimit_nofile_max")
                          << ") the program can open " << r.num("fds_free") << " more files under the shim, "
                          << base.num("fds_free") << " without it: the shim's descriptors take the program's\n"
                          << joined(w);
    } else {
        EXPECT_TRUE(same || count_naming(w, kFdWords) == 1)
            << "the shim's descriptors take the program's, and no line says so\n" << joined(w);
    }
    info("nofile=20: fds the program could still open: " + r.str("fds_free") + " with the shim, " +
         base.str("fds_free") + " without; " + merge_summary(r));
}

// Once the shim is at work (a warm-up zero page was given back), the program
// opens files until EMFILE, then allocates its duplicates: a shim that
// creates its memfd on first use cannot. The program runs on; zero pages
// still merge; if duplicates do not, one line says the descriptors ran out. Closing them before exit lets the stats
// file be written; keeping them open must cost a line, not the program.
TEST(InjectNofile, ProgramUsedUpAllDescriptors) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result base;
    expect_baseline_ok({"nofile=20"}, workload({"--fill-fds"}), tmp, &base);
    Result r = inject({"nofile=20"}, workload({"--fill-fds", "--timeout-ms", "2500"}), true, tmp);
    expect_program_unharmed(r);
    EXPECT_GE(r.num("warmup_merge_wait_ms"), 0) << "the shim was not at work before the fill\n" << r.describe();
    auto w = shim_warnings(r.err);
    if (r.num("dup_merge_wait_ms") < 0) {
        EXPECT_EQ(count_naming(w, {"open files"}), 1)
            << "duplicates were not merged: one line should name the lack of descriptors\n" << joined(w);
    }
    EXPECT_TRUE(r.num("zero_merge_wait_ms") >= 0 || count_naming(w, kFdWords) >= 1)
        << "zero pages were not given back either, and no line says why\n" << r.describe();
    expect_few_distinct_lines(w, 3);
    Stats st = load_stats(r);
    EXPECT_TRUE(st.parsed) << "the program closed its descriptors before exit: the stats file must be written\n"
                           << st.error;
    info("all descriptors used: the program opened " + r.str("fds_filled") + " files with the shim, " +
         base.str("fds_filled") + " without; " + merge_summary(r));

    // The same from the program's first instructions: whether the shim or
    // the program gets the last descriptors first is a race. Either way,
    // zero pages merge or a line says why not.
    Result e = inject({"nofile=20"}, workload({"--fill-fds", "--no-warmup", "--timeout-ms", "2500"}), true, tmp);
    expect_program_unharmed(e);
    auto we = shim_warnings(e.err);
    EXPECT_TRUE(e.num("zero_merge_wait_ms") >= 0 || count_naming(we, kFdWords) + count_naming(we, {"pagemap"}) >= 1)
        << "descriptors used up from the start: nothing merged, not even zero pages, and no line says why\n"
        << joined(we) << e.describe();
    EXPECT_TRUE(e.num("dup_merge_wait_ms") >= 0 || count_naming(we, kFdWords) >= 1) << joined(we);
    expect_few_distinct_lines(we, 3);
    info("all descriptors used from the start: " + merge_summary(e));

    Result k = inject({"nofile=20"}, workload({"--fill-fds", "--keep-fds", "--timeout-ms", "300"}), true, tmp);
    expect_program_unharmed(k);
    auto wk = shim_warnings(k.err);
    Stats stk = load_stats(k);
    EXPECT_TRUE(stk.parsed || count_naming(wk, {"DEDUP_STATS_FILE"}) == 1)
        << "descriptors still all used at exit: the stats file was not written and no line says so\n"
        << joined(wk);
    expect_few_distinct_lines(wk, 3);
}

// A program at its limit but one (after the warm-up, as above): its next
// open() must always work, as it does without the shim. Descriptors the
// scanner opens for a moment (/proc/self/status, /proc/self/maps, the live
// stats file in /dev/shm) must not take it.
TEST(InjectNofile, AtTheLimitTheProgramsOpenNeverFailsBecauseOfTheShim) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result base;
    expect_baseline_ok({"nofile=20"}, workload({"--fill-fds", "--churn-ms", "1500"}), tmp, &base);
    ASSERT_EQ(base.num("churn_emfile"), 0) << base.describe();
    Result r = inject({"nofile=20"}, workload({"--fill-fds", "--churn-ms", "1500", "--timeout-ms", "300"}), true,
                      tmp);
    expect_program_unharmed(r);
    EXPECT_GT(r.num("churn_opens"), 1000) << r.describe();
    EXPECT_EQ(r.num("churn_emfile"), 0)
        << r.str("churn_emfile") << " of the program's open() calls failed with EMFILE under the shim (0 of "
        << base.str("churn_opens") << " without it): the scanner briefly held the program's last descriptor\n"
        << r.describe();
}

// Once the shim is at work, the program dup2's onto every descriptor number
// (the shim moves or drops its own first, as documented). The table is then
// full: the shim cannot reopen /proc/self/pagemap nor create its memfd.
// Merging may stop, but not silently; and when the program then closes one
// descriptor, it is the program's to open again.
TEST(InjectNofile, ProgramDup2sOntoEveryDescriptor) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result base;
    expect_baseline_ok({"nofile=20"}, workload({"--dup2-all", "--churn-ms", "300"}), tmp, &base);
    ASSERT_EQ(base.num("churn_emfile"), 0) << base.describe();
    Result r = inject({"nofile=20"}, workload({"--dup2-all", "--churn-ms", "300", "--timeout-ms", "2500"}), true,
                      tmp);
    expect_program_unharmed(r);
    EXPECT_GE(r.num("warmup_merge_wait_ms"), 0) << "the shim was not at work before the dup2s\n" << r.describe();
    EXPECT_EQ(r.num("dup2_failed"), 0) << r.describe();
    // Then the program closes one of them: that descriptor is the program's.
    EXPECT_EQ(r.num("churn_emfile"), 0)
        << r.str("churn_emfile") << " of " << (r.num("churn_opens") + r.num("churn_emfile"))
        << " open() calls failed with EMFILE after the program closed one descriptor: the shim took it\n"
        << r.describe();
    auto w = shim_warnings(r.err);
    bool zero_merged = r.num("zero_merge_wait_ms") >= 0, dups_merged = r.num("dup_merge_wait_ms") >= 0;
    EXPECT_TRUE(zero_merged || dups_merged || count_naming(w, kFdWords) + count_naming(w, {"pagemap"}) >= 1)
        << "nothing merged (not even zero pages) and no libdedup line says why\n"
        << joined(w) << r.describe();
    EXPECT_TRUE(dups_merged || count_naming(w, kFdWords) >= 1)
        << "duplicates did not merge and no libdedup line names the lack of descriptors\n" << joined(w);
    expect_few_distinct_lines(w, 3);
    info("dup2 onto every descriptor: " + merge_summary(r));
}

// ---- 3. mmap ENOMEM for the shim's own needs (RLIMIT_AS) ------------------------------

// RLIMIT_AS far below the shim's preferred reservation for its canonical
// store, but far above what the program needs.
TEST(InjectAddressSpace, LowAddressSpaceLimit) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    expect_baseline_ok({"as=1G"}, kWorkload, tmp);
    Result r = inject({"as=1G"}, workload({"--timeout-ms", "2500"}), true, tmp);
    expect_program_unharmed(r);
    EXPECT_GE(r.num("zero_merge_wait_ms"), 0) << "zero pages were not given back\n" << r.describe();
    auto w = shim_warnings(r.err);
    if (r.num("dup_merge_wait_ms") < 0) {
        // The shim could not have its store: one line, naming the cause.
        EXPECT_EQ(count_naming(w, {"address space", "Cannot allocate memory", "RLIMIT_AS"}), 1) << joined(w);
        EXPECT_EQ(w.size(), 1u) << joined(w);
    } else {
        EXPECT_TRUE(w.empty()) << "duplicates merged, nothing to warn about\n" << joined(w);
    }
    info("RLIMIT_AS=1G: " + merge_summary(r));
}

// ---- 4. ftruncate failing (RLIMIT_FSIZE) -------------------------------------------

// Growing the memfd past RLIMIT_FSIZE fails with EFBIG and the kernel sends
// SIGXFSZ to the calling thread, whose default action kills the process.
TEST(InjectFileSize, GrowingTheMemfdFailsWithoutKillingTheProgram) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    expect_baseline_ok({"fsize=64K"}, kWorkload, tmp);
    Result r = inject({"fsize=64K"}, workload({"--timeout-ms", "2500"}), true, tmp);
    ASSERT_NE(r.term_sig, SIGXFSZ) << "killed by SIGXFSZ: the shim grew its memfd past RLIMIT_FSIZE\n"
                                   << r.describe();
    expect_program_unharmed(r);
    EXPECT_GE(r.num("zero_merge_wait_ms"), 0) << "zero pages were not given back\n" << r.describe();
    auto w = shim_warnings(r.err);
    EXPECT_EQ(count_naming(w, {"further warnings suppressed"}), 0) << joined(w);
    if (r.num("dup_merge_wait_ms") < 0) {
        // Duplicates could not merge: one line, naming the memfd and the cause.
        EXPECT_EQ(count_naming(w, {"memfd"}), 1) << "one line expected, got " << w.size() << ":\n" << joined(w);
        EXPECT_EQ(count_naming(w, {"RLIMIT_FSIZE", "File too large"}), 1) << joined(w);
        EXPECT_EQ(w.size(), 1u) << joined(w);
    }
    Stats st = load_stats(r);
    EXPECT_TRUE(st.parsed) << "the stats file (small) must still be written\n" << st.error;
    info("RLIMIT_FSIZE=64K: " + merge_summary(r) + "; libdedup lines: " + std::to_string(w.size()));
}

// ---- 6. threads ----------------------------------------------------------------------

// (a) Hundreds of short-lived threads allocate (mmap and malloc), fill with
// duplicates, verify, write, verify and free while the scanner runs flat out.
TEST(ThreadStorm, HundredsOfThreadsAllocateVerifyAndFreeWhileMerging) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    double seen = 0, merged = 0, cow = 0;
    for (int seed = 1; seed <= 2; seed++) {
        Options o = with_lib({"storm", "--threads", "300", "--concurrency", "48", "--ms", "5000", "--seed",
                              std::to_string(seed)});
        o.timeout_ms = 60000;
        Result r = run(prog("thread_storm"), o, tmp);
        expect_program_unharmed(r);
        EXPECT_EQ(r.num("threads_run"), r.num("threads_created")) << r.describe();
        EXPECT_GE(r.num("threads_run"), 100) << r.describe();
        EXPECT_EQ(r.num("alloc_failures"), 0) << r.describe();
        Stats st = load_stats(r);
        ASSERT_TRUE(st.parsed) << st.error;
        seen += r.num("merged_seen");
        merged += st["pages_merged"];
        cow += st["cow_breaks"];
        info("storm seed " + std::to_string(seed) + ": " + r.str("threads_run") + " threads in " +
             r.str("storm_ms") + " ms, pages seen merged " + r.str("merged_seen") + ", pages_merged " +
             std::to_string((long)st["pages_merged"]) + ", cow_breaks " + std::to_string((long)st["cow_breaks"]) +
             ", peak saving " + std::to_string((long)st["bytes_saved_peak"] / 1024) + " KiB");
        if (HasFailure()) break;
    }
    // The storm really overlapped with merging.
    EXPECT_GT(merged, 0);
    EXPECT_GT(seen + cow, 0) << "no thread ever met one of its pages merged";
}

// (b) Threads exit (return / pthread_exit) while their memory is being merged;
// half of what they leave is freed at once by another thread.
TEST(ThreadExit, ThreadsExitWhileTheirMemoryIsMerged) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options o = with_lib({"exiting", "--threads", "200", "--seed", "3"});
    o.timeout_ms = 60000;
    Result r = run(prog("thread_storm"), o, tmp);
    expect_program_unharmed(r);
    EXPECT_EQ(r.num("threads_run"), 200) << r.describe();
    EXPECT_EQ(r.num("alloc_failures"), 0) << r.describe();
    EXPECT_GE(r.num("left_merged_like"), r.num("left_pages") * 0.9)
        << "memory left by exited threads did not merge\n" << r.describe();
    EXPECT_GT(r.num("merged_final"), 0) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error;
    info("exiting threads: " + r.str("left_merged_like") + "/" + r.str("left_pages") +
         " pages left behind merged, shared after reading " + r.str("merged_final") + ", pages_merged " +
         std::to_string((long)st["pages_merged"]) + ", cow_breaks " + std::to_string((long)st["cow_breaks"]));
}

// (c), (d): the process ends while writer threads hammer merged pages and
// the scanner write-protects pages to merge them.
struct EndCase {
    const char* how;
    int runs;
    int status;
};

class ThreadExitRace : public testing::TestWithParam<EndCase> {};

TEST_P(ThreadExitRace, EndsPromptlyWithItsOwnStatus) {
    DT_REQUIRE_LIB();
    const EndCase& c = GetParam();
    TempDir tmp;
    std::vector<std::string> args = {"exit_race", "--how", c.how, "--max-delay-ms", "200"};
    {
        std::vector<std::string> a = args;
        a.push_back("--seed");
        a.push_back("1");
        Options o = without_lib(a);
        o.timeout_ms = 20000;
        Result b = run(prog("thread_storm"), o, tmp);
        ASSERT_EQ(b.exit_code, c.status) << "the program itself is wrong\n" << b.describe();
    }
    double shared = 0, ops = 0, merged = 0, cow = 0, worst_tail = 0;
    int stats_files = 0;
    for (int i = 1; i <= c.runs; i++) {
        std::vector<std::string> a = args;
        a.push_back("--seed");
        a.push_back(std::to_string(100 + i));
        Options o = with_lib(a);
        o.timeout_ms = 20000;
        Result r = run(prog("thread_storm"), o, tmp);
        ASSERT_TRUE(r.started);
        ASSERT_FALSE(r.timed_out) << "run " << i << " hung\n" << r.describe();
        ASSERT_EQ(r.term_sig, 0) << "run " << i << " killed by a signal\n" << r.describe();
        ASSERT_EQ(r.exit_code, c.status) << "run " << i << "\n" << r.describe();
        ASSERT_EQ(r.err.find("LOST WRITE"), std::string::npos) << "run " << i << "\n" << r.describe();
        ASSERT_TRUE(r.has("ending_at_ms")) << r.describe();
        // From the moment it decided to end to being reaped.
        double tail = r.seconds - r.num("ending_at_ms") / 1000.0;
        worst_tail = std::max(worst_tail, tail);
        EXPECT_LT(tail, 3.0) << "run " << i << ": took " << tail << " s to end\n" << r.describe();
        shared += r.num("shared_seen");
        ops += r.num("ops");
        Stats st = load_stats(r);
        if (st.parsed) {
            stats_files++;
            merged += st["pages_merged"];
            cow += st["cow_breaks"];
        }
        if (HasFailure()) break;
    }
    EXPECT_GT(shared, 0) << "the writers never met a merged page: the race was not exercised";
    bool destructors_run = c.status == 0;
    if (destructors_run) {
        EXPECT_EQ(stats_files, c.runs) << "exit() must still write the stats file";
        EXPECT_GT(merged, 0);
    }
    std::ostringstream os;
    os << c.how << ": " << c.runs << " runs, status " << c.status << " each, slowest end " << worst_tail
       << " s after the decision; writer ops " << (long)ops << ", ops that found their page merged "
       << (long)shared;
    if (destructors_run) os << ", pages_merged " << (long)merged << ", cow_breaks " << (long)cow;
    info(os.str());
}

INSTANTIATE_TEST_SUITE_P(Thread, ThreadExitRace,
                         testing::Values(EndCase{"thread", 30, 0}, EndCase{"main", 12, 0},
                                         EndCase{"_exit", 8, 7}, EndCase{"exit_group", 8, 9}),
                         [](const testing::TestParamInfo<EndCase>& i) {
                             std::string n = i.param.how;
                             if (n == "thread") return std::string("ExitFromAnotherThread");
                             if (n == "main") return std::string("MainReturns");
                             if (n == "_exit") return std::string("WriterCallsUnderscoreExit");
                             return std::string("WriterCallsExitGroup");
                         });

}  // namespace
