// Allocation sites in the summary and stats file, dedupstat on a live
// process, and the dedup-run wrapper.
#include "harness.h"

#include <sys/wait.h>

#include <algorithm>

using namespace dt;

namespace {

TEST(Sites, SummaryNamesTheFunctionThatMadeTheDuplicates) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("sites"), with_lib({"0"}, {{"DEDUP_SLEEP_MS", "1"}, {"DEDUP_SITES", "1"}}), tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    // Summary on stderr: the top site line names build_lookup_table with its file.
    size_t top = r.err.find("top allocation sites");
    ASSERT_NE(top, std::string::npos) << r.err;
    std::string after = r.err.substr(top);
    size_t first_site = after.find('\n');
    ASSERT_NE(first_site, std::string::npos);
    std::string line = after.substr(first_site + 1, after.find('\n', first_site + 1) - first_site - 1);
    EXPECT_NE(line.find("build_lookup_table"), std::string::npos) << "top site line: " << line << "\n" << r.err;
    EXPECT_NE(line.find("sites.c"), std::string::npos) << line;
    EXPECT_NE(line.find("main"), std::string::npos) << line;
    EXPECT_EQ(r.err.find("make_noise"), std::string::npos) << "unique data must not be listed\n" << r.err;
    // Stats file: sites array with the same function and at least 10 MiB.
    std::string js = read_file(r.stats_path);
    size_t at = js.find("build_lookup_table");
    EXPECT_NE(at, std::string::npos) << js;
    Stats st = load_stats(r);
    EXPECT_GT(st["pages_sharing"], 2000) << st.text;
}

TEST(Sites, OffByDefault) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result r = run(prog("sites"), with_lib({"0"}, {{"DEDUP_SLEEP_MS", "1"}}), tmp);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.err.find("top allocation sites"), std::string::npos) << r.err;
    EXPECT_NE(read_file(r.stats_path).find("\"sites\": []"), std::string::npos) << read_file(r.stats_path);
}

TEST(Dedupstat, ReadsTheCountersOfALiveProcess) {
    DT_REQUIRE_LIB();
    std::string tool = repo_root() + "/scripts/dedupstat";
    ASSERT_TRUE(file_exists(tool)) << tool;
    TempDir tmp;
    const std::string in = tmp.file("in"), out_file = tmp.file("out");
    // The program holds (sites -1) until its stdin closes, so both dedupstat
    // calls see it alive whatever the load. It was read after a fixed 2 s,
    // against a hold of 2.5 s from its ready=1 and a live file rewritten
    // every second: under load it had exited, or its live file did not show
    // the merge yet. Now: wait for ready=1, then for the live file to show
    // what is checked (pages_sharing > 2000), 30 s at most.
    std::string cmd = "mkfifo " + in + " || exit 1; LD_PRELOAD=" + lib() + " DEDUP_SLEEP_MS=1 DEDUP_LOG=off " +
                      prog("sites") + " -1 < " + in + " > " + out_file + " & pid=$!; exec 3>" + in + "; " +
                      "n=0; until grep -q '^ready=1' " + out_file + " || ! kill -0 $pid 2>/dev/null || [ $n -ge 300 ]; " +
                      "do sleep 0.1; n=$((n+1)); done; " +
                      "n=0; until [ \"$(" + tool + " $pid 2>/dev/null | sed -n 's/^pages_sharing://p')\" -gt 2000 ] 2>/dev/null; do " +
                      "if [ $n -ge 300 ] || ! kill -0 $pid 2>/dev/null; then echo 'gave up waiting for the live file to show pages_sharing > 2000'; break; fi; " +
                      "sleep 0.1; n=$((n+1)); done; " +
                      tool + " $pid; echo list; " + tool + "; exec 3>&-; wait $pid; echo rc=$?; cat " + out_file + "; " +
                      "sleep 0.2; test -e /dev/shm/libdedup.$(stat -Lc %i /proc/self/ns/pid).$pid.json && echo leftover || echo cleaned";
    int status = 0;
    std::string out = capture(cmd, &status);
    auto kv = [&](const std::string& key) {
        size_t p = out.find("\n" + key + ":");
        if (p == std::string::npos) p = out.find(key + ":") == 0 ? 0 : std::string::npos;
        if (p == std::string::npos) return -1.0;
        return atof(out.c_str() + out.find(':', p) + 1);
    };
    EXPECT_GT(kv("pages_sharing"), 2000) << out;
    EXPECT_GT(kv("pages_registered"), 3000) << out;
    EXPECT_NE(out.find("SAVED_MiB"), std::string::npos) << out;
    EXPECT_NE(out.find("rc=0"), std::string::npos) << out;
    EXPECT_NE(out.find("cleaned"), std::string::npos) << "the live stats file must go at exit\n" << out;
}

