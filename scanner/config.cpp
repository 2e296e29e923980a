#include "scanner/config.h"

#include <atomic>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "scanner/log.h"

extern "C" char** environ;

namespace dedup {
namespace {

enum class Kind { kBool, kSize, kUint, kScope, kString };

struct Option {
    const char* name;
    Kind kind;
    uint64_t min, max;         // for numbers
    size_t offset;             // into Config
    const char* default_text;  // shown in the warning
};

#define OPT(name, kind, min, max, field, def) \
    {name, kind, min, max, offsetof(Config, field), def}

const Option kOptions[] = {
    OPT("DEDUP_DISABLE", Kind::kBool, 0, 1, disable, "0"),
    OPT("DEDUP_SCOPE", Kind::kScope, 0, 0, scope, "all"),
    OPT("DEDUP_DOMAIN", Kind::kString, 0, 64, domain, "none (merge within the process)"),
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
};
#undef OPT

const char* env_lookup(const char* const* envp, const char* name) {
    if (!envp) return nullptr;
    size_t n = strlen(name);
    for (const char* const* e = envp; *e; ++e)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return nullptr;
}

void apply(const Option& o, const char* value, Config* cfg) {
    char* base = reinterpret_cast<char*>(cfg) + o.offset;
    switch (o.kind) {
        case Kind::kBool: {
            bool v;
            if (!strcmp(value, "1") || !strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcasecmp(value, "on")) v = true;
            else if (!strcmp(value, "0") || !strcasecmp(value, "false") || !strcasecmp(value, "no") || !strcasecmp(value, "off") || !*value) v = false;
            else { log_warning("%s='%s' is not a boolean (0/1); using default %s", o.name, value, o.default_text); return; }
            *reinterpret_cast<bool*>(base) = v;
            return;
        }
        case Kind::kScope: {
            Scope s;
            if (!strcmp(value, "all")) s = Scope::kAll;
            else if (!strcmp(value, "advised")) s = Scope::kAdvised;
            else { log_warning("%s='%s' is not 'all' or 'advised'; using default %s", o.name, value, o.default_text); return; }
            *reinterpret_cast<Scope*>(base) = s;
            return;
        }
        case Kind::kString: {
            size_t n = strlen(value), max = o.max ? o.max : 255;
            if (n > max) {
                log_warning("%s='%.40s...' is longer than %zu characters; using default %s", o.name, value, max,
                            o.default_text);
                return;
            }
            memcpy(base, value, n + 1);
            return;
        }
        case Kind::kSize:
        case Kind::kUint: {
            uint64_t v;
            bool ok = o.kind == Kind::kSize ? parse_size(value, &v) : parse_uint(value, &v);
            if (!ok) {
                log_warning("%s='%s' is not a valid %s; using default %s", o.name, value,
                            o.kind == Kind::kSize ? "size (e.g. 64K, 2M)" : "number", o.default_text);
                return;
            }
            if (v < o.min || v > o.max) {
                log_warning("%s='%s' is out of range [%llu, %llu]; using default %s", o.name, value,
                            (unsigned long long)o.min, (unsigned long long)o.max, o.default_text);
                return;
            }
            *reinterpret_cast<uint64_t*>(base) = v;
            return;
        }
    }
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
        if (const char* v = env_lookup(envp, o.name)) apply(o, v, out);
    }
    for (const Option& o : kOptions) {
        if (strcmp(o.name, "DEDUP_LOG") == 0) continue;
        if (const char* v = env_lookup(envp, o.name)) apply(o, v, out);
    }
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
            log_warning("DEDUP_LOG='%s' cannot be opened; using default stderr", log_spec);
        cfg = tmp;
        state.store(2, std::memory_order_release);
        return cfg;
    }
    while (state.load(std::memory_order_acquire) != 2) {
    }
    return cfg;
}

}  // namespace dedup
