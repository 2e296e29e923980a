// Merge domains (DEDUP_DOMAIN): independent processes of one user share their
// identical pages. Each test checks memory really saved across processes
// (the group's Pss), every byte of every member, and that the domain leaves
// nothing behind.
#include "harness.h"

#include <dirent.h>
#include <memory>
#include <set>

using namespace dt;

namespace {

// A domain name of this test run alone.
std::string domain_name(const char* what) { return std::string("it-") + what + "-" + std::to_string(getpid()); }

long meminfo_kb(const char* key) {
    std::string t = read_file("/proc/meminfo");
    size_t p = t.find(std::string("\n") + key + ":");
    return p == std::string::npos ? -1 : strtol(t.c_str() + p + strlen(key) + 2, nullptr, 10);
}

std::set<std::string> shm_files() {
    std::set<std::string> names;
    if (DIR* d = opendir("/dev/shm")) {
        while (dirent* e = readdir(d))
            if (strncmp(e->d_name, "libdedup", 8) == 0) names.insert(e->d_name);
        closedir(d);
    }
    return names;
}

long group_pss_kb(const std::vector<std::unique_ptr<Child>>& ws) {
    long sum = 0;
    for (auto& w : ws)
        if (w) sum += proc_pss_kb(w->pid());
    return sum;
}

Options worker(const std::string& domain, std::vector<std::string> args, bool full_speed = false) {
    Options o = with_lib(std::move(args), {{"DEDUP_DOMAIN", domain}});
    if (!full_speed) o.env.erase("DEDUP_SLEEP_MS");  // the defaults
    o.timeout_ms = 120000;
    return o;
}

void info(const std::string& m) { fprintf(stderr, "    [info] %s\n", m.c_str()); }

// Shmem of the whole machine, settled: the memfd of a domain goes a moment
// after its last member's exit.
bool shmem_back_to(long before_kb, long slack_kb, long* now_kb) {
    for (double t0 = now_s(); now_s() - t0 < 5.0; usleep(50 * 1000)) {
        *now_kb = meminfo_kb("Shmem");
        if (*now_kb <= before_kb + slack_kb) return true;
    }
    return false;
}

// The device and inode of the domain memfd a process maps ("" if none).
std::string domain_inode(pid_t pid) {
    std::string maps = read_file("/proc/" + std::to_string(pid) + "/maps");
    size_t p = maps.find("libdedup-domain");
    if (p == std::string::npos) return std::string();
    size_t line = maps.rfind('\n', p) + 1;
    std::istringstream is(maps.substr(line, p - line));
    std::string range, perms, off, dev, ino;
    is >> range >> perms >> off >> dev >> ino;
    return dev + ":" + ino;
}

}  // namespace

// The measure: 8 independent processes, each holding the same
// 256 MiB plus 4 MiB of its own, at the default settings: the group's Pss
// within 10% of (256 + 8 x 4) MiB in 20 s; every process verifies its
// data, and a write after merging stays private.
TEST(Domain, EightWorkersHoldOneCopyOfTheirSharedData) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    const int kWorkers = 8;
    const long kSharedMib = 256, kOwnMib = 4;
    std::string dom = domain_name("eight");
    std::vector<std::unique_ptr<Child>> ws;
    for (int i = 0; i < kWorkers; i++) {
        std::vector<std::string> args = {"--shared-mib", std::to_string(kSharedMib), "--own-mib", std::to_string(kOwnMib),
                                         "--own-seed", std::to_string(i + 1), "--hold", "--wait-ms", "20000"};
        if (i == kWorkers - 1) args.push_back("--write-after");
        ws.emplace_back(new Child(prog("domain_worker"), worker(dom, args), tmp));
    }
    for (auto& w : ws) ASSERT_TRUE(w->wait_ready("filled", 60000)) << w->out_so_far();
    double t0 = now_s();
    const long ideal_kb = (kSharedMib + kWorkers * kOwnMib) * 1024;
    long pss = group_pss_kb(ws);
    while (pss > ideal_kb * 11 / 10 && now_s() - t0 < 20.0) {
        usleep(250 * 1000);
        pss = group_pss_kb(ws);
    }
    double took = now_s() - t0;
    info("group Pss " + std::to_string(pss / 1024) + " MiB after " + std::to_string(took) + " s (ideal " +
         std::to_string(ideal_kb / 1024) + ", " + std::to_string(kWorkers * (kSharedMib + kOwnMib)) + " without)");
    EXPECT_LE(pss, ideal_kb * 11 / 10) << "not within 10% of the ideal in 20 s";
    for (auto& w : ws) ASSERT_TRUE(w->wait_ready("held", 60000)) << w->out_so_far();
    std::vector<Result> rs;
    for (auto& w : ws) rs.push_back(w->finish());
    for (auto& r : rs) {
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        EXPECT_EQ(r.num("final_mismatches"), 0) << r.describe();
        EXPECT_GE(r.num("merge_wait_ms"), 0) << r.describe();
    }
    EXPECT_EQ(rs.back().num("write_ok"), 1) << rs.back().describe();
    Stats st = load_stats(rs.front());
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_GT(st["domain_pages_shared_with_others"], 0) << st.text;
}

