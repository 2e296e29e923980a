// Hostile kernel writes: the kernel writing into memory the shim merges or
// unmerges, through paths the read/recv pins do not cover. Each test runs a
// tests/programs/hostile_*.c program under the shim (DEDUP_SLEEP_MS=0), and
// the same program without the shim as a control that must be clean (so a
// failure is the shim's, not the program's). Each also checks that the shim
// really merged (or unmerged, rotated, gave back) while the kernel was
// writing, so that no test passes because nothing happened.
//
// They were written to FAIL against the library of their time (the commit
// messages give the counts) and say what a correct library must do:
//   1. no write-protect window may meet a read(2) in flight, whoever opens
//      it: the unmerge of MADV_UNMERGEABLE, mlock, mlockall, WIPEONFORK,
//      PR_SET_MEMORY_MERGE 0, not only the scanner's merges;
//   2. nor the shim's own unmerges: the VMA give-back, a store rotation's
//      leftovers, the consolidation before mremap growth;
//   3. io_uring reads (IORING_OP_READ) into merged memory complete in full;
//   4. a buffer registered with io_uring (long-term pinned) is never
//      remapped, so READ_FIXED data reaches the program;
//   5. writes through /proc/self/mem and process_vm_writev land and stay;
//   6. protections and mappings changed by raw system calls (glibc's
//      syscall() or a syscall instruction) keep their kernel meaning;
//   7. the program's own userfaultfd registrations and faults are kept;
//   and any other system call writing into user memory (fstat, waitid,
//   ioctl, vmsplice, process_vm_readv, Linux AIO) never sees EFAULT.
#include "harness.h"

using namespace dt;

namespace {

// The counters every reader program prints: all must be 0. One assertion,
// so a failing run's output is shown once.
void expect_reads_clean(const Result& r, const std::string& what) {
    std::ostringstream os;
    double sum = 0;
    for (const char* k : {"efaults", "short_reads", "read_errors", "mismatches", "final_bad_bytes"}) {
        os << " " << k << "=" << r.num(k);
        sum += r.num(k) < 0 ? 1 : r.num(k);
    }
    EXPECT_EQ(sum, 0) << what << ": a read of a regular file, in range, into mapped writable memory "
                      << "failed (EFAULT), returned short, or the bytes differ:" << os.str() << " (of "
                      << r.num("reads") << " reads)\n" << r.describe();
}

// The program without the shim: the same calls never fail, so every failure
// under the shim is the shim's.
Result run_control(const std::string& program, std::vector<std::string> args, const TempDir& tmp,
                   std::map<std::string, std::string> env = {}) {
    Options o = without_lib(std::move(args));
    o.env = std::move(env);
    o.timeout_ms = 60000;
    Result r = run(prog(program), o, tmp);
    EXPECT_TRUE(r.started) << r.describe();
    EXPECT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.num("with_shim"), 0) << r.describe();
    EXPECT_EQ(r.exit_code, 0) << "control run (no shim) failed: the test program itself is wrong\n" << r.describe();
    return r;
}

Result run_shim(const std::string& program, std::vector<std::string> args, const TempDir& tmp,
                std::map<std::string, std::string> env = {}) {
    Options o = with_lib(std::move(args), std::move(env));
    o.timeout_ms = 60000;
    Result r = run(prog(program), o, tmp);
    EXPECT_TRUE(r.started) << r.describe();
    EXPECT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.num("with_shim"), 1) << "the shim was not loaded\n" << r.describe();
    return r;
}

Stats stats_of(const Result& r) {
    Stats st = load_stats(r);
    EXPECT_TRUE(st.parsed) << "no exit stats (" << r.stats_path << "): " << st.error << "\n" << r.describe();
    return st;
}

// ---- 1. read(2) while the program's own call unmerges the range ------------

