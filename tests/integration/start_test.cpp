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