// kill -9 of members while they merge: the survivors lose nothing and wait
// for nobody; canonical pages only the dead used go back within about a
// second; when everyone is gone nothing is left (no file in /dev/shm,
// Shmem where it was).
TEST(Domain, MembersKilledWhileMergingCostTheOthersNothingAndLeaveNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("kill");
    long shmem_before = meminfo_kb("Shmem");
    std::set<std::string> files_before = shm_files();
    std::vector<pid_t> survivors;
    const int kWorkers = 6;
    std::vector<std::unique_ptr<Child>> ws;
    for (int i = 0; i < kWorkers; i++)
        ws.emplace_back(new Child(prog("domain_worker"),
                                  worker(dom, {"--shared-mib", "64", "--own-mib", "2", "--own-seed", std::to_string(i + 1),
                                               "--hold", "--wait-ms", "20000"}, true),
                                  tmp));
    for (auto& w : ws) ASSERT_TRUE(w->wait_ready("filled", 60000)) << w->out_so_far();
    usleep(150 * 1000);  // merging is under way: kill half, lock holders and all
    for (int i = 0; i < kWorkers; i += 2) {
        kill(ws[i]->pid(), SIGKILL);
        Result r = ws[i]->finish();
        EXPECT_EQ(r.term_sig, SIGKILL);
        ws[i].reset();
    }
    for (int i = 1; i < kWorkers; i += 2) ASSERT_TRUE(ws[i]->wait_ready("held", 60000)) << ws[i]->out_so_far();
    for (int i = 1; i < kWorkers; i += 2) survivors.push_back(ws[i]->pid());
    // The dead members' canonical pages were taken over or freed: the
    // survivors settle near one copy of the shared data.
    const long limit_kb = (64 + 3 * 2) * 1024 * 12 / 10;
    long pss = group_pss_kb(ws);
    for (double t0 = now_s(); pss > limit_kb && now_s() - t0 < 10.0; usleep(250 * 1000)) pss = group_pss_kb(ws);
    info("survivors' group Pss " + std::to_string(pss / 1024) + " MiB (ideal " + std::to_string(64 + 3 * 2) +
         ", 198 without)");
    EXPECT_LE(pss, limit_kb);
    for (int i = 1; i < kWorkers; i += 2) {
        Result r = ws[i]->finish();
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        EXPECT_EQ(r.num("final_mismatches"), 0) << r.describe();
        EXPECT_GE(r.num("merge_wait_ms"), 0) << r.describe();
    }
    long now = 0;
    EXPECT_TRUE(shmem_back_to(shmem_before, 1024, &now))
        << "Shmem " << now << " kB after every member ended, " << shmem_before << " kB before";
    // The domain has no file at all; members that exited removed their live
    // files (a killed member's stays until dedupstat finds it stale; other
    // processes of this machine may come and go meanwhile).
    for (const std::string& f : shm_files()) {
        if (files_before.count(f)) continue;
        for (pid_t p : survivors)
            EXPECT_EQ(f.find("." + std::to_string(p) + "."), std::string::npos) << "left in /dev/shm: " << f;
        EXPECT_EQ(f.find("domain"), std::string::npos) << "left in /dev/shm: " << f;
    }
}

