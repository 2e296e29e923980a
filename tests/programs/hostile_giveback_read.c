/* read(2) into a merged region while the shim gives VMAs back.
 *
 *   hostile_giveback_read [--pages P] [--threads K] [--wait-ms T] [--no-grow]
 *
 * A region of P pages (pattern pages, merged by the shim) is the target of
 * K reader threads that pread(2)/read(2) random runs of it from a file
 * holding the same bytes. Then the program itself grows its VMA count
 * (mprotect of every other page of a MAP_SHARED scratch mapping, which the
 * shim does not register) until it is past the point where the shim gives
 * VMAs back: a quarter of the way into DEDUP_VMA_RESERVE (read from the
 * environment, default max_map_count / 8), plus a margin. The shim then
 * "consolidates" its most fragmented merged regions (scanner/runtime.cpp,
 * give_back_vmas): it write-protects the whole region, copies it and
 * mremaps the copy over it, with no regard for syscalls writing into it. A
 * read(2) meanwhile fails with EFAULT or returns short.
 *
 * The program waits (at most T ms) until the region holds no memfd piece
 * (the give-back happened), keeps reading 200 ms more, stops, gives its VMAs
 * back, and checks every byte.
 *
 * --no-grow: the program grows its VMAs only to half the give-back point
 * (an attribution check: nothing is given back, the readers meet only the
 * scanner's merges).
 *
 * Prints reads, efaults, short_reads, read_errors, mismatches, merged_before
 * (bytes of the region in memfd pieces before the growth), grown_to,
 * gave_back (1: the region was made one anonymous mapping again while the
 * readers ran), final_bad_bytes. Exits 1 if a kernel write failed or a
 * byte differs.
 */
#include "hostile.h"

int main(int argc, char **argv)
{
    long pages = dt_arg_long(argc, argv, "--pages", 4096);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long wait_ms = dt_arg_long(argc, argv, "--wait-ms", 12000);
    size_t np = (size_t)(pages < 2 * H_PAT ? 2 * H_PAT : pages) / H_PAT * H_PAT;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);

    long max = h_read_long("/proc/sys/vm/max_map_count");
    const char *rs = getenv("DEDUP_VMA_RESERVE");
    long reserve = rs && *rs ? atol(rs) : max / 8;
    if (reserve <= 0 || reserve >= max)
        reserve = max / 8;
    long limit = max - reserve;
    long threshold = limit + reserve / 4; /* VmaBudget::pressure_threshold */
    long grow_to = dt_arg_flag(argc, argv, "--no-grow") ? threshold / 2 : threshold + 600;
    if (grow_to > max - 300) {
        fprintf(stderr, "DEDUP_VMA_RESERVE=%ld leaves no room to grow past the give-back point\n", reserve);
        return 2;
    }
    dt_out("give_back_threshold", "%ld", threshold);

    unsigned char *region = h_map(np);
    h_fill(region, 0, np, 0);
    int fd = h_pattern_file(0);
    size_t len = np * DT_PAGE;
    if (shim && !h_wait_file_vmas(region, len, len * 9 / 10, 15000))
        fprintf(stderr, "region not merged in time (%zu bytes in memfd pieces)\n", h_file_vma_bytes(region, len));
    size_t merged_before = h_file_vma_bytes(region, len);
    dt_out("merged_before", "%zu", merged_before);

    static struct h_readers rd;
    rd.base = region;
    rd.pages = np;
    rd.max_run = 4;
    rd.fd = fd;
    rd.kinds = H_READ_PREAD | H_READ_READ;
    rd.nthreads = (int)threads;
    h_readers_start(&rd);
    dt_sleep_ms(100);

    /* The program's own VMAs: every other page of a shared scratch mapping. */
    size_t big = (size_t)grow_to + 4000;
    unsigned char *b = mmap(NULL, big * DT_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        dt_die("mmap scratch");
    size_t i = 1;
    long now, grow_failures = 0;
    while ((now = h_count_vmas()) < grow_to && i < big) {
        long step = (grow_to - now) / 2;
        if (step > 2000)
            step = 2000;
        if (step < 1)
            break;
        for (long k = 0; k < step && i < big; k++, i += 2)
            if (mprotect(b + i * DT_PAGE, DT_PAGE, PROT_READ) != 0) {
                grow_failures++;
                fprintf(stderr, "mprotect at vmas=%ld: %s\n", h_count_vmas(), strerror(errno));
                break;
            }
        if (grow_failures)
            break;
    }
    dt_out("grown_to", "%ld", h_count_vmas());
    dt_out("grow_failures", "%ld", grow_failures);

    int gave_back = 0;
    double t0 = dt_now_ms();
    while (shim && dt_now_ms() - t0 < wait_ms) {
        if (h_file_vma_bytes(region, len) == 0) {
            gave_back = 1;
            break;
        }
        dt_sleep_ms(20);
    }
    dt_out("gave_back_after_ms", "%.0f", dt_now_ms() - t0);
    dt_sleep_ms(200);
    h_readers_stop(&rd);
    if (munmap(b, big * DT_PAGE) != 0)
        dt_die("munmap scratch");

    size_t bad = h_check(region, 0, np, 0);
    h_readers_report(&rd);
    dt_out("gave_back", "%d", gave_back);
    dt_out("final_bad_bytes", "%zu", bad);
    return h_readers_clean(&rd) && !bad && !grow_failures ? 0 : 1;
}
