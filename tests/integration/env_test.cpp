// Environment variables, logging, the stats file, the scanner thread, and
// DEDUP_DISABLE.
#include "harness.h"

using namespace dt;

namespace {

const std::vector<std::string> kSmallDup = {"--copies", "8", "--buf-kib", "512"};

// Every stderr line comes from the shim (the programs write nothing to stderr
// when they succeed) and starts with "libdedup[PID]: ".
void expect_only_log_lines(const Result& r) {
    for (auto& l : lines(r.err))
        EXPECT_TRUE(is_log_line(l)) << "stderr line without the prefix: '" << l
                                                 << "'\n" << r.describe();
}

// The shim never writes to stdout: every stdout line is a key=value line of
// the program.
void expect_clean_stdout(const Result& r) {
    for (auto& l : lines(r.out)) {
        EXPECT_EQ(l.find("libdedup"), std::string::npos) << "stdout: " << l;
        EXPECT_NE(l.find('='), std::string::npos) << "stdout line not from the program: " << l;
    }
}

struct BadValue {
    const char* var;
    const char* value;
};

void PrintTo(const BadValue& b, std::ostream* os) { *os << b.var << "='" << b.value << "'"; }

class BadEnv : public testing::TestWithParam<BadValue> {};

// Case 6: one line naming variable, value and "default"; the program runs and
// still merges.
TEST_P(BadEnv, OneLineNamingVariableValueAndDefault) {
    DT_REQUIRE_LIB();
    const BadValue b = GetParam();
    TempDir tmp;
    Options o = with_lib(kSmallDup, {{b.var, b.value}});
    Result r = run(prog("ncopies"), o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("mismatches"), 0);
    EXPECT_GE(r.num("merge_wait_ms"), 0) << "did not merge with " << b.var << "=" << b.value;
    int n = count_lines_with(r.err, {b.var, b.value});
    EXPECT_EQ(n, 1) << "want exactly one log line naming " << b.var << " and '" << b.value
                    << "'\n" << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {b.var, b.value, "default"}), 1) << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"libdedup[" + std::to_string(r.pid) + "]: ", b.var, b.value}), 1)
        << r.describe();
    expect_only_log_lines(r);
    expect_clean_stdout(r);
}

INSTANTIATE_TEST_SUITE_P(
    Dedup, BadEnv,
    testing::Values(BadValue{"DEDUP_SLEEP_MS", "abc"}, BadValue{"DEDUP_SLEEP_MS", "-1"},
                    BadValue{"DEDUP_SLEEP_MS", "12ms"},
                    BadValue{"DEDUP_PAGES_TO_SCAN", "-5"},
                    BadValue{"DEDUP_PAGES_TO_SCAN", "99999999999999999999999"},
                    BadValue{"DEDUP_MIN_REGION", "64X"}, BadValue{"DEDUP_MIN_REGION", "-64K"},
                    BadValue{"DEDUP_MALLOC_MIN", "lots"}, BadValue{"DEDUP_MALLOC_MIN", "1Q"},
                    BadValue{"DEDUP_SCOPE", "bogus"}, BadValue{"DEDUP_VMA_RESERVE", "-3"},
                    BadValue{"DEDUP_VMA_RESERVE", "x1"}),
    [](const testing::TestParamInfo<BadValue>& i) {
        std::string n = std::string(i.param.var) + "_" + std::to_string(i.index);
        return n;
    });

TEST(BadEnv, AllBadAtOnceOneLineEach) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::map<std::string, std::string> bad = {{"DEDUP_PAGES_TO_SCAN", "lots"},
                                              {"DEDUP_MIN_REGION", "1Z"},
                                              {"DEDUP_MALLOC_MIN", "-9"},
                                              {"DEDUP_SCOPE", "sometimes"},
                                              {"DEDUP_VMA_RESERVE", "none"}};
    Result r = run(prog("ncopies"), with_lib(kSmallDup, bad), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    for (auto& kv : bad)
        EXPECT_EQ(count_lines_with(r.err, {kv.first, kv.second, "default"}), 1)
            << kv.first << "\n" << r.describe();
    expect_only_log_lines(r);
}