// Canonical pages that only dead members used go back to the system within
// a bounded time (the survivors notice a member's death within a second).
TEST(Domain, CanonicalPagesOfDeadMembersGoBackWithinTwoSeconds) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("reap");
    // The survivor holds other data: the 48 MiB the others share is theirs alone.
    Child survivor(prog("domain_worker"),
                   worker(dom, {"--shared-mib", "8", "--own-mib", "1", "--shared-seed", "9", "--hold", "--wait-ms", "100"}, true), tmp);
    ASSERT_TRUE(survivor.wait_ready("filled", 60000));
    std::vector<std::unique_ptr<Child>> ws;
    for (int i = 0; i < 2; i++)
        ws.emplace_back(new Child(prog("domain_worker"),
                                  worker(dom, {"--shared-mib", "48", "--own-mib", "1", "--own-seed", std::to_string(i + 2),
                                               "--hold"}, true),
                                  tmp));
    for (auto& w : ws) ASSERT_TRUE(w->wait_ready("held", 60000)) << w->out_so_far();
    long before = meminfo_kb("Shmem");
    for (auto& w : ws) kill(w->pid(), SIGKILL);
    for (auto& w : ws) w->finish();
    double t0 = now_s();
    long now = before;
    while (now > before - 40 * 1024 && now_s() - t0 < 5.0) {
        usleep(50 * 1000);
        now = meminfo_kb("Shmem");
    }
    double took = now_s() - t0;
    info("48 MiB of canonical pages given back " + std::to_string(took) + " s after their last users died");
    EXPECT_LE(now, before - 40 * 1024) << "Shmem " << before << " -> " << now << " kB";
    EXPECT_LT(took, 2.0);
    Result r = survivor.finish();
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.num("final_mismatches"), 0) << r.describe();
}

// The race test with two members: writers in both processes hammer pages
// merged onto canonical pages the other process shares.
TEST(Domain, RaceWritersInTwoMembersNeverLoseAWrite) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("race");
    std::vector<std::string> args = {"--ms", "4000", "--threads", "3", "--mib", "8", "--patterns", "24",
                                     "--burst", "64", "--pause-us", "200", "--seed", "5"};
    Child a(prog("race_writers"), worker(dom, args, true), tmp);
    Child b(prog("race_writers"), worker(dom, args, true), tmp);
    Result ra = a.finish(), rb = b.finish();
    for (Result* r : {&ra, &rb}) {
        EXPECT_EQ(r->exit_code, 0) << r->describe();
        EXPECT_EQ(r->num("mismatches"), 0) << r->describe();
        EXPECT_GT(r->num("observed_shared"), 0) << r->describe();
    }
    Stats sa = load_stats(ra), sb = load_stats(rb);
    ASSERT_TRUE(sa.parsed && sb.parsed);
    EXPECT_GT(sa["domain_canonical_pages"] + sb["domain_canonical_pages"], 0) << sa.text << sb.text;
}

// Kernel writes (read(2) and friends) into memory two members share.
TEST(Domain, KernelWritesInTwoMembersNeverSeeEfault) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("kw");
    std::vector<std::string> args = {"--ms", "3000", "--threads", "2", "--pages", "64"};
    Child a(prog("read_window"), worker(dom, args, true), tmp);
    Child b(prog("read_window"), worker(dom, args, true), tmp);
    Result ra = a.finish(), rb = b.finish();
    for (Result* r : {&ra, &rb}) {
        EXPECT_EQ(r->exit_code, 0) << r->describe();
        EXPECT_EQ(r->num("efaults"), 0) << r->describe();
        EXPECT_EQ(r->num("mismatches"), 0) << r->describe();
    }
}

