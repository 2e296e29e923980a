#include "scanner/config.h"

#include <atomic>
#include <stddef.h>
#include <string.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "scanner/json_text.h"
#include "scanner/log.h"
#include "scanner/parent_process.h"

extern "C" char** environ;

namespace dedup {
namespace {

enum class Kind { kBool, kSize, kUint, kEnum, kString };

struct Option {
    const char* name;
    Kind kind;
    uint64_t min, max;         // for numbers
    size_t offset;             // into Config
    const char* default_text;  // shown in the warning
    const char* const* names;  // kEnum: the values, in the enum's order, then nullptr
};

const char* const kScopeNames[] = {"all", "advised", nullptr};
const char* const kSummaryNames[] = {"auto", "always", "never", nullptr};

#define OPT(name, kind, min, max, field, def) \
    {name, kind, min, max, offsetof(Config, field), def, nullptr}
#define OPT_ENUM(name, field, names, def) \
    {name, Kind::kEnum, 0, 0, offsetof(Config, field), def, names}

// New options go at the end (the stats JSON lists them in this order).
const Option kOptions[] = {
    OPT("DEDUP_DISABLE", Kind::kBool, 0, 1, disable, "0"),
    OPT_ENUM("DEDUP_SCOPE", scope, kScopeNames, "all"),
    OPT("DEDUP_MIN_REGION", Kind::kSize, 4096, 1ull << 40, min_region, "64K"),
    OPT("DEDUP_MALLOC_MIN", Kind::kSize, 4096, 1ull << 40, malloc_min, "64K"),
    OPT("DEDUP_PAGES_TO_SCAN", Kind::kUint, 1, 1ull << 30, pages_to_scan, "2048"),
    OPT("DEDUP_SLEEP_MS", Kind::kUint, 0, 3600 * 1000, sleep_ms, "20"),
    OPT("DEDUP_CPU_PERCENT", Kind::kUint, 0, 100, cpu_percent, "0 (off: DEDUP_SLEEP_MS paces the scanner)"),
    OPT("DEDUP_VMA_RESERVE", Kind::kUint, 0, 1ull << 31, vma_reserve, "max_map_count/8"),
    OPT("DEDUP_SITES", Kind::kBool, 0, 1, sites, "0"),
    OPT("DEDUP_STATS_INTERVAL_MS", Kind::kUint, 0, 24ull * 3600 * 1000, stats_interval_ms, "0 (off)"),
    OPT("DEDUP_LOG", Kind::kString, 0, 0, log, "stderr"),
    OPT("DEDUP_STATS_FILE", Kind::kString, 0, 0, stats_file, "none"),
    OPT_ENUM("DEDUP_SUMMARY", summary, kSummaryNames, "auto"),
    OPT("DEDUP_SERIES_FILE", Kind::kString, 0, 0, series_file, "none"),
    OPT("DEDUP_DOMAIN", Kind::kString, 0, 64, domain, "none (merge within the process)"),
    OPT("DEDUP_START_MIN", Kind::kSize, 0, 1ull << 40, start_min, "4M"),
    OPT("DEDUP_BUSY_WAIT_MS", Kind::kUint, 0, 60 * 1000, busy_wait_ms, "1000"),
};
#undef OPT_ENUM
#undef OPT

const char* env_lookup(const char* const* envp, const char* name) {
    if (!envp) return nullptr;
    size_t n = strlen(name);
    // The first letter before strncmp: the options are looked up one by one
    // at every start, and few variables start with a D.
    for (const char* const* e = envp; *e; ++e)
        if ((*e)[0] == name[0] && strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return nullptr;
}

// A warning about the variable name, printed once per process tree: the
// parent printed it if it runs the shim with the same value of the variable
// and the same log (parent_process.h). The log must match too: a child
// whose DEDUP_LOG differs has its own reader.
__attribute__((format(printf, 3, 4))) void warn(const char* const* envp, const char* name, const char* fmt, ...) {
    if (parent_runs_this_library() && parent_started_with(name, env_lookup(envp, name)) &&
        parent_started_with("DEDUP_LOG", env_lookup(envp, "DEDUP_LOG")))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwarning(fmt, ap);
    va_end(ap);
}

// "'a', 'b' or 'c'" for a warning.
void enum_choices(const char* const* names, char* out, size_t cap) {
    size_t used = 0;
    for (int i = 0; names[i] && used < cap; ++i) {
        const char* sep = i == 0 ? "" : names[i + 1] ? ", " : " or ";
        int n = snprintf(out + used, cap - used, "%s'%s'", sep, names[i]);
        if (n < 0) break;
        used += (size_t)n;
    }
}

bool parse_bool(const char* value, bool* v) {
    if (!strcmp(value, "1") || !strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcasecmp(value, "on")) *v = true;
    else if (!strcmp(value, "0") || !strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcasecmp(value, "off") || !*value) *v = false;
    else return false;
    return true;
}

// A number option's value checked against its syntax and range; false with
// the reason in err ("is not a valid number", "is out of range [1, 100]").
bool parse_number(const Option& o, const char* value, uint64_t* out, char* err, size_t cap) {
    uint64_t v;
    bool ok = o.kind == Kind::kSize ? parse_size(value, &v) : parse_uint(value, &v);
    if (!ok) {
        snprintf(err, cap, "is not a valid %s", o.kind == Kind::kSize ? "size (e.g. 64K, 2M)" : "number");
        return false;
    }
    if (v < o.min || v > o.max) {
        snprintf(err, cap, "is out of range [%llu, %llu]", (unsigned long long)o.min, (unsigned long long)o.max);
        return false;
    }
    *out = v;
    return true;
}

void apply(const Option& o, const char* value, Config* cfg, const char* const* envp) {
    char* base = reinterpret_cast<char*>(cfg) + o.offset;
    char why[160];
    switch (o.kind) {
        case Kind::kBool: {
            bool v;
            if (!parse_bool(value, &v)) { warn(envp, o.name, "%s='%s' is not a boolean (0/1); using default %s", o.name, value, o.default_text); return; }
            *reinterpret_cast<bool*>(base) = v;
            return;
        }
        case Kind::kEnum: {
            for (int i = 0; o.names[i]; ++i)
                if (!strcmp(value, o.names[i])) { *reinterpret_cast<int*>(base) = i; return; }
            enum_choices(o.names, why, sizeof(why));
            warn(envp, o.name, "%s='%s' is not %s; using default %s", o.name, value, why, o.default_text);
            return;
        }
        case Kind::kString: {
            size_t n = strlen(value), max = o.max ? o.max : 255;
            if (n > max) {
                warn(envp, o.name, "%s='%.40s...' is longer than %zu characters; using default %s", o.name, value, max,
                     o.default_text);
                return;
            }
            memcpy(base, value, n + 1);
            return;
        }
        case Kind::kSize:
        case Kind::kUint: {
            uint64_t v;
            if (!parse_number(o, value, &v, why, sizeof(why))) {
                warn(envp, o.name, "%s='%s' %s; using default %s", o.name, value, why, o.default_text);
                return;
            }
            *reinterpret_cast<uint64_t*>(base) = v;
            return;
        }
    }
}

// "DEDUP_SLEEP_MS" -> "sleep_ms".
void json_key(const char* name, char* out, size_t cap) {
    const char* k = name + strlen("DEDUP_");
    size_t i = 0;
    for (; k[i] && i + 1 < cap; ++i) out[i] = (char)tolower((unsigned char)k[i]);
    out[i] = 0;
}

}  // namespace

bool parse_uint(const char* s, uint64_t* out) {
    if (!s || !*s) return false;
    uint64_t v = 0;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9') return false;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool parse_size(const char* s, uint64_t* out) {
    if (!s || !*s) return false;
    char digits[32];
    size_t n = strlen(s);
    unsigned shift = 0;
    char last = s[n - 1];
    if (last == 'k' || last == 'K') shift = 10;
    else if (last == 'm' || last == 'M') shift = 20;
    else if (last == 'g' || last == 'G') shift = 30;
    if (shift) --n;
    if (n == 0 || n >= sizeof(digits)) return false;
    memcpy(digits, s, n);
    digits[n] = 0;
    uint64_t v;
    if (!parse_uint(digits, &v)) return false;
    if (shift && v > (UINT64_MAX >> shift)) return false;
    *out = v << shift;
    return true;
}

void config_parse(const char* const* envp, Config* out) {
    *out = Config();
    // DEDUP_LOG first, so that warnings about the other options go where asked.
    for (const Option& o : kOptions) {
        if (strcmp(o.name, "DEDUP_LOG") != 0) continue;
        if (const char* v = env_lookup(envp, o.name)) apply(o, v, out, envp);
    }
    for (const Option& o : kOptions) {
        if (strcmp(o.name, "DEDUP_LOG") == 0) continue;
        if (const char* v = env_lookup(envp, o.name)) apply(o, v, out, envp);
    }
}

bool config_says_disabled(const char* const* envp) {
    // Not a string literal: a process that stays off reads nothing else of
    // .rodata, and the first read of it is a page fault (mapping 16 pages)
    // in every such process.
    static char name[] = "DEDUP_DISABLE";
    const char* v = env_lookup(envp, name);
    bool on = false;
    return v && parse_bool(v, &on) && on;
}

const Config& config() {
    static Config cfg;
    static std::atomic<int> state{0};  // 0 = unparsed, 1 = parsing, 2 = ready
    int s = state.load(std::memory_order_acquire);
    if (s == 2) return cfg;
    int expected = 0;
    if (state.compare_exchange_strong(expected, 1)) {
        // The log first: warnings about the other options must go there.
        const char* log_spec = env_lookup(environ, "DEDUP_LOG");
        bool log_ok = log_open(log_spec);
        Config tmp;
        config_parse(environ, &tmp);
        if (!log_ok)
            warn(environ, "DEDUP_LOG", "DEDUP_LOG='%s' cannot be opened; using default stderr", log_spec);
        cfg = tmp;
        state.store(2, std::memory_order_release);
        return cfg;
    }
    while (state.load(std::memory_order_acquire) != 2) {
    }
    return cfg;
}

}  // namespace dedup

namespace dedup {

size_t config_to_json(const Config& c, char* buf, size_t cap) {
    JsonOut out(buf, cap);
    for (const Option& o : kOptions) {
        const char* base = reinterpret_cast<const char*>(&c) + o.offset;
        char key[40];
        json_key(o.name, key, sizeof(key));
        out.put("%s\"%s\": ", out.used() ? ", " : "", key);
        switch (o.kind) {
            case Kind::kBool: out.put("%s", *reinterpret_cast<const bool*>(base) ? "true" : "false"); break;
            case Kind::kEnum: out.put("\"%s\"", o.names[*reinterpret_cast<const int*>(base)]); break;
            case Kind::kSize:
            case Kind::kUint: out.put("%llu", (unsigned long long)*reinterpret_cast<const uint64_t*>(base)); break;
            case Kind::kString:
                out.put("\"");
                out.escaped(base);
                out.put("\"");
                break;
        }
    }
    return out.finish();
}

bool config_parse_runtime(const char* key, const char* value, uint64_t* out, char* err, size_t cap) {
    for (const Option& o : kOptions) {
        char k[40];
        json_key(o.name, k, sizeof(k));
        if (strcmp(k, key) != 0) continue;
        if (o.kind != Kind::kUint && o.kind != Kind::kSize) {
            snprintf(err, cap, "%s is not a number setting", key);
            return false;
        }
        char why[120];
        if (parse_number(o, value, out, why, sizeof(why))) return true;
        snprintf(err, cap, "%s=%s %s", key, value, why);
        return false;
    }
    snprintf(err, cap, "no setting %s", key);
    return false;
}

}  // namespace dedup