TEST(DedupRun, PassesExitCodesAndSignalsThrough) {
    DT_REQUIRE_LIB();
    std::string tool = repo_root() + "/scripts/dedup-run";
    int status = 0;
    capture(tool + " --lib " + lib() + " --log off -- sh -c 'exit 7'", &status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;
    std::string out = capture(tool + " --lib " + lib() + " --log off -- sh -c 'kill -KILL $$'; echo rc=$?", &status);
    EXPECT_NE(out.find("rc=137"), std::string::npos) << out;
    out = capture(tool + " --lib " + lib() + " --scope advised --sleep-ms 3 -- sh -c 'echo $LD_PRELOAD $DEDUP_SCOPE $DEDUP_SLEEP_MS'", &status);
    EXPECT_NE(out.find("libdedup.so advised 3"), std::string::npos) << out;
    // Under the wrapper the program is really deduplicated.
    out = capture(tool + " --lib " + lib() + " --sleep-ms 1 -- " + prog("sites") + " 0 2>&1", &status);
    EXPECT_NE(out.find("summary after"), std::string::npos) << out;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
}

TEST(PlotProcess, DrawsAProcessSavingOverTimeFromItsLiveLines) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string log = tmp.file("app.log"), png = tmp.file("saving.png");
    Options o = with_lib({"-1"}, {{"DEDUP_SLEEP_MS", "1"}, {"DEDUP_LOG", log}, {"DEDUP_STATS_INTERVAL_MS", "100"}});
    // The program holds until released: how long it lives must not decide
    // whether the scanner wrote a live line (it did not wait for one).
    Child c(prog("sites"), o, tmp);
    ASSERT_TRUE(c.wait_ready("1", 30000)) << c.out_so_far();
    for (double t0 = now_s(); read_file(log).find("live: t=") == std::string::npos && now_s() - t0 < 20;)
        usleep(20 * 1000);
    c.release();
    Result r = c.finish();
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    std::string text = read_file(log);
    EXPECT_NE(text.find("live: t="), std::string::npos) << text;
    int status = 0;
    std::string out = capture(repo_root() + "/scripts/plot-process " + log + " " + png + " 2>&1", &status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    std::string img = read_file(png);
    ASSERT_GT(img.size(), 5000u) << out;
    EXPECT_EQ(img.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);
    // A log without live lines is refused with a message, not an empty picture.
    std::string empty = tmp.file("empty.log");
    FILE* f = fopen(empty.c_str(), "w");
    fputs("libdedup[42]: summary after 1.0 s\n", f);
    fclose(f);
    out = capture(repo_root() + "/scripts/plot-process " + empty + " " + tmp.file("x.png") + " 2>&1", &status);
    EXPECT_NE(WEXITSTATUS(status), 0);
    EXPECT_NE(out.find("no 'live:' lines"), std::string::npos) << out;
}

// DEDUP_SERIES_FILE: one JSON report per line, every DEDUP_STATS_INTERVAL_MS
// and at exit; plot-process draws it.
TEST(PlotProcess, DrawsTheSeriesFile) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string series = tmp.file("series.%p.jsonl"), png = tmp.file("saving.png");
    Options o = with_lib({"-1"}, {{"DEDUP_SLEEP_MS", "1"}, {"DEDUP_SERIES_FILE", series},
                                  {"DEDUP_STATS_INTERVAL_MS", "100"}});
    // Two interval lines are wanted before the exit's: the program holds
    // until they are there (it exited once merged, which a fast machine
    // does within two intervals), 20 s at most.
    Child c(prog("sites"), o, tmp);
    ASSERT_TRUE(c.wait_ready("1", 30000)) << c.out_so_far();
    std::string path = tmp.file("series." + std::to_string(c.pid()) + ".jsonl");
    auto whole_lines = [&] {
        std::string t = read_file(path);
        return std::count(t.begin(), t.end(), '\n');
    };
    for (double t0 = now_s(); whole_lines() < 2 && now_s() - t0 < 20;) usleep(20 * 1000);
    c.release();
    Result r = c.finish();
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    std::vector<std::string> reports = lines(read_file(path));
    ASSERT_GE(reports.size(), 3u) << "want a line every 100 ms and one at exit\n" << read_file(path);
    double last_seconds = -1;
    for (auto& line : reports) {
        Stats st;
        ASSERT_TRUE(parse_flat_json(line, &st.n, &st.s, &st.error)) << st.error << "\n" << line;
        EXPECT_EQ(st["pid"], r.pid);
        EXPECT_EQ(st.s["comm"], "sites");
        EXPECT_GE(st["seconds"], last_seconds) << line;
        last_seconds = st["seconds"];
    }
    EXPECT_EQ(reports.back() + "\n", read_file(r.stats_path)) << "the last line is the exit report";
    EXPECT_GT(load_stats(r)["pages_sharing"], 2000);
    int status = 0;
    std::string out = capture(repo_root() + "/scripts/plot-process " + path + " " + png + " 2>&1", &status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    std::string img = read_file(png);
    ASSERT_GT(img.size(), 5000u) << out;
    EXPECT_EQ(img.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);
    out = capture(repo_root() + "/scripts/plot-process --pid 1 " + path + " " + png + " 2>&1", &status);
    EXPECT_NE(WEXITSTATUS(status), 0);
    EXPECT_NE(out.find("no lines of process 1"), std::string::npos) << out;
}

// The series file is created, never through a link.
TEST(PlotProcess, SeriesFileIsNotFollowedThroughALink) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string target = tmp.file("target"), link = tmp.file("series.jsonl");
    FILE* f = fopen(target.c_str(), "w");
    fputs("precious\n", f);
    fclose(f);
    ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
    Result r = run(prog("ncopies"), with_lib({"--copies", "4", "--buf-kib", "256"}, {{"DEDUP_SERIES_FILE", link}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_EQ(read_file(target), "precious\n");
    EXPECT_EQ(count_lines_with(r.err, {"DEDUP_SERIES_FILE", "could not be written"}), 1) << r.describe();
}

}  // namespace
