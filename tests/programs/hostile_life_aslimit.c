/* The program's address space under RLIMIT_AS (hostile lifecycle row 7).
 *
 *   hostile_life_aslimit --as BYTES --mode probe|unmerge [--timeout-ms T] [--no-wait]
 *
 * Sets RLIMIT_AS (soft and hard, as `ulimit -v` does) and re-executes
 * itself, so the limit is in place from the first instruction of the image
 * the shim is preloaded into.
 *
 * probe:   mmap()s 16 MiB anonymous private chunks until one fails and
 *          prints chunks=<n>, mib=<16 n>.
 * unmerge: maps 2 x 32 MiB of one random buffer, waits until 90% of it
 *          looks merged (merge_wait_ms, -1 on timeout), then fills the
 *          address space with 16 MiB and then 1 MiB chunks until mmap fails
 *          (fill_mib), and calls madvise(MADV_UNMERGEABLE) on the 64 MiB
 *          (unmerge_result=0|<errno>), verifies every byte (mismatches)
 *          and reports the pages still shared after that read
 *          (shared_after).
 */
#include "dtest.h"
#include <sys/resource.h>

static size_t fill(size_t chunk, size_t max)
{
    size_t n = 0;
    while (n < max) {
        void *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            break;
        n++;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *mode = dt_arg_str(argc, argv, "--mode", "probe");
    long as = dt_arg_long(argc, argv, "--as", 1L << 30);
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 8000);

    if (!dt_arg_flag(argc, argv, "--execd")) {
        struct rlimit rl = {(rlim_t)as, (rlim_t)as};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            dt_die("setrlimit RLIMIT_AS");
        char *av[64];
        int n = 0;
        for (int i = 0; i < argc && n < 62; i++)
            av[n++] = argv[i];
        av[n++] = "--execd";
        av[n] = NULL;
        execv("/proc/self/exe", av);
        dt_die("execv");
    }

    if (!strcmp(mode, "probe")) {
        size_t n = fill(16 << 20, 1 << 20);
        dt_out("chunks", "%zu", n);
        dt_out("mib", "%zu", n * 16);
        return 0;
    }

    size_t buf = 32 << 20, total = 2 * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    dt_fill_random(region, buf, 77);
    memcpy(region + buf, region, buf);
    struct dt_range r = {region, total};
    if (!dt_arg_flag(argc, argv, "--no-wait"))
        dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.9, timeout));
    dt_out("merged", "%zu/%zu", dt_merged_like(region, total), total / DT_PAGE);
    size_t big = fill(16 << 20, 1 << 20);
    size_t small = fill(1 << 20, 1 << 20);
    dt_out("fill_mib", "%zu", big * 16 + small);
    int rc = madvise(region, total, MADV_UNMERGEABLE);
    dt_out("unmerge_result", "%s", rc == 0 ? "0" : dt_errname(errno));
    size_t bad = dt_check_random(region, buf, 77) + dt_check_random(region + buf, buf, 77);
    dt_out("mismatches", "%zu", bad);
    dt_out("shared_after", "%zu", dt_file_pages(region, total)); /* every page was read */
    return bad ? 1 : 0;
}