// A bad value is reported once per process tree: a shell under the shim
// reports it, the commands it runs with the same value do not; a command
// given another value reports that one.
TEST(BadEnv, OncePerProcessTree) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string p = prog("ncopies") + " --copies 4 --buf-kib 256";
    Options o = with_lib({"-c", p + "; " + p + "; DEDUP_SLEEP_MS=xyz " + p + "; :"}, {{"DEDUP_SLEEP_MS", "abc"}});
    Result r = run("/bin/bash", o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"DEDUP_SLEEP_MS='abc'", "default"}), 1) << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"libdedup[" + std::to_string(r.pid) + "]: DEDUP_SLEEP_MS='abc'"}), 1)
        << "the shell, first in the tree, reports it\n" << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"DEDUP_SLEEP_MS='xyz'", "default"}), 1) << r.describe();
    expect_only_log_lines(r);
    // A child whose log goes elsewhere has its own reader: it reports it there.
    std::string log = tmp.file("child.log");
    o.args = {"-c", "DEDUP_LOG=" + log + " " + p + "; :"};
    r = run("/bin/bash", o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"DEDUP_SLEEP_MS='abc'"}), 1) << r.describe();
    EXPECT_EQ(count_lines_with(read_file(log), {"DEDUP_SLEEP_MS='abc'"}), 1) << read_file(log);
}

// Valid values in the documented syntax produce no warning.
TEST(GoodEnv, ValidValuesNoWarning) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib(kSmallDup, {{"DEDUP_MIN_REGION", "64K"},
                                        {"DEDUP_MALLOC_MIN", "1M"},
                                        {"DEDUP_PAGES_TO_SCAN", "4096"},
                                        {"DEDUP_SLEEP_MS", "1"},
                                        {"DEDUP_SCOPE", "all"}}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(count_lines_with(r.err, {"default"}), 0) << r.describe();
}

// Case 8: DEDUP_DISABLE=1: nothing merges, no scanner thread.
TEST(Disable, NothingMergesNoScannerThread) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options o = with_lib({"--copies", "16", "--buf-kib", "1024", "--expect", "none", "--hold-ms",
                          "1000", "--ready"},
                         {{"DEDUP_DISABLE", "1"}});
    Child c(prog("ncopies"), o, tmp);
    ASSERT_TRUE(c.wait_ready("merged")) << c.out_so_far();
    auto names = thread_names(c.pid());
    for (auto& n : names) EXPECT_NE(n, "dedup-scan");
    EXPECT_EQ(names.size(), 1u) << "the program itself is single-threaded";
    c.release();
    Result r = c.finish();
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("max_merged_like"), 0);
    EXPECT_EQ(r.num("file_pages_after_verify"), 0);
    Stats st = load_stats(r);
    if (st.present) {
        ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
        EXPECT_EQ(st["pages_sharing"], 0) << st.text;
    }
    expect_clean_stdout(r);
}