// A domain never spans users: the same name in two uids is two domains, and
// a socket of the name held by another user is refused (one line), the
// process merging alone.
TEST(Domain, TwoUsersWithTheSameNameNeverShareAPage) {
    DT_REQUIRE_LIB();
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run a process as another user";
    if (!file_exists("/usr/bin/setpriv")) GTEST_SKIP() << "no setpriv";
    TempDir tmp;
    std::string dom = domain_name("users");
    chmod(tmp.path().c_str(), 0777);
    Options as_nobody = worker(dom, {"--reuid=65534", "--regid=65534", "--clear-groups", "--", prog("domain_worker"),
                                     "--shared-mib", "16", "--own-mib", "1", "--hold", "--wait-ms", "3000"}, true);
    as_nobody.stats = false;
    as_nobody.env["DEDUP_STATS_FILE"] = tmp.path() + "/nobody.json";
    Child n(std::string("/usr/bin/setpriv"), as_nobody, tmp);
    Child r(prog("domain_worker"), worker(dom, {"--shared-mib", "16", "--own-mib", "1", "--hold", "--wait-ms", "3000"}, true),
            tmp);
    ASSERT_TRUE(n.wait_ready("held", 60000)) << n.out_so_far();
    ASSERT_TRUE(r.wait_ready("held", 60000)) << r.out_so_far();
    // Whatever each merged, it is with itself: their data is the same, but
    // neither maps the other's canonical pages.
    std::string in = domain_inode(n.pid()), ir = domain_inode(r.pid());
    EXPECT_FALSE(in.empty());
    EXPECT_FALSE(ir.empty());
    EXPECT_NE(in, ir) << "one domain for two users";
    Result rn = n.finish(), rr = r.finish();
    EXPECT_EQ(rn.exit_code, 0) << rn.describe();
    EXPECT_EQ(rr.exit_code, 0) << rr.describe();
    Stats sr = load_stats(rr);
    ASSERT_TRUE(sr.parsed) << sr.error;
    EXPECT_EQ(sr["domain_members"], 1) << sr.text;

    // Another user squats the root user's name: refused, merging alone.
    std::string squat = "import socket,sys,time; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); "
                        "s.bind('\\0libdedup-domain.0." + dom + "-sq'); s.listen(); print('ready=bound', flush=True); "
                        "sys.stdin.read()";
    Options sq = without_lib({"--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/python3", "-c", squat});
    Child squatter(std::string("/usr/bin/setpriv"), sq, tmp);
    ASSERT_TRUE(squatter.wait_ready("bound", 20000)) << squatter.out_so_far();
    Result v = run(prog("domain_worker"), worker(dom + "-sq", {"--shared-mib", "8", "--own-mib", "1", "--wait-ms", "500"}, true),
                   tmp);
    squatter.finish();
    EXPECT_EQ(v.exit_code, 0) << v.describe();
    EXPECT_NE(v.err.find("held by another user"), std::string::npos) << v.err;
    Stats sv = load_stats(v);
    ASSERT_TRUE(sv.parsed) << sv.error;
    EXPECT_EQ(sv["domain_members"], 0) << sv.text;
}

// Docker gives containers a 64 MiB /dev/shm: the domain's memory is a memfd,
// not a /dev/shm file, so members merge all their data there (and a full
// tmpfs can never turn a write into a SIGBUS).
TEST(Domain, SmallDevShmDoesNotLimitTheDomain) {
    DT_REQUIRE_LIB();
    if (geteuid() != 0 || !file_exists("/usr/bin/unshare")) GTEST_SKIP() << "needs root and unshare";
    TempDir tmp;
    std::string dom = domain_name("shm");
    // The members hold their data until all three have merged (a member
    // that merged and left would leave a slower one nobody to share with).
    const std::string t = tmp.path();
    const long limit_kb = (96 * 12 / 10 + 3) * 1024;  // 3 x 97 MiB without a domain
    std::string script = "mount -t tmpfs -o size=64m tmpfs /dev/shm || exit 3; mkfifo " + t + "/go; "
                         "for i in 1 2 3; do LD_PRELOAD=" + lib() + " DEDUP_DOMAIN=" + dom + " DEDUP_STATS_FILE=" + t +
                         "/s$i.json " + prog("domain_worker") +
                         " --shared-mib 96 --own-mib 1 --own-seed $i --want 0.99 --wait-ms 20000 --hold < " + t +
                         "/go > " + t + "/o$i 2>&1 & pids=\"$pids $!\"; done; exec 3>" + t + "/go; n=0; "
                         "until [ $(cat " + t + "/o1 " + t + "/o2 " + t + "/o3 | grep -c ready=held) = 3 ] || [ $n -gt 600 ]; "
                         "do sleep 0.1; n=$((n+1)); done; "
                         "files=; for p in $pids; do files=\"$files /proc/$p/smaps_rollup\"; done; m=0; "
                         "while g=$(awk '/^Pss:/{s+=$2} END{print s}' $files); [ $g -gt " + std::to_string(limit_kb) +
                         " ] && [ $m -lt 50 ]; do sleep 0.2; m=$((m+1)); done; echo group_pss_kb=$g; "
                         "exec 3>&-; wait; cat " + t + "/o1 " + t + "/o2 " + t + "/o3";
    Options o = without_lib({"-m", "--propagation", "private", "/bin/sh", "-c", script});
    o.timeout_ms = 120000;
    Result r = run("/usr/bin/unshare", o, tmp);
    if (r.exit_code == 3) GTEST_SKIP() << "cannot mount a tmpfs here\n" << r.describe();
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    size_t waits = 0, pos = 0;
    while ((pos = r.out.find("merge_wait_ms=", pos)) != std::string::npos) {
        EXPECT_GE(atof(r.out.c_str() + pos + 14), 0) << r.out;
        ++waits;
        ++pos;
    }
    EXPECT_EQ(waits, 3u) << r.out;
    size_t checks = 0;
    for (pos = 0; (pos = r.out.find("mismatches=", pos)) != std::string::npos; ++pos, ++checks)
        EXPECT_EQ(atol(r.out.c_str() + pos + 11), 0) << r.out;
    EXPECT_EQ(checks, 6u) << r.out;  // mismatches= and final_mismatches= of each
    // One copy of the shared data for the three: the group's Pss while they
    // held it, settled (duplicate canonical pages of racing publishers merge
    // on the next look).
    pos = r.out.find("group_pss_kb=");
    ASSERT_NE(pos, std::string::npos) << r.out;
    long group_kb = atol(r.out.c_str() + pos + 13);
    info("group Pss under a 64 MiB /dev/shm: " + std::to_string(group_kb / 1024) + " MiB (291 without a domain)");
    EXPECT_LE(group_kb, limit_kb) << r.out;
}

