/* N copies of one random buffer, either in one mmap'd region or in N big
 * mallocs. Waits (polling its own pagemap) until the copies are merged, then
 * verifies every byte against the regenerated random stream and reports
 * pagemap and Pss figures.
 *
 *   ncopies [--alloc mmap|malloc] [--copies N] [--buf-kib K] [--seed S]
 *           [--expect merge|none|any] [--timeout-ms T] [--hold-ms H]
 *           [--advise] [--ready] [--ready-early] [--unmerge]
 *
 * --expect merge: exit 1 unless >= 95% of the pages look merged in time and
 *                 >= 90% are shared (pagemap bit 61) after reading them back.
 * --expect none:  watch for --hold-ms; exit 1 if any page ever looks merged.
 * --ready:        after verification print "ready=merged" and wait on stdin.
 * --ready-early:  print "ready=start" before allocating anything, wait.
 * --unmerge:      at the end, MADV_UNMERGEABLE the copies (must return 0),
 *                 read them: no page may stay shared, bytes unchanged, and
 *                 the region's Pss must be back to >= 90% of its size.
 */
#include "dtest.h"

int main(int argc, char **argv)
{
    const char *alloc = dt_arg_str(argc, argv, "--alloc", "mmap");
    long copies = dt_arg_long(argc, argv, "--copies", 16);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 1024) * 1024;
    uint64_t seed = (uint64_t)dt_arg_long(argc, argv, "--seed", 42);
    const char *expect = dt_arg_str(argc, argv, "--expect", "merge");
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 20000);
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 1000);
    int use_malloc = strcmp(alloc, "malloc") == 0;
    struct dt_range r[1024];
    unsigned char *bufs[1024];

    if (copies < 2 || copies > 1024) {
        fprintf(stderr, "bad --copies\n");
        return 2;
    }
    if (dt_arg_flag(argc, argv, "--ready-early"))
        dt_ready("start");

    long pss0 = dt_rollup_pss_kb();
    size_t total = (size_t)copies * buf;
    int nr;
    if (!use_malloc) {
        unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED)
            dt_die("mmap");
        for (long i = 0; i < copies; i++)
            bufs[i] = region + i * buf;
        r[0].addr = region;
        r[0].len = total;
        nr = 1;
        dt_out("region_addr", "%p", (void *)region);
        dt_out("region_len", "%zu", total);
    } else {
        for (long i = 0; i < copies; i++) {
            bufs[i] = malloc(buf);
            if (!bufs[i])
                dt_die("malloc");
            uintptr_t s = (uintptr_t)bufs[i] & ~(DT_PAGE - 1);
            uintptr_t e = ((uintptr_t)bufs[i] + buf + DT_PAGE - 1) & ~(DT_PAGE - 1);
            r[i].addr = (void *)s;
            r[i].len = e - s;
        }
        nr = (int)copies;
        dt_out("malloc_offset_in_page", "%zu", (size_t)((uintptr_t)bufs[0] & (DT_PAGE - 1)));
    }
    dt_fill_random(bufs[0], buf, seed);
    for (long i = 1; i < copies; i++)
        memcpy(bufs[i], bufs[0], buf);

    if (dt_arg_flag(argc, argv, "--advise")) {
        int bad = 0;
        for (int i = 0; i < nr; i++)
            if (madvise(r[i].addr, r[i].len, MADV_MERGEABLE) != 0)
                bad++;
        dt_out("madv_mergeable_failures", "%d", bad);
        if (bad)
            dt_fail("MADV_MERGEABLE failed (%s)", strerror(errno));
    }

    size_t pages = dt_ranges_pages(r, nr);
    dt_out("pages", "%zu", pages);
    dt_out("region_bytes", "%zu", total);
    dt_out("pss_filled_kb", "%ld", dt_rollup_pss_kb() - pss0);

    size_t max_merged = 0;
    if (strcmp(expect, "merge") == 0) {
        double w = dt_wait_merged(r, nr, 0.95, timeout);
        dt_out("merge_wait_ms", "%.0f", w);
        if (w < 0)
            dt_fail("only %zu of %zu pages merged after %.0f ms", dt_ranges_merged_like(r, nr),
                    pages, timeout);
    } else if (strcmp(expect, "none") == 0) {
        double t0 = dt_now_ms();
        while (dt_now_ms() - t0 < hold) {
            size_t m = dt_ranges_merged_like(r, nr);
            if (m > max_merged)
                max_merged = m;
            dt_sleep_ms(10);
        }
        dt_out("max_merged_like", "%zu", max_merged);
        if (max_merged)
            dt_fail("%zu pages looked merged although nothing should merge", max_merged);
    }
    dt_out("merged_like_before_verify", "%zu", dt_ranges_merged_like(r, nr));

    size_t bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_check_random(bufs[i], buf, seed);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes differ from what was written", bad);

    size_t file = 0, present = 0;
    double rpss = 0;
    for (int i = 0; i < nr; i++) {
        struct dt_pm st;
        dt_pm_scan(r[i].addr, r[i].len, &st, NULL, NULL);
        file += st.file;
        present += st.present;
        rpss += dt_region_pss_kb(r[i].addr, r[i].len);
    }
    dt_out("file_pages_after_verify", "%zu", file);
    dt_out("present_after_verify", "%zu", present);
    dt_out("region_pss_kb", "%.0f", rpss);
    dt_out("pss_delta_kb", "%ld", dt_rollup_pss_kb() - pss0);
    if (strcmp(expect, "merge") == 0 && file < pages * 9 / 10)
        dt_fail("only %zu of %zu pages shared after reading them", file, pages);
    if (strcmp(expect, "none") == 0 && file)
        dt_fail("%zu pages are file/shared pages", file);

    if (dt_arg_flag(argc, argv, "--ready"))
        dt_ready("merged");

    /* Contents must still be right after the driver's outside checks. */
    bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_check_random(bufs[i], buf, seed);
    if (bad)
        dt_fail("%zu bytes differ at the end", bad);
    if (dt_arg_flag(argc, argv, "--unmerge")) {
        int failures = 0;
        for (int i = 0; i < nr; i++)
            if (madvise(r[i].addr, r[i].len, MADV_UNMERGEABLE) != 0) {
                failures++;
                dt_fail("MADV_UNMERGEABLE returned nonzero: %s", strerror(errno));
            }
        dt_out("madv_unmergeable_failures", "%d", failures);
        file = 0;
        rpss = 0;
        for (int i = 0; i < nr; i++) {
            dt_touch_read(r[i].addr, r[i].len);
            file += dt_file_pages(r[i].addr, r[i].len);
            rpss += dt_region_pss_kb(r[i].addr, r[i].len);
        }
        bad = 0;
        for (long i = 0; i < copies; i++)
            bad += dt_check_random(bufs[i], buf, seed);
        dt_out("unmerged_file_pages", "%zu", file);
        dt_out("unmerged_region_pss_kb", "%.0f", rpss);
        dt_out("unmerged_mismatches", "%zu", bad);
        if (file)
            dt_fail("%zu pages still shared after MADV_UNMERGEABLE", file);
        if (bad)
            dt_fail("%zu bytes wrong after MADV_UNMERGEABLE", bad);
        if (rpss < 0.9 * (double)total / 1024)
            dt_fail("region Pss %.0f kB after unmerge, want >= 90%% of %zu kB", rpss, total / 1024);
    }
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