// Case 9: the scanner thread appears with the first registration; the child,
// seen from outside, holds about 1/N of the region.
TEST(ScannerThread, NamedDedupScanAfterFirstRegistration) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    const int copies = 32, kib = 1024;
    // DEDUP_MALLOC_MIN=1M: the runtime's own start-up mallocs (libstdc++'s
    // ~72 KiB emergency pool) must not count as the first registration here
    Options o = with_lib({"--copies", std::to_string(copies), "--buf-kib", std::to_string(kib),
                          "--ready-early", "--ready"},
                         {{"DEDUP_MALLOC_MIN", "1M"}});
    Child c(prog("ncopies"), o, tmp);
    ASSERT_TRUE(c.wait_ready("start")) << c.out_so_far();
    auto before = thread_names(c.pid());
    long pss0 = proc_pss_kb(c.pid());
    for (auto& n : before)
        EXPECT_NE(n, "dedup-scan") << "scanner running before any registration";
    c.release();
    ASSERT_TRUE(c.wait_ready("merged")) << c.out_so_far();
    auto after = thread_names(c.pid());
    int scanners = 0;
    for (auto& n : after) scanners += n == "dedup-scan";
    EXPECT_EQ(scanners, 1) << "threads: " << testing::PrintToString(after);

    auto kv = parse_kv(c.out_so_far());
    uintptr_t addr = strtoull(kv["region_addr"].c_str(), nullptr, 16);
    size_t len = strtoull(kv["region_len"].c_str(), nullptr, 10);
    ASSERT_GT(addr, 0u);
    ASSERT_EQ(len, size_t(copies) * kib * 1024);
    PagemapCounts pm = proc_pagemap(c.pid(), addr, len);
    ASSERT_TRUE(pm.ok);
    EXPECT_GE(pm.file, pm.pages * 9 / 10) << "outside view: " << pm.file << " shared of "
                                          << pm.pages;
    long pss1 = proc_pss_kb(c.pid());
    EXPECT_LE(pss1 - pss0, long(len / 1024 / 4))
        << "outside Pss " << pss0 << " kB -> " << pss1 << " kB for a " << len / 1024
        << " kB region of " << copies << " copies";
    c.release();
    Result r = c.finish();
    ASSERT_TRUE(r.ok()) << r.describe();
}

