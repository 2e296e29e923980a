/* MADV_DONTNEED / MADV_FREE on merged pages.
 *
 *   discard dontneed|free [--copies N] [--buf-kib K]
 *
 * N copies of a random buffer are merged; then the advice is applied to all of
 * copy 1 and to pages 5..20 of copy 2. madvise must return 0. Afterwards:
 *  - DONTNEED: every discarded page reads zeros;
 *  - FREE: every discarded page that was merged reads zeros (never the
 *    canonical contents); one that was not merged yet may keep its old bytes
 *    (kernel lazy-free semantics) or read zeros, nothing else;
 *  - every other page keeps its bytes;
 *  - the discarded pages can be written again and keep what is written.
 */
#include "dtest.h"

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "dontneed") && strcmp(argv[1], "free"))) {
        fprintf(stderr, "usage: discard dontneed|free [opts]\n");
        return 2;
    }
    int is_free = strcmp(argv[1], "free") == 0;
    int advice = is_free ? MADV_FREE : MADV_DONTNEED;
    long copies = dt_arg_long(argc, argv, "--copies", 8);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 1024) * 1024;
    if (copies < 3)
        copies = 3;
    size_t total = (size_t)copies * buf, npages = total / DT_PAGE;

    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    unsigned char *expect = dt_scratch(total);
    unsigned char *was_merged = dt_scratch((npages + DT_PAGE) & ~(DT_PAGE - 1));
    unsigned char *discarded = dt_scratch((npages + DT_PAGE) & ~(DT_PAGE - 1));
    dt_fill_random(region, buf, 99);
    for (long i = 1; i < copies; i++)
        memcpy(region + i * buf, region, buf);
    memcpy(expect, region, total);

    struct dt_range r = {region, total};
    double w = dt_wait_merged(&r, 1, 0.95, 20000);
    /* The test checks that >= 90% of the pages about to be discarded were
     * merged: 95% of the whole region says nothing about those pages, so
     * wait for them too. */
    size_t p1 = buf / DT_PAGE, n1 = buf / DT_PAGE;
    size_t p2 = 2 * buf / DT_PAGE + 5, n2 = 16;
    struct dt_range dr[2] = {{region + p1 * DT_PAGE, n1 * DT_PAGE}, {region + p2 * DT_PAGE, n2 * DT_PAGE}};
    if (w >= 0) {
        double w2 = dt_wait_merged(dr, 2, 0.95, 20000);
        w = w2 < 0 ? w2 : w + w2;
    }
    dt_out("merge_wait_ms", "%.0f", w);
    if (w < 0) {
        dt_fail("region did not merge (%zu of %zu pages, %zu of the %zu to discard, look merged)",
                dt_merged_like(region, total), npages, dt_ranges_merged_like(dr, 2), n1 + n2);
        dt_out("result", "fail");
        return 1;
    }
    /* read everything once: merged pages become present file pages */
    size_t bad = dt_count_diff(region, expect, total);
    if (bad)
        dt_fail("%zu bytes wrong after merge", bad);

    for (size_t p = 0; p < npages; p++) {
        uint64_t e = dt_pm_entry(region + p * DT_PAGE);
        was_merged[p] = (e & PM_FILE) || !(e & PM_PRESENT);
    }
    int r1 = madvise(region + p1 * DT_PAGE, n1 * DT_PAGE, advice);
    int e1 = r1 ? errno : 0;
    int r2 = madvise(region + p2 * DT_PAGE, n2 * DT_PAGE, advice);
    int e2 = r2 ? errno : 0;
    dt_out("madvise_ret_1", "%d:%s", r1, dt_errname(e1));
    dt_out("madvise_ret_2", "%d:%s", r2, dt_errname(e2));
    if (r1 || r2)
        dt_fail("madvise returned %d (%s) / %d (%s)", r1, strerror(e1), r2, strerror(e2));
    for (size_t k = 0; k < n1; k++)
        discarded[p1 + k] = 1;
    for (size_t k = 0; k < n2; k++)
        discarded[p2 + k] = 1;

    size_t merged_discarded = 0, zero_pages = 0, old_pages = 0, canonical_seen = 0;
    size_t wrong_discarded = 0, wrong_kept = 0;
    for (size_t p = 0; p < npages; p++) {
        unsigned char *pg = region + p * DT_PAGE, *ex = expect + p * DT_PAGE;
        if (!discarded[p]) {
            wrong_kept += dt_count_diff(pg, ex, DT_PAGE);
            continue;
        }
        merged_discarded += was_merged[p];
        int zero = dt_count_not(pg, DT_PAGE, 0) == 0;
        int old = memcmp(pg, ex, DT_PAGE) == 0;
        zero_pages += zero;
        old_pages += old;
        if (zero)
            continue;
        if (old && is_free && !was_merged[p])
            continue; /* lazy free of a private page: allowed */
        if (old)
            canonical_seen++;
        wrong_discarded++;
    }
    dt_out("discarded_pages", "%zu", n1 + n2);
    dt_out("discarded_were_merged", "%zu", merged_discarded);
    dt_out("discarded_read_zero", "%zu", zero_pages);
    dt_out("discarded_read_old", "%zu", old_pages);
    dt_out("discarded_wrong", "%zu", wrong_discarded);
    dt_out("discarded_showing_canonical", "%zu", canonical_seen);
    dt_out("kept_mismatches", "%zu", wrong_kept);
    if (wrong_discarded)
        dt_fail("%zu discarded pages read neither zeros nor allowed old data (%zu show the "
                "canonical/old contents)", wrong_discarded, canonical_seen);
    if (wrong_kept)
        dt_fail("%zu bytes of pages that were not discarded changed", wrong_kept);

    /* the discarded range is ordinary memory again */
    for (size_t p = 0; p < npages; p++)
        if (discarded[p]) {
            memset(region + p * DT_PAGE, (int)(p & 0xff) | 1, DT_PAGE);
            memset(expect + p * DT_PAGE, (int)(p & 0xff) | 1, DT_PAGE);
        }
    dt_sleep_ms(200);
    bad = dt_count_diff(region, expect, total);
    dt_out("mismatches_after_rewrite", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong after rewriting the discarded pages", bad);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
