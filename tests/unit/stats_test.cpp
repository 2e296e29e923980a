// The exit report: JSON and the stats file.
#include <gtest/gtest.h>

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <map>
#include <string>
#include <vector>

#include "scanner/log.h"
#include "scanner/report_files.h"
#include "scanner/stats.h"
#include "tests/unit/log_lines.h"

using namespace dedup;

namespace {

// A strict little JSON parser: validates the whole document and returns the
// top-level object's members as raw text (numbers as printed, strings
// decoded, arrays/objects as their source text).
struct Json {
    const std::string& s;
    size_t i = 0;
    explicit Json(const std::string& text) : s(text) {}
    void ws() { while (i < s.size() && isspace((unsigned char)s[i])) ++i; }
    bool lit(const char* w) {
        size_t n = strlen(w);
        if (s.compare(i, n, w) != 0) return false;
        i += n;
        return true;
    }
    bool string(std::string* out) {
        if (i >= s.size() || s[i] != '"') return false;
        ++i;
        while (i < s.size() && s[i] != '"') {
            if ((unsigned char)s[i] < 0x20) return false;  // raw control character
            if (s[i] == '\\') {
                ++i;
                if (i >= s.size()) return false;
                char c = s[i];
                if (c == 'u') {
                    if (i + 4 >= s.size()) return false;
                    for (int k = 1; k <= 4; ++k)
                        if (!isxdigit((unsigned char)s[i + k])) return false;
                    i += 4;
                    if (out) out->push_back('?');
                } else if (strchr("\"\\/bfnrt", c)) {
                    if (out) out->push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c);
                } else {
                    return false;
                }
                ++i;
                continue;
            }
            if (out) out->push_back(s[i]);
            ++i;
        }
        if (i >= s.size()) return false;
        ++i;
        return true;
    }
    bool number() {
        size_t b = i;
        if (i < s.size() && s[i] == '-') ++i;
        size_t d = i;
        while (i < s.size() && isdigit((unsigned char)s[i])) ++i;
        if (i == d) return false;
        if (s[d] == '0' && i - d > 1) return false;  // leading zero
        if (i < s.size() && s[i] == '.') {
            ++i;
            size_t f = i;
            while (i < s.size() && isdigit((unsigned char)s[i])) ++i;
            if (i == f) return false;
        }
        if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
            ++i;
            if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
            size_t e = i;
            while (i < s.size() && isdigit((unsigned char)s[i])) ++i;
            if (i == e) return false;
        }
        return i > b;
    }
    bool value(std::map<std::string, std::string>* members, std::vector<std::map<std::string, std::string>>* arr) {
        ws();
        if (i >= s.size()) return false;
        char c = s[i];
        if (c == '{') return object(members);
        if (c == '[') {
            ++i;
            ws();
            if (i < s.size() && s[i] == ']') { ++i; return true; }
            for (;;) {
                std::map<std::string, std::string> elem;
                if (!value(&elem, nullptr)) return false;
                if (arr) arr->push_back(elem);
                ws();
                if (i < s.size() && s[i] == ',') { ++i; continue; }
                if (i < s.size() && s[i] == ']') { ++i; return true; }
                return false;
            }
        }
        if (c == '"') return string(nullptr);
        if (lit("true") || lit("false") || lit("null")) return true;
        return number();
    }
    bool object(std::map<std::string, std::string>* members) {
        if (s[i] != '{') return false;
        ++i;
        ws();
        if (i < s.size() && s[i] == '}') { ++i; return true; }
        for (;;) {
            ws();
            std::string key;
            if (!string(&key)) return false;
            if (members && members->count(key)) return false;  // duplicate key
            ws();
            if (i >= s.size() || s[i] != ':') return false;
            ++i;
            ws();
            size_t b = i;
            if (i < s.size() && s[i] == '"') {
                std::string str;
                if (!string(&str)) return false;
                if (members) (*members)[key] = str;
            } else {
                if (!value(nullptr, nullptr)) return false;
                if (members) (*members)[key] = s.substr(b, i - b);
            }
            ws();
            if (i < s.size() && s[i] == ',') { ++i; continue; }
            if (i < s.size() && s[i] == '}') { ++i; return true; }
            return false;
        }
    }
};

bool parse_flat_json(const std::string& s, std::map<std::string, std::string>* out) {
    Json j(s);
    j.ws();
    if (j.i >= s.size() || s[j.i] != '{') return false;
    if (!j.object(out)) return false;
    j.ws();
    return j.i == s.size();
}

// The elements (objects) of the array held by a top-level member.
bool parse_array_member(const std::string& array_text, std::vector<std::map<std::string, std::string>>* out) {
    Json j(array_text);
    if (!j.value(nullptr, out)) return false;
    j.ws();
    return j.i == array_text.size();
}

