/* Write after merge: N copies of a random buffer are merged, then single bytes
 * are written into W distinct pages (distinct offsets and values, so no two
 * written pages become duplicates of each other). Each written page must stop
 * being shared (pagemap bit 61 clear, present) right away, every other page
 * must keep its bytes and stay shared, and after --hold-ms the whole region
 * must still equal the expected image (kept in unregistered shared memory).
 *
 *   cow_write [--copies N] [--buf-kib K] [--writes W] [--hold-ms H]
 */
#include "dtest.h"

int main(int argc, char **argv)
{
    long copies = dt_arg_long(argc, argv, "--copies", 16);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 1024) * 1024;
    long writes = dt_arg_long(argc, argv, "--writes", 8);
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 500);
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 20000);
    size_t total = (size_t)copies * buf;
    size_t bpages = buf / DT_PAGE;

    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    unsigned char *expect = dt_scratch(total);
    dt_fill_random(region, buf, 7);
    for (long i = 1; i < copies; i++)
        memcpy(region + i * buf, region, buf);
    memcpy(expect, region, total);

    struct dt_range r = {region, total};
    double w = dt_wait_merged(&r, 1, 0.95, timeout);
    dt_out("merge_wait_ms", "%.0f", w);
    if (w < 0) {
        dt_fail("region did not merge within %.0f ms", timeout);
        dt_out("result", "fail");
        return 1;
    }
    size_t bad = dt_count_diff(region, expect, total);
    dt_out("mismatches_after_merge", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong after merging", bad);
    size_t shared_before = dt_file_pages(region, total);
    dt_out("file_pages_before_writes", "%zu", shared_before);
    dt_out("total_pages", "%zu", total / DT_PAGE);

    size_t still_shared = 0, not_present = 0, neighbours_unshared = 0;
    for (long i = 0; i < writes; i++) {
        size_t copy = (size_t)(i % copies);
        size_t page = (size_t)((i * 7 + 3) % (long)bpages);
        size_t off = copy * buf + page * DT_PAGE + (size_t)((i * 131) % (long)DT_PAGE);
        unsigned char val = (unsigned char)(expect[off] ^ (0x5a + i));
        if (val == expect[off])
            val ^= 0xff;
        /* neighbours (same copy, page +/- 1) must be shared before and after */
        size_t pg = (copy * buf + page * DT_PAGE) / DT_PAGE;
        ((volatile unsigned char *)region)[off] = val;
        expect[off] = val;
        uint64_t e = dt_pm_entry(region + pg * DT_PAGE);
        if (!(e & PM_PRESENT))
            not_present++;
        if (e & PM_FILE)
            still_shared++;
        for (int d = -1; d <= 1; d += 2) {
            long q = (long)pg + d;
            if (q < 0 || (size_t)q >= total / DT_PAGE)
                continue;
            (void)dt_touch_read(region + q * DT_PAGE, 1);
            uint64_t ne = dt_pm_entry(region + q * DT_PAGE);
            if (!(ne & PM_FILE) && memcmp(region + q * DT_PAGE, expect + q * DT_PAGE, DT_PAGE) == 0)
                neighbours_unshared++;
        }
    }
    dt_out("writes", "%ld", writes);
    dt_out("written_pages_still_shared", "%zu", still_shared);
    dt_out("written_pages_not_present", "%zu", not_present);
    dt_out("neighbours_unshared", "%zu", neighbours_unshared);
    if (still_shared || not_present)
        dt_fail("written pages: %zu still shared, %zu not present", still_shared, not_present);

    bad = dt_count_diff(region, expect, total);
    dt_out("mismatches_after_writes", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong right after the writes", bad);

    dt_sleep_ms(hold);
    bad = dt_count_diff(region, expect, total);
    dt_out("mismatches_after_hold", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong after holding %.0f ms", bad, hold);
    size_t shared_after = dt_file_pages(region, total);
    dt_out("file_pages_after_hold", "%zu", shared_after);
    /* the written pages must not be shared again */
    size_t reshared = 0;
    for (long i = 0; i < writes; i++) {
        size_t copy = (size_t)(i % copies);
        size_t page = (size_t)((i * 7 + 3) % (long)bpages);
        if (dt_pm_entry(region + copy * buf + page * DT_PAGE) & PM_FILE)
            reshared++;
    }
    dt_out("written_pages_reshared", "%zu", reshared);
    if (reshared)
        dt_fail("%zu written (now unique) pages are shared again", reshared);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
