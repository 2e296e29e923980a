// Issue 7: merging must be invisible to every madvise advice.
//
// AdviceMatrix: for each advice and each phase (advice before the merge,
// after it, and over a range straddling merged and unmerged pages), the
// program tests/programs/advice_matrix.c runs once without the shim (the
// reference: plain anonymous memory, the kernel's own answer) and once under
// LD_PRELOAD with the scanner at full speed, and every observation must be
// the same: madvise's result, the bytes of every page, what a forked child
// reads and writes, the VmFlags of every page's VMA (merged ranges are split
// into many VMAs, so this is checked page by page), and that later writes
// stick. The few observations the kernel itself leaves open are relaxed, each
// with its reason, in normalise() below. Not compared ("info_" keys): the
// number of VMAs (merging splits ranges by design) and VmFlags "mg" (the shim
// never passes MADV_MERGEABLE on to the kernel, by design: docs/DESIGN.md,
// kernel KSM must not also act on the range).
//
// AdviceMatrixCanFail runs the DONTFORK / DONTDUMP / HUGEPAGE / NOHUGEPAGE
// "before" cells against build/libdedup-noflags.so, whose remapped pieces
// lose that advice, and requires the comparison to catch it.
//
// QemuRegion: guest RAM the way QEMU sets it up (DONTFORK, HUGEPAGE,
// DONTDUMP, MERGEABLE) under DEDUP_SCOPE=advised.
//
// PrctlMemoryMerge: PR_SET_MEMORY_MERGE under DEDUP_SCOPE=advised.
// (KsmFunctional.test_prctl only compares prctl's return values with the
// kernel's, and KsmFunctional.test_prctl_unmerge is skipped, so neither
// checks that the switch merges an unadvised region or that 0 unmerges it.)
#include "harness.h"

#include <set>

using namespace dt;

