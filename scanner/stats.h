// Counters, with KSM's meanings where KSM has one, and the exit report
// (human summary to the log, JSON to DEDUP_STATS_FILE).
#pragma once
#include <atomic>
#include <stddef.h>
#include <stdint.h>

namespace dedup {

struct Stats {
    std::atomic<uint64_t> pages_scanned{0};    // page looks (hash computed)
    std::atomic<uint64_t> full_scans{0};
    std::atomic<uint64_t> pages_volatile{0};   // in the last full pass: content changed since previous look
    std::atomic<uint64_t> pages_unshared{0};   // in the last full pass: unique, kept as candidates
    std::atomic<uint64_t> zero_pages{0};       // zero pages given back, still not re-faulted
    std::atomic<uint64_t> cow_breaks{0};       // merged pages later written (private copy made)
    std::atomic<uint64_t> merge_failures{0};   // a syscall of a merge failed (memory left intact)
    std::atomic<uint64_t> vma_budget_skips{0}; // last full pass: pages left unmerged to keep VMA headroom
    std::atomic<uint64_t> pinned_skips{0};     // runs skipped: a syscall was writing into them
    std::atomic<uint64_t> merge_runs{0};       // mmap calls that merged pages
    std::atomic<uint64_t> pages_merged{0};     // pages remapped onto slots, ever
    std::atomic<uint64_t> unmerged_pages{0};   // pages made private again on request
    std::atomic<uint64_t> thp_splits{0};       // transparent huge pages split by a merge
    std::atomic<uint64_t> store_rotations{0};  // times merged pages moved to a new memfd (fork give-back)
    std::atomic<uint64_t> bytes_saved_peak{0};
    std::atomic<uint64_t> registered_bytes_total{0};  // ever registered
    // Per-pass accumulators, published into pages_volatile/unshared at pass end.
    uint64_t pass_volatile = 0;
    uint64_t pass_unshared = 0;
    uint64_t pass_budget_skips = 0;
    uint64_t pass_start_merge_runs = 0;
    uint64_t pass_zero_freed = 0;  // zero pages given back in this pass
    // Set when a pass merged nothing (and gave back no zero page) because
    // the VMA budget was spent: the
    // scanner then slows down instead of re-trying every page at full speed.
    std::atomic<bool> budget_bound{false};
};

// Snapshot used for both the summary and the JSON file.
struct Report {
    double seconds;
    uint64_t pages_registered, pages_scanned, full_scans;
    uint64_t pages_shared, pages_sharing, pages_unshared, pages_volatile, zero_pages;
    uint64_t cow_breaks, bytes_saved, bytes_saved_peak, merge_failures, vma_budget_skips, pinned_skips;
    uint64_t thp_splits;
    uint64_t store_rotations, fork_kept_pages;
    uint64_t merge_runs, pages_merged, unmerged_pages, registered_bytes_total;
    double scanner_cpu_seconds;
    uint64_t vmas_used, vma_limit, metadata_bytes;
    // Top allocation sites by duplicate bytes (merged or zero pages now).
    static constexpr int kTopSites = 5;
    int nsites;
    uint64_t site_bytes[kTopSites];
    char site_text[kTopSites][480];
};

// Writes the JSON object into buf (NUL-terminated); returns its length.
size_t report_to_json(const Report& r, char* buf, size_t cap);
// Writes the multi-line human summary to the log.
void report_to_log(const Report& r);
// Writes JSON to path atomically (temp file + rename). Returns 0 or -errno.
long report_write_file(const Report& r, const char* path);

}  // namespace dedup