void unmerge_while_reading(const std::string& op, const std::string& iters) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // 16 MiB: each unmerge keeps the region write-protected for tens of
    // milliseconds, longer than a time slice, so that the readers run
    // during it even when other processes load the machine.
    std::vector<std::string> args = {"--op", op, "--iters", iters, "--ms", "8000", "--threads", "2", "--pages", "4096"};
    Result c = run_control("hostile_unmerge_read", args, tmp);
    EXPECT_GT(c.num("reads"), 1000) << c.describe();
    expect_reads_clean(c, "control");

    Result r = run_shim("hostile_unmerge_read", args, tmp);
    EXPECT_GT(r.num("reads"), 1000) << r.describe();
    EXPECT_EQ(r.num("unmerge_failures"), 0) << r.describe();
    // merged before (almost) every unmerge: the unmerges had work to do
    EXPECT_GE(r.num("merged_iters"), 3) << "the region was not merged before the unmerges\n" << r.describe();
    EXPECT_GE(r.num("merged_iters"), 0.8 * r.num("unmerge_calls")) << r.describe();
    expect_reads_clean(r, "read(2) while " + op + " unmerges");
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GT(st["pages_merged"], 1000) << st.text;
    EXPECT_GT(st["unmerged_pages"], 1000) << "the shim did not unmerge\n" << st.text;
}

TEST(HostileKernelWrites, ReadDuringUnmergeableNeverFaults) { unmerge_while_reading("unmergeable", "30"); }
TEST(HostileKernelWrites, ReadDuringMlockNeverFaults) { unmerge_while_reading("mlock", "30"); }
// mlockall(MCL_CURRENT) also locks the shim's two 256 MiB store views
// (populating them): slow, so fewer iterations.
TEST(HostileKernelWrites, ReadDuringMlockallNeverFaults) { unmerge_while_reading("mlockall", "6"); }
TEST(HostileKernelWrites, ReadDuringWipeOnForkNeverFaults) { unmerge_while_reading("wipeonfork", "30"); }
TEST(HostileKernelWrites, ReadDuringPrctlMergeOffNeverFaults) { unmerge_while_reading("prctl0", "30"); }

// ---- 2. read(2) while the shim unmerges on its own -------------------------

// (a) The program grows its VMA count past the give-back point; the shim
// consolidates the merged region the readers write into.
TEST(HostileKernelWrites, ReadDuringVmaGiveBackNeverFaults) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // A reserve that puts the give-back point at 26,530 VMAs (of 65,530), so
    // the program reaches it with 13,000 mprotect calls, not 30,000.
    long max = atol(read_file("/proc/sys/vm/max_map_count").c_str());
    if (max != 65530) GTEST_SKIP() << "vm.max_map_count is " << max << ", the reserve below assumes 65530";
    std::map<std::string, std::string> env = {{"DEDUP_VMA_RESERVE", "52000"}};
    std::vector<std::string> args = {"--pages", "4096", "--threads", "2", "--wait-ms", "12000"};
    Result c = run_control("hostile_giveback_read", args, tmp, env);
    EXPECT_GT(c.num("reads"), 1000) << c.describe();
    expect_reads_clean(c, "control");

    Result r = run_shim("hostile_giveback_read", args, tmp, env);
    EXPECT_EQ(r.num("grow_failures"), 0) << r.describe();
    EXPECT_GE(r.num("merged_before"), 0.9 * 4096 * 4096) << "the region was not merged first\n" << r.describe();
    EXPECT_EQ(r.num("gave_back"), 1) << "the shim never gave the region's VMAs back while the readers ran\n"
                                     << r.describe();
    expect_reads_clean(r, "read(2) during the VMA give-back");
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GT(st["pages_merged"], 3000) << st.text;
}

// (b) A store rotation after a fork makes the old file's leftover pieces
// anonymous while the readers write into them.
TEST(HostileKernelWrites, ReadDuringStoreRotationNeverFaults) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--rounds", "3", "--pages", "2048", "--threads", "2", "--wait-ms", "10000"};
    Result c = run_control("hostile_rotation_read", args, tmp);
    EXPECT_GT(c.num("reads"), 1000) << c.describe();
    expect_reads_clean(c, "control");

    Result r = run_shim("hostile_rotation_read", args, tmp);
    EXPECT_GT(r.num("reads"), 1000) << r.describe();
    EXPECT_EQ(r.num("merged_rounds"), 3) << "A was not merged before the fork\n" << r.describe();
    EXPECT_EQ(r.num("rotated_rounds"), 3) << "the parent did not let go of the old memfd while the readers ran\n"
                                          << r.describe();
    expect_reads_clean(r, "read(2) during a store rotation");
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GE(st["store_rotations"], 3) << st.text;
    EXPECT_GT(st["pages_merged"], 3 * 2048) << st.text;
}

