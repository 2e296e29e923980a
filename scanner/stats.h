// Counters, with KSM's meanings where KSM has one, and the reports made of
// them (human summary to the log, JSON to DEDUP_STATS_FILE and the live file).
//
// Every reported number is declared once, in DEDUP_REPORT_FIELDS: the Report
// struct, the live counters in Stats (for fields counted as they happen),
// the copy between them, the JSON keys, the summary and dedupstat (which
// prints the JSON's keys in order) all come from that table.
#pragma once
#include <atomic>
#include <stddef.h>
#include <stdint.h>

#include "scanner/config.h"

namespace dedup {

// X(name, source, type, summary line, summary text, meaning)
//   source  COUNTED: a Stats atomic of the same name, counted as it happens;
//           DERIVED: computed when the report is made (reports.cpp)
//   type    U64 (a count), I64 (may be negative) or F64
//   summary line 1..3 of the summary (0: JSON only); text has one %s, the
//           value formatted by its unit: PLAIN, MIB (bytes), PAGES_MIB, SECS
#define DEDUP_REPORT_FIELDS(X)                                                                                        \
    X(pid, DERIVED, U64, 0, PLAIN, "", "the process id (in its own PID namespace)")                                  \
    X(pidns, DERIVED, U64, 0, PLAIN, "", "the inode of its PID namespace (part of the live file's name)")           \
    X(seconds, DERIVED, F64, 0, PLAIN, "", "seconds since the shim started")                                          \
    X(pages_registered, DERIVED, U64, 1, PAGES_MIB, "registered %s", "pages in registered, in-scope regions now")     \
    X(registered_bytes_total, COUNTED, U64, 1, MIB, "(%s ever)", "bytes ever registered")                             \
    X(pages_scanned, COUNTED, U64, 1, PLAIN, "scanned %s pages", "page looks (hash computed)")                         \
    X(full_scans, COUNTED, U64, 1, PLAIN, "in %s full scans", "complete passes over every mergeable region")          \
    X(scanner_cpu_seconds, DERIVED, F64, 1, SECS, "scanner CPU %s", "CPU time of the dedup-scan thread")              \
    X(pages_shared, DERIVED, U64, 2, PLAIN, "pages_shared %s", "canonical pages in use (KSM meaning)")                \
    X(pages_sharing, DERIVED, U64, 2, PLAIN, "pages_sharing %s", "further pages mapping them: pages saved (KSM)")     \
    X(zero_pages, COUNTED, U64, 2, PLAIN, "zero pages %s", "zero pages given back and not touched since")            \
    X(pages_unshared, COUNTED, U64, 2, PLAIN, "unshared %s", "last full pass: unique pages kept as candidates")       \
    X(pages_volatile, COUNTED, U64, 2, PLAIN, "volatile %s", "last full pass: pages changed since the look before")   \
    X(cow_breaks, COUNTED, U64, 3, PLAIN, "copy-on-write breaks %s", "merged pages the program later wrote")          \
    X(merge_failures, COUNTED, U64, 3, PLAIN, "merge failures %s", "merges abandoned because a syscall failed")       \
    X(thp_splits, COUNTED, U64, 3, PLAIN, "huge pages split %s", "huge pages split by a merge covering them in part") \
    X(vmas_used, DERIVED, U64, 3, PLAIN, "VMAs used %s", "the process's VMA count")                                   \
    X(vma_limit, DERIVED, U64, 3, PLAIN, "of %s", "vm.max_map_count")                                                 \
    X(metadata_bytes, DERIVED, U64, 3, MIB, "metadata %s", "the shim's own metadata memory")                          \
    X(bytes_saved, DERIVED, U64, 0, MIB, "", "(pages_sharing + zero_pages) * 4096 now")                               \
    X(bytes_saved_peak, COUNTED, U64, 0, MIB, "", "bytes_saved at its highest")                                       \
    X(vma_budget_skips, COUNTED, U64, 0, PLAIN, "", "last full pass: pages left unmerged to keep VMA headroom")       \
    X(pinned_skips, COUNTED, U64, 0, PLAIN, "", "merge runs given up because a syscall was writing into them")        \
    X(pin_wait_timeouts, COUNTED, U64, 0, PLAIN, "", "unmerges that went ahead after waiting for a syscall's buffer") \
    X(merge_runs, COUNTED, U64, 0, PLAIN, "", "remaps that merged pages")                                             \
    X(pages_merged, COUNTED, U64, 0, PLAIN, "", "pages remapped onto canonical pages, ever")                           \
    X(unmerged_pages, COUNTED, U64, 0, PLAIN, "", "pages made private again on request")                              \
    X(store_rotations, COUNTED, U64, 0, PLAIN, "", "times merged pages moved to a new memfd (fork give-back)")        \
    X(fork_kept_pages, DERIVED, U64, 0, PLAIN, "", "canonical pages kept only because a forked child may map them")     \
    /* KSM's counters with KSM's names (/sys/kernel/mm/ksm, /proc/PID/ksm_stat) where they apply */                    \
    X(pages_skipped, COUNTED, U64, 0, PLAIN, "", "pages the scan passed over unhashed: not present, merged, backed off (KSM smart scan)") \
    X(ksm_merging_pages, DERIVED, U64, 0, PLAIN, "", "pages of the process mapping a canonical page (ksm_stat)")        \
    X(ksm_zero_pages, DERIVED, U64, 0, PLAIN, "", "zero_pages, by KSM's name (ksm_stat)")                              \
    X(ksm_process_profit, DERIVED, I64, 0, PLAIN, "", "(ksm_merging_pages + ksm_zero_pages) * 4096 - metadata_bytes")  \
    X(general_profit, DERIVED, I64, 0, PLAIN, "", "bytes_saved - metadata_bytes (KSM general_profit)")                  \
    X(ksm_merge_any, DERIVED, U64, 0, PLAIN, "", "1: every registered region may merge (scope all, PR_SET_MEMORY_MERGE)") \
    X(ksm_mergeable, DERIVED, U64, 0, PLAIN, "", "1: the process has memory that may merge (ksm_stat)")               \
    X(domain_pages_shared_with_others, DERIVED, U64, 0, PLAIN, "", "pages this process maps that other members map too") \
    X(domain_members, DERIVED, U64, 0, PLAIN, "", "processes in the merge domain now")                              \
    X(domain_canonical_pages, DERIVED, U64, 0, PLAIN, "", "canonical pages of the merge domain in use")             \
    X(domain_pages_saved, DERIVED, U64, 0, PLAIN, "", "pages saved across all members of the merge domain")        \
    X(busy_wait_ms, COUNTED, U64, 0, PLAIN, "", "milliseconds the scanner waited while the program's threads were busy")

// The live counters, updated as things happen. Fields of the table counted
// as they happen are atomics here; the rest are the scanner's per-pass
// accumulators (lock held).
struct Stats {
#define DEDUP_STATS_MEMBER_COUNTED(name) std::atomic<uint64_t> name{0};
#define DEDUP_STATS_MEMBER_DERIVED(name)
#define DEDUP_STATS_MEMBER(name, src, type, line, unit, text, meaning) DEDUP_STATS_MEMBER_##src(name)
    DEDUP_REPORT_FIELDS(DEDUP_STATS_MEMBER)
#undef DEDUP_STATS_MEMBER
#undef DEDUP_STATS_MEMBER_DERIVED
#undef DEDUP_STATS_MEMBER_COUNTED
    // Per-pass accumulators, published into pages_volatile/unshared and
    // vma_budget_skips at the end of each full pass.
    uint64_t pass_volatile = 0;
    uint64_t pass_unshared = 0;
    uint64_t pass_budget_skips = 0;
    uint64_t pass_start_merge_runs = 0;
    uint64_t pass_zero_freed = 0;  // zero pages given back in this pass
    uint64_t pass_first_looks = 0;  // pages hashed for the first time (or since forgotten) in this pass
    // A pass merged nothing (and gave back no zero page) because the VMA
    // budget was spent: the scanner slows down instead of trying every page
    // again at full speed.
    std::atomic<bool> budget_bound{false};
};

// A snapshot of every field of the table, plus the top allocation sites.
struct Report {
#define DEDUP_REPORT_TYPE_U64 uint64_t
#define DEDUP_REPORT_TYPE_I64 int64_t
#define DEDUP_REPORT_TYPE_F64 double
#define DEDUP_REPORT_MEMBER(name, src, type, line, unit, text, meaning) DEDUP_REPORT_TYPE_##type name;
    DEDUP_REPORT_FIELDS(DEDUP_REPORT_MEMBER)
#undef DEDUP_REPORT_MEMBER
    // Top allocation sites by duplicate bytes (merged or zero pages, at peak).
    static constexpr int kTopSites = 5;
    char comm[16];  // the process's name
    char domain[65];  // the merge domain's name, or empty
    int nsites;
    uint64_t site_bytes[kTopSites];
    char site_text[kTopSites][480];
    // The effective settings: every option (what the environment said, or
    // what dedupstat --set changed since), and KSM's run: 1 merging, 2
    // everything unmerged and merging stopped (dedupstat --unmerge).
    Config settings;
    uint64_t run;
};

// Whether a process has something to tell: it saved at least 1 MiB at its
// peak, or registered at least 16 MiB in all. Short-lived helpers (shells,
// launchers, compilers' drivers) have not. Such a process stays quiet at
// exit (DEDUP_SUMMARY=auto) and leaves the stats file to the program it ran
// (reports.h).
constexpr uint64_t kWorthSavedBytes = 1u << 20;
constexpr uint64_t kWorthRegisteredBytes = 16u << 20;
inline bool report_worth_telling(const Report& r) {
    return r.bytes_saved_peak >= kWorthSavedBytes || r.registered_bytes_total >= kWorthRegisteredBytes;
}

// Copies every COUNTED field from stats into rep.
void report_copy_counted(const Stats& stats, Report* rep);
// Writes the JSON object into buf (NUL-terminated); returns its length, 0 if
// it does not fit.
size_t report_to_json(const Report& r, char* buf, size_t cap);
// Writes the multi-line human summary to the log.
void report_to_log(const Report& r);
// Writes JSON to path atomically (temp file + rename). Returns 0 or -errno.
long report_write_file(const Report& r, const char* path);

}  // namespace dedup
