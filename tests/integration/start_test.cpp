// Start cost (issue 16): a process that registers nothing, and one with
// DEDUP_DISABLE=1, pay for loading the library and nothing else: no
// descriptor, no thread, no mapping of the shim's, no line on stderr, no
// file written.
#include "harness.h"

using namespace dt;

namespace {

Options quiet_options(std::map<std::string, std::string> env, std::vector<std::string> args = {}) {
    Options o;
    o.args = std::move(args);
    o.preload = lib();
    o.stats = false;  // a stats file is a report asked for
    o.env = std::move(env);
    return o;
}

void expect_nothing_of_the_shim(const Result& r, const Result& plain, const char* what) {
    ASSERT_TRUE(r.ok()) << what << "\n" << r.describe();
    ASSERT_TRUE(r.has("fds")) << what << "\n" << r.describe();
    EXPECT_EQ(r.str("fds"), plain.str("fds")) << what << ": descriptors differ from the run without the shim\n"
                                              << r.describe();
    EXPECT_EQ(r.num("threads"), 1) << what << "\n" << r.describe();
    EXPECT_EQ(r.num("shim_maps"), 0) << what << "\n" << r.describe();
    EXPECT_EQ(r.err, "") << what << "\n" << r.describe();
}

}  // namespace

TEST(StartCost, NothingRegisteredNothingOpenedOrStarted) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("quiet_start"), without_lib({}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();
    EXPECT_EQ(plain.num("threads"), 1) << plain.describe();

    Result def = run(prog("quiet_start"), quiet_options({}), tmp);
    expect_nothing_of_the_shim(def, plain, "default settings");

    // Disabled: not even DEDUP_LOG is opened (the file is not created).
    std::string log = tmp.file("disabled.log");
    Result off = run(prog("quiet_start"), quiet_options({{"DEDUP_DISABLE", "1"}, {"DEDUP_LOG", log}}), tmp);
    expect_nothing_of_the_shim(off, plain, "DEDUP_DISABLE=1");
    EXPECT_FALSE(file_exists(log)) << "DEDUP_DISABLE=1 opened DEDUP_LOG";
}

// Most processes that register anything make a few large mallocs, each of
// which maps (and registers) a 4 MiB arena, and exit: below DEDUP_START_MIN
// (4 MiB in use by default) no thread, memfd, kept file or live file is
// made. At the threshold, or with DEDUP_START_MIN=0 at the first
// registration, they are.
TEST(StartCost, RegisteredBelowStartMinStartsNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Result plain = run(prog("quiet_start"), without_lib({"--malloc-kib", "3072"}), tmp);
    ASSERT_TRUE(plain.ok()) << plain.describe();

    Result below = run(prog("quiet_start"), quiet_options({}, {"--malloc-kib", "3072"}), tmp);
    expect_nothing_of_the_shim(below, plain, "3 MiB of large mallocs at default settings");

    Options o = quiet_options({{"DEDUP_LOG", tmp.file("above.log")}}, {"--malloc-kib", "5120"});
    Result above = run(prog("quiet_start"), o, tmp);
    ASSERT_TRUE(above.ok()) << above.describe();
    EXPECT_EQ(above.num("threads"), 2) << "5 MiB in use: the scanner runs\n" << above.describe();
    EXPECT_GE(above.num("shim_maps"), 1) << above.describe();

    Options zero = quiet_options({{"DEDUP_START_MIN", "0"}, {"DEDUP_LOG", tmp.file("zero.log")}}, {"--malloc-kib", "64"});
    Result at_once = run(prog("quiet_start"), zero, tmp);
    ASSERT_TRUE(at_once.ok()) << at_once.describe();
    EXPECT_EQ(at_once.num("threads"), 2) << "DEDUP_START_MIN=0: the first registration starts it\n"
                                         << at_once.describe();
}

// What start-up leaves for later is had when a report asks for it: a
// process that registered nothing still writes a whole stats file (the VMA
// budget read at exit).
TEST(StartCost, StatsFileOfAProcessThatRegisteredNothing) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options o = quiet_options({});
    o.stats = true;
    Result r = run(prog("quiet_start"), o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    Stats st = load_stats(r);
    ASSERT_TRUE(st.present && st.parsed) << st.error << "\n" << st.text;
    EXPECT_EQ(st["pages_registered"], 0) << st.text;
    EXPECT_GT(st["vma_limit"], 0) << st.text;
    EXPECT_GT(st["vmas_used"], 0) << st.text;
}

// Once the runtime activates, no code of the shim enters ld.so's lazy
// resolver (os/plt_bind.h: the fault handler may run on a small alternate
// stack). The library is linked -z lazy; activation binds every import.
// ld.so's LD_DEBUG=bindings shows each lazy binding as a line naming the
// library as the binding file and the symbol's version: after the program
// has registered enough to activate, the scanner thread, the wrappers and
// the exit report must make none. (Lines without a version are the
// wrappers' dlsym(RTLD_NEXT) look-ups, not the resolver.)
TEST(StartCost, AnActiveRuntimeNeverEntersTheLazyResolver) {
    DT_REQUIRE_LIB();
    TempDir tmp;
    Options o = quiet_options({{"LD_DEBUG", "bindings"}, {"DEDUP_BUSY_WAIT_MS", "0"}},
                              {"--malloc-kib", "8192", "--mark"});
    Result r = run(prog("quiet_start"), o, tmp);
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_GE(r.num("threads"), 2) << "the runtime did not activate\n" << r.describe();
    const std::string mark = "-- registered --\n";
    size_t at = r.err.find(mark);
    ASSERT_NE(at, std::string::npos) << r.describe();
    const std::string lib_file = "binding file " + lib() + " ";
    auto versioned_bindings = [&](const std::string& text, std::string* first) {
        int n = 0;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);)
            if (line.find(lib_file) != std::string::npos && line.find("[GLIBC_") != std::string::npos) {
                if (!n && first) *first = line;
                ++n;
            }
        return n;
    };
    // Before: the program's first calls bound lazily, and the activation's
    // binding of all the others (the check sees such lines at all).
    EXPECT_GT(versioned_bindings(r.err.substr(0, at), nullptr), 10) << r.describe();
    std::string first;
    EXPECT_EQ(versioned_bindings(r.err.substr(at + mark.size()), &first), 0)
        << "bound lazily after activation: " << first;
}
