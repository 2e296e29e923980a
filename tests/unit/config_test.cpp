// config_parse, parse_size, parse_uint, and the warnings they produce.
//
// log_warning() caps warnings at 32 per process, and that counter cannot be
// reset. So every parse that is expected to warn runs in a forked child (the
// parent's counter never moves); the child writes the log into a memfd and
// the parsed Config into shared memory, and the parent checks both.
#include <gtest/gtest.h>

#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "scanner/config.h"
#include "scanner/log.h"
#include "tests/unit/log_lines.h"

using namespace dedup;

namespace {

struct ParseResult {
    Config cfg;
    std::string log;
    bool ok = false;
};

std::vector<std::string> split_lines(const std::string& s) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t nl = s.find('\n', pos);
        if (nl == std::string::npos) { out.push_back(s.substr(pos)); break; }
        out.push_back(s.substr(pos, nl - pos));
        pos = nl + 1;
    }
    return out;
}

std::string read_all(int fd) {
    std::string out;
    char buf[4096];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n <= 0) break;
        out.append(buf, (size_t)n);
        off += n;
    }
    return out;
}

// Runs f() in a forked child with the log pointed at a memfd; returns the log.
template <typename F>
std::string in_child_with_log(F&& f, bool* ok) {
    *ok = false;
    int mfd = memfd_create("config-test-log", MFD_CLOEXEC);
    if (mfd < 0) return "memfd_create failed";
    pid_t pid = fork();
    if (pid < 0) { close(mfd); return "fork failed"; }
    if (pid == 0) {
        log_set_fd(mfd);
        f();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    std::string log = read_all(mfd);
    close(mfd);
    *ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    return log;
}

ParseResult parse_in_child(const std::vector<std::string>& env) {
    ParseResult res;
    void* shm = mmap(nullptr, sizeof(Config), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) return res;
    std::vector<const char*> envp;
    for (auto& e : env) envp.push_back(e.c_str());
    envp.push_back(nullptr);
    Config* out = static_cast<Config*>(shm);
    res.log = in_child_with_log([&] { config_parse(envp.data(), out); }, &res.ok);
    memcpy(&res.cfg, shm, sizeof(Config));
    munmap(shm, sizeof(Config));
    return res;
}

// Parses in-process; only for inputs that must not warn (checked).
Config parse_quiet(const std::vector<std::string>& env) {
    ParseResult r = parse_in_child(env);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.log, "") << "unexpected log output for a valid environment";
    return r.cfg;
}

void expect_defaults(const Config& c) {
    EXPECT_FALSE(c.disable);
    EXPECT_EQ(c.scope, Scope::kAll);
    EXPECT_EQ(c.min_region, 64u * 1024);
    EXPECT_EQ(c.malloc_min, 64u * 1024);
    EXPECT_EQ(c.pages_to_scan, 2048u);
    EXPECT_EQ(c.sleep_ms, 20u);
    EXPECT_EQ(c.cpu_percent, 0u);
    EXPECT_EQ(c.vma_reserve, 0u);
    EXPECT_STREQ(c.log, "stderr");
    EXPECT_STREQ(c.stats_file, "");
    EXPECT_EQ(c.summary, Summary::kAuto);
    EXPECT_STREQ(c.series_file, "");
}

bool same_config(const Config& a, const Config& b) {
    return a.disable == b.disable && a.scope == b.scope && a.min_region == b.min_region &&
           a.malloc_min == b.malloc_min && a.pages_to_scan == b.pages_to_scan && a.sleep_ms == b.sleep_ms &&
           a.cpu_percent == b.cpu_percent && a.vma_reserve == b.vma_reserve && strcmp(a.log, b.log) == 0 && strcmp(a.stats_file, b.stats_file) == 0 &&
           a.summary == b.summary && strcmp(a.series_file, b.series_file) == 0;
}

}  // namespace

// ---------------------------------------------------------------- defaults

TEST(ConfigParse, NullEnvironmentGivesDefaults) {
    Config c;
    c.disable = true;
    c.sleep_ms = 999;
    strcpy(c.log, "junk");
    config_parse(nullptr, &c);
    expect_defaults(c);
}

