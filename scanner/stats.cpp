#include "scanner/stats.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "scanner/log.h"
#include "scanner/sys.h"

namespace dedup {

size_t report_to_json(const Report& r, char* buf, size_t cap) {
    int n = snprintf(buf, cap,
        "{\"seconds\": %.3f, \"pages_registered\": %llu, \"pages_scanned\": %llu, \"full_scans\": %llu, "
        "\"pages_shared\": %llu, \"pages_sharing\": %llu, \"pages_unshared\": %llu, \"pages_volatile\": %llu, "
        "\"zero_pages\": %llu, \"cow_breaks\": %llu, \"bytes_saved\": %llu, \"bytes_saved_peak\": %llu, "
        "\"scanner_cpu_seconds\": %.3f, \"vmas_used\": %llu, \"vma_limit\": %llu, \"merge_failures\": %llu, "
        "\"vma_budget_skips\": %llu, \"pinned_skips\": %llu, \"merge_runs\": %llu, \"pages_merged\": %llu, \"unmerged_pages\": %llu, "
        "\"thp_splits\": %llu, \"store_rotations\": %llu, \"fork_kept_pages\": %llu, \"registered_bytes_total\": %llu, \"metadata_bytes\": %llu, \"sites\": [",
        r.seconds, (unsigned long long)r.pages_registered, (unsigned long long)r.pages_scanned,
        (unsigned long long)r.full_scans, (unsigned long long)r.pages_shared, (unsigned long long)r.pages_sharing,
        (unsigned long long)r.pages_unshared, (unsigned long long)r.pages_volatile, (unsigned long long)r.zero_pages,
        (unsigned long long)r.cow_breaks, (unsigned long long)r.bytes_saved, (unsigned long long)r.bytes_saved_peak,
        r.scanner_cpu_seconds, (unsigned long long)r.vmas_used, (unsigned long long)r.vma_limit,
        (unsigned long long)r.merge_failures, (unsigned long long)r.vma_budget_skips,
        (unsigned long long)r.pinned_skips,
        (unsigned long long)r.merge_runs, (unsigned long long)r.pages_merged, (unsigned long long)r.unmerged_pages,
        (unsigned long long)r.thp_splits, (unsigned long long)r.store_rotations,
        (unsigned long long)r.fork_kept_pages, (unsigned long long)r.registered_bytes_total, (unsigned long long)r.metadata_bytes);
    if (n < 0 || (size_t)n >= cap) return 0;
    size_t used = (size_t)n;
    for (int i = 0; i < r.nsites; ++i) {
        int m = snprintf(buf + used, cap - used, "%s{\"bytes\": %llu, \"site\": \"", i ? ", " : "",
                         (unsigned long long)r.site_bytes[i]);
        if (m < 0 || (size_t)m >= cap - used) return 0;
        used += (size_t)m;
        for (const char* c = r.site_text[i]; *c && used + 8 < cap; ++c) {  // JSON string escaping
            if (*c == '"' || *c == '\\') buf[used++] = '\\';
            if ((unsigned char)*c < 0x20) continue;
            buf[used++] = *c;
        }
        if (used + 4 >= cap) return 0;
        buf[used++] = '"';
        buf[used++] = '}';
    }
    int m = snprintf(buf + used, cap - used, "]}\n");
    if (m < 0 || (size_t)m >= cap - used) return 0;
    return used + (size_t)m;
}

namespace {
double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }
}  // namespace

void report_to_log(const Report& r) {
    log_line("summary after %.1f s: saved %.1f MiB now, %.1f MiB at peak", r.seconds, mib(r.bytes_saved),
             mib(r.bytes_saved_peak));
    log_line("  registered %.1f MiB (%.1f MiB ever), scanned %llu pages in %llu full scans, scanner CPU %.2f s",
             mib(r.pages_registered * 4096), mib(r.registered_bytes_total), (unsigned long long)r.pages_scanned,
             (unsigned long long)r.full_scans, r.scanner_cpu_seconds);
    log_line("  pages_shared %llu, pages_sharing %llu, zero pages %llu, unshared %llu, volatile %llu",
             (unsigned long long)r.pages_shared, (unsigned long long)r.pages_sharing,
             (unsigned long long)r.zero_pages, (unsigned long long)r.pages_unshared,
             (unsigned long long)r.pages_volatile);
    log_line("  copy-on-write breaks %llu, merge failures %llu, huge pages split %llu, VMAs used %llu of %llu, metadata %.1f MiB",
             (unsigned long long)r.cow_breaks, (unsigned long long)r.merge_failures, (unsigned long long)r.thp_splits,
             (unsigned long long)r.vmas_used, (unsigned long long)r.vma_limit, mib(r.metadata_bytes));
    if (r.nsites) log_line("  top allocation sites by duplicate bytes (merged or zero pages, at their peak):");
    for (int i = 0; i < r.nsites; ++i) log_line("  %8.1f MiB  %s", mib(r.site_bytes[i]), r.site_text[i]);
    if (r.store_rotations || r.fork_kept_pages)
        log_line("  kept for forked children %.1f MiB; merged pages moved to a new memfd %llu times to give such memory back",
                 mib(r.fork_kept_pages * 4096), (unsigned long long)r.store_rotations);
    if (r.vma_budget_skips)
        log_line("  left unmerged: VMA budget (%llu pages in the last pass, to keep VMA headroom)",
                 (unsigned long long)r.vma_budget_skips);
}

long report_write_file(const Report& r, const char* path) {
    char json[8192];
    size_t n = report_to_json(r, json, sizeof(json));
    char tmp[300];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, sys::getpid());
    long fd = sys::call(SYS_open, (long)tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sys::failed(fd)) return fd;
    long w = sys::write((int)fd, json, n);
    sys::close((int)fd);
    if (w != (long)n) {
        sys::call(SYS_unlink, (long)tmp);
        return w < 0 ? w : -5 /*EIO*/;
    }
    long rr = sys::call(SYS_rename, (long)tmp, (long)path);
    if (sys::failed(rr)) sys::call(SYS_unlink, (long)tmp);
    return rr;
}

}  // namespace dedup
