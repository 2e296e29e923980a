// Every DEDUP_* option in one table (as mimalloc's options.c): name, default,
// range, and where the value came from. Read once, lazily, from the
// environment; a bad value gets one warning naming the variable, the value
// and the default used.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

// Enumerations are stored as an int: the index of the value's name in the
// option's list (config.cpp).
enum class Scope : int { kAll, kAdvised };
// DEDUP_SUMMARY: auto (when the process saved or registered enough to be
// worth telling, reports.h), always, never.
enum class Summary : int { kAuto, kAlways, kNever };

struct Config {
    bool disable = false;
    Scope scope = Scope::kAll;
    char domain[65] = "";                 // DEDUP_DOMAIN: merge with the other processes of this user and name
    uint64_t min_region = 64 * 1024;      // bytes: smallest anon mmap registered
    uint64_t malloc_min = 64 * 1024;      // bytes: smallest malloc served by the shim
    uint64_t pages_to_scan = 2048;        // pages per scanner wake-up (KSM: pages_to_scan)
    uint64_t sleep_ms = 20;               // sleep between batches (KSM: sleep_millisecs)
    uint64_t cpu_percent = 0;             // 1..100: pace by the scanner's own CPU time instead of sleep_ms
    uint64_t vma_reserve = 0;             // VMAs kept free for the app; 0 = max_map_count/8
    bool sites = false;                   // capture allocation sites (libunwind); see README
    uint64_t stats_interval_ms = 0;       // live log line + stats file refresh; 0 = off
    char log[256] = "stderr";            // stderr | off | a file path
    char stats_file[256] = "";            // JSON written here at exit
    Summary summary = Summary::kAuto;     // the exit summary: auto | always | never
    char series_file[256] = "";           // a JSON line appended per DEDUP_STATS_INTERVAL_MS, and at exit
    uint64_t start_min = 4ull << 20;      // bytes registered (heap blocks: in use) before the scanner starts
    uint64_t busy_wait_ms = 1000;         // longest wait while the program's threads are busy (busy_wait.h); 0 = none
};

// Parses the environment (envp-style array) into `out`, reporting bad values
// through log_warning. Pure apart from logging, so unit tests can call it.
void config_parse(const char* const* envp, Config* out);

// Parses "123", "64K", "2M", "1G" (binary units). Returns false on bad syntax
// or overflow.
bool parse_size(const char* s, uint64_t* out);
// Parses a plain non-negative decimal integer.
bool parse_uint(const char* s, uint64_t* out);

// The process-wide configuration, parsed from environ on first use.
const Config& config();

// Whether DEDUP_DISABLE in envp is a valid true value: the one look the
// runtime takes at the environment of a disabled process (no other option
// is parsed, no log opened). An invalid value is false here and gets its
// warning from the full parse.
bool config_says_disabled(const char* const* envp);

// The effective value of every option as JSON object members
// ("disable": false, "scope": "all", ...: the variable's name without
// DEDUP_, lower case), into buf (NUL-terminated). Returns the length, 0 if
// it does not fit.
size_t config_to_json(const Config& c, char* buf, size_t cap);

// A value set at run time (dedupstat --set KEY=VALUE) for a number option
// named as in config_to_json: checked against the option's syntax and range.
// False with a reason in err otherwise.
bool config_parse_runtime(const char* key, const char* value, uint64_t* out, char* err, size_t cap);

}  // namespace dedup
