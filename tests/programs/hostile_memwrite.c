/* Writes through /proc/self/mem or process_vm_writev into memory the shim is
 * merging.
 *
 *   hostile_memwrite --via mem|vmwritev [--rounds N] [--pages P] [--threads K]
 *
 * Both are kernel writes into the program's own memory that no wrapper of
 * the shim sees: pwrite(2) to /proc/self/mem (debuggers, JITs, checkpoint
 * tools, some language runtimes patch their own memory this way) uses
 * FOLL_FORCE, which writes even into a page the scanner has write-protected
 * for a merge window: the write succeeds, then the scanner remaps the page
 * onto the canonical page it compared before the write, and the write is
 * gone. process_vm_writev(getpid()) does not force: it fails with EFAULT or
 * writes short.
 *
 * A region W of P pages holds pattern A (page i: A[i % 16]); a small region
 * holds two copies of each page of pattern B, so canonical pages of A and
 * B exist. Each round: the main thread writes A over W (plain stores: every
 * page becomes a private copy again, which the scanner then merges back
 * onto the canonical A pages), and at once K writer threads write B over
 * W, 16 pages (64 KiB) per call, every block once, in random order. At the
 * end of the round every page a write reported as written must hold B.
 *
 * Prints writes, write_failures (calls that failed or wrote short),
 * written_pages, lost_pages (pages a successful write covered that do not
 * hold B: the write was lost), other_bad_pages; exits 1 if
 * any write failed or was lost.
 */
#include "hostile.h"

#include <sys/uio.h>

#define BLOCK 16 /* pages per write: 64 KiB */

static unsigned char *w, *bbuf;
static size_t np, nblocks;
static int memfd = -1, via_mem;
static size_t *order;
static uint32_t *written; /* bytes reported written, per block */
static atomic_size_t next_block;
static atomic_int go_round;
static atomic_int done_round;
static atomic_ulong writes, failures;
static int nthreads;
static atomic_int quit;

static void *writer(void *arg)
{
    (void)arg;
    int seen = 0;
    pid_t pid = getpid();
    h_spread_from_scanner();
    for (;;) {
        while (atomic_load(&go_round) == seen && !atomic_load(&quit))
            sched_yield();
        if (atomic_load(&quit))
            return NULL;
        seen = atomic_load(&go_round);
        size_t k;
        while ((k = atomic_fetch_add(&next_block, 1)) < nblocks) {
            size_t blk = order[k];
            unsigned char *dst = w + blk * BLOCK * DT_PAGE;
            size_t len = BLOCK * DT_PAGE;
            ssize_t r;
            if (via_mem) {
                r = pwrite(memfd, bbuf, len, (off_t)(uintptr_t)dst);
            } else {
                struct iovec l = {bbuf, len}, rm = {dst, len};
                r = process_vm_writev(pid, &l, 1, &rm, 1, 0);
            }
            atomic_fetch_add(&writes, 1);
            if (r != (ssize_t)len)
                atomic_fetch_add(&failures, 1);
            written[blk] = r > 0 ? (uint32_t)r : 0;
        }
        atomic_fetch_add(&done_round, 1);
    }
}

int main(int argc, char **argv)
{
    const char *via = dt_arg_str(argc, argv, "--via", "mem");
    long rounds = dt_arg_long(argc, argv, "--rounds", 20);
    long pages = dt_arg_long(argc, argv, "--pages", 4096);
    nthreads = (int)dt_arg_long(argc, argv, "--threads", 2);
    if (nthreads < 1 || nthreads > 16)
        nthreads = 2;
    via_mem = strcmp(via, "vmwritev") != 0;
    np = (size_t)(pages < 4 * BLOCK ? 4 * BLOCK : pages) / BLOCK * BLOCK;
    nblocks = np / BLOCK;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    dt_out("via", "%s", via_mem ? "mem" : "vmwritev");
    if (via_mem) {
        memfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
        if (memfd < 0)
            dt_die("open /proc/self/mem");
    }

    size_t len = np * DT_PAGE;
    w = h_map(np);
    unsigned char *refb = h_map(2 * H_PAT);
    h_fill(refb, 0, 2 * H_PAT, 1);
    unsigned char *apat = (unsigned char *)dt_scratch(len);
    h_fill(apat, 0, np, 0);
    bbuf = (unsigned char *)dt_scratch(BLOCK * DT_PAGE);
    h_fill(bbuf, 0, BLOCK, 1);
    order = (size_t *)dt_scratch(nblocks * sizeof(size_t));
    written = (uint32_t *)dt_scratch(nblocks * sizeof(uint32_t));
    memcpy(w, apat, len);
    if (shim) {
        h_wait_file_vmas(refb, 2 * H_PAT * DT_PAGE, 2 * H_PAT * DT_PAGE, 10000);
        h_wait_file_vmas(w, len, len * 9 / 10, 10000);
    }

    pthread_t th[16];
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, writer, NULL) != 0)
            dt_die("pthread_create");
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    long lost = 0, other = 0, written_pages = 0;
    for (long round = 0; round < rounds; round++) {
        for (size_t i = 0; i < nblocks; i++)
            order[i] = i;
        for (size_t i = nblocks - 1; i > 0; i--) {
            size_t j = (size_t)(dt_rng_next(&rng) % (i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        memset(written, 0, nblocks * sizeof(uint32_t));
        memcpy(w, apat, len); /* private copies, merged back from now on */
        atomic_store(&next_block, 0);
        atomic_store(&done_round, 0);
        atomic_fetch_add(&go_round, 1);
        while (atomic_load(&done_round) < nthreads)
            dt_sleep_ms(0.2);
        for (size_t b = 0; b < nblocks; b++) {
            size_t pages_w = written[b] / DT_PAGE;
            for (size_t p = 0; p < pages_w; p++) {
                const unsigned char *pg = w + (b * BLOCK + p) * DT_PAGE;
                written_pages++;
                if (memcmp(pg, bbuf + p * DT_PAGE, DT_PAGE) == 0)
                    continue;
                if (memcmp(pg, apat + (b * BLOCK + p) * DT_PAGE, DT_PAGE) == 0)
                    lost++;
                else
                    other++;
            }
        }
    }
    atomic_store(&quit, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    dt_out("rounds", "%ld", rounds);
    dt_out("writes", "%lu", atomic_load(&writes));
    dt_out("write_failures", "%lu", atomic_load(&failures));
    dt_out("written_pages", "%ld", written_pages);
    dt_out("lost_pages", "%ld", lost);
    dt_out("other_bad_pages", "%ld", other);
    return atomic_load(&failures) || lost || other ? 1 : 0;
}
