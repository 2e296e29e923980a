/* Merges a recognisable pattern, then abort()s with a core dump (hostile
 * lifecycle row 5).
 *
 *   hostile_life_core --dir D [--copies N] [--buf-kib K] [--timeout-ms T]
 *                     [--no-wait]
 *
 * Changes to D (core_pattern "core" puts the core in the working
 * directory), raises RLIMIT_CORE to unlimited, fills N identical copies of
 * K KiB, writes the content of one copy to D/expected.bin (from memory the
 * shim never registers), waits until the copies look merged (unless
 * --no-wait), reads the first half of every copy back (so some merged pages
 * are present and some not), prints region_addr=0x..., region_len, copy_len,
 * merged=<pages>/<pages>, then abort()s.
 */
#include "dtest.h"
#include <sys/resource.h>

int main(int argc, char **argv)
{
    const char *dir = dt_arg_str(argc, argv, "--dir", NULL);
    long copies = dt_arg_long(argc, argv, "--copies", 4);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 2048) * 1024;
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 8000);
    if (!dir || copies < 2 || copies > 64)
        return 2;
    if (chdir(dir) != 0)
        dt_die("chdir");
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    if (setrlimit(RLIMIT_CORE, &rl) != 0) {
        getrlimit(RLIMIT_CORE, &rl);
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_CORE, &rl) != 0)
            dt_die("setrlimit RLIMIT_CORE");
    }

    unsigned char *expect = dt_scratch(buf);
    /* Page p of a copy: a text naming the page, then random bytes. */
    dt_fill_random(expect, buf, 5150);
    for (size_t p = 0; p < buf / DT_PAGE; p++)
        snprintf((char *)expect + p * DT_PAGE, 64, "HOSTILE-CORE page %zu of %zu", p, buf / DT_PAGE);
    FILE *f = fopen("expected.bin", "wb");
    if (!f || fwrite(expect, 1, buf, f) != buf || fclose(f) != 0)
        dt_die("write expected.bin");

    size_t total = (size_t)copies * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    for (long i = 0; i < copies; i++)
        memcpy(region + (size_t)i * buf, expect, buf);
    struct dt_range r = {region, total};
    if (!dt_arg_flag(argc, argv, "--no-wait"))
        dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.9, timeout));
    dt_out("merged", "%zu/%zu", dt_merged_like(region, total), total / DT_PAGE);
    for (long i = 0; i < copies; i++)
        dt_touch_read(region + (size_t)i * buf, buf / 2);
    size_t bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_count_diff(region + (size_t)i * buf, expect, buf);
    dt_out("mismatches", "%zu", bad);
    dt_out("region_addr", "%p", (void *)region);
    dt_out("region_len", "%zu", total);
    dt_out("copy_len", "%zu", buf);
    fflush(stdout);
    abort();
}
