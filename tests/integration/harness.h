// Helpers for the libdedup integration tests: spawning a test program with a
// controlled environment (fork/execve, stdin/stdout pipes, stderr to a file,
// timeout with SIGKILL), a ready/release handshake so that a test can look at
// the child from outside while it waits, "key=value" stdout parsing, and
// /proc readers for another process.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace dt {

inline double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

// The shim's live file of process pid (in this PID namespace).
inline std::string live_file_path(pid_t pid) {
    struct stat st;
    unsigned long ns = stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long)st.st_ino : 0;
    return "/dev/shm/libdedup." + std::to_string(ns) + "." + std::to_string(pid) + ".json";
}

inline bool file_exists(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

inline std::string read_file(const std::string& p, bool* ok = nullptr) {
    std::ifstream f(p, std::ios::binary);
    if (ok) *ok = bool(f);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Absolute path of the library under test (DEDUP_LIB); empty if unset.
inline std::string lib() {
    const char* p = getenv("DEDUP_LIB");
    return p ? p : "";
}

// A deliberately broken test build: the path in env, or file next to
// DEDUP_LIB when that variable is not set.
inline std::string variant_lib(const char* env, const char* file) {
    const char* p = getenv(env);
    if (p && *p) return p;
    std::string l = lib();
    size_t slash = l.rfind('/');
    if (slash == std::string::npos) return "";
    return l.substr(0, slash + 1) + file;
}

// The merge without write protection (loses writes under races).
inline std::string broken_lib() { return variant_lib("DEDUP_LIB_BROKEN", "libdedup-broken.so"); }

inline std::string programs_dir() {
    const char* p = getenv("DEDUP_PROGRAMS");
    return p ? p : "build/programs";
}

inline std::string prog(const std::string& name) { return programs_dir() + "/" + name; }

// The repository (DEDUP_PROGRAMS is <repo>/build/programs), for its scripts.
inline std::string repo_root() {
    std::string p = programs_dir();
    for (int i = 0; i < 2; i++) {
        size_t slash = p.rfind('/');
        if (slash == std::string::npos) return ".";
        p = p.substr(0, slash);
    }
    return p;
}

// A shell command's stdout; *status gets its wait status.
inline std::string capture(const std::string& cmd, int* status) {
    std::string out;
    FILE* f = popen(cmd.c_str(), "r");
    if (!f) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    int st = pclose(f);
    if (status) *status = st;
    return out;
}

// Skips the current test when the library or the programs are missing.
#define DT_REQUIRE_LIB()                                                                  \
    do {                                                                                  \
        if (dt::lib().empty() || !dt::file_exists(dt::lib()))                             \
            GTEST_SKIP() << "DEDUP_LIB not set or missing: '" << dt::lib() << "'";        \
    } while (0)

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/dedup-it-XXXXXX";
        char* p = mkdtemp(tmpl);
        if (p) path_ = p;
    }
    ~TempDir() {
        if (path_.empty()) return;
        if (DIR* d = opendir(path_.c_str())) {
            while (struct dirent* e = readdir(d)) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                unlink((path_ + "/" + e->d_name).c_str());
            }
            closedir(d);
        }
        rmdir(path_.c_str());
    }
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

struct Options {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;  // extra environment (DEDUP_* ...)
    std::string preload;                     // LD_PRELOAD value, "" for none
    int timeout_ms = 90000;
    bool stats = true;  // set DEDUP_STATS_FILE to a fresh file unless env has one
};

// The usual options: the library under test, scanner at full speed and
// started at the first registration (the tests' regions are small; the
// default DEDUP_START_MIN has its own tests in start_test.cpp).
inline Options with_lib(std::vector<std::string> args,
                        std::map<std::string, std::string> env = {}) {
    Options o;
    o.args = std::move(args);
    o.preload = lib();
    // DEDUP_BUSY_WAIT_MS=0: the writers of a race keep the CPUs busy, and
    // the scanner must race them from the start (busy_wait_test.cpp tests
    // the wait).
    o.env = {{"DEDUP_SLEEP_MS", "0"}, {"DEDUP_START_MIN", "0"}, {"DEDUP_BUSY_WAIT_MS", "0"}};
    for (auto& kv : env) o.env[kv.first] = kv.second;
    return o;
}

inline Options without_lib(std::vector<std::string> args) {
    Options o;
    o.args = std::move(args);
    o.stats = false;
    return o;
}

