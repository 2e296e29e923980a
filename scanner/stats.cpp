#include "scanner/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "scanner/json_text.h"
#include "scanner/log.h"
#include "scanner/os/sys.h"

#ifndef DEDUP_VERSION
#define DEDUP_VERSION "unknown"  // (the Makefile passes VERSION)
#endif

namespace dedup {
namespace {

// The stats file's and live file's format: bumped when a key changes meaning
// or goes (keys are only ever added otherwise).
constexpr int kReportSchema = 1;
constexpr const char* kVersion = DEDUP_VERSION;

double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

enum Unit { PLAIN, MIB, PAGES_MIB, SECS };
enum Type { U64, I64, F64 };

// Every field read as a double too, for the F64 ones.
#define DEDUP_FIELD(name, src, type, line, unit, text, meaning)                                          \
    {#name, line, unit, text, type, [](const Report& r) -> double { return (double)r.name; },           \
     [](const Report& r) -> uint64_t { return (uint64_t)r.name; }},
// One field of the table, as the JSON and the summary see it.
struct FieldInit {
    const char* name;
    int line;
    Unit unit;
    const char* text;
    Type type;
    double (*get_double)(const Report&);
    uint64_t (*get_u64)(const Report&);  // I64: the bits of the int64_t
};
const FieldInit kFields[] = {DEDUP_REPORT_FIELDS(DEDUP_FIELD)};
#undef DEDUP_FIELD

// The field's value as the summary shows it.
void format_value(const FieldInit& f, const Report& r, char* out, size_t cap) {
    if (f.type == F64) {
        snprintf(out, cap, f.unit == SECS ? "%.2f s" : "%.3f", f.get_double(r));
        return;
    }
    if (f.type == I64) {
        snprintf(out, cap, "%lld", (long long)f.get_u64(r));
        return;
    }
    uint64_t v = f.get_u64(r);
    switch (f.unit) {
        case MIB: snprintf(out, cap, "%.1f MiB", mib(v)); return;
        case PAGES_MIB: snprintf(out, cap, "%.1f MiB", mib(v * 4096)); return;
        case SECS:
        case PLAIN: snprintf(out, cap, "%llu", (unsigned long long)v); return;
    }
}

// "  text, text, ..." for one summary line; an opening parenthesis or "of",
// "in" continue the field before it rather than start a new item.
void log_summary_line(const Report& r, int line) {
    char buf[512];
    size_t used = 0;
    for (const FieldInit& f : kFields) {
        if (f.line != line) continue;
        char value[64], item[160];
        format_value(f, r, value, sizeof(value));
        snprintf(item, sizeof(item), f.text, value);
        bool continues = f.text[0] == '(' || !strncmp(f.text, "of ", 3) || !strncmp(f.text, "in ", 3);
        const char* sep = used == 0 ? "" : continues ? " " : ", ";
        int n = snprintf(buf + used, sizeof(buf) - used, "%s%s", sep, item);
        if (n < 0 || (size_t)n >= sizeof(buf) - used) break;
        used += (size_t)n;
    }
    if (used) log_line("  %s", buf);
}

}  // namespace

void report_copy_counted(const Stats& stats, Report* rep) {
#define DEDUP_COPY_COUNTED(name) rep->name = stats.name.load(std::memory_order_relaxed);
#define DEDUP_COPY_DERIVED(name)
#define DEDUP_COPY(name, src, type, line, unit, text, meaning) DEDUP_COPY_##src(name)
    DEDUP_REPORT_FIELDS(DEDUP_COPY)
#undef DEDUP_COPY
#undef DEDUP_COPY_DERIVED
#undef DEDUP_COPY_COUNTED
}

size_t report_to_json(const Report& r, char* buf, size_t cap) {
    JsonOut out(buf, cap);
    out.put("{\"schema\": %d, \"version\": \"%s\", \"comm\": \"", kReportSchema, kVersion);
    out.escaped(r.comm);
    out.put("\", \"domain\": \"");
    out.escaped(r.domain);
    out.put("\"");
    for (const FieldInit& f : kFields) {
        out.put(", \"%s\": ", f.name);
        if (f.type == F64) out.put("%.3f", f.get_double(r));
        else if (f.type == I64) out.put("%lld", (long long)f.get_u64(r));
        else out.put("%llu", (unsigned long long)f.get_u64(r));
    }
    out.put(", \"settings\": {");
    out.advance(config_to_json(r.settings, out.end(), out.room()));
    out.put("%s\"run\": %llu}", out.last() != '{' ? ", " : "", (unsigned long long)r.run);
    out.put(", \"sites\": [");
    for (int i = 0; i < r.nsites; ++i) {
        out.put("%s{\"bytes\": %llu, \"site\": \"", i ? ", " : "", (unsigned long long)r.site_bytes[i]);
        out.escaped(r.site_text[i]);
        out.put("\"}");
    }
    out.put("]}\n");
    return out.finish();
}

void report_to_log(const Report& r) {
    if (r.domain[0])  // within the process alone little may be saved: say what the domain saves
        log_line("summary after %.1f s: saved %.1f MiB now, %.1f MiB at peak in this process; %.1f MiB across "
                 "domain '%s'",
                 r.seconds, mib(r.bytes_saved), mib(r.bytes_saved_peak), mib(r.domain_pages_saved * 4096), r.domain);
    else
        log_line("summary after %.1f s: saved %.1f MiB now, %.1f MiB at peak", r.seconds, mib(r.bytes_saved),
                 mib(r.bytes_saved_peak));
    for (int line = 1; line <= 3; ++line) log_summary_line(r, line);
    if (r.nsites) log_line("  top allocation sites by duplicate bytes (merged or zero pages, at their peak):");
    for (int i = 0; i < r.nsites; ++i) log_line("  %8.1f MiB  %s", mib(r.site_bytes[i]), r.site_text[i]);
    if (r.store_rotations || r.fork_kept_pages)
        log_line("  kept for forked children %.1f MiB; merged pages moved to a new memfd %llu times to give such memory back",
                 mib(r.fork_kept_pages * 4096), (unsigned long long)r.store_rotations);
    if (r.vma_budget_skips)
        log_line("  left unmerged: VMA budget (%llu pages in the last pass, to keep VMA headroom)",
                 (unsigned long long)r.vma_budget_skips);
    if (r.domain[0])
        log_line("  domain '%s': %llu members, %llu canonical pages, %.1f MiB saved across them; this process maps %.1f MiB "
                 "shared with other members",
                 r.domain, (unsigned long long)r.domain_members, (unsigned long long)r.domain_canonical_pages,
                 mib(r.domain_pages_saved * 4096), mib(r.domain_pages_shared_with_others * 4096));
}

long report_write_file(const Report& r, const char* path) {
    char json[8192];
    size_t n = report_to_json(r, json, sizeof(json));
    // A temporary name nobody can guess, created exclusively and never
    // through a link, then renamed over the path (rename replaces a link
    // there rather than follow it).
    uint64_t nonce = 0;
    sys::call(SYS_getrandom, (long)&nonce, sizeof(nonce), 0);
    char tmp[320];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%016llx", path, sys::getpid(), (unsigned long long)nonce);
    long fd = sys::call(SYS_open, (long)tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (sys::failed(fd)) return fd;
    long w = sys::write((int)fd, json, n);
    sys::close((int)fd);
    if (w != (long)n) {
        sys::call(SYS_unlink, (long)tmp);
        return w < 0 ? w : -EIO;
    }
    long rr = sys::call(SYS_rename, (long)tmp, (long)path);
    if (sys::failed(rr)) sys::call(SYS_unlink, (long)tmp);
    return rr;
}

}  // namespace dedup
