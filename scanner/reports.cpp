#include "scanner/reports.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "scanner/config.h"
#include "scanner/control.h"
#include "scanner/lifecycle.h"
#include "scanner/live_file.h"
#include "scanner/log.h"
#include "scanner/meta_alloc.h"
#include "scanner/os/clock.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/report_files.h"
#include "scanner/scanner_thread.h"
#include "scanner/sites.h"
#include "scanner/state.h"

namespace dedup {
namespace {

// ---- the numbers -----------------------------------------------------------

// Pages the scanner may merge: with DEDUP_SCOPE=advised, only advised
// ranges count as registered (the others are tracked, not registered).
uint64_t pages_in_scope(State& s) {
    uint64_t in_scope = 0;
    for (size_t i = 0; i < s.regions.count(); ++i)
        if (s.merge_all || (s.regions[i].flags & kRegAdvised)) in_scope += s.regions[i].pages();
    return in_scope;
}

// Every field of the table into rep; the caller holds the lock. Exact VMA
// count only when asked (it reads /proc/self/maps). walk: the registry may
// be walked (else it may be half changed, and its page count is used).
// KSM's counters by KSM's names: ksm_stat's per-process figures and the
// global ones of /sys/kernel/mm/ksm are one here (the shim is per process).
void collect_ksm(const State& s, Report* rep) {
    rep->ksm_merging_pages = s.store.total_refs();
    rep->ksm_zero_pages = rep->zero_pages;
    int64_t meta = (int64_t)rep->metadata_bytes;
    rep->ksm_process_profit = (int64_t)((rep->ksm_merging_pages + rep->ksm_zero_pages) * kPageSize) - meta;
    rep->general_profit = (int64_t)rep->bytes_saved - meta;
    rep->ksm_merge_any = s.merge_all;
    rep->ksm_mergeable = rep->pages_registered > 0;
}

// The settings in effect: the environment's, with what was changed since.
void collect_settings(const State& s, Report* rep) {
    rep->settings = config();
    rep->settings.vma_reserve = s.vmas.max_map_count() - s.vmas.limit();  // 0 meant max_map_count/8
    ScanPace pace = control_pace();
    rep->settings.pages_to_scan = pace.pages_to_scan;
    rep->settings.sleep_ms = pace.sleep_ms;
    rep->settings.cpu_percent = pace.cpu_percent;
    rep->run = control_run();
}

void collect(State& s, Report* rep, double cpu, bool exact_vmas, bool walk = true) {
    runtime_prepare_scanning();  // the VMA budget, if nothing was registered yet
    *rep = Report();
    report_copy_counted(s.stats, rep);
    rep->seconds = (double)(monotonic_ns() - s.start_ns) / 1e9;
    rep->pages_registered = walk ? pages_in_scope(s) : s.regions.pages_registered();
    rep->pages_shared = s.store.slots_in_use();
    rep->pages_sharing = s.store.total_refs() - s.store.slots_in_use();
    rep->fork_kept_pages = s.store.fork_kept();
    rep->bytes_saved = bytes_saved_now(s);
    if (rep->bytes_saved > rep->bytes_saved_peak) rep->bytes_saved_peak = rep->bytes_saved;
    rep->scanner_cpu_seconds = cpu;
    rep->vmas_used = exact_vmas ? count_vmas() : s.vmas.estimate();
    rep->vma_limit = s.vmas.max_map_count();
    rep->metadata_bytes = meta_bytes_in_use();
    if (s.store.in_domain()) {
        snprintf(rep->domain, sizeof(rep->domain), "%s", s.domain.name());
        rep->domain_members = s.domain.members();
        rep->domain_canonical_pages = s.domain.canonical_pages();
        uint64_t mapped = s.domain.pages_mapped_all();
        rep->domain_pages_saved = mapped > rep->domain_canonical_pages ? mapped - rep->domain_canonical_pages : 0;
        rep->domain_pages_shared_with_others = s.store.pages_shared_with_others();
    }
    rep->pid = (uint64_t)sys::getpid();
    rep->pidns = live_file_pidns();
    read_process_name(rep->comm, sizeof(rep->comm));  // no descriptor: the scanner writes reports
    collect_ksm(s, rep);
    collect_settings(s, rep);
}

// ---- allocation sites ----------------------------------------------------------

// Pages per allocation site that are merged or given back as zero pages.
// Returns an array of kMaxSites counts (meta memory), or nullptr. Lock held.
uint64_t* count_duplicates_by_site(State& s) {
    if (!site_count()) return nullptr;
    uint64_t* per = static_cast<uint64_t*>(meta_alloc(sizeof(uint64_t) * kMaxSites));
    if (!per) return nullptr;
    for (size_t i = 0; i < s.regions.count(); ++i) {
        Region& r = s.regions[i];
        if (r.site >= kMaxSites) continue;
        uint64_t n = 0;
        for (size_t p = 0; p < r.pages(); ++p) n += has_slot(r.meta[p].state) || is_zero_freed(r.meta[p].state);
        per[r.site] += n;
    }
    return per;
}

// Per site, the most duplicate pages it ever had at one time: programs free
// their data before exit, and a site's peak is what the user wants to see.
// Sampled every second by the scanner and once more at exit.
uint64_t* g_site_peak = nullptr;

void note_site_peaks(const uint64_t* now) {
    if (!now) return;
    if (!g_site_peak) g_site_peak = static_cast<uint64_t*>(meta_alloc(sizeof(uint64_t) * kMaxSites));
    if (!g_site_peak) return;
    for (uint32_t i = 0; i < kMaxSites; ++i)
        if (now[i] > g_site_peak[i]) g_site_peak[i] = now[i];
}

// Fills the report's top sites from per (symbolised: spawns addr2line, so
// never under the lock), and frees per.
void top_sites(uint64_t* per, Report* rep) {
    rep->nsites = 0;
    if (!per) return;
    // Sites that differ only below the frames shown print the same: add
    // them up under one line. Look at a few more than are shown.
    for (int tries = 0; tries < 4 * Report::kTopSites && rep->nsites < Report::kTopSites; ++tries) {
        uint32_t best = 0;
        for (uint32_t i = 0; i < kMaxSites; ++i)
            if (per[i] > (best ? per[best] : 0)) best = i;
        if (!per[best]) break;
        char text[sizeof(rep->site_text[0])];
        site_describe(best, 3, text, sizeof(text));
        int k = 0;
        while (k < rep->nsites && strcmp(rep->site_text[k], text) != 0) ++k;
        if (k == rep->nsites) {
            memcpy(rep->site_text[k], text, sizeof(text));
            rep->site_bytes[k] = 0;
            rep->nsites = k + 1;
        }
        rep->site_bytes[k] += per[best] * kPageSize;
        per[best] = 0;
    }
    meta_free(per, sizeof(uint64_t) * kMaxSites);
}

// ---- files -------------------------------------------------------------------

// The live file is its own module (live_file.h); reports write into it.
void write_live_file(const Report& rep) {
    char json[8192];
    size_t n = report_to_json(rep, json, sizeof(json));
    if (n) live_file_write(json, n);
}

// ---- the scanner's ticks -------------------------------------------------------

uint64_t g_live_last_ns = 0, g_interval_last_ns = 0;
uint64_t g_live_last_scanned = 0;
double g_live_last_cpu = 0;

void log_live_line(const Report& rep, double cpu, uint64_t now) {
    double dt = g_interval_last_ns ? (double)(now - g_interval_last_ns) / 1e9 : rep.seconds;
    if (dt <= 0) dt = 1e-9;
    log_line("live: t=%.1f s, saved %.1f MiB, sharing %llu, shared %llu, zero %llu, volatile %llu, scan %.0f pages/s, scanner CPU %.1f%% (%.2f s)",
             rep.seconds, (double)rep.bytes_saved / (1 << 20), (unsigned long long)rep.pages_sharing,
             (unsigned long long)rep.pages_shared, (unsigned long long)rep.zero_pages,
             (unsigned long long)rep.pages_volatile, (double)(rep.pages_scanned - g_live_last_scanned) / dt,
             100.0 * (cpu - g_live_last_cpu) / dt, cpu);
    g_live_last_scanned = rep.pages_scanned;
    g_live_last_cpu = cpu;
}

// DEDUP_SUMMARY=auto: short-lived helpers (shells, launchers, compilers'
// drivers) would drown the log in empty summaries, and a forked child that
// never scanned has nothing of its own to say.
bool summary_due(Summary when, const Report& rep, bool child, bool registered_anything) {
    if (when != Summary::kAuto) return when == Summary::kAlways;
    return registered_anything && report_worth_telling(rep) && (!child || rep.pages_scanned);
}

// The stats file (whose report it is: report_files.h) and a line of the
// series file. A forked child writes the stats file only at a path of its
// own (%p), never over its parent's; every process appends to the series
// (each line names its process).
void write_report_files(const Config& cfg, const Report& rep) {
    char path[300];
    bool child = sys::getpid() != runtime_original_pid();
    if (cfg.stats_file[0] && (!child || strstr(cfg.stats_file, "%p"))) {
        report_path(cfg.stats_file, path, sizeof(path));
        long w = stats_file_write(rep, path);
        if (w < 0) log_warning("DEDUP_STATS_FILE='%s' could not be written (%s)", path, strerror((int)-w));
    }
    if (cfg.series_file[0]) {
        report_path(cfg.series_file, path, sizeof(path));
        long w = series_append(rep, path);
        if (w < 0) log_warning("DEDUP_SERIES_FILE='%s' could not be written (%s)", path, strerror((int)-w));
    }
}

}  // namespace

bool reports_open_live_file() { return live_file_open(); }

void reports_reset_in_child() { live_file_reset_in_child(); }

void reports_tick() {
    if (!runtime_initialised()) return;
    const Config& cfg = config();
    uint64_t now = monotonic_ns();
    if (g_live_last_ns == 0) g_live_last_ns = now;  // first file after a second: short processes leave none
    bool live_due = now - g_live_last_ns >= 1000 * 1000000ull;
    bool interval_due = cfg.stats_interval_ms && now - g_interval_last_ns >= cfg.stats_interval_ms * 1000000ull;
    if (!live_due && !interval_due) return;
    State& s = state();
    Report rep;
    double cpu = scanner_cpu_seconds();
    uint64_t* per_site = nullptr;
    {
        MmLockGuard g(s.lock);
        collect(s, &rep, cpu, false);
        if (live_due) {
            per_site = count_duplicates_by_site(s);
            write_live_file(rep);
            g_live_last_ns = now;
        }
    }
    if (per_site) {
        note_site_peaks(per_site);
        meta_free(per_site, sizeof(uint64_t) * kMaxSites);
    }
    if (!interval_due) return;
    log_live_line(rep, cpu, now);
    g_interval_last_ns = now;
    write_report_files(cfg, rep);
}

bool reports_wanted_without_registration() {
    const Config& cfg = config();
    return cfg.stats_file[0] || cfg.series_file[0] || cfg.summary == Summary::kAlways;
}

void reports_at_exit(double cpu, bool from_signal) {
    State& s = state();
    const Config& cfg = config();
    Report rep;
    uint64_t* per_site = nullptr;
    bool interrupted_shim = s.lock.held_by_me();  // see reports.h: the counters alone
    if (!interrupted_shim) s.lock.lock();
    collect(s, &rep, cpu, true, !interrupted_shim);
    if (!interrupted_shim && !from_signal) per_site = count_duplicates_by_site(s);
    live_file_remove();
    kept_files().live.close();
    if (!interrupted_shim) s.lock.unlock();
    note_site_peaks(per_site);
    if (per_site && g_site_peak) memcpy(per_site, g_site_peak, sizeof(uint64_t) * kMaxSites);
    top_sites(per_site, &rep);
    bool child = sys::getpid() != runtime_original_pid();
    if (summary_due(cfg.summary, rep, child, s.registered_anything)) report_to_log(rep);
    write_report_files(cfg, rep);
}

}  // namespace dedup