// DEDUP_SCOPE=advised with a domain is what KSM does for VM monitors: only
// MADV_MERGEABLE memory merges, and it merges across the members.
TEST(Domain, AdvisedScopeSharesOnlyMergeableMemoryAcrossMembers) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("advised");
    auto guest = [&](bool advise) {
        std::vector<std::string> args = {"--shared-mib", "32", "--own-mib", "1", "--hold", "--wait-ms", "8000"};
        if (advise) args.push_back("--advise");
        Options o = worker(dom, args, true);
        o.env["DEDUP_SCOPE"] = "advised";
        return o;
    };
    Child a(prog("domain_worker"), guest(true), tmp);
    Child b(prog("domain_worker"), guest(true), tmp);
    Child plain(prog("domain_worker"), guest(false), tmp);  // same data, not advised
    for (Child* c : {&a, &b, &plain}) ASSERT_TRUE(c->wait_ready("held", 60000)) << c->out_so_far();
    // Each worker waited for its own pages (95%); the pages of one that merged
    // onto its own copy of a canonical page move onto the other's (the lower
    // slot id) a moment later: a's live file says when, before a exits.
    const double kMostShared = 32 * 256 * 9 / 10;
    for (double t0 = now_s(); now_s() - t0 < 20; usleep(50 * 1000))
        if (load_stats(live_file_path(a.pid()))["domain_pages_shared_with_others"] > kMostShared) break;
    Result ra = a.finish(), rb = b.finish(), rp = plain.finish();
    for (Result* r : {&ra, &rb, &rp}) {
        EXPECT_EQ(r->exit_code, 0) << r->describe();
        EXPECT_EQ(r->num("mismatches"), 0) << r->describe();
    }
    EXPECT_GE(ra.num("merge_wait_ms"), 0) << ra.describe();
    EXPECT_GE(rb.num("merge_wait_ms"), 0) << rb.describe() << load_stats(rb).text;
    EXPECT_EQ(rp.num("merge_wait_ms"), -1) << "memory it never advised merged\n" << rp.describe();
    Stats sa = load_stats(ra), sp = load_stats(rp);
    ASSERT_TRUE(sa.parsed && sp.parsed);
    EXPECT_GT(sa["domain_pages_shared_with_others"], kMostShared) << sa.text;
    EXPECT_EQ(sp["pages_shared"] + sp["pages_sharing"], 0) << sp.text;
}