// (c) mremap growth in place of a merged region: the shim first makes it one
// anonymous mapping again.
TEST(HostileKernelWrites, ReadDuringInPlaceMremapGrowthNeverFaults) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--iters", "30", "--ms", "6000", "--threads", "2", "--pages", "4096"};
    Result c = run_control("hostile_mremap_read", args, tmp);
    EXPECT_GT(c.num("reads"), 1000) << c.describe();
    expect_reads_clean(c, "control");

    Result r = run_shim("hostile_mremap_read", args, tmp);
    EXPECT_GT(r.num("reads"), 1000) << r.describe();
    EXPECT_GE(r.num("grows"), 10) << r.describe();
    EXPECT_EQ(r.num("grow_failures"), 0) << r.describe();
    EXPECT_GE(r.num("merged_iters"), 0.8 * r.num("grows")) << "the region was not merged before the growths\n"
                                                          << r.describe();
    expect_reads_clean(r, "read(2) during mremap growth");
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GT(st["pages_merged"], 1000) << st.text;
}

}  // namespace

namespace {

// ---- 3. io_uring IORING_OP_READ into merged memory -------------------------

void uring_read(bool async) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // 2 s, and with the shim on until the scanner merged 10,000 pages (at
    // most 8 s): a loaded machine gives the scanner less CPU.
    std::vector<std::string> args = {"--ms", "2000", "--threads", "2", "--pages", "64", "--batch", "4",
                                     "--min-merges", "10000", "--max-ms", "8000"};
    if (async) args.push_back("--async");
    std::vector<std::string> cargs = args;
    cargs[1] = "1000";
    Result c = run_control("hostile_uring_read", cargs, tmp);
    if (c.num("uring_unavailable") == 1) GTEST_SKIP() << "io_uring is not available here\n" << c.err;
    EXPECT_GT(c.num("reads"), 1000) << c.describe();
    expect_reads_clean(c, "control");

    Result r = run_shim("hostile_uring_read", args, tmp);
    EXPECT_GT(r.num("reads"), 1000) << r.describe();
    expect_reads_clean(r, std::string("io_uring IORING_OP_READ") + (async ? " (IOSQE_ASYNC)" : "") +
                              " into memory being merged: a CQE with -EFAULT or a short count");
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    // the pages the reads went into were merged (and broken by the reads) all along
    EXPECT_GT(st["pages_merged"], 1000) << st.text;
    EXPECT_GT(st["cow_breaks"], 1000) << st.text;
}

TEST(HostileKernelWrites, IoUringReadNeverFaults) { uring_read(false); }
TEST(HostileKernelWrites, IoUringAsyncReadNeverFaults) { uring_read(true); }

// ---- 4. io_uring READ_FIXED into a registered (long-term pinned) buffer ----

void uring_read_fixed(const std::string& reg) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--reg", reg, "--iters", "8", "--pages", "32"};
    Result c = run_control("hostile_uring_fixed", args, tmp);
    if (c.num("uring_unavailable") == 1) GTEST_SKIP() << "io_uring is not available here\n" << c.err;
    EXPECT_EQ(c.num("lost_pages"), 0) << c.describe();

    Result r = run_shim("hostile_uring_fixed", args, tmp);
    EXPECT_EQ(r.num("iterations"), 8) << r.describe();
    // The buffer's neighbours merged in every iteration after the buffer was
    // registered: the scanner went over it.
    EXPECT_EQ(r.num("c_merged_iters"), 8) << "no merging around the registered buffer\n" << r.describe();
    EXPECT_EQ(r.num("cqe_errors"), 0) << r.describe();
    EXPECT_EQ(r.num("short_reads"), 0) << r.describe();
    EXPECT_EQ(r.num("lost_pages"), 0)
        << "READ_FIXED succeeded but the program does not see what it read: the shim remapped pages of a buffer "
           "registered with io_uring (pinned), so the kernel wrote into pages the program no longer maps ("
        << r.num("a_remapped") << " buffer pages were in memfd pieces before the reads)\n"
        << r.describe();
    EXPECT_EQ(r.num("register_efaults"), 0)
        << "io_uring_register failed with EFAULT: pinning the buffer for writing met a write-protect window\n"
        << r.describe();
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GE(st["pages_merged"], 8 * 32) << st.text;
}