Report sample_report() {
    Report r{};  // fields added later start at zero
    r.seconds = 12.5;
    r.pages_registered = 1001;
    r.pages_scanned = 1002;
    r.full_scans = 1003;
    r.pages_shared = 1004;
    r.pages_sharing = 1005;
    r.pages_unshared = 1006;
    r.pages_volatile = 1007;
    r.zero_pages = 1008;
    r.cow_breaks = 1009;
    r.bytes_saved = 1010;
    r.bytes_saved_peak = 1011;
    r.merge_failures = 1012;
    r.vma_budget_skips = 1013;
    r.pinned_skips = 1021;
    r.merge_runs = 1014;
    r.pages_merged = 1015;
    r.unmerged_pages = 1016;
    r.registered_bytes_total = 1017;
    r.scanner_cpu_seconds = 3.25;
    r.vmas_used = 1018;
    r.vma_limit = 1019;
    r.metadata_bytes = 1020;
    r.ksm_merging_pages = 1022;
    r.general_profit = -1023;
    r.run = 2;
    r.settings.sleep_ms = 1024;
    return r;
}

const std::map<std::string, std::string> kExpected = {
    {"seconds", "12.500"},          {"pages_registered", "1001"},      {"pages_scanned", "1002"},
    {"full_scans", "1003"},         {"pages_shared", "1004"},          {"pages_sharing", "1005"},
    {"pages_unshared", "1006"},     {"pages_volatile", "1007"},        {"zero_pages", "1008"},
    {"cow_breaks", "1009"},         {"bytes_saved", "1010"},           {"bytes_saved_peak", "1011"},
    {"merge_failures", "1012"},     {"vma_budget_skips", "1013"},      {"merge_runs", "1014"},
    {"pages_merged", "1015"},       {"unmerged_pages", "1016"},        {"registered_bytes_total", "1017"},
    {"scanner_cpu_seconds", "3.250"}, {"vmas_used", "1018"},           {"vma_limit", "1019"},
    {"metadata_bytes", "1020"},     {"pinned_skips", "1021"},          {"ksm_merging_pages", "1022"},
    {"general_profit", "-1023"},
};

std::string read_file(const std::string& path) {
    FILE* f = fopen(path.c_str(), "r");
    if (!f) return "<missing>";
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    fclose(f);
    return out;
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (struct dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) out.push_back(e->d_name);
    closedir(d);
    return out;
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/dedup-stats-test-XXXXXX";
        char* p = mkdtemp(tmpl);
        if (p) path = p;
    }
    ~TempDir() {
        for (auto& n : list_dir(path)) unlink((path + "/" + n).c_str());
        rmdir(path.c_str());
    }
};

}  // namespace

TEST(StatsJson, ContainsEveryKeyWithItsValue) {
    Report r = sample_report();
    char buf[4096];
    size_t n = report_to_json(r, buf, sizeof(buf));
    ASSERT_GT(n, 0u);
    ASSERT_EQ(n, strlen(buf));
    std::string json(buf, n);
    std::map<std::string, std::string> got;
    ASSERT_TRUE(parse_flat_json(json, &got)) << json;
    for (const char* key : {"pages_registered", "pages_scanned", "full_scans", "pages_shared", "pages_sharing",
                            "pages_unshared", "pages_volatile", "zero_pages", "cow_breaks", "bytes_saved",
                            "bytes_saved_peak", "scanner_cpu_seconds", "vmas_used", "merge_failures"})
        EXPECT_TRUE(got.count(key)) << "missing key " << key << " in " << json;
    for (auto& kv : kExpected) {
        auto it = got.find(kv.first);
        ASSERT_NE(it, got.end()) << kv.first;
        EXPECT_EQ(it->second, kv.second) << kv.first;
    }
    // The settings: every option's value, and KSM's run.
    std::map<std::string, std::string> settings;
    ASSERT_TRUE(parse_flat_json(got["settings"], &settings)) << got["settings"];
    EXPECT_EQ(settings["sleep_ms"], "1024");
    EXPECT_EQ(settings["pages_to_scan"], "2048");
    EXPECT_EQ(settings["scope"], "all");
    EXPECT_EQ(settings["run"], "2");
    EXPECT_EQ(json.rfind("{\"schema\": 1, ", 0), 0u) << json;
}

