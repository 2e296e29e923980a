/* read(2) into a merged region while the program grows it in place.
 *
 *   hostile_mremap_read [--iters N] [--ms T] [--threads K] [--pages P] [--no-grow]
 *
 * A region of P pages (pattern pages, merged by the shim) is the target of
 * K reader threads that pread(2)/read(2) random runs of it from a file
 * holding the same bytes. The main thread loops, at most N times or T ms:
 * wait until part of the region lies in memfd pieces (with the shim), then
 * mremap(region, P, P + 1 pages, 0), growing it in place, and unmap the new
 * last page again. Before the kernel grows a range the shim split into
 * memfd pieces it makes it one anonymous mapping again (rt_mremap ->
 * consolidate), write-protecting the whole range while it copies it, with
 * no regard for syscalls writing into it: a read(2) meanwhile fails with
 * EFAULT or returns short.
 *
 * --no-grow: the loop only waits (an attribution check: the same readers
 * against the scanner's merges alone).
 *
 * Prints reads, efaults, short_reads, read_errors, mismatches, grows,
 * grow_failures, merged_iters, final_bad_bytes; exits 1 if a kernel write
 * failed, a grow failed or a byte differs.
 */
#include "hostile.h"

int main(int argc, char **argv)
{
    long iters = dt_arg_long(argc, argv, "--iters", 60);
    long ms = dt_arg_long(argc, argv, "--ms", 6000);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long pages = dt_arg_long(argc, argv, "--pages", 512);
    int no_grow = dt_arg_flag(argc, argv, "--no-grow");
    size_t np = (size_t)(pages < 2 * H_PAT ? 2 * H_PAT : pages) / H_PAT * H_PAT;
    size_t len = np * DT_PAGE;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);

    /* The page after the region is kept free for the growth. */
    unsigned char *region = h_map(np + 1);
    if (munmap(region + len, DT_PAGE) != 0)
        dt_die("munmap tail");
    h_fill(region, 0, np, 0);
    int fd = h_pattern_file(0);

    static struct h_readers rd;
    rd.base = region;
    rd.pages = np;
    rd.max_run = 4;
    rd.fd = fd;
    rd.kinds = H_READ_PREAD | H_READ_READ;
    rd.nthreads = (int)threads;
    h_readers_start(&rd);

    long grows = 0, failures = 0, merged_iters = 0;
    double t0 = dt_now_ms();
    for (long i = 0; i < iters && dt_now_ms() - t0 < ms; i++) {
        if (shim)
            merged_iters += h_wait_file_vmas(region, len, len / 4, 2000);
        else
            dt_sleep_ms(5);
        if (no_grow) {
            dt_sleep_ms(20);
            continue;
        }
        void *r = mremap(region, len, len + DT_PAGE, 0);
        grows++;
        if (r == MAP_FAILED) {
            fprintf(stderr, "mremap grow: %s\n", strerror(errno));
            failures++;
            continue;
        }
        if (r != region) {
            fprintf(stderr, "mremap moved the region without MREMAP_MAYMOVE\n");
            return 2;
        }
        if (munmap(region + len, DT_PAGE) != 0)
            dt_die("munmap grown page");
        dt_sleep_ms(1);
    }
    h_readers_stop(&rd);

    size_t bad = h_check(region, 0, np, 0);
    h_readers_report(&rd);
    dt_out("grows", "%ld", grows);
    dt_out("grow_failures", "%ld", failures);
    dt_out("merged_iters", "%ld", merged_iters);
    dt_out("final_bad_bytes", "%zu", bad);
    return h_readers_clean(&rd) && !bad && !failures ? 0 : 1;
}