TEST(HostileKernelWrites, IoUringReadFixedNeverLosesData) { uring_read_fixed("buffers"); }
TEST(HostileKernelWrites, IoUringReadFixedBuffers2NeverLosesData) { uring_read_fixed("buffers2"); }
TEST(HostileKernelWrites, IoUringReadFixedBufferUpdateNeverLosesData) { uring_read_fixed("update"); }

}  // namespace

namespace {

// ---- 5. /proc/self/mem and process_vm_writev into memory being merged ------

void memwrite(const std::string& via, const std::string& rounds) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--via", via, "--rounds", rounds, "--pages", "4096", "--threads", "2"};
    Result c = run_control("hostile_memwrite", args, tmp);
    EXPECT_EQ(c.num("write_failures"), 0) << c.describe();
    EXPECT_EQ(c.num("lost_pages"), 0) << c.describe();

    Result r = run_shim("hostile_memwrite", args, tmp);
    EXPECT_EQ(r.num("writes"), atol(rounds.c_str()) * 4096 / 16) << r.describe();
    EXPECT_EQ(r.num("write_failures"), 0) << via << ": a write into the program's own mapped, writable memory "
                                          << "failed or wrote short\n" << r.describe();
    EXPECT_EQ(r.num("lost_pages"), 0) << via << ": the write succeeded, and the page holds what it held before "
                                      << "(the shim remapped it onto the canonical page it had compared)\n"
                                      << r.describe();
    EXPECT_EQ(r.num("other_bad_pages"), 0) << r.describe();
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    // every round's pages were merged back while the writes went on
    EXPECT_GT(st["pages_merged"], 4096 * 2) << st.text;
}

TEST(HostileKernelWrites, ProcSelfMemWritesAreNeverLost) { memwrite("mem", "40"); }
TEST(HostileKernelWrites, ProcessVmWritevToSelfNeverFails) { memwrite("vmwritev", "120"); }

}  // namespace

namespace {

// ---- 6. protection and mapping changes by raw system call ------------------

// how: "glibc" (syscall(SYS_mprotect, ...)) or "inline" (a `syscall`
// instruction in the program); prot: "read" or "none".
void raw_mprotect(const std::string& how, const std::string& prot) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--how", how, "--prot", prot, "--wait-ms", "5000"};
    std::string want = prot == "none" ? "---p" : "r--p";
    Result c = run_control("hostile_raw_mprotect", args, tmp);
    EXPECT_EQ(c.str("page20_perms"), want) << c.describe();

    Result r = run_shim("hostile_raw_mprotect", args, tmp);
    ASSERT_EQ(r.term_sig, 0) << "the process was killed (the scanner read a page the program made PROT_NONE?)\n"
                             << r.describe();
    EXPECT_EQ(r.str("page20_perms"), want)
        << "a page made " << want << " by a raw mprotect (" << how << ") became "
        << r.str("page20_perms") << " once the shim merged around it\n" << r.describe();
    EXPECT_EQ(r.num("child_signal"), SIGSEGV) << "an access the protection forbids did not fault\n" << r.describe();
    EXPECT_EQ(r.num("content_ok"), 1) << r.describe();
    // in-program control: the same protection through mprotect(), which the shim sees
    EXPECT_EQ(r.str("page40_perms"), "r--p") << r.describe();
    // the region really merged around the page
    EXPECT_GE(r.num("merged_pages"), 62) << r.describe();
    EXPECT_EQ(r.exit_code, 0);
}