inline std::map<std::string, std::string> parse_kv(const std::string& out) {
    std::map<std::string, std::string> kv;
    std::istringstream is(out);
    std::string line;
    while (std::getline(is, line)) {
        size_t eq = line.find('=');
        if (eq == std::string::npos || eq == 0) continue;
        kv[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return kv;
}

inline std::vector<std::string> lines(const std::string& s) {
    std::vector<std::string> v;
    std::istringstream is(s);
    std::string line;
    while (std::getline(is, line)) v.push_back(line);
    return v;
}

struct Result {
    bool started = false;
    bool timed_out = false;
    int exit_code = -1;  // -1 when killed by a signal
    int term_sig = 0;
    double seconds = 0;
    std::string out, err;
    std::map<std::string, std::string> kv;
    std::string stats_path;  // "" when no stats file was requested
    pid_t pid = -1;

    bool ok() const { return started && !timed_out && exit_code == 0; }
    bool has(const std::string& k) const { return kv.count(k) != 0; }
    std::string str(const std::string& k) const {
        auto it = kv.find(k);
        return it == kv.end() ? std::string() : it->second;
    }
    // Numeric value of a stdout key; NaN-like sentinel -1e300 if absent.
    double num(const std::string& k) const {
        auto it = kv.find(k);
        if (it == kv.end()) return -1e300;
        return strtod(it->second.c_str(), nullptr);
    }
    std::string describe() const {
        std::ostringstream os;
        os << "pid " << pid << ", ";
        if (!started)
            os << "did not start";
        else if (timed_out)
            os << "TIMED OUT (killed)";
        else if (exit_code >= 0)
            os << "exit code " << exit_code;
        else
            os << "killed by signal " << term_sig << " (" << strsignal(term_sig) << ")";
        os << " after " << seconds << " s\n--- stdout ---\n"
           << (out.size() > 6000 ? out.substr(0, 6000) + "\n[...]" : out)
           << "\n--- stderr ---\n"
           << (err.size() > 6000 ? err.substr(0, 3000) + "\n[...]\n" + err.substr(err.size() - 3000)
                                 : err)
           << "\n--------------";
        return os.str();
    }
};

class Child {
public:
    Child(const std::string& program, const Options& o, const TempDir& tmp) {
        static int seq = 0;
        seq++;
        timeout_ms_ = o.timeout_ms;
        res_.pid = -1;
        std::string errpath = tmp.file("stderr-" + std::to_string(seq));
        errpath_ = errpath;

        std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C",
                                        "HOME=" + tmp.path()};
        bool stats_given = o.env.count("DEDUP_STATS_FILE") != 0;
        for (auto& kv : o.env) env.push_back(kv.first + "=" + kv.second);
        if (o.stats && !stats_given) {
            res_.stats_path = tmp.file("stats-" + std::to_string(seq) + ".json");
            env.push_back("DEDUP_STATS_FILE=" + res_.stats_path);
        } else if (stats_given) {
            res_.stats_path = o.env.at("DEDUP_STATS_FILE");
        }
        if (!o.preload.empty()) env.push_back("LD_PRELOAD=" + o.preload);

        std::vector<std::string> argv = {program};
        for (auto& a : o.args) argv.push_back(a);
        std::vector<char*> av, ev;
        for (auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
        av.push_back(nullptr);
        for (auto& e : env) ev.push_back(const_cast<char*>(e.c_str()));
        ev.push_back(nullptr);

        int in[2], out[2];
        if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) return;
        int errfd = open(errpath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (errfd < 0) return;
        fflush(nullptr);
        t0_ = now_s();
        pid_t pid = fork();
        if (pid < 0) return;
        if (pid == 0) {
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(errfd, 2);
            execve(program.c_str(), av.data(), ev.data());
            dprintf(2, "execve %s: %s\n", program.c_str(), strerror(errno));
            _exit(127);
        }
        close(in[0]);
        close(out[1]);
        close(errfd);
        in_ = in[1];
        out_ = out[0];
        fcntl(out_, F_SETFL, O_NONBLOCK);
        res_.pid = pid;
        res_.started = true;
    }

    ~Child() {
        if (res_.pid > 0 && !reaped_) {
            kill(res_.pid, SIGKILL);
            int st;
            waitpid(res_.pid, &st, 0);
        }
        if (in_ >= 0) close(in_);
        if (out_ >= 0) close(out_);
    }

    pid_t pid() const { return res_.pid; }
    const std::string& out_so_far() const { return res_.out; }

    // Reads stdout until the line "ready=<tag>" appears; false on EOF/timeout.
    bool wait_ready(const std::string& tag, int timeout_ms = 60000) {
        std::string want = "ready=" + tag + "\n";
        double end = now_s() + timeout_ms / 1000.0;
        for (;;) {
            size_t pos = res_.out.find(want, scan_from_);
            if (pos != std::string::npos && (pos == 0 || res_.out[pos - 1] == '\n')) {
                scan_from_ = pos + want.size();
                return true;
            }
            if (eof_ || now_s() > end) return false;
            pump(end);
        }
    }

    // Lets a program blocked in dt_ready() go on.
    void release() {
        if (in_ >= 0 && write(in_, "g", 1) != 1) {
        }
    }

    Result finish() {
        if (in_ >= 0) {
            close(in_);
            in_ = -1;
        }
        double end = t0_ + timeout_ms_ / 1000.0;
        while (!eof_ && now_s() < end) pump(end);
        int st = 0;
        for (;;) {
            pid_t r = waitpid(res_.pid, &st, WNOHANG);
            if (r == res_.pid) break;
            if (r < 0 && errno != EINTR) break;
            if (now_s() > end) {
                res_.timed_out = true;
                kill(res_.pid, SIGKILL);
                waitpid(res_.pid, &st, 0);
                break;
            }
            usleep(5000);
        }
        reaped_ = true;
        res_.seconds = now_s() - t0_;
        if (WIFEXITED(st)) res_.exit_code = WEXITSTATUS(st);
        if (WIFSIGNALED(st)) {
            res_.exit_code = -1;
            res_.term_sig = WTERMSIG(st);
        }
        while (!eof_ && pump(now_s() + 0.2)) {
        }
        res_.err = read_file(errpath_);
        res_.kv = parse_kv(res_.out);
        return res_;
    }

private:
    // Reads what is available on stdout, waiting until `end` at most.
    bool pump(double end) {
        int ms = int((end - now_s()) * 1000);
        if (ms < 0) ms = 0;
        if (ms > 100) ms = 100;
        struct pollfd p = {out_, POLLIN, 0};
        int r = poll(&p, 1, ms);
        if (r <= 0) return false;
        char buf[65536];
        ssize_t n = read(out_, buf, sizeof buf);
        if (n > 0) {
            res_.out.append(buf, size_t(n));
            return true;
        }
        if (n == 0) eof_ = true;
        return false;
    }

    Result res_;
    int in_ = -1, out_ = -1;
    bool eof_ = false, reaped_ = false;
    size_t scan_from_ = 0;
    int timeout_ms_ = 90000;
    double t0_ = 0;
    std::string errpath_;
};

inline Result run(const std::string& program, const Options& o, const TempDir& tmp) {
    Child c(program, o, tmp);
    return c.finish();
}

// ---- flat JSON ----------------------------------------------------------

// Parses one flat JSON object {"k": number|string|true|false|null, ...}.
// Numbers go to `nums`, strings (and nested arrays/objects, raw) to `strs`.
// Returns false (and sets *error) on malformed input or trailing garbage.
inline bool parse_flat_json(const std::string& s, std::map<std::string, double>* nums,
                            std::map<std::string, std::string>* strs, std::string* error) {
    size_t i = 0;
    auto ws = [&] {
        while (i < s.size() && isspace((unsigned char)s[i])) i++;
    };
    auto fail = [&](const std::string& m) {
        if (error) *error = m + " at offset " + std::to_string(i);
        return false;
    };
    auto str = [&](std::string* o) {
        if (i >= s.size() || s[i] != '"') return false;
        i++;
        while (i < s.size() && s[i] != '"') {
            if (s[i] == '\\') {
                if (++i >= s.size()) return false;
                char c = s[i];
                if (c == 'n') o->push_back('\n');
                else if (c == 't') o->push_back('\t');
                else if (c == 'u') { i += 4; o->push_back('?'); }
                else o->push_back(c);
                i++;
            } else {
                o->push_back(s[i++]);
            }
        }
        if (i >= s.size()) return false;
        i++;
        return true;
    };
    ws();
    if (i >= s.size() || s[i] != '{') return fail("expected '{'");
    i++;
    ws();
    if (i < s.size() && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            ws();
            std::string key;
            if (!str(&key)) return fail("expected a key string");
            ws();
            if (i >= s.size() || s[i] != ':') return fail("expected ':'");
            i++;
            ws();
            if (i < s.size() && s[i] == '"') {
                std::string v;
                if (!str(&v)) return fail("bad string value");
                (*strs)[key] = v;
            } else if (s.compare(i, 4, "true") == 0) {
                (*nums)[key] = 1;
                i += 4;
            } else if (s.compare(i, 5, "false") == 0) {
                (*nums)[key] = 0;
                i += 5;
            } else if (s.compare(i, 4, "null") == 0) {
                i += 4;
            } else if (s[i] == '[' || s[i] == '{') {
                // A nested value (the "sites" array): kept raw, skipped over
                // with bracket matching that respects strings.
                size_t start = i;
                int depth = 0;
                bool in_str = false;
                for (; i < s.size(); i++) {
                    char c = s[i];
                    if (in_str) {
                        if (c == '\\') i++;
                        else if (c == '"') in_str = false;
                    } else if (c == '"') {
                        in_str = true;
                    } else if (c == '[' || c == '{') {
                        depth++;
                    } else if ((c == ']' || c == '}') && --depth == 0) {
                        i++;
                        break;
                    }
                }
                if (depth != 0) return fail("unterminated value for key '" + key + "'");
                (*strs)[key] = s.substr(start, i - start);
            } else {
                const char* b = s.c_str() + i;
                char* e = nullptr;
                double v = strtod(b, &e);
                if (e == b) return fail("bad value for key '" + key + "'");
                if (nums->count(key)) return fail("duplicate key '" + key + "'");
                (*nums)[key] = v;
                i += size_t(e - b);
            }
            ws();
            if (i < s.size() && s[i] == ',') {
                i++;
                continue;
            }
            if (i < s.size() && s[i] == '}') {
                i++;
                break;
            }
            return fail("expected ',' or '}'");
        }
    }
    ws();
    if (i != s.size()) return fail("trailing data");
    return true;
}

struct Stats {
    bool present = false, parsed = false;
    std::string text, error;
    std::map<std::string, double> n;
    std::map<std::string, std::string> s;
    bool has(const std::string& k) const { return n.count(k) != 0; }
    double operator[](const std::string& k) const {
        auto it = n.find(k);
        return it == n.end() ? -1e300 : it->second;
    }
};

inline Stats load_stats(const std::string& path) {
    Stats st;
    if (path.empty()) return st;
    bool ok = false;
    st.text = read_file(path, &ok);
    st.present = ok;
    if (ok) st.parsed = parse_flat_json(st.text, &st.n, &st.s, &st.error);
    return st;
}

inline Stats load_stats(const Result& r) { return load_stats(r.stats_path); }

inline const std::vector<std::string>& required_stats_keys() {
    static const std::vector<std::string> k = {
        "pages_registered", "pages_scanned",  "full_scans",          "pages_shared",
        "pages_sharing",    "pages_unshared", "pages_volatile",      "zero_pages",
        "cow_breaks",       "bytes_saved",    "bytes_saved_peak",    "scanner_cpu_seconds",
        "vmas_used",        "merge_failures", "thp_splits",          "store_rotations",
        "fork_kept_pages"};
    return k;
}

// ---- /proc of another process -------------------------------------------

inline std::vector<std::string> thread_names(pid_t pid) {
    std::vector<std::string> names;
    std::string dir = "/proc/" + std::to_string(pid) + "/task";
    if (DIR* d = opendir(dir.c_str())) {
        while (struct dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::string c = read_file(dir + "/" + e->d_name + "/comm");
            while (!c.empty() && (c.back() == '\n' || c.back() == '\r')) c.pop_back();
            names.push_back(c);
        }
        closedir(d);
    }
    return names;
}

inline long proc_pss_kb(pid_t pid) {
    std::string t = read_file("/proc/" + std::to_string(pid) + "/smaps_rollup");
    size_t p = t.find("\nPss:");
    if (p == std::string::npos) return -1;
    return strtol(t.c_str() + p + 5, nullptr, 10);
}

struct PagemapCounts {
    bool ok = false;
    size_t pages = 0, present = 0, file = 0;
};

inline PagemapCounts proc_pagemap(pid_t pid, uintptr_t addr, size_t len) {
    PagemapCounts c;
    std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return c;
    std::vector<uint64_t> e(len / 4096);
    ssize_t n = pread(fd, e.data(), e.size() * 8, off_t(addr / 4096 * 8));
    close(fd);
    if (n != ssize_t(e.size() * 8)) return c;
    c.ok = true;
    for (uint64_t v : e) {
        c.pages++;
        if (v >> 63) {
            c.present++;
            if ((v >> 61) & 1) c.file++;
        }
    }
    return c;
}

// ---- log lines ----------------------------------------------------------

// The length of a log line's "libdedup[PID]: " prefix, 0 if it has none.
inline size_t log_prefix_len(const std::string& l) {
    static const std::string head = "libdedup[";
    if (l.compare(0, head.size(), head) != 0) return 0;
    size_t i = head.size(), digits = 0;
    while (i < l.size() && isdigit((unsigned char)l[i])) ++i, ++digits;
    if (!digits || l.compare(i, 3, "]: ") != 0) return 0;
    return i + 3;
}
inline bool is_log_line(const std::string& l) { return log_prefix_len(l) > 0; }
// A log line's message (what follows the prefix); "" if it is not one.
inline std::string log_message(const std::string& l) { return l.substr(log_prefix_len(l) ? log_prefix_len(l) : l.size()); }
// The pid in a log line's prefix, -1 if it is not one.
inline long log_pid(const std::string& l) { return is_log_line(l) ? atol(l.c_str() + 9) : -1; }

inline int count_lines_with(const std::string& text, const std::vector<std::string>& needles) {
    int n = 0;
    for (auto& l : lines(text)) {
        bool all = true;
        for (auto& w : needles)
            if (l.find(w) == std::string::npos) all = false;
        n += all;
    }
    return n;
}

}  // namespace dt
