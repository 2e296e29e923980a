/* read(2) into memory that another thread unmerges.
 *
 *   hostile_unmerge_read --op unmergeable|mlock|mlockall|wipeonfork|prctl0|none
 *                        [--iters N] [--ms T] [--threads K] [--pages P]
 *
 * A region of P pages (16 copies of each of 16 pattern pages, so the shim
 * merges it) is the target of K reader threads that pread(2)/read(2) random
 * runs of it from a file holding the same bytes. The main thread loops, at
 * most N times or T ms:
 *
 *   make the region mergeable again  (MADV_MERGEABLE, munlock, munlockall,
 *                                     MADV_KEEPONFORK, PR_SET_MEMORY_MERGE 1)
 *   wait until part of it lies in memfd pieces (with the shim, <= 2 s)
 *   unmerge it                       (MADV_UNMERGEABLE, mlock,
 *                                     mlockall(MCL_CURRENT), MADV_WIPEONFORK,
 *                                     PR_SET_MEMORY_MERGE 0)
 *
 * Every unmerge write-protects the pages it copies. A read(2) into them
 * meanwhile fails with EFAULT (or returns short) although nothing the
 * program did could make it fail: the reads are of a regular file, in
 * range, into memory that is mapped and writable throughout.
 *
 * --op none unmerges nothing (an attribution check: the same readers
 * against the scanner's merges alone, which the pins guard).
 *
 * Prints reads, efaults, short_reads, read_errors, mismatches,
 * unmerge_calls, unmerge_failures, merged_iters (iterations that saw memfd
 * pieces before unmerging), final_bad_bytes; exits 1 if any kernel write
 * failed or any byte differs.
 */
#include "hostile.h"

#include <sys/prctl.h>

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif
#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#define MADV_KEEPONFORK 19
#endif

static unsigned char *region;
static size_t npages;

static int do_enable(const char *op)
{
    size_t len = npages * DT_PAGE;
    if (!strcmp(op, "unmergeable"))
        return madvise(region, len, MADV_MERGEABLE);
    if (!strcmp(op, "mlock"))
        return munlock(region, len);
    if (!strcmp(op, "mlockall"))
        return munlockall();
    if (!strcmp(op, "wipeonfork"))
        return madvise(region, len, MADV_KEEPONFORK);
    if (!strcmp(op, "prctl0"))
        return prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
    if (!strcmp(op, "none"))
        return 0;
    return -2;
}

static int do_unmerge(const char *op)
{
    size_t len = npages * DT_PAGE;
    if (!strcmp(op, "unmergeable"))
        return madvise(region, len, MADV_UNMERGEABLE);
    if (!strcmp(op, "mlock"))
        return mlock(region, len);
    if (!strcmp(op, "mlockall"))
        return mlockall(MCL_CURRENT);
    if (!strcmp(op, "wipeonfork"))
        return madvise(region, len, MADV_WIPEONFORK);
    if (!strcmp(op, "prctl0"))
        return prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0);
    if (!strcmp(op, "none")) {
        dt_sleep_ms(20);
        return 0;
    }
    return -2;
}

int main(int argc, char **argv)
{
    const char *op = dt_arg_str(argc, argv, "--op", "unmergeable");
    long iters = dt_arg_long(argc, argv, "--iters", 60);
    long ms = dt_arg_long(argc, argv, "--ms", 6000);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long pages = dt_arg_long(argc, argv, "--pages", 256);
    npages = (size_t)(pages < 2 * H_PAT ? 2 * H_PAT : pages) / H_PAT * H_PAT;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    dt_out("op", "%s", op);
    if (do_enable(op) == -2) {
        fprintf(stderr, "unknown --op %s\n", op);
        return 2;
    }

    region = h_map(npages);
    h_fill(region, 0, npages, 0);
    int fd = h_pattern_file(0);

    static struct h_readers rd;
    rd.base = region;
    rd.pages = npages;
    rd.max_run = 4;
    rd.fd = fd;
    rd.kinds = H_READ_PREAD | H_READ_READ;
    rd.nthreads = (int)threads;
    h_readers_start(&rd);

    long calls = 0, failures = 0, merged_iters = 0;
    double t0 = dt_now_ms();
    for (long i = 0; i < iters && dt_now_ms() - t0 < ms; i++) {
        if (do_enable(op) != 0) {
            fprintf(stderr, "enable (%s): %s\n", op, strerror(errno));
            failures++;
        }
        if (shim)
            merged_iters += h_wait_file_vmas(region, npages * DT_PAGE, npages * DT_PAGE / 4, 2000);
        else
            dt_sleep_ms(5);
        calls++;
        if (do_unmerge(op) != 0) {
            fprintf(stderr, "unmerge (%s): %s\n", op, strerror(errno));
            failures++;
        }
        dt_sleep_ms(1); /* readers get the pages while they are private */
    }
    h_readers_stop(&rd);
    do_enable(op);

    size_t bad = h_check(region, 0, npages, 0);
    int shown = 0;
    for (size_t p = 0; p < npages && bad && shown < 8; p++) {
        size_t b = h_check(region + p * DT_PAGE, p, 1, 0);
        if (!b)
            continue;
        shown++;
        fprintf(stderr, "page %zu: %zu bytes differ, %zu of them zero, pagemap %#llx\n", p, b,
                DT_PAGE - dt_count_not(region + p * DT_PAGE, DT_PAGE, 0), (unsigned long long)dt_pm_entry(region + p * DT_PAGE));
    }
    h_readers_report(&rd);
    dt_out("unmerge_calls", "%ld", calls);
    dt_out("unmerge_failures", "%ld", failures);
    dt_out("merged_iters", "%ld", merged_iters);
    dt_out("final_bad_bytes", "%zu", bad);
    return h_readers_clean(&rd) && !bad && !failures ? 0 : 1;
}