// Case 10: the stats file.
TEST(StatsFile, WrittenAtExitWithAllKeys) {
    DT_REQUIRE_LIB();
    TempDir tmp, statsdir;
    std::string path = statsdir.file("stats.json");
    Result r = run(prog("ncopies"), with_lib(kSmallDup, {{"DEDUP_STATS_FILE", path}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    Stats st = load_stats(path);
    ASSERT_TRUE(st.present) << "no " << path;
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    for (auto& k : required_stats_keys())
        EXPECT_TRUE(st.has(k)) << "missing numeric key " << k << " in\n" << st.text;
    EXPECT_GT(st["pages_sharing"], 0) << st.text;
    EXPECT_EQ(st["bytes_saved"], (st["pages_sharing"] + st["zero_pages"]) * 4096) << st.text;
    EXPECT_GE(st["bytes_saved_peak"], st["bytes_saved"]) << st.text;
    EXPECT_GE(st["pages_scanned"], st["pages_sharing"]) << st.text;
    EXPECT_GE(st["scanner_cpu_seconds"], 0) << st.text;
    EXPECT_GE(st["vmas_used"], 1) << st.text;
    // written atomically: nothing but the file itself is left in its directory
    int entries = 0;
    if (DIR* d = opendir(statsdir.path().c_str())) {
        while (struct dirent* e = readdir(d))
            entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        closedir(d);
    }
    EXPECT_EQ(entries, 1) << "temporary files left next to the stats file";
    // default log: a summary on stderr, every line prefixed
    EXPECT_FALSE(r.err.empty()) << "no summary on stderr";
    expect_only_log_lines(r);
    expect_clean_stdout(r);
}

// KSM's counters by KSM's names, and the settings in effect.
TEST(StatsFile, KsmCountersAndSettings) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"), with_lib(kSmallDup, {{"DEDUP_PAGES_TO_SCAN", "4096"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    EXPECT_EQ(st["ksm_merging_pages"], st["pages_shared"] + st["pages_sharing"]) << st.text;
    EXPECT_EQ(st["ksm_zero_pages"], st["zero_pages"]) << st.text;
    EXPECT_EQ(st["general_profit"], st["bytes_saved"] - st["metadata_bytes"]) << st.text;
    EXPECT_EQ(st["ksm_process_profit"],
              (st["ksm_merging_pages"] + st["ksm_zero_pages"]) * 4096 - st["metadata_bytes"]) << st.text;
    EXPECT_EQ(st["ksm_merge_any"], 1) << st.text;
    EXPECT_TRUE(st.has("pages_skipped") && st.has("ksm_mergeable")) << st.text;
    EXPECT_EQ(st["schema"], 1) << st.text;
    // The settings object: every option's effective value.
    Stats set;
    std::string error;
    ASSERT_TRUE(parse_flat_json(st.s["settings"], &set.n, &set.s, &error)) << error << "\n" << st.s["settings"];
    EXPECT_EQ(set["pages_to_scan"], 4096) << st.s["settings"];
    EXPECT_EQ(set["sleep_ms"], 0) << st.s["settings"];
    EXPECT_EQ(set["min_region"], 65536) << st.s["settings"];
    EXPECT_GT(set["vma_reserve"], 0) << "the effective reserve, not 0\n" << st.s["settings"];
    EXPECT_EQ(set.s["scope"], "all");
    EXPECT_EQ(set.s["summary"], "auto");
    EXPECT_EQ(set.s["stats_file"], r.stats_path);
    EXPECT_EQ(set["disable"], 0);
    EXPECT_EQ(set["run"], 1);
}

TEST(StatsFile, PagesSharingZeroWhenNothingToMerge) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("unique_pages"), with_lib({"--hold-ms", "300", "--mib", "4"}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text;
    for (auto& k : required_stats_keys()) EXPECT_TRUE(st.has(k)) << k;
    EXPECT_EQ(st["pages_sharing"], 0) << st.text;
}

TEST(Log, OffPrintsNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"), with_lib(kSmallDup, {{"DEDUP_LOG", "off"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.err, "") << "DEDUP_LOG=off but stderr has output";
    expect_clean_stdout(r);
    // the stats file is independent of the log
    Stats st = load_stats(r);
    EXPECT_TRUE(st.parsed) << st.error;
}

TEST(Log, OffSilencesBadValueWarningsToo) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib(kSmallDup, {{"DEDUP_LOG", "off"}, {"DEDUP_SLEEP_MS", "abc"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.err, "") << "DEDUP_LOG=off but stderr has output";
}

TEST(Log, PathReceivesSummaryAndWarnings) {
    DT_REQUIRE_LIB();
    TempDir tmp, logdir;
    std::string path = logdir.file("dedup.log");
    Result r = run(prog("ncopies"),
                   with_lib(kSmallDup, {{"DEDUP_LOG", path}, {"DEDUP_PAGES_TO_SCAN", "xyz"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.err, "") << "DEDUP_LOG=<path> but stderr has output";
    bool ok = false;
    std::string log = read_file(path, &ok);
    ASSERT_TRUE(ok) << "no log file " << path;
    EXPECT_FALSE(log.empty());
    for (auto& l : lines(log)) EXPECT_EQ(log_pid(l), r.pid) << "log line: " << l;
    EXPECT_EQ(count_lines_with(log, {"DEDUP_PAGES_TO_SCAN", "xyz", "default"}), 1) << log;
    EXPECT_GE(lines(log).size(), 2u) << "want the warning and a summary:\n" << log;
    expect_clean_stdout(r);
}

// The summary: with DEDUP_SUMMARY=auto only when the process saved at least
// 1 MiB at its peak (or registered 16 MiB); always and never override.
TEST(Log, SummaryWhenWorthTellingOrAsAsked) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    auto summaries = [&](const std::string& program, std::vector<std::string> args, const char* when) {
        Options o = with_lib(std::move(args), {{"DEDUP_SUMMARY", when}});
        Result r = run(program, o, tmp);
        EXPECT_TRUE(r.ok()) << r.describe();
        expect_only_log_lines(r);
        return count_lines_with(r.err, {"summary after"});
    };
    const std::vector<std::string> small = {"--copies", "2", "--buf-kib", "256"};  // saves 256 KiB
    EXPECT_EQ(summaries(prog("ncopies"), kSmallDup, "auto"), 1);  // saves 3.5 MiB
    EXPECT_EQ(summaries(prog("ncopies"), small, "auto"), 0);
    EXPECT_EQ(summaries(prog("ncopies"), small, "always"), 1);
    EXPECT_EQ(summaries("/bin/true", {}, "always"), 1);
    EXPECT_EQ(summaries("/bin/true", {}, "auto"), 0);
    EXPECT_EQ(summaries(prog("ncopies"), kSmallDup, "never"), 0);
}

}  // namespace

namespace {

// DEDUP_MIN_REGION / DEDUP_MALLOC_MIN: smaller regions are not registered.
TEST(Thresholds, RegionBelowMinRegionNeverMerges) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib({"--copies", "8", "--buf-kib", "512", "--expect", "none", "--hold-ms",
                             "800"},
                            {{"DEDUP_MIN_REGION", "8M"}}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("max_merged_like"), 0);
    // and the same region merges with a threshold below its size
    Result m = run(prog("ncopies"),
                   with_lib({"--copies", "8", "--buf-kib", "512"}, {{"DEDUP_MIN_REGION", "2M"}}),
                   tmp);
    ASSERT_TRUE(m.ok()) << m.describe();
}

TEST(Thresholds, MallocBelowMallocMinNeverMerges) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("ncopies"),
                   with_lib({"--alloc", "malloc", "--copies", "8", "--buf-kib", "512", "--expect",
                             "none", "--hold-ms", "800"},
                            {{"DEDUP_MALLOC_MIN", "1M"}}),
                   tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(r.num("max_merged_like"), 0);
    Result m = run(prog("ncopies"),
                   with_lib({"--alloc", "malloc", "--copies", "8", "--buf-kib", "512"},
                            {{"DEDUP_MALLOC_MIN", "256K"}}),
                   tmp);
    ASSERT_TRUE(m.ok()) << m.describe();
}

}  // namespace

// DEDUP_CPU_PERCENT paces the scanner by its own CPU time instead of
// DEDUP_SLEEP_MS: with a registry that always has pages to hash (128 MiB of
// unique pages), full speed uses most of a core, 10% uses about a tenth.
// Only generous bounds are asserted (CPU time can only shrink on a loaded
// machine); the benchmark measures the rate itself.
TEST(CpuPercent, PacesTheScannerByItsOwnCpuTime) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // With memory the program keeps changing (8 MiB rewritten all the
    // time): unchanging memory alone would not keep even a full-speed
    // scanner busy (unique pages back off, and a pass that finds nothing
    // new is followed by a rest).
    auto share = [&](const std::map<std::string, std::string>& env) {
        Result r = run(prog("unique_pages"), with_lib({"--mib", "128", "--hold-ms", "3000", "--churn-mib", "8"}, env),
                       tmp);
        EXPECT_TRUE(r.ok()) << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        EXPECT_EQ(count_lines_with(r.err, {"DEDUP_CPU_PERCENT"}), 0) << r.describe();
        Stats st = load_stats(r);
        EXPECT_TRUE(st.parsed) << st.error << "\n" << r.describe();
        return st["scanner_cpu_seconds"] / st["seconds"];
    };
    double full = share({{"DEDUP_SLEEP_MS", "0"}});
    double paced = share({{"DEDUP_SLEEP_MS", "0"}, {"DEDUP_CPU_PERCENT", "10"}});
    std::cerr << "[   info   ] scanner CPU share: full speed " << full << ", DEDUP_CPU_PERCENT=10 " << paced << "\n";
    EXPECT_GT(full, 0.3) << "full speed should keep the scanner busy";
    EXPECT_LT(paced, 0.2) << "DEDUP_CPU_PERCENT=10 must hold the scanner near a tenth of a core";
    EXPECT_GT(paced, 0.01) << "the paced scanner must still run";
}