TEST(ConfigParse, EmptyEnvironmentGivesDefaults) {
    const char* envp[] = {nullptr};
    Config c;
    c.pages_to_scan = 1;
    c.scope = Scope::kAdvised;
    strcpy(c.stats_file, "/tmp/x");
    config_parse(envp, &c);
    expect_defaults(c);
}

TEST(ConfigParse, UnrelatedAndLookalikeVariablesAreIgnored) {
    Config c = parse_quiet({"PATH=/usr/bin", "DEDUP_SLEEP_MSX=5", "XDEDUP_SLEEP_MS=6", "DEDUP_SLEEP_M=7",
                            "DEDUP_SLEEP_MS", "dedup_sleep_ms=8", "DEDUP_LOGFILE=/tmp/a"});
    expect_defaults(c);
}

TEST(ConfigParse, FirstOccurrenceWins) {
    Config c = parse_quiet({"DEDUP_SLEEP_MS=5", "DEDUP_SLEEP_MS=7"});
    EXPECT_EQ(c.sleep_ms, 5u);
}

// ---------------------------------------------------------------- each option

TEST(ConfigParse, DisableTrueForms) {
    for (const char* v : {"1", "true", "TRUE", "True", "yes", "YES", "on", "On"}) {
        Config c = parse_quiet({std::string("DEDUP_DISABLE=") + v});
        EXPECT_TRUE(c.disable) << v;
    }
}

TEST(ConfigParse, DisableFalseForms) {
    for (const char* v : {"0", "false", "FALSE", "no", "No", "off", "OFF", ""}) {
        Config c = parse_quiet({std::string("DEDUP_DISABLE=") + v});
        EXPECT_FALSE(c.disable) << "'" << v << "'";
    }
}

// The runtime's one look at a disabled process's environment agrees with
// the full parse on every form, and is false for what the parse warns about.
TEST(ConfigParse, SaysDisabledAgreesWithTheParse) {
    struct Case {
        std::vector<std::string> env;
        bool disabled;
    };
    const Case cases[] = {
        {{"DEDUP_DISABLE=1"}, true},
        {{"PATH=/bin", "DEDUP_DISABLEX=1", "DEDUP_DISABLE=yes"}, true},
        {{"DEDUP_DISABLE=On"}, true},
        {{"DEDUP_DISABLE=0"}, false},
        {{"DEDUP_DISABLE="}, false},
        {{"DEDUP_DISABLE=maybe"}, false},
        {{"DEDUP_DISABLE"}, false},
        {{"XDEDUP_DISABLE=1", "DISPLAY=:0"}, false},
        {{}, false},
    };
    for (const Case& c : cases) {
        std::vector<const char*> envp;
        for (const std::string& e : c.env) envp.push_back(e.c_str());
        envp.push_back(nullptr);
        std::string shown;
        for (const std::string& e : c.env) shown += "'" + e + "' ";
        EXPECT_EQ(config_says_disabled(envp.data()), c.disabled) << shown;
    }
    EXPECT_FALSE(config_says_disabled(nullptr));
}

TEST(ConfigParse, Scope) {
    EXPECT_EQ(parse_quiet({"DEDUP_SCOPE=all"}).scope, Scope::kAll);
    EXPECT_EQ(parse_quiet({"DEDUP_SCOPE=advised"}).scope, Scope::kAdvised);
}

TEST(ConfigParse, SizesWithSuffixes) {
    struct {
        const char* text;
        uint64_t want;
    } cases[] = {
        {"4096", 4096},       {"4K", 4096},          {"4k", 4096},
        {"128K", 128 << 10},  {"2M", 2 << 20},       {"2m", 2 << 20},
        {"1G", 1ull << 30},   {"3g", 3ull << 30},    {"1024G", 1ull << 40},
        {"1099511627776", 1ull << 40}, {"65536", 65536}, {"0004K", 4096},
    };
    for (auto& k : cases) {
        Config c = parse_quiet({std::string("DEDUP_MIN_REGION=") + k.text});
        EXPECT_EQ(c.min_region, k.want) << k.text;
        EXPECT_EQ(c.malloc_min, 64u * 1024) << "MIN_REGION leaked into MALLOC_MIN";
        Config m = parse_quiet({std::string("DEDUP_MALLOC_MIN=") + k.text});
        EXPECT_EQ(m.malloc_min, k.want) << k.text;
        EXPECT_EQ(m.min_region, 64u * 1024);
    }
}