// Members killed again and again at random moments (merging, holding the
// domain's lock, filling a canonical page) while new ones join: the members
// that live through it lose nothing and are never blocked, and when all
// are gone the domain's memory is gone too.
TEST(Domain, MembersKilledAtRandomWhileOthersJoinLoseNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("churn");
    long shmem_before = meminfo_kb("Shmem");
    auto member = [&](int seed) {
        return new Child(prog("domain_worker"),
                         worker(dom, {"--shared-mib", "24", "--own-mib", "1", "--own-seed", std::to_string(seed),
                                      "--hold", "--wait-ms", "15000"}, true),
                         tmp);
    };
    std::unique_ptr<Child> anchor(member(100));  // lives through it all
    ASSERT_TRUE(anchor->wait_ready("filled", 60000)) << anchor->out_so_far();
    std::vector<std::unique_ptr<Child>> churn;
    for (int i = 0; i < 3; i++) churn.emplace_back(member(i + 1));
    unsigned rnd = 12345;
    int killed = 0;
    for (double t0 = now_s(); now_s() - t0 < 6.0;) {
        usleep(50 * 1000 + (rnd = rnd * 1103515245 + 12345) % (150 * 1000));
        size_t k = (rnd >> 8) % churn.size();
        kill(churn[k]->pid(), SIGKILL);
        churn[k]->finish();
        ++killed;
        churn[k].reset(member(10 + killed));
    }
    for (auto& c : churn) ASSERT_TRUE(c->wait_ready("held", 60000)) << c->out_so_far();
    ASSERT_TRUE(anchor->wait_ready("held", 60000)) << anchor->out_so_far();
    info(std::to_string(killed) + " members killed while merging");
    std::vector<Result> rs;
    rs.push_back(anchor->finish());
    for (auto& c : churn) rs.push_back(c->finish());
    for (auto& r : rs) {
        EXPECT_EQ(r.exit_code, 0) << r.describe();
        EXPECT_EQ(r.num("mismatches"), 0) << r.describe();
        EXPECT_EQ(r.num("final_mismatches"), 0) << r.describe();
        EXPECT_GE(r.num("merge_wait_ms"), 0) << "a survivor did not merge\n" << r.describe();
    }
    Stats st = load_stats(rs.front());
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_GT(st["domain_pages_shared_with_others"], 0) << st.text;
    long now = 0;
    EXPECT_TRUE(shmem_back_to(shmem_before, 1024, &now))
        << "Shmem " << now << " kB after every member ended, " << shmem_before << " kB before";
}

// The member that listens for newcomers is killed: another member takes the
// name over, and a process that starts later joins the same domain and
// shares with the survivors.
TEST(Domain, ANewcomerAfterTheListenerDiedJoinsTheSurvivors) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    std::string dom = domain_name("takeover");
    auto member = [&](int seed) {
        return new Child(prog("domain_worker"),
                         worker(dom, {"--shared-mib", "16", "--own-mib", "1", "--own-seed", std::to_string(seed),
                                      "--hold", "--wait-ms", "10000"}, true),
                         tmp);
    };
    std::unique_ptr<Child> listener(member(1));
    ASSERT_TRUE(listener->wait_ready("filled", 60000));
    std::unique_ptr<Child> survivor(member(2));
    ASSERT_TRUE(survivor->wait_ready("held", 60000)) << survivor->out_so_far();
    std::string ino = domain_inode(survivor->pid());
    ASSERT_FALSE(ino.empty());
    kill(listener->pid(), SIGKILL);
    listener->finish();
    usleep(200 * 1000);  // the survivor takes the name over within 20 ms
    std::unique_ptr<Child> newcomer(member(3));
    ASSERT_TRUE(newcomer->wait_ready("held", 60000)) << newcomer->out_so_far();
    EXPECT_EQ(domain_inode(newcomer->pid()), ino) << "the newcomer founded a second domain";
    Result rn = newcomer->finish(), rs = survivor->finish();
    for (Result* r : {&rn, &rs}) {
        EXPECT_EQ(r->exit_code, 0) << r->describe();
        EXPECT_EQ(r->num("final_mismatches"), 0) << r->describe();
        EXPECT_GE(r->num("merge_wait_ms"), 0) << r->describe();
    }
    Stats st = load_stats(rn);
    ASSERT_TRUE(st.parsed) << st.error;
    EXPECT_GT(st["domain_pages_shared_with_others"], 16 * 256 / 2) << st.text;
}
