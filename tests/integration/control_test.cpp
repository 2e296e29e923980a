// Runtime control of a running process (scanner/control.h): dedupstat PID
// --set, --unmerge and --merge act within a second, through a control file
// only the process's user may write.
#include "harness.h"

#include <sys/stat.h>

using namespace dt;

namespace {

// The live file of pid, parsed (it is rewritten in place: read again until whole).
Stats live_stats(pid_t pid) {
    Stats st;
    for (int i = 0; i < 20; ++i) {
        st = load_stats(live_file_path(pid));
        if (st.parsed) break;
        usleep(20 * 1000);
    }
    return st;
}

// Waits until the live file exists and satisfies ok, for at most seconds.
template <typename F>
Stats wait_live(pid_t pid, double seconds, F&& ok) {
    double end = now_s() + seconds;
    Stats st;
    do {
        st = live_stats(pid);
        if (st.parsed && ok(st)) return st;
        usleep(50 * 1000);
    } while (now_s() < end);
    return st;
}

double setting(const Stats& st, const std::string& key) {
    Stats set;
    std::string error;
    if (!parse_flat_json(st.s.count("settings") ? st.s.at("settings") : "{}", &set.n, &set.s, &error)) return -1;
    return set[key];
}

// dedupstat with these arguments; its output, and *seconds it took.
std::string dedupstat(const std::string& args, int* status, double* seconds = nullptr) {
    double t0 = now_s();
    std::string out = capture(repo_root() + "/scripts/dedupstat " + args + " 2>&1", status);
    if (seconds) *seconds = now_s() - t0;
    return out;
}

std::string control_file(pid_t pid) {
    std::string live = live_file_path(pid);
    return live.substr(0, live.size() - 5) + ".ctl";
}

TEST(DedupstatControl, SleepMsTakesEffectWithinASecond) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    // 64 pages a second: 64 MiB of unique pages would take minutes.
    Options o = with_lib({"--mib", "64", "--hold-ms", "9000"}, {{"DEDUP_SLEEP_MS", "1000"}, {"DEDUP_PAGES_TO_SCAN", "64"}});
    Child c(prog("unique_pages"), o, tmp);
    pid_t pid = c.pid();
    Stats a = wait_live(pid, 5, [](const Stats& st) { return st["seconds"] >= 1.5; });
    ASSERT_TRUE(a.parsed) << a.error << a.text;
    Stats b = wait_live(pid, 5, [&](const Stats& st) { return st["seconds"] >= a["seconds"] + 1.5; });
    double slow = (b["pages_scanned"] - a["pages_scanned"]) / (b["seconds"] - a["seconds"]);
    EXPECT_LT(slow, 1000) << "pages/s at sleep_ms=1000, pages_to_scan=64";
    EXPECT_EQ(setting(b, "sleep_ms"), 1000) << b.text;

    int status = 0;
    double took = 0;
    std::string out = dedupstat(std::to_string(pid) + " --set sleep_ms=0", &status, &took);
    ASSERT_EQ(WEXITSTATUS(status), 0) << out;
    EXPECT_NE(out.find(std::to_string(pid) + ": sleep_ms=0 (was 1000)"), std::string::npos) << out;
    EXPECT_LT(took, 1.0) << "the scanner sleeps 1 s between wake-ups, but must answer at once";

    Stats c1 = wait_live(pid, 3, [&](const Stats& st) { return setting(st, "sleep_ms") == 0; });
    Stats c2 = wait_live(pid, 5, [&](const Stats& st) { return st["seconds"] >= c1["seconds"] + 1.5; });
    double fast = (c2["pages_scanned"] - c1["pages_scanned"]) / (c2["seconds"] - c1["seconds"]);
    std::cerr << "[   info   ] scan rate " << slow << " pages/s, then " << fast << " after --set sleep_ms=0 (took "
              << took << " s)\n";
    EXPECT_GT(fast, 20 * (slow > 64 ? slow : 64)) << c1.text << "\n" << c2.text;