TEST(ConfigParse, NumbersAndRangeLimits) {
    EXPECT_EQ(parse_quiet({"DEDUP_PAGES_TO_SCAN=1"}).pages_to_scan, 1u);
    EXPECT_EQ(parse_quiet({"DEDUP_PAGES_TO_SCAN=100000"}).pages_to_scan, 100000u);
    EXPECT_EQ(parse_quiet({"DEDUP_PAGES_TO_SCAN=1073741824"}).pages_to_scan, 1ull << 30);
    EXPECT_EQ(parse_quiet({"DEDUP_SLEEP_MS=0"}).sleep_ms, 0u);
    EXPECT_EQ(parse_quiet({"DEDUP_SLEEP_MS=3600000"}).sleep_ms, 3600000u);
    EXPECT_EQ(parse_quiet({"DEDUP_SLEEP_MS=250"}).sleep_ms, 250u);
    EXPECT_EQ(parse_quiet({"DEDUP_CPU_PERCENT=0"}).cpu_percent, 0u);
    EXPECT_EQ(parse_quiet({"DEDUP_CPU_PERCENT=1"}).cpu_percent, 1u);
    EXPECT_EQ(parse_quiet({"DEDUP_CPU_PERCENT=100"}).cpu_percent, 100u);
    EXPECT_EQ(parse_quiet({"DEDUP_VMA_RESERVE=0"}).vma_reserve, 0u);
    EXPECT_EQ(parse_quiet({"DEDUP_VMA_RESERVE=5000"}).vma_reserve, 5000u);
    EXPECT_EQ(parse_quiet({"DEDUP_VMA_RESERVE=2147483648"}).vma_reserve, 1ull << 31);
}

TEST(ConfigParse, Summary) {
    EXPECT_EQ(parse_quiet({"DEDUP_SUMMARY=auto"}).summary, Summary::kAuto);
    EXPECT_EQ(parse_quiet({"DEDUP_SUMMARY=always"}).summary, Summary::kAlways);
    EXPECT_EQ(parse_quiet({"DEDUP_SUMMARY=never"}).summary, Summary::kNever);
    EXPECT_STREQ(parse_quiet({"DEDUP_SERIES_FILE=/tmp/s.%p.jsonl"}).series_file, "/tmp/s.%p.jsonl");
}

TEST(ConfigParse, Strings) {
    Config c = parse_quiet({"DEDUP_LOG=off", "DEDUP_STATS_FILE=/tmp/dedup-%p.json"});
    EXPECT_STREQ(c.log, "off");
    EXPECT_STREQ(c.stats_file, "/tmp/dedup-%p.json");
    EXPECT_STREQ(parse_quiet({"DEDUP_LOG=/var/tmp/dedup.log"}).log, "/var/tmp/dedup.log");
    std::string max255(255, 'a');
    Config l = parse_quiet({"DEDUP_STATS_FILE=" + max255, "DEDUP_LOG=" + max255});
    EXPECT_EQ(std::string(l.stats_file), max255);
    EXPECT_EQ(std::string(l.log), max255);
}

TEST(ConfigParse, AllOptionsTogether) {
    Config c = parse_quiet({"HOME=/root", "DEDUP_DISABLE=yes", "DEDUP_SCOPE=advised", "DEDUP_MIN_REGION=1M",
                            "DEDUP_MALLOC_MIN=8K", "DEDUP_PAGES_TO_SCAN=100", "DEDUP_SLEEP_MS=7",
                            "DEDUP_VMA_RESERVE=1000", "DEDUP_LOG=/tmp/l", "DEDUP_STATS_FILE=/tmp/s"});
    EXPECT_TRUE(c.disable);
    EXPECT_EQ(c.scope, Scope::kAdvised);
    EXPECT_EQ(c.min_region, 1u << 20);
    EXPECT_EQ(c.malloc_min, 8u << 10);
    EXPECT_EQ(c.pages_to_scan, 100u);
    EXPECT_EQ(c.sleep_ms, 7u);
    EXPECT_EQ(c.vma_reserve, 1000u);
    EXPECT_STREQ(c.log, "/tmp/l");
    EXPECT_STREQ(c.stats_file, "/tmp/s");
}