namespace {

const std::vector<std::string> kAdvices = {
    "NORMAL",       "RANDOM",        "SEQUENTIAL",     "WILLNEED",      "DONTNEED",   "DONTNEED_LOCKED",
    "FREE",         "REMOVE",        "DONTFORK",       "DOFORK",        "WIPEONFORK", "KEEPONFORK",
    "DONTDUMP",     "DODUMP",        "HUGEPAGE",       "NOHUGEPAGE",    "COLLAPSE",   "COLD",
    "PAGEOUT",      "POPULATE_READ", "POPULATE_WRITE", "MERGEABLE",     "UNMERGEABLE", "GUARD_INSTALL",
    "GUARD_REMOVE", "UNKNOWN_77"};
const std::vector<std::string> kPhases = {"before", "after", "partial"};

// MADV_COLLAPSE only does anything on a range that contains a whole aligned
// 2 MiB huge page (else the kernel answers EINVAL, with or without the shim,
// and the cell would not test the shim's unmerge-first path): 4 MiB region.
int pages_for(const std::string& advice) { return advice == "COLLAPSE" ? 1024 : 128; }

std::string noflags_lib() { return variant_lib("DEDUP_LIB_NOFLAGS", "libdedup-noflags.so"); }

// library == "": the reference run, no shim.
Result run_cell(const std::string& advice, const std::string& phase, const std::string& library,
                const TempDir& tmp) {
    Options o;
    o.args = {"cell", "--advice", advice, "--phase", phase, "--pages", std::to_string(pages_for(advice))};
    o.stats = false;
    o.timeout_ms = 60000;
    if (!library.empty()) {
        o.args.push_back("--shim");
        o.preload = library;
        o.env = {{"DEDUP_SLEEP_MS", "0"}, {"DEDUP_START_MIN", "0"}, {"DEDUP_SCOPE", "all"}};
    }
    return run(prog("advice_matrix"), o, tmp);
}

struct Range {
    size_t first = 0, end = 0;
};

Range advised_range(const Result& r) {
    Range g;
    sscanf(r.str("info_range").c_str(), "%zu-%zu", &g.first, &g.end);
    return g;
}

bool per_page_key(const std::string& k) {
    return k == "read1" || k == "read2" || k == "child_read" || k == "child_write" || k == "write" ||
           k == "final" || k.rfind("flags", 0) == 0;
}

// The relaxations: what the kernel leaves undefined, so the reference run
// cannot pin it down either.
std::string normalise(const std::string& advice, const std::string& key, std::string v, Range g) {
    if (advice == "FREE" && (key == "read1" || key == "read2" || key == "child_read")) {
        // MADV_FREE: until the page is written again, the kernel may free it
        // at any time, so a read returns either the old contents or zeros,
        // per page (a forked child's copy likewise). The shim gives merged
        // pages zeros at once (docs/DESIGN.md: FREE on a file page would
        // fail); the reference usually keeps the old contents (no memory
        // pressure). Both are the documented behaviour: 'O' and 'Z' are
        // equivalent inside the advised range, nothing else is.
        for (size_t i = g.first; i < g.end && i < v.size(); ++i)
            if (v[i] == 'O' || v[i] == 'Z') v[i] = '?';
    }
    if (advice == "COLLAPSE" && key == "madv") {
        // MADV_COLLAPSE succeeds or fails with EAGAIN/ENOMEM depending on
        // whether a huge page could be allocated at that moment (memory
        // fragmentation, khugepaged settings): either answer means "the range
        // was eligible". EINVAL (not eligible, e.g. a file mapping) is not
        // relaxed.
        if (v == "0:0" || v == "-1:EAGAIN" || v == "-1:ENOMEM") v = "eligible (0, EAGAIN or ENOMEM)";
    }
    return v;
}

// "pages 30-63: reference ZZZZ.. shim OOOO.."
std::string page_diff(const std::string& a, const std::string& b) {
    std::ostringstream os;
    size_t n = std::max(a.size(), b.size());
    int runs = 0;
    for (size_t i = 0; i < n;) {
        char x = i < a.size() ? a[i] : '#', y = i < b.size() ? b[i] : '#';
        if (x == y) { ++i; continue; }
        size_t j = i;
        while (j < n && (j < a.size() ? a[j] : '#') != (j < b.size() ? b[j] : '#')) ++j;
        if (runs++ < 6)
            os << " pages " << i << "-" << j - 1 << ": reference '" << a.substr(i, std::min<size_t>(j - i, 16))
               << (j - i > 16 ? "..." : "") << "' shim '" << b.substr(i, std::min<size_t>(j - i, 16))
               << (j - i > 16 ? "..." : "") << "';";
        i = j;
    }
    if (runs > 6) os << " (" << runs << " differing runs in all)";
    return os.str();
}

// Every non-info key must be equal after normalisation; returns the list of
// differences (empty: the shim is invisible in this cell).
std::vector<std::string> compare_cell(const std::string& advice, const Result& ref, const Result& shim) {
    std::vector<std::string> diffs;
    if (ref.exit_code != shim.exit_code || ref.term_sig != shim.term_sig || shim.timed_out)
        diffs.push_back("process: reference " + std::to_string(ref.exit_code) + "/sig " +
                        std::to_string(ref.term_sig) + ", shim " + std::to_string(shim.exit_code) + "/sig " +
                        std::to_string(shim.term_sig) + (shim.timed_out ? " (timed out)" : "") +
                        (shim.has("error") ? " error: " + shim.str("error") : ""));
    Range g = advised_range(ref);
    std::set<std::string> keys;
    for (auto& kv : ref.kv)
        if (kv.first.rfind("info_", 0) != 0) keys.insert(kv.first);
    for (auto& kv : shim.kv)
        if (kv.first.rfind("info_", 0) != 0) keys.insert(kv.first);
    for (auto& k : keys) {
        if (!ref.has(k) || !shim.has(k)) {
            diffs.push_back(k + ": only in the " + (ref.has(k) ? "reference" : "shim") + " run");
            continue;
        }
        std::string a = normalise(advice, k, ref.str(k), g), b = normalise(advice, k, shim.str(k), g);
        if (a == b) continue;
        diffs.push_back(k + ":" + (per_page_key(k) ? page_diff(a, b) : " reference '" + a + "' shim '" + b + "'"));
    }
    return diffs;
}

// The reference run must show the advice's documented effect; otherwise the
// comparison would prove nothing (e.g. a kernel that ignores the advice).
struct Expect {
    const char* key;
    const char* in;   // allowed page classes inside the advised range
    const char* out;  // allowed outside it (nullptr: anything)
};

std::vector<Expect> expectations(const std::string& a) {
    if (a == "RANDOM") return {{"flags1_rr", "1", "0"}};
    if (a == "SEQUENTIAL") return {{"flags1_sr", "1", "0"}};
    if (a == "DONTNEED" || a == "DONTNEED_LOCKED") return {{"read1", "Z", nullptr}};
    if (a == "DONTFORK") return {{"flags1_dc", "1", "0"}, {"child_read", "S", "OZ"}, {"child_write", "S", "C"}};
    if (a == "DOFORK") return {{"flags1_dc", "0", "0"}, {"child_read", "OZ", nullptr}};
    if (a == "WIPEONFORK") return {{"flags1_wf", "1", "0"}, {"child_read", "Z", "OZ"}, {"read1", "OZ", nullptr}};
    if (a == "KEEPONFORK") return {{"flags1_wf", "0", "0"}, {"child_read", "OZ", nullptr}};
    if (a == "DONTDUMP") return {{"flags1_dd", "1", "0"}};
    if (a == "DODUMP") return {{"flags1_dd", "0", "0"}};
    if (a == "HUGEPAGE") return {{"flags1_hg", "1", "0"}};
    if (a == "NOHUGEPAGE") return {{"flags1_nh", "1", "0"}, {"flags1_hg", "0", "0"}};
    if (a == "GUARD_INSTALL") return {{"read1", "S", "OZ"}, {"child_read", "S", nullptr}, {"write", "S", "W"}};
    if (a == "GUARD_REMOVE") return {{"read1", "Z", "OZ"}, {"write", "W", "W"}};
    return {};
}

std::vector<std::string> check_reference(const std::string& advice, const Result& ref) {
    std::vector<std::string> errs;
    if (!ref.ok()) return {"reference run failed: " + ref.describe()};
    Range g = advised_range(ref);
    size_t n = ref.str("read1").size();
    if (n != size_t(pages_for(advice)) || g.end <= g.first || g.end > n)
        errs.push_back("reference output malformed (read1 has " + std::to_string(n) + " pages, range " +
                       ref.str("info_range") + ")");
    std::string want = advice == "REMOVE" || advice == "UNKNOWN_77" ? "-1:EINVAL" : "0:0";
    if (advice != "COLLAPSE" && ref.str("madv") != want)
        errs.push_back("reference madv=" + ref.str("madv") + ", expected " + want);
    if (ref.has("pre_madv") && ref.str("pre_madv") != "0:0")
        errs.push_back("reference pre_madv=" + ref.str("pre_madv"));
    // every later write sticks, except on guard pages
    if (advice != "GUARD_INSTALL" && ref.str("final") != std::string(n, 'W'))
        errs.push_back("reference final=" + ref.str("final"));
    for (const Expect& e : expectations(advice)) {
        std::string v = ref.str(e.key);
        for (size_t i = 0; i < v.size(); ++i) {
            bool inside = i >= g.first && i < g.end;
            const char* allowed = inside ? e.in : e.out;
            if (allowed && !strchr(allowed, v[i])) {
                errs.push_back(std::string("reference ") + e.key + "[" + std::to_string(i) + "]='" + v[i] +
                               "', expected one of '" + allowed + "' " + (inside ? "inside" : "outside") +
                               " the advised range: " + v);
                break;
            }
        }
    }
    return errs;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (auto& x : v) s += "  " + x + "\n";
    return s;
}

using CellParam = std::tuple<std::string, std::string>;

class Cell : public testing::TestWithParam<CellParam> {};

TEST_P(Cell, ShimMatchesPlainAnonymousMemory) {
    DT_REQUIRE_LIB();
    const std::string advice = std::get<0>(GetParam()), phase = std::get<1>(GetParam());
    TempDir tmp;
    Result ref = run_cell(advice, phase, "", tmp);
    std::vector<std::string> bad_ref = check_reference(advice, ref);
    ASSERT_TRUE(bad_ref.empty()) << join(bad_ref) << ref.describe();
    Result shim = run_cell(advice, phase, lib(), tmp);
    ASSERT_FALSE(shim.timed_out) << shim.describe();
    // The shim run must really have been merged where the program says so
    // (it exits 3 with error=... when the region never merged in 10 s).
    ASSERT_FALSE(shim.has("error")) << shim.str("error") << "\n" << shim.describe();
    std::vector<std::string> diffs = compare_cell(advice, ref, shim);
    EXPECT_TRUE(diffs.empty()) << "MADV_" << advice << ", phase " << phase
                               << ": the shim is visible:\n" << join(diffs)
                               << "reference:\n" << ref.out << "\nshim:\n" << shim.describe();
}

INSTANTIATE_TEST_SUITE_P(AdviceMatrix, Cell,
                         testing::Combine(testing::ValuesIn(kAdvices), testing::ValuesIn(kPhases)),
                         [](const testing::TestParamInfo<CellParam>& i) {
                             return std::get<0>(i.param) + "_" + std::get<1>(i.param);
                         });

// The matrix can fail: a library whose remapped pieces lose the program's
// advice must be caught, on the flag each cell is about.
TEST(AdviceMatrixCanFail, LibraryThatDropsFlagsOnRemappedPiecesIsCaught) {
    DT_REQUIRE_LIB();
    std::string nf = noflags_lib();
    if (nf.empty() || !file_exists(nf))
        GTEST_SKIP() << "libdedup-noflags.so not built ('" << nf << "'): make build/libdedup-noflags.so";
    TempDir tmp;
    struct Case {
        const char* advice;
        const char* key;  // a difference must show in this key
    };
    for (const Case& c : {Case{"DONTFORK", "flags1_dc"}, Case{"DONTFORK", "child_read"},
                          Case{"DONTDUMP", "flags1_dd"}, Case{"HUGEPAGE", "flags1_hg"},
                          Case{"NOHUGEPAGE", "flags1_nh"}}) {
        SCOPED_TRACE(c.advice);
        Result ref = run_cell(c.advice, "before", "", tmp);
        ASSERT_TRUE(check_reference(c.advice, ref).empty()) << ref.describe();
        Result broken = run_cell(c.advice, "before", nf, tmp);
        ASSERT_TRUE(broken.ok()) << "the broken library must still merge and run\n" << broken.describe();
        std::vector<std::string> diffs = compare_cell(c.advice, ref, broken);
        bool caught = false;
        for (auto& d : diffs) caught |= d.rfind(std::string(c.key) + ":", 0) == 0;
        EXPECT_TRUE(caught) << "MADV_" << c.advice << " before: no difference in " << c.key
                            << " against libdedup-noflags.so; differences found:\n" << join(diffs)
                            << broken.describe();
    }
}

// ---- QEMU-style guest RAM ----------------------------------------------------

TEST(QemuRegion, GuestRamMergesKeepsItsAdviceAndForkedChildrenStillSegfault) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options plain;
    plain.args = {"qemu"};
    plain.stats = false;
    Result ref = run(prog("advice_matrix"), plain, tmp);
    ASSERT_TRUE(ref.ok()) << ref.describe();
    Result r = run(prog("advice_matrix"), with_lib({"qemu", "--shim"}, {{"DEDUP_SCOPE", "advised"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    std::cout << "[ QEMU     ] 64 MiB guest RAM, Pss of the range's VMAs: " << r.num("pss_before_kb")
              << " kB filled, " << r.num("pss_after_merge_kb") << " kB merged (" << r.num("merge_wait_ms")
              << " ms), " << r.num("pss_after_read_kb") << " kB after the guest read it all; process Pss over "
              << "its baseline (smaps_rollup): " << r.num("rollup_before_kb") << " kB filled, "
              << r.num("rollup_after_merge_kb") << " kB merged, " << r.num("rollup_after_read_kb")
              << " kB after the read; " << r.num("vmas")
              << " VMAs in the range (" << r.num("vmas_memfd") << " memfd pieces), dd on " << r.num("vmas_dd")
              << ", dc on " << r.num("vmas_dc") << ", hg on " << r.num("vmas_hg")
              << "; reference (no shim): " << ref.num("pss_after_read_kb") << " kB and "
              << ref.num("rollup_after_read_kb") << " kB" << std::endl;
    // madvise answers as without the shim
    for (const char* k : {"madv_dontfork", "madv_hugepage", "madv_dontdump", "madv_mergeable"}) {
        EXPECT_EQ(r.str(k), ref.str(k)) << k;
        EXPECT_EQ(r.str(k), "0:0") << k;
    }
    // it merged: every page maps the memfd and the Pss fell by at least half
    // of what the filled RAM costs without the shim (the shim's own "before"
    // figure can already be lower: the scanner merges while the guest fills)
    EXPECT_EQ(r.num("memfd_pages"), 64.0 * 256) << r.describe();
    EXPECT_GE(ref.num("pss_before_kb"), 60 * 1024) << ref.describe();
    EXPECT_LE(r.num("pss_after_read_kb"), ref.num("pss_before_kb") / 2) << r.describe();
    EXPECT_GE(ref.num("rollup_before_kb"), 60 * 1024) << ref.describe();
    EXPECT_LE(r.num("rollup_after_read_kb"), ref.num("rollup_before_kb") / 2) << r.describe();
    EXPECT_LE(r.num("pss_after_read_kb"), r.num("pss_before_kb")) << r.describe();
    EXPECT_GT(r.num("vmas_memfd"), 1) << "the range was not split into pieces: nothing tests reapply\n"
                                      << r.describe();
    // every piece keeps the advice: DONTFORK (dc), DONTDUMP (dd), HUGEPAGE (hg)
    EXPECT_EQ(r.num("vmas_dd"), r.num("vmas")) << r.describe();
    EXPECT_EQ(r.num("vmas_dc"), r.num("vmas")) << r.describe();
    EXPECT_EQ(r.num("vmas_hg"), r.num("vmas")) << r.describe();
    EXPECT_EQ(ref.num("vmas_dd"), ref.num("vmas"));
    // a forked child touching guest RAM dies of SIGSEGV, exactly as without the shim
    EXPECT_EQ(ref.num("children_segv"), 8) << ref.describe();
    for (int k = 0; k < 8; ++k) {
        std::string key = "child" + std::to_string(k);
        EXPECT_EQ(r.str(key), ref.str(key)) << key << "\n" << r.describe();
    }
    // and the parent's bytes are intact
    EXPECT_EQ(r.num("pages_wrong"), 0);
    EXPECT_EQ(r.num("pages_wrong_after_fork"), 0);
}

// ---- PR_SET_MEMORY_MERGE -----------------------------------------------------

TEST(PrctlMemoryMerge, SwitchMergesUnadvisedRegionAndZeroUnmergesIt) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options plain;
    plain.args = {"prctl"};
    plain.stats = false;
    Result ref = run(prog("advice_matrix"), plain, tmp);
    ASSERT_TRUE(ref.ok()) << ref.describe();
    if (ref.str("prctl_set_1") == "-1:EINVAL")
        GTEST_SKIP() << "the kernel has no PR_SET_MEMORY_MERGE, nothing to compare with";
    Result r = run(prog("advice_matrix"), with_lib({"prctl", "--shim"}, {{"DEDUP_SCOPE", "advised"}}), tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    // the answers are the kernel's
    for (const char* k : {"prctl_set_1", "prctl_get_after_1", "prctl_set_0", "prctl_get_after_0"})
        EXPECT_EQ(r.str(k), ref.str(k)) << k << "\n" << r.describe();
    EXPECT_EQ(r.str("prctl_get_after_1"), "1:0");
    EXPECT_EQ(r.str("prctl_get_after_0"), "0:0");
    // unadvised: not merged while advised control regions were
    EXPECT_EQ(r.num("memfd_pages_before"), 0) << r.describe();
    // switched on: all 256 pages merged, shared after a read
    EXPECT_GE(r.num("merge_wait_ms"), 0) << "the unadvised region never merged after PR_SET_MEMORY_MERGE=1\n"
                                         << r.describe();
    EXPECT_EQ(r.num("memfd_pages_after_1"), 256) << r.describe();
    EXPECT_GE(r.num("pm_file_after_1"), 250) << r.describe();
    // switched off: private pages again, contents intact, and it stays so
    EXPECT_EQ(r.num("memfd_pages_after_0"), 0) << r.describe();
    EXPECT_EQ(r.num("pm_file_after_0"), 0) << r.describe();
    EXPECT_EQ(r.num("memfd_pages_settled"), 0) << r.describe();
    EXPECT_EQ(r.num("pm_file_settled"), 0) << r.describe();
    for (const char* k : {"mismatches_after_1", "mismatches_after_0", "mismatches_settled"}) {
        EXPECT_EQ(r.num(k), 0) << k;
        EXPECT_EQ(ref.num(k), 0) << k;
    }
}

}  // namespace
