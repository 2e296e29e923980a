/* Big merged duplicates given back with MADV_UNMERGEABLE, or rewritten, in
 * a process whose memory is limited from outside (hostile lifecycle row 6).
 *
 *   hostile_life_unmerge [--copies N] [--mib M] [--rewrite] [--ready-early]
 *                        [--timeout-ms T] [--no-wait]
 *
 * With --ready-early prints "ready=start" and waits on stdin before it maps
 * anything (the driver moves it into a memory cgroup meanwhile). Maps N
 * copies of M MiB of one random buffer in one region, waits until 90% of the
 * pages look merged (merge_wait_ms, -1 on timeout; skipped with --no-wait),
 * then either madvise(MADV_UNMERGEABLE)s the whole region
 * (unmerge_result=0|<errno>) or, with --rewrite, writes new content into
 * every page, copy after copy. Verifies every byte (mismatches=<bytes>) and
 * exits 0 when it is all correct.
 */
#include "dtest.h"

int main(int argc, char **argv)
{
    long copies = dt_arg_long(argc, argv, "--copies", 2);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--mib", 96) << 20;
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 10000);
    int rewrite = dt_arg_flag(argc, argv, "--rewrite");
    if (copies < 2 || copies > 64)
        return 2;
    if (dt_arg_flag(argc, argv, "--ready-early"))
        dt_ready("start");

    size_t total = (size_t)copies * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    dt_fill_random(region, buf, 606);
    for (long i = 1; i < copies; i++)
        memcpy(region + (size_t)i * buf, region, buf);
    struct dt_range r = {region, total};
    if (!dt_arg_flag(argc, argv, "--no-wait"))
        dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.9, timeout));
    dt_out("merged", "%zu/%zu", dt_merged_like(region, total), total / DT_PAGE);

    size_t bad = 0;
    if (!rewrite) {
        int rc = madvise(region, total, MADV_UNMERGEABLE);
        dt_out("unmerge_result", "%s", rc == 0 ? "0" : dt_errname(errno));
        dt_out("shared_after", "%zu", dt_file_pages(region, total));
        for (long i = 0; i < copies; i++)
            bad += dt_check_random(region + (size_t)i * buf, buf, 606);
    } else {
        for (long i = 0; i < copies; i++)
            dt_fill_random(region + (size_t)i * buf, buf, 700 + (uint64_t)i);
        for (long i = 0; i < copies; i++)
            bad += dt_check_random(region + (size_t)i * buf, buf, 700 + (uint64_t)i);
    }
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