TEST(HostileKernelWrites, RawMprotectReadOnlyStaysReadOnly) { raw_mprotect("glibc", "read"); }
TEST(HostileKernelWrites, InlineSyscallMprotectReadOnlyStaysReadOnly) { raw_mprotect("inline", "read"); }
TEST(HostileKernelWrites, RawMprotectNoneIsNeverRead) { raw_mprotect("glibc", "none"); }
TEST(HostileKernelWrites, InlineSyscallMprotectNoneIsNeverRead) { raw_mprotect("inline", "none"); }

void raw_call(const std::string& call, const std::string& how) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--call", call, "--how", how};
    run_control("hostile_raw_calls", args, tmp);

    Result r = run_shim("hostile_raw_calls", args, tmp);
    EXPECT_EQ(r.num("merged"), 1) << "the region was not merged before the call\n" << r.describe();
    if (call == "dontneed") {
        EXPECT_EQ(r.num("dontneed_ret"), 0) << r.describe();
        EXPECT_EQ(r.num("nonzero_pages"), 0)
            << "after MADV_DONTNEED (" << how << ") private anonymous pages must read zeros; merged pages read "
            << "their old contents back from the canonical store\n" << r.describe();
    } else {
        EXPECT_EQ(r.str("mremap_errno"), "0") << "in-place growth of a merged region failed\n" << r.describe();
        EXPECT_EQ(r.num("tail_nonzero_at_once"), 0) << r.describe();
        EXPECT_EQ(r.num("tail_nonzero_later"), 0)
            << "pages grown by mremap (" << how << ") and never written show other data: they map the canonical "
            << "store's next slots, which the shim then filled\n" << r.describe();
    }
    EXPECT_EQ(r.num("bad_pages"), 0) << r.describe();
    EXPECT_EQ(r.exit_code, 0);
}

TEST(HostileKernelWrites, RawMadviseDontneedReadsZeros) { raw_call("dontneed", "glibc"); }
TEST(HostileKernelWrites, RawMremapGrowthReadsZeros) { raw_call("mremap_grow", "glibc"); }
// The same calls made by a syscall instruction of the program's own code
// (hostile_raw_calls --how inline) are invisible to any interposer: the
// shim cannot give merged pages back before them, and there is no state it
// could check afterwards (a discarded merged page and an untouched one both
// read as not present). That is a documented limit (README, "What it does
// not do"), not a test: no library could pass it. The inline mprotect cases
// above pass because the kernel is asked before each window.

}  // namespace

namespace {

// ---- 7. the program's own userfaultfd on memory the shim merges -----------

void uffd(bool user_mode) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::vector<std::string> args = {"--wait-ms", "5000"};
    if (user_mode) args.push_back("--user-mode");
    Result c = run_control("hostile_uffd", args, tmp);
    if (c.num("uffd_unavailable") == 1) GTEST_SKIP() << "userfaultfd is not available here\n" << c.err;
    EXPECT_EQ(c.num("dontneed_faults"), 16) << c.describe();

    Result r = run_shim("hostile_uffd", args, tmp);
    EXPECT_EQ(r.num("c_merged"), 1) << "the scanner did not merge next to the registered range\n" << r.describe();
    EXPECT_EQ(r.num("reg_dropped_pages"), 0)
        << "pages of the userfaultfd-registered range lost their registration (VmFlags without um): the shim "
           "replaced their mapping\n" << r.describe();
    EXPECT_EQ(r.num("spurious_faults"), 0)
        << "MISSING faults the program never caused (pages the shim discarded); the handler's contents "
           "replaced the program's\n" << r.describe();
    EXPECT_EQ(r.num("bad_pages"), 0) << r.describe();
    EXPECT_EQ(r.num("dontneed_faults"), 16)
        << "after MADV_DONTNEED, reads of registered pages must raise MISSING faults\n" << r.describe();
    EXPECT_EQ(r.num("dontneed_marker_pages"), 16) << r.describe();
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GE(st["pages_merged"], 64) << st.text;
}