TEST(StatsJson, LargeAndZeroValues) {
    Report r = sample_report();
    r.bytes_saved = UINT64_MAX;
    r.pages_sharing = 0;
    r.seconds = 0;
    char buf[4096];
    std::string json(buf, report_to_json(r, buf, sizeof(buf)));
    std::map<std::string, std::string> got;
    ASSERT_TRUE(parse_flat_json(json, &got)) << json;
    EXPECT_EQ(got["bytes_saved"], "18446744073709551615");
    EXPECT_EQ(got["pages_sharing"], "0");
    EXPECT_EQ(got["seconds"], "0.000");
}

TEST(StatsJson, SmallBufferStaysInBounds) {
    Report r = sample_report();
    char buf[64];
    memset(buf, 'x', sizeof(buf));
    size_t n = report_to_json(r, buf, 32);
    EXPECT_LT(n, 32u);
    EXPECT_LT(strnlen(buf, 32), 32u) << "not NUL-terminated inside the buffer";
    for (size_t i = 32; i < sizeof(buf); ++i) ASSERT_EQ(buf[i], 'x') << "wrote past cap at " << i;
}

TEST(StatsJson, SitesAreAValidEscapedArray) {
    Report r = sample_report();
    r.nsites = 3;
    r.site_bytes[0] = 4096;
    r.site_bytes[1] = 8192;
    r.site_bytes[2] = 1;
    snprintf(r.site_text[0], sizeof(r.site_text[0]), "main at prog.c:12");
    snprintf(r.site_text[1], sizeof(r.site_text[1]), "quote \" and back\\slash in f(\"x\")");
    snprintf(r.site_text[2], sizeof(r.site_text[2]), "tab\there newline\nend");
    char buf[8192];
    std::string json(buf, report_to_json(r, buf, sizeof(buf)));
    std::map<std::string, std::string> got;
    ASSERT_TRUE(parse_flat_json(json, &got)) << json;
    EXPECT_EQ(got["cow_breaks"], "1009");
    ASSERT_TRUE(got.count("sites")) << json;
    std::vector<std::map<std::string, std::string>> sites;
    ASSERT_TRUE(parse_array_member(got["sites"], &sites)) << got["sites"];
    ASSERT_EQ(sites.size(), 3u) << json;
    EXPECT_EQ(sites[0]["bytes"], "4096");
    EXPECT_EQ(sites[0]["site"], "main at prog.c:12");
    EXPECT_EQ(sites[1]["bytes"], "8192");
    EXPECT_EQ(sites[1]["site"], "quote \" and back\\slash in f(\"x\")");
    EXPECT_EQ(sites[2]["bytes"], "1");
    EXPECT_NE(sites[2]["site"].find("end"), std::string::npos);
}

TEST(StatsFile, WritesAtomicallyAndLeavesNoTempFile) {
    TempDir d;
    ASSERT_FALSE(d.path.empty());
    std::string path = d.path + "/stats.json";
    Report r = sample_report();
    ASSERT_EQ(report_write_file(r, path.c_str()), 0);
    std::string content = read_file(path);
    char buf[4096];
    std::string want(buf, report_to_json(r, buf, sizeof(buf)));
    EXPECT_EQ(content, want);
    std::map<std::string, std::string> got;
    EXPECT_TRUE(parse_flat_json(content, &got)) << content;
    EXPECT_EQ(got["cow_breaks"], "1009");
    auto files = list_dir(d.path);
    ASSERT_EQ(files.size(), 1u) << "temp file left behind: " << (files.size() > 1 ? files[1] : "");
    EXPECT_EQ(files[0], "stats.json");
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777 & ~0022u, 0644u & ~0022u);

    // Overwrite an existing (longer) file: replaced whole, not appended or merged.
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::string junk(8000, '#');
    fputs(junk.c_str(), f);
    fclose(f);
    r.cow_breaks = 42;
    ASSERT_EQ(report_write_file(r, path.c_str()), 0);
    content = read_file(path);
    got.clear();
    EXPECT_TRUE(parse_flat_json(content, &got)) << content;
    EXPECT_EQ(got["cow_breaks"], "42");
    EXPECT_EQ(content.find('#'), std::string::npos);
    EXPECT_EQ(list_dir(d.path).size(), 1u);
}

TEST(StatsFile, ReplacesBySymlinkSafeRename) {
    // The rename replaces the directory entry: a reader holding the old file
    // open still sees the old complete content (never a half-written one).
    TempDir d;
    std::string path = d.path + "/s.json";
    Report r = sample_report();
    ASSERT_EQ(report_write_file(r, path.c_str()), 0);
    FILE* old = fopen(path.c_str(), "r");
    ASSERT_NE(old, nullptr);
    r.full_scans = 7;
    ASSERT_EQ(report_write_file(r, path.c_str()), 0);
    std::string old_content;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), old)) > 0) old_content.append(buf, n);
    fclose(old);
    std::map<std::string, std::string> a, b;
    ASSERT_TRUE(parse_flat_json(old_content, &a));
    ASSERT_TRUE(parse_flat_json(read_file(path), &b));
    EXPECT_EQ(a["full_scans"], "1003");
    EXPECT_EQ(b["full_scans"], "7");
}

