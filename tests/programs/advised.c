/* DEDUP_SCOPE=advised: two regions of duplicates, only region A is given
 * MADV_MERGEABLE. A must merge, B must never merge. madvise's results for
 * valid and invalid calls are printed as "madv_<case>=<ret>:<errno-name>" so
 * that the driver can compare them with a run without the shim.
 *
 *   advised [--invalid-only] [--copies N] [--buf-kib K] [--hold-ms H]
 */
#include "dtest.h"

static void report(const char *name, int ret)
{
    int e = ret ? errno : 0;
    dt_out(name, "%d:%s", ret, dt_errname(e));
}

static void invalid_calls(unsigned char *a)
{
    /* an address range that is certainly unmapped */
    unsigned char *hole = mmap(NULL, 8 * DT_PAGE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (hole == MAP_FAILED)
        dt_die("mmap hole");
    munmap(hole + 4 * DT_PAGE, 4 * DT_PAGE); /* first 4 pages mapped, last 4 not */

    report("madv_mergeable_unaligned", madvise(a + 1, DT_PAGE, MADV_MERGEABLE));
    report("madv_unmergeable_unaligned", madvise(a + 100, DT_PAGE, MADV_UNMERGEABLE));
    report("madv_mergeable_len0", madvise(a, 0, MADV_MERGEABLE));
    report("madv_mergeable_unmapped", madvise(hole + 4 * DT_PAGE, 4 * DT_PAGE, MADV_MERGEABLE));
    report("madv_unmergeable_unmapped", madvise(hole + 4 * DT_PAGE, 4 * DT_PAGE, MADV_UNMERGEABLE));
    report("madv_mergeable_partly_unmapped", madvise(hole, 8 * DT_PAGE, MADV_MERGEABLE));
    report("madv_mergeable_len_overflow", madvise(a, (size_t)-DT_PAGE, MADV_MERGEABLE));
    report("madv_bogus_advice", madvise(a, DT_PAGE, 12345));
    report("madv_dontneed_unaligned", madvise(a + 1, DT_PAGE, MADV_DONTNEED));
    report("madv_free_unaligned", madvise(a + 1, DT_PAGE, MADV_FREE));
    report("madv_dontneed_unmapped", madvise(hole + 4 * DT_PAGE, 4 * DT_PAGE, MADV_DONTNEED));
    munmap(hole, 4 * DT_PAGE);
}

int main(int argc, char **argv)
{
    long copies = dt_arg_long(argc, argv, "--copies", 16);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 512) * 1024;
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 700);
    size_t total = (size_t)copies * buf;

    unsigned char *a = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *b = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        dt_die("mmap");
    dt_fill_random(a, buf, 5);
    dt_fill_random(b, buf, 6);
    for (long i = 1; i < copies; i++) {
        memcpy(a + i * buf, a, buf);
        memcpy(b + i * buf, b, buf);
    }
    invalid_calls(a);
    if (dt_arg_flag(argc, argv, "--invalid-only")) {
        dt_out("result", "ok");
        return 0;
    }

    report("madv_mergeable_a", madvise(a, total, MADV_MERGEABLE));
    struct dt_range ra = {a, total};
    double w = dt_wait_merged(&ra, 1, 0.95, 20000);
    dt_out("merge_wait_ms_a", "%.0f", w);
    if (w < 0)
        dt_fail("advised region A did not merge (%zu of %zu pages)", dt_merged_like(a, total),
                total / DT_PAGE);
    size_t b_max = dt_merged_like(b, total);
    double t0 = dt_now_ms();
    while (dt_now_ms() - t0 < hold) {
        size_t m = dt_merged_like(b, total);
        if (m > b_max)
            b_max = m;
        dt_sleep_ms(10);
    }
    dt_out("merged_like_b_max", "%zu", b_max);
    if (b_max)
        dt_fail("%zu pages of the non-advised region B merged", b_max);

    size_t bad = dt_check_random(b, buf, 6);
    for (long i = 0; i < copies; i++) {
        bad += dt_check_random(a + i * buf, buf, 5);
        bad += dt_check_random(b + i * buf, buf, 6);
    }
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong", bad);
    dt_out("file_pages_a", "%zu", dt_file_pages(a, total));
    dt_out("file_pages_b", "%zu", dt_file_pages(b, total));
    if (dt_file_pages(b, total))
        dt_fail("region B has shared pages");

    int ru_b = madvise(b, total, MADV_UNMERGEABLE);
    report("madv_unmergeable_b", ru_b);
    int ru_a = madvise(a, total, MADV_UNMERGEABLE);
    report("madv_unmergeable_a", ru_a);
    if (ru_a || ru_b)
        dt_fail("MADV_UNMERGEABLE did not return 0");
    dt_touch_read(a, total);
    size_t fa = dt_file_pages(a, total);
    dt_out("file_pages_a_after_unmerge", "%zu", fa);
    if (fa)
        dt_fail("%zu pages of A still shared after MADV_UNMERGEABLE", fa);
    bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_check_random(a + i * buf, buf, 5);
    dt_out("mismatches_after_unmerge", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes of A wrong after unmerge", bad);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