// ---------------------------------------------------------------- bad values

struct BadCase {
    const char* var;
    std::string value;
    std::string shown;  // what the warning must contain of the value
    const char* default_text;
};

void PrintTo(const BadCase& b, std::ostream* os) {
    *os << b.var << "='" << (b.value.size() > 50 ? b.value.substr(0, 50) + "..." : b.value) << "'";
}

class ConfigBadValue : public testing::TestWithParam<BadCase> {};

TEST_P(ConfigBadValue, KeepsDefaultAndWarnsOnce) {
    const BadCase& b = GetParam();
    ParseResult r = parse_in_child({std::string(b.var) + "=" + b.value});
    ASSERT_TRUE(r.ok);
    expect_defaults(r.cfg);
    auto lines = split_lines(r.log);
    ASSERT_EQ(lines.size(), 1u) << "log was:\n" << r.log;
    ASSERT_FALSE(r.log.empty());
    EXPECT_EQ(r.log.back(), '\n');
    const std::string& l = lines[0];
    EXPECT_GT(log_prefix_len(l), 0u) << l;
    EXPECT_NE(l.find(b.var), std::string::npos) << l;
    EXPECT_NE(l.find("'" + b.shown), std::string::npos) << l;
    EXPECT_NE(l.find("default"), std::string::npos) << l;
    EXPECT_NE(l.find(std::string("default ") + b.default_text), std::string::npos) << l;
}

std::vector<BadCase> bad_cases() {
    std::string long300(300, 'x');
    std::vector<BadCase> v = {
        {"DEDUP_DISABLE", "2", "2'", "0"},
        {"DEDUP_DISABLE", "maybe", "maybe'", "0"},
        {"DEDUP_DISABLE", " 1", " 1'", "0"},
        {"DEDUP_SCOPE", "bogus", "bogus'", "all"},
        {"DEDUP_SCOPE", "", "'", "all"},
        {"DEDUP_MIN_REGION", "abc", "abc'", "64K"},
        {"DEDUP_MIN_REGION", "-4096", "-4096'", "64K"},
        {"DEDUP_MIN_REGION", "12KB", "12KB'", "64K"},
        {"DEDUP_MIN_REGION", "1T", "1T'", "64K"},
        {"DEDUP_MIN_REGION", "K", "K'", "64K"},
        {"DEDUP_MIN_REGION", "0", "0'", "64K"},
        {"DEDUP_MIN_REGION", "4095", "4095'", "64K"},
        {"DEDUP_MIN_REGION", "2048G", "2048G'", "64K"},
        {"DEDUP_MIN_REGION", "18446744073709551616", "18446744073709551616'", "64K"},
        {"DEDUP_MIN_REGION", "17179869184G", "17179869184G'", "64K"},
        {"DEDUP_MIN_REGION", "", "'", "64K"},
        {"DEDUP_MALLOC_MIN", "1.5M", "1.5M'", "64K"},
        {"DEDUP_MALLOC_MIN", "1K", "1K'", "64K"},
        {"DEDUP_PAGES_TO_SCAN", "0", "0'", "2048"},
        {"DEDUP_PAGES_TO_SCAN", "-5", "-5'", "2048"},
        {"DEDUP_PAGES_TO_SCAN", "ten", "ten'", "2048"},
        {"DEDUP_PAGES_TO_SCAN", "1073741825", "1073741825'", "2048"},
        {"DEDUP_PAGES_TO_SCAN", "99999999999999999999999", "99999999999999999999999'", "2048"},
        {"DEDUP_PAGES_TO_SCAN", "4K", "4K'", "2048"},
        {"DEDUP_SLEEP_MS", "12ms", "12ms'", "20"},
        {"DEDUP_SLEEP_MS", "3600001", "3600001'", "20"},
        {"DEDUP_SLEEP_MS", "+5", "+5'", "20"},
        {"DEDUP_CPU_PERCENT", "101", "101'", "0 (off"},
        {"DEDUP_CPU_PERCENT", "10%", "10%'", "0 (off"},
        {"DEDUP_CPU_PERCENT", "0.5", "0.5'", "0 (off"},
        {"DEDUP_VMA_RESERVE", "2147483649", "2147483649'", "max_map_count/8"},
        {"DEDUP_VMA_RESERVE", "-1", "-1'", "max_map_count/8"},
        {"DEDUP_LOG", long300, long300.substr(0, 40), "stderr"},
        {"DEDUP_STATS_FILE", std::string(256, 'y'), std::string(40, 'y'), "none"},
        {"DEDUP_SUMMARY", "sometimes", "sometimes'", "auto"},
        {"DEDUP_SUMMARY", "", "'", "auto"},
        {"DEDUP_SERIES_FILE", std::string(300, 'z'), std::string(40, 'z'), "none"},
    };
    return v;
}

