/* io_uring IORING_OP_READ into memory the shim keeps merging.
 *
 *   hostile_uring_read [--ms T] [--min-merges M] [--max-ms U] [--threads K]
 *                      [--pages P] [--batch B] [--async]
 *
 * A region of P pages holds copies of 16 pattern pages, so the scanner
 * merges it over and over (each read breaks copy-on-write, the scanner
 * merges the page again). K threads, each with its own ring (raw
 * io_uring_setup/io_uring_enter), read random runs of 1-4 pages from a file
 * holding the same bytes into the region, B reads per submission, for T ms.
 * The shim pins the buffers of read(2) and friends so that no write-protect
 * window meets them; io_uring's reads are done by the kernel from
 * io_uring_enter or an io-wq worker, through no wrapper, and land in
 * windows: the completion says -EFAULT, or a short count.
 *
 * With the shim the run goes on after T ms until the scanner has merged M
 * pages (its live stats), at most U ms.
 *
 * --async sets IOSQE_ASYNC (every read goes to an io-wq worker).
 *
 * Prints reads, efaults (CQEs with -EFAULT), short_reads, read_errors,
 * mismatches, shared_seen (reads aimed at a page that was merged just
 * before); exits 1 if any read failed or returned wrong bytes.
 */
#include "hostile.h"
#include "hostile_uring.h"

static unsigned char *region;
static size_t npages;
static int file_fd, batch = 4, async_flag;
static atomic_int stop;
static atomic_ulong calls, efaults, shorts, errors, mismatches, shared_seen;

struct slot {
    size_t first, run;
};

static void *submitter(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 17;
    struct h_ring ring;
    if (h_ring_init(&ring, 16) != 0)
        dt_die("io_uring_setup");
    int pmfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    h_spread_from_scanner();
    struct slot s[16];
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int b = 0; b < batch; b++) {
            s[b].run = 1 + (size_t)rand_r(&seed) % 4;
            s[b].first = (size_t)rand_r(&seed) % (npages - s[b].run + 1);
            unsigned char *dst = region + s[b].first * DT_PAGE;
            uint64_t pm = 0;
            if (pmfd >= 0 && pread(pmfd, &pm, 8, (off_t)((uintptr_t)dst / DT_PAGE * 8)) == 8 && (pm & PM_FILE))
                atomic_fetch_add_explicit(&shared_seen, 1, memory_order_relaxed);
            h_ring_queue_read(&ring, file_fd, dst, (unsigned)(s[b].run * DT_PAGE), (s[b].first % H_PAT) * DT_PAGE,
                              -1, (uint64_t)b);
            if (async_flag)
                ring.sqes[(atomic_load(ring.sq_tail) - 1) & *ring.sq_mask].flags |= IOSQE_ASYNC;
        }
        if (h_ring_submit_wait(&ring, (unsigned)batch) < 0)
            dt_die("io_uring_enter");
        int got = 0;
        struct io_uring_cqe cqe;
        while (got < batch) {
            if (!h_ring_reap(&ring, &cqe)) {
                if (h_ring_submit_wait(&ring, 0) < 0) /* not all there yet */
                    dt_die("io_uring_enter wait");
                continue;
            }
            got++;
            struct slot *sl = &s[cqe.user_data];
            size_t len = sl->run * DT_PAGE;
            atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
            if (cqe.res == -EFAULT) {
                atomic_fetch_add_explicit(&efaults, 1, memory_order_relaxed);
            } else if (cqe.res < 0) {
                atomic_fetch_add_explicit(&errors, 1, memory_order_relaxed);
                fprintf(stderr, "cqe res %d\n", cqe.res);
            } else if ((size_t)cqe.res < len) {
                atomic_fetch_add_explicit(&shorts, 1, memory_order_relaxed);
            } else if (h_check_sampled(region + sl->first * DT_PAGE, sl->first, sl->run, 0)) {
                atomic_fetch_add_explicit(&mismatches, 1, memory_order_relaxed);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long ms = dt_arg_long(argc, argv, "--ms", 4000);
    long min_merges = dt_arg_long(argc, argv, "--min-merges", 0);
    long max_ms = dt_arg_long(argc, argv, "--max-ms", 3 * ms);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long pages = dt_arg_long(argc, argv, "--pages", 64);
    batch = (int)dt_arg_long(argc, argv, "--batch", 4);
    async_flag = dt_arg_flag(argc, argv, "--async");
    if (batch < 1)
        batch = 1;
    if (batch > 8)
        batch = 8;
    npages = (size_t)(pages < 2 * H_PAT ? 2 * H_PAT : pages) / H_PAT * H_PAT;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    h_ring_probe_or_exit();
    region = h_map(npages);
    h_fill(region, 0, npages, 0);
    file_fd = h_pattern_file(0);
    dt_sleep_ms(300); /* let the scanner merge the copies first */
    pthread_t t[16];
    if (threads > 16)
        threads = 16;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, submitter, (void *)(uintptr_t)(i + 1)) != 0)
            dt_die("pthread_create");
    double t0 = dt_now_ms();
    long merged = h_run_for((double)ms, min_merges, (double)max_ms, shim);
    atomic_store(&stop, 1);
    dt_out("run_ms", "%.0f", dt_now_ms() - t0);
    dt_out("live_pages_merged", "%ld", merged);
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    size_t bad = h_check(region, 0, npages, 0);
    dt_out("reads", "%lu", atomic_load(&calls));
    dt_out("shared_seen", "%lu", atomic_load(&shared_seen));
    dt_out("efaults", "%lu", atomic_load(&efaults));
    dt_out("short_reads", "%lu", atomic_load(&shorts));
    dt_out("read_errors", "%lu", atomic_load(&errors));
    dt_out("mismatches", "%lu", atomic_load(&mismatches));
    dt_out("final_bad_bytes", "%zu", bad);
    return atomic_load(&efaults) || atomic_load(&shorts) || atomic_load(&errors) || atomic_load(&mismatches) || bad
               ? 1
               : 0;
}