TEST(StatsFile, ErrorsAreReportedAndLeaveNothing) {
    TempDir d;
    Report r = sample_report();
    std::string missing = d.path + "/no/such/dir/stats.json";
    long rc = report_write_file(r, missing.c_str());
    EXPECT_EQ(rc, -2) << "want -ENOENT";
    EXPECT_TRUE(list_dir(d.path).empty());
    // Target is a directory: rename fails; the temp file must be removed.
    std::string dir_target = d.path + "/adir";
    ASSERT_EQ(mkdir(dir_target.c_str(), 0755), 0);
    rc = report_write_file(r, dir_target.c_str());
    EXPECT_LT(rc, 0);
    auto files = list_dir(d.path);
    ASSERT_EQ(files.size(), 1u) << "temp file left behind after a failed rename";
    EXPECT_EQ(files[0], "adir");
    rmdir(dir_target.c_str());
}

TEST(StatsLog, SummaryGoesToTheLog) {
    int mfd = memfd_create("stats-log", MFD_CLOEXEC);
    ASSERT_GE(mfd, 0);
    int old = log_fd();
    log_set_fd(mfd);
    Report r = sample_report();
    r.vma_budget_skips = 0;
    report_to_log(r);
    r.vma_budget_skips = 5;
    report_to_log(r);
    log_set_fd(old);
    char buf[8192] = {0};
    ssize_t n = pread(mfd, buf, sizeof(buf) - 1, 0);
    close(mfd);
    ASSERT_GT(n, 0);
    std::string log(buf, (size_t)n);
    size_t lines = 0, pos = 0;
    while ((pos = log.find('\n', pos)) != std::string::npos) ++lines, ++pos;
    EXPECT_EQ(lines, 4u + 5u) << log;
    size_t start = 0;
    while (start < log.size()) {
        EXPECT_GT(log_prefix_len(log, start), 0u) << log.substr(start, 40);
        start = log.find('\n', start) + 1;
    }
    EXPECT_NE(log.find("pages_shared 1004"), std::string::npos) << log;
    EXPECT_NE(log.find("pages_sharing 1005"), std::string::npos) << log;
    EXPECT_NE(log.find("copy-on-write breaks 1009"), std::string::npos) << log;
    EXPECT_NE(log.find("VMA budget (5 pages in the last pass"), std::string::npos) << log;
}

// Whose report the stats file is (scanner/report_files.h).
TEST(StatsFileOwner, AProcessWithNothingToTellLeavesAnothersFreshReport) {
    Report helper{};
    helper.pid = 100;
    helper.pidns = 7;
    helper.registered_bytes_total = 5u << 20;
    helper.bytes_saved_peak = 4096;  // a launcher gives back a zero page or two
    const uint64_t started = 100000ull * 1000000000ull;
    const std::string program = "{\"schema\": 1, \"version\": \"1\", \"comm\": \"prog\", \"pid\": 101, \"pidns\": 7, \"seconds\": 1.0}";
    const std::string own = "{\"schema\": 1, \"version\": \"1\", \"comm\": \"sh\", \"pid\": 100, \"pidns\": 7}";
    const std::string other_ns = "{\"schema\": 1, \"comm\": \"sh\", \"pid\": 100, \"pidns\": 8}";
    auto ours = [&](const Report& r, const std::string& text, uint64_t mtime) {
        return stats_file_ours_to_write(r, text.data(), text.size(), mtime, started);
    };
    EXPECT_FALSE(ours(helper, program, started + 1)) << "the program's fresh report";
    EXPECT_FALSE(ours(helper, other_ns, started + 1)) << "the same pid in another PID namespace";
    EXPECT_TRUE(ours(helper, own, started + 1)) << "its own earlier refresh";
    EXPECT_TRUE(ours(helper, program, started - 3600ull * 1000000000ull)) << "an earlier run's report";
    EXPECT_TRUE(ours(helper, "not json", started + 1));
    EXPECT_TRUE(ours(helper, "", started + 1));
    Report saver = helper;
    saver.bytes_saved_peak = kWorthSavedBytes;
    EXPECT_TRUE(ours(saver, program, started + 1)) << "a process with something to tell always writes";
    Report big = helper;
    big.registered_bytes_total = kWorthRegisteredBytes;
    EXPECT_TRUE(ours(big, program, started + 1));
}