INSTANTIATE_TEST_SUITE_P(All, ConfigBadValue, testing::ValuesIn(bad_cases()),
                         [](const testing::TestParamInfo<BadCase>& info) {
                             return std::string(info.param.var) + "_" + std::to_string(info.index);
                         });


TEST(ConfigParse, SeveralBadValuesGiveOneLineEachAndKeepGoodOnes) {
    ParseResult r = parse_in_child({"DEDUP_SLEEP_MS=x", "DEDUP_PAGES_TO_SCAN=64", "DEDUP_SCOPE=nope",
                                    "DEDUP_MIN_REGION=8K", "DEDUP_MALLOC_MIN=8Q"});
    ASSERT_TRUE(r.ok);
    auto lines = split_lines(r.log);
    ASSERT_EQ(lines.size(), 3u) << r.log;
    int sleep = 0, scope = 0, malloc_min = 0;
    for (auto& l : lines) {
        sleep += l.find("DEDUP_SLEEP_MS='x'") != std::string::npos;
        scope += l.find("DEDUP_SCOPE='nope'") != std::string::npos;
        malloc_min += l.find("DEDUP_MALLOC_MIN='8Q'") != std::string::npos;
        EXPECT_NE(l.find("default"), std::string::npos) << l;
    }
    EXPECT_EQ(sleep, 1);
    EXPECT_EQ(scope, 1);
    EXPECT_EQ(malloc_min, 1);
    EXPECT_EQ(r.cfg.sleep_ms, 20u);
    EXPECT_EQ(r.cfg.pages_to_scan, 64u);
    EXPECT_EQ(r.cfg.scope, Scope::kAll);
    EXPECT_EQ(r.cfg.min_region, 8192u);
    EXPECT_EQ(r.cfg.malloc_min, 64u * 1024);
}

TEST(ConfigParse, ValidValuesProduceNoOutput) {
    ParseResult r = parse_in_child({"DEDUP_SLEEP_MS=1", "DEDUP_MIN_REGION=2M", "DEDUP_SCOPE=advised"});
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.log, "");
}

TEST(ConfigParse, ParseResultIndependentOfPreviousContents) {
    Config a, b;
    memset(static_cast<void*>(&a), 0x5a, sizeof(a));
    const char* envp[] = {"DEDUP_SLEEP_MS=3", nullptr};
    config_parse(envp, &a);
    config_parse(envp, &b);
    EXPECT_TRUE(same_config(a, b));
    EXPECT_EQ(a.sleep_ms, 3u);
}

TEST(ConfigParse, EnumWarningListsTheChoices) {
    ParseResult r = parse_in_child({"DEDUP_SUMMARY=loud", "DEDUP_SCOPE=some"});
    ASSERT_TRUE(r.ok);
    EXPECT_NE(r.log.find("DEDUP_SUMMARY='loud' is not 'auto', 'always' or 'never'; using default auto"), std::string::npos)
        << r.log;
    EXPECT_NE(r.log.find("DEDUP_SCOPE='some' is not 'all' or 'advised'; using default all"), std::string::npos) << r.log;
}

// ---------------------------------------------------------------- settings as JSON

