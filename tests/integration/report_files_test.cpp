// Whose report the stats file is: a wrapper (timeout, a shell, a Python
// launcher) that exits after the program it ran must not replace the
// program's report with its own empty one (scanner/report_files.h).
#include "harness.h"

#include <sys/time.h>

using namespace dt;

namespace {

const std::vector<std::string> kDup = {"--copies", "8", "--buf-kib", "512"};  // saves 3.5 MiB

// The program's report must be what is left: its comm, and not the wrapper's pid.
void expect_programs_report(const Result& r, long program_pid = -1) {
    Stats st = load_stats(r);
    ASSERT_TRUE(st.parsed) << st.error << "\n" << st.text << "\n" << r.describe();
    EXPECT_EQ(st.s["comm"], "ncopies") << st.text;
    EXPECT_NE(st["pid"], r.pid) << "the wrapper's report replaced the program's\n" << st.text;
    if (program_pid > 0) {
        EXPECT_EQ(st["pid"], program_pid) << st.text;
    }
    EXPECT_GT(st["pages_sharing"], 0) << st.text;
}

std::vector<std::string> with_prog(std::vector<std::string> before) {
    before.push_back(prog("ncopies"));
    for (auto& a : kDup) before.push_back(a);
    return before;
}

TEST(StatsFileOwner, TimeoutLeavesTheProgramsReport) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run("/usr/bin/timeout", with_lib(with_prog({"60"})), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    expect_programs_report(r);
}

TEST(StatsFileOwner, ShellLeavesTheProgramsReport) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // The shell runs the program, then something after it (so it cannot exec
    // the program in its own place), and prints the program's pid.
    Result r = run("/bin/bash", with_lib(with_prog({"-c", "\"$0\" \"$@\" & echo child_pid=$!; wait $!; :"})), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    expect_programs_report(r, (long)r.num("child_pid"));
}

TEST(StatsFileOwner, PythonLauncherLeavesTheProgramsReport) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    const std::string launcher =
        "import subprocess, sys, time\n"
        "r = subprocess.run(sys.argv[1:])\n"
        "time.sleep(0.3)\n"  // outlive the program by a few of the live refreshes
        "sys.exit(r.returncode)\n";
    // With live refreshes too: the launcher registers memory of its own and
    // refreshes the stats file as often as the program does.
    for (const char* interval : {"0", "100"}) {
        Options o = with_lib(with_prog({"-c", launcher}), {{"DEDUP_STATS_INTERVAL_MS", interval}});
        Result r = run("/usr/bin/python3", o, tmp);
        ASSERT_TRUE(r.ok()) << r.describe();
        expect_programs_report(r);
    }
}

// A process with nothing to tell replaces an earlier run's report, but not
// one written by another process while it ran.
TEST(StatsFileOwner, StaleReportsAreReplacedFreshOnesKept) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string path = tmp.file("stats.json");
    const std::string other = "{\"schema\": 1, \"version\": \"x\", \"comm\": \"other\", \"pid\": 1, \"pidns\": 1}\n";
    auto plant = [&](time_t age_s) {
        FILE* f = fopen(path.c_str(), "w");
        fputs(other.c_str(), f);
        fclose(f);
        struct timeval tv[2];
        gettimeofday(&tv[0], nullptr);
        tv[0].tv_sec -= age_s;
        tv[1] = tv[0];
        utimes(path.c_str(), tv);
    };
    Options o = with_lib({}, {{"DEDUP_STATS_FILE", path}});
    plant(-5);  // written "during" the run (in the future, to stay clear of the start)
    Result r = run("/bin/true", o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(read_file(path), other) << "a process with nothing to tell replaced another's fresh report";
    plant(3600);  // an hour old: an earlier run's
    r = run("/bin/true", o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    Stats st = load_stats(path);
    ASSERT_TRUE(st.parsed) << st.text;
    EXPECT_EQ(st.s["comm"], "true") << st.text;
    EXPECT_EQ(st["pid"], r.pid) << st.text;
}

}  // namespace