TEST(HostileKernelWrites, UserfaultfdRegistrationSurvivesMerging) { uffd(false); }
TEST(HostileKernelWrites, UserfaultfdUserModeOnlyRegistrationSurvivesMerging) { uffd(true); }

}  // namespace

namespace {

// ---- further kernel writers: any syscall that writes into user memory ------

void other_writer(const std::string& call) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // 1 s, and with the shim on until the scanner merged 5,000 pages (at
    // most 6 s): a loaded machine gives the scanner less CPU.
    std::vector<std::string> args = {"--call", call,    "--ms",          "1000", "--threads", "2",
                                     "--pages", "64",   "--min-merges", "5000", "--max-ms", "6000"};
    std::vector<std::string> cargs = args;
    cargs[3] = "300";
    Result c = run_control("hostile_other_writers", cargs, tmp);
    EXPECT_GT(c.num("calls"), 1000) << c.describe();

    Result r = run_shim("hostile_other_writers", args, tmp);
    EXPECT_GT(r.num("calls"), 1000) << r.describe();
    std::ostringstream os;
    double sum = 0;
    for (const char* k : {"efaults", "short_writes", "call_errors", "mismatches", "final_bad_pages"}) {
        os << " " << k << "=" << r.num(k);
        sum += r.num(k) < 0 ? 1 : r.num(k);
    }
    EXPECT_EQ(sum, 0) << call << " writing into mapped, writable memory that the shim merges failed (EFAULT), "
                      << "wrote short or wrote wrong bytes:" << os.str() << " (of " << r.num("calls")
                      << " calls)\n" << r.describe();
    EXPECT_EQ(r.exit_code, 0);
    Stats st = stats_of(r);
    EXPECT_GT(st["pages_merged"], 1000) << st.text;
    EXPECT_GT(st["cow_breaks"], 1000) << st.text;
}

TEST(HostileKernelWrites, FstatIntoMergedMemoryNeverFaults) { other_writer("fstat"); }
TEST(HostileKernelWrites, WaitidIntoMergedMemoryNeverFaults) { other_writer("waitid"); }
TEST(HostileKernelWrites, IoctlIntoMergedMemoryNeverFaults) { other_writer("fionread"); }
TEST(HostileKernelWrites, VmspliceIntoMergedMemoryNeverFaults) { other_writer("vmsplice"); }
TEST(HostileKernelWrites, ProcessVmReadvIntoMergedMemoryNeverFaults) { other_writer("vmreadv"); }
TEST(HostileKernelWrites, AioPreadIntoMergedMemoryNeverFaults) { other_writer("aio"); }

}  // namespace

namespace {

// ---- found on the way: mlockall(MCL_CURRENT) populates the store's views ---

void mlockall_merge(const std::string& mode) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result c = run_control("hostile_mlockall_merge", {"--mode", mode}, tmp);
    Result r = run_shim("hostile_mlockall_merge", {"--mode", mode}, tmp);
    EXPECT_EQ(r.num("merged"), 1) << r.describe();
    EXPECT_EQ(r.num("bad_pages"), 0)
        << "after mlockall(MCL_CURRENT) merged pages read zeros (" << r.num("zero_pages")
        << " all-zero pages): the merge moved page tables of the store's private view, which mlockall had "
           "populated while its slots were empty\n" << r.describe();
    // A program's own mlockall locks the shim's 256 MiB views too (and
    // populates them): half a GiB of locked memory the program never mapped.
    EXPECT_LT(r.num("vm_rss_kb"), c.num("vm_rss_kb") + 64 * 1024)
        << "mlockall(MCL_CURRENT) under the shim: VmRSS " << r.num("vm_rss_kb") << " kB, without it "
        << c.num("vm_rss_kb") << " kB\n" << r.describe();
    EXPECT_EQ(r.exit_code, 0);
}

TEST(HostileKernelWrites, MergeAfterMlockallKeepsContents) { mlockall_merge("cycle"); }
TEST(HostileKernelWrites, MergeWhileMlockedAllKeepsContents) { mlockall_merge("locked"); }

}  // namespace