TEST(ConfigJson, EveryOptionWithItsValue) {
    Config c = parse_quiet({"DEDUP_SCOPE=advised", "DEDUP_SLEEP_MS=7", "DEDUP_SITES=1", "DEDUP_SUMMARY=never",
                            "DEDUP_LOG=/tmp/a \"quoted\" \\path"});
    char buf[2048];
    size_t n = config_to_json(c, buf, sizeof(buf));
    ASSERT_GT(n, 0u);
    std::string j(buf, n);
    EXPECT_EQ(j.rfind("\"disable\": false, \"scope\": \"advised\", ", 0), 0u) << j;
    for (const char* want : {"\"min_region\": 65536", "\"sleep_ms\": 7", "\"sites\": true", "\"summary\": \"never\"",
                             "\"log\": \"/tmp/a \\\"quoted\\\" \\\\path\"", "\"stats_file\": \"\"", "\"series_file\": \"\"",
                             "\"stats_interval_ms\": 0", "\"vma_reserve\": 0"})
        EXPECT_NE(j.find(want), std::string::npos) << want << " in " << j;
    // Too small a buffer: nothing, and in bounds.
    char small[40];
    memset(small, 'x', sizeof(small));
    EXPECT_EQ(config_to_json(c, small, 20), 0u);
    EXPECT_EQ(small[0], 0);
    EXPECT_EQ(small[20], 'x');
}

TEST(ConfigRuntime, NumberSettingsWithTheOptionsRanges) {
    uint64_t v = 0;
    char err[160];
    EXPECT_TRUE(config_parse_runtime("sleep_ms", "0", &v, err, sizeof(err)));
    EXPECT_EQ(v, 0u);
    EXPECT_TRUE(config_parse_runtime("pages_to_scan", "100", &v, err, sizeof(err)));
    EXPECT_EQ(v, 100u);
    EXPECT_TRUE(config_parse_runtime("cpu_percent", "25", &v, err, sizeof(err)));
    EXPECT_EQ(v, 25u);
    EXPECT_FALSE(config_parse_runtime("cpu_percent", "101", &v, err, sizeof(err)));
    EXPECT_NE(strstr(err, "out of range [0, 100]"), nullptr) << err;
    EXPECT_FALSE(config_parse_runtime("pages_to_scan", "0", &v, err, sizeof(err)));
    EXPECT_FALSE(config_parse_runtime("sleep_ms", "soon", &v, err, sizeof(err)));
    EXPECT_NE(strstr(err, "not a valid number"), nullptr) << err;
    EXPECT_FALSE(config_parse_runtime("log", "off", &v, err, sizeof(err)));
    EXPECT_FALSE(config_parse_runtime("bogus", "1", &v, err, sizeof(err)));
    EXPECT_NE(strstr(err, "no setting bogus"), nullptr) << err;
}

// ---------------------------------------------------------------- log

TEST(Log, LineHasPrefixAndNewline) {
    int mfd = memfd_create("log-test", MFD_CLOEXEC);
    ASSERT_GE(mfd, 0);
    int old = log_fd();
    log_set_fd(mfd);
    EXPECT_EQ(log_fd(), mfd);
    log_line("hello %d %s", 42, "world");
    log_set_fd(-1);
    log_line("this goes nowhere");
    log_set_fd(old);
    EXPECT_EQ(read_all(mfd), "libdedup[" + std::to_string(getpid()) + "]: hello 42 world\n");
    close(mfd);
}

TEST(Log, LongMessageIsTruncatedToOneLine) {
    int mfd = memfd_create("log-test", MFD_CLOEXEC);
    ASSERT_GE(mfd, 0);
    int old = log_fd();
    log_set_fd(mfd);
    std::string big(5000, 'z');
    log_line("%s", big.c_str());
    log_set_fd(old);
    std::string got = read_all(mfd);
    close(mfd);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.back(), '\n');
    EXPECT_EQ(split_lines(got).size(), 1u);
    EXPECT_EQ(log_message(got).rfind("zzz", 0), 0u) << got.substr(0, 40);
    EXPECT_LE(got.size(), 1024u);
}