    out = dedupstat(std::to_string(pid) + " --set pages_to_scan=4096 --set cpu_percent=50", &status);
    ASSERT_EQ(WEXITSTATUS(status), 0) << out;
    Stats d = wait_live(pid, 3, [&](const Stats& st) { return setting(st, "cpu_percent") == 50; });
    EXPECT_EQ(setting(d, "pages_to_scan"), 4096) << d.text;
    // Refused: out of range, not a number, not changeable at run time.
    for (const char* bad : {"cpu_percent=101", "sleep_ms=soon", "min_region=1M", "run=3"}) {
        out = dedupstat(std::to_string(pid) + " --set " + bad, &status);
        EXPECT_EQ(WEXITSTATUS(status), 1) << bad << ": " << out;
        EXPECT_NE(out.find("dedupstat: " + std::to_string(pid) + ": "), std::string::npos) << out;
    }
    Result r = c.finish();
    EXPECT_TRUE(r.ok()) << r.describe();
}

TEST(DedupstatControl, UnmergeMakesEveryPagePrivateUntilMerge) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options o = with_lib({"--copies", "16", "--buf-kib", "1024", "--ready"});
    Child c(prog("ncopies"), o, tmp);
    ASSERT_TRUE(c.wait_ready("merged")) << c.out_so_far();
    pid_t pid = c.pid();
    auto kv = parse_kv(c.out_so_far());
    uintptr_t addr = strtoull(kv["region_addr"].c_str(), nullptr, 16);
    size_t len = strtoull(kv["region_len"].c_str(), nullptr, 10);
    Stats st = wait_live(pid, 5, [](const Stats& s) { return s["pages_sharing"] > 3000; });
    ASSERT_GT(st["pages_sharing"], 3000) << st.text;
    EXPECT_GE(proc_pagemap(pid, addr, len).file, len / 4096 * 9 / 10);
    // A request file anyone else could have written is ignored: another
    // user's (root may make one), or ours but writable by others.
    for (int attempt = 0; attempt < 2; ++attempt) {
        bool others_file = attempt == 0;
        if (others_file && geteuid() != 0) continue;
        std::string ctl = control_file(pid);
        int fd = open(ctl.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        ASSERT_GE(fd, 0) << ctl;
        ASSERT_EQ(pwrite(fd, "?unmerge", 9, 0), 9);
        if (others_file) ASSERT_EQ(fchown(fd, 65534, 65534), 0);
        else ASSERT_EQ(fchmod(fd, 0622), 0);
        close(fd);
        usleep(400 * 1000);
        EXPECT_EQ(read_file(ctl).substr(0, 8), "?unmerge") << "answered a request file it must ignore";
        EXPECT_GE(proc_pagemap(pid, addr, len).file, len / 4096 * 9 / 10) << "unmerged on a forged request";
        unlink(ctl.c_str());
    }

    int status = 0;
    double took = 0;
    std::string out = dedupstat(std::to_string(pid) + " --unmerge", &status, &took);
    ASSERT_EQ(WEXITSTATUS(status), 0) << out;
    EXPECT_NE(out.find("run=2"), std::string::npos) << out;
    EXPECT_LT(took, 1.0) << out;
    EXPECT_EQ(proc_pagemap(pid, addr, len).file, 0u) << "merged pages left after --unmerge answered";
    st = wait_live(pid, 3, [](const Stats& s) { return s["pages_sharing"] == 0; });
    EXPECT_EQ(st["pages_sharing"], 0) << st.text;
    EXPECT_EQ(setting(st, "run"), 2) << st.text;
    usleep(1500 * 1000);  // and it stays so: nothing merges again
    EXPECT_EQ(proc_pagemap(pid, addr, len).file, 0u);
    st = live_stats(pid);
    EXPECT_EQ(st["pages_sharing"], 0) << st.text;

    out = dedupstat(std::to_string(pid) + " --merge", &status);
    ASSERT_EQ(WEXITSTATUS(status), 0) << out;
    EXPECT_NE(out.find("run=1 (was 2)"), std::string::npos) << out;
    // (Merged pages show in pagemap once the program touches them again.)
    st = wait_live(pid, 10, [](const Stats& s) { return s["pages_sharing"] > 3000; });
    EXPECT_GT(st["pages_sharing"], 3000) << "--merge did not merge again\n" << st.text;
    EXPECT_EQ(setting(st, "run"), 1) << st.text;
    c.release();
    Result r = c.finish();
    EXPECT_TRUE(r.ok()) << "the program's contents after unmerge and merge\n" << r.describe();
    EXPECT_FALSE(file_exists(control_file(pid))) << "dedupstat removes its request files";
}

}  // namespace