TEST(Log, AWarningIsPrintedOncePerProcess) {
    bool ok = false;
    std::string log = in_child_with_log([] {
        for (int i = 0; i < 3; ++i) log_warning("cannot open %s", "x");
        log_warning("cannot open %s", "y");
        log_line("a line is not a warning");
        log_line("a line is not a warning");
    }, &ok);
    ASSERT_TRUE(ok);
    auto lines = split_lines(log);
    ASSERT_EQ(lines.size(), 4u) << log;
    EXPECT_EQ(log_message(lines[0]), "cannot open x");
    EXPECT_EQ(log_message(lines[1]), "cannot open y");
}

TEST(Log, WarningsAreCapped) {
    bool ok = false;
    std::string log = in_child_with_log([] {
        for (int i = 0; i < 40; ++i) log_warning("w%d", i);
    }, &ok);
    ASSERT_TRUE(ok);
    auto lines = split_lines(log);
    size_t warnings = 0, suppressed = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
        if (log_message(lines[i]).rfind("w", 0) == 0) {
            ++warnings;
            EXPECT_EQ(suppressed, 0u) << "warning after the suppression notice";
        } else if (log_message(lines[i]) == "further warnings suppressed") {
            ++suppressed;
        } else {
            ADD_FAILURE() << "unexpected line " << lines[i];
        }
    }
    EXPECT_EQ(suppressed, 1u);
    EXPECT_GE(warnings, 1u);
    EXPECT_LE(warnings, 32u);
    // The parent runs no warning-producing code in-process, so the child
    // started from a fresh counter.
    EXPECT_EQ(warnings, 32u);
}

// ---------------------------------------------------------------- parse_uint / parse_size

TEST(ParseUint, Valid) {
    uint64_t v = 7;
    EXPECT_TRUE(parse_uint("0", &v));
    EXPECT_EQ(v, 0u);
    EXPECT_TRUE(parse_uint("42", &v));
    EXPECT_EQ(v, 42u);
    EXPECT_TRUE(parse_uint("0000123", &v));
    EXPECT_EQ(v, 123u);
    EXPECT_TRUE(parse_uint("18446744073709551615", &v));
    EXPECT_EQ(v, UINT64_MAX);
    EXPECT_TRUE(parse_uint("18446744073709551610", &v));
    EXPECT_EQ(v, UINT64_MAX - 5);
}

TEST(ParseUint, Invalid) {
    for (const char* s : {"", "-1", "+1", " 1", "1 ", "1.0", "0x10", "abc", "12K", "18446744073709551616",
                          "18446744073709551620", "99999999999999999999999"}) {
        uint64_t v = 77;
        EXPECT_FALSE(parse_uint(s, &v)) << "'" << s << "'";
        EXPECT_EQ(v, 77u) << "output written on failure for '" << s << "'";
    }
    uint64_t v = 5;
    EXPECT_FALSE(parse_uint(nullptr, &v));
    EXPECT_EQ(v, 5u);
}

TEST(ParseSize, Valid) {
    struct {
        const char* s;
        uint64_t want;
    } cases[] = {
        {"0", 0},
        {"1", 1},
        {"0K", 0},
        {"12K", 12 << 10},
        {"12k", 12 << 10},
        {"5M", 5ull << 20},
        {"5m", 5ull << 20},
        {"7G", 7ull << 30},
        {"7g", 7ull << 30},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183G", (17179869183ull) << 30},
        {"17592186044415M", 17592186044415ull << 20},
        {"18014398509481983K", 18014398509481983ull << 10},
    };
    for (auto& c : cases) {
        uint64_t v = 99;
        EXPECT_TRUE(parse_size(c.s, &v)) << c.s;
        EXPECT_EQ(v, c.want) << c.s;
    }
}

TEST(ParseSize, Invalid) {
    for (const char* s : {"", "K", "M", "G", "12KB", "12KiB", "1T", "1.5M", "-1", "-1K", " 1K", "1K ", "K1",
                          "1KK", "18446744073709551616", "17179869184G", "17592186044416M",
                          "18014398509481984K", "abc", "0x10"}) {
        uint64_t v = 77;
        EXPECT_FALSE(parse_size(s, &v)) << "'" << s << "'";
        EXPECT_EQ(v, 77u) << "output written on failure for '" << s << "'";
    }
    uint64_t v = 5;
    EXPECT_FALSE(parse_size(nullptr, &v));
    EXPECT_EQ(v, 5u);
}
