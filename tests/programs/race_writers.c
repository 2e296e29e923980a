/* THE RACE TEST: writer threads against the merging scanner.
 *
 *   race_writers [--ms T] [--threads N] [--mib M] [--patterns P]
 *                [--burst B] [--pause-us U] [--seed S] [--zero-pattern 0|1]
 *
 * A registered private anonymous region of M MiB starts as P patterns of
 * whole pages (lots of duplicates). N threads each own a disjoint set of pages
 * (page i belongs to thread i % N) and, for T ms, keep writing them: fill a
 * whole page with one of the P patterns (re-creating duplicates), poke single
 * bytes, or revert the last poke (making the page a duplicate again). Every
 * write is also recorded in a shadow copy kept in MAP_SHARED anonymous memory,
 * which the shim never registers. Before each operation a thread compares its
 * page with the shadow (a lost write shows up at once; the page is then
 * resynchronised so the run goes on). After B operations a thread sleeps U
 * microseconds, so that pages stay still long enough to be merged.
 * With --zero-pattern 1 the first pattern is all zero bytes, so pages are
 * also given back as zero pages (MADV_DONTNEED under a write-protect window)
 * while the writers run.
 *
 * Afterwards the whole region must equal the shadow, right after the writers
 * stop and again after the scanner has had 300 ms to merge the final state.
 * Prints "mismatches=<bytes>" (all checks together) and exits 1 if nonzero.
 * "observed_shared" counts operations that found their page merged (pagemap
 * bit 61), i.e. evidence that merging and writing really overlapped;
 * "observed_zero_freed" those that found it given back (not present).
 */
#include "dtest.h"
#include <pthread.h>
#include <stdatomic.h>

static unsigned char *region, *shadow;
static unsigned char *base;     /* per page: byte of the last whole-page fill */
static unsigned short *lastoff; /* per page: offset of the last poke */
static size_t npages;
static int nthreads, npatterns, zero_pattern;
static long burst, pause_us;
static uint64_t seed0;
static atomic_int stop;
static atomic_ulong mism_during, pages_hit, ops_total, shared_seen, zero_seen, fills, pokes, reverts;

static unsigned char pattern(int k) { return zero_pattern && k == 0 ? 0 : (unsigned char)(0xa1 + 17 * k); }

static void *writer(void *arg)
{
    long t = (long)arg;
    uint64_t s = seed0 * 1000003ULL + (uint64_t)t * 7919ULL + 1;
    size_t mine = (npages - (size_t)t + (size_t)nthreads - 1) / (size_t)nthreads;
    unsigned long ops = 0, shared = 0, freed = 0, nf = 0, np = 0, nr = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (long b = 0; b < burst; b++) {
            size_t pg = (size_t)t + (size_t)nthreads * (size_t)(dt_rng_next(&s) % mine);
            unsigned char *p = region + pg * DT_PAGE, *sh = shadow + pg * DT_PAGE;
            if ((ops & 7) == 0) {
                uint64_t e = dt_pm_entry(p);
                if (e & PM_FILE)
                    shared++;
                else if (!(e & (PM_PRESENT | PM_SWAPPED)))
                    freed++; /* given back as a zero page */
            }
            if (memcmp(p, sh, DT_PAGE) != 0) {
                size_t bad = dt_count_diff(p, sh, DT_PAGE);
                atomic_fetch_add(&mism_during, bad);
                if (atomic_fetch_add(&pages_hit, 1) < 20)
                    fprintf(stderr, "lost write: thread %ld page %zu: %zu bytes differ\n", t, pg, bad);
                memcpy(p, sh, DT_PAGE);
            }
            uint64_t r = dt_rng_next(&s);
            unsigned op = (unsigned)(r % 10);
            if (op < 3) {
                unsigned char v = pattern((int)((r >> 8) % (uint64_t)npatterns));
                memset(p, v, DT_PAGE);
                memset(sh, v, DT_PAGE);
                base[pg] = v;
                nf++;
            } else if (op < 8) {
                size_t off = (size_t)((r >> 16) % DT_PAGE);
                unsigned char v = (unsigned char)(r >> 32);
                ((volatile unsigned char *)p)[off] = v;
                sh[off] = v;
                lastoff[pg] = (unsigned short)off;
                np++;
            } else {
                size_t off = lastoff[pg];
                ((volatile unsigned char *)p)[off] = base[pg];
                sh[off] = base[pg];
                nr++;
            }
            ops++;
        }
        if (pause_us > 0)
            dt_sleep_ms((double)pause_us / 1000.0);
    }
    atomic_fetch_add(&ops_total, ops);
    atomic_fetch_add(&shared_seen, shared);
    atomic_fetch_add(&zero_seen, freed);
    atomic_fetch_add(&fills, nf);
    atomic_fetch_add(&pokes, np);
    atomic_fetch_add(&reverts, nr);
    return NULL;
}

int main(int argc, char **argv)
{
    double ms = (double)dt_arg_long(argc, argv, "--ms", 4000);
    nthreads = (int)dt_arg_long(argc, argv, "--threads", 4);
    size_t len = (size_t)dt_arg_long(argc, argv, "--mib", 32) << 20;
    npatterns = (int)dt_arg_long(argc, argv, "--patterns", 4);
    burst = dt_arg_long(argc, argv, "--burst", 64);
    pause_us = dt_arg_long(argc, argv, "--pause-us", 200);
    seed0 = (uint64_t)dt_arg_long(argc, argv, "--seed", 1);
    zero_pattern = (int)dt_arg_long(argc, argv, "--zero-pattern", 0);
    if (nthreads < 1 || nthreads > 64 || npatterns < 1 || burst < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    npages = len / DT_PAGE;

    region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap region");
    shadow = dt_scratch(len);
    base = dt_scratch((npages + DT_PAGE) & ~(DT_PAGE - 1));
    lastoff = dt_scratch((npages * 2 + DT_PAGE) & ~(DT_PAGE - 1));
    for (size_t i = 0; i < npages; i++) {
        unsigned char v = pattern((int)(i % (size_t)npatterns));
        memset(region + i * DT_PAGE, v, DT_PAGE);
        memset(shadow + i * DT_PAGE, v, DT_PAGE);
        base[i] = v;
    }
    /* let merging start before the writers do, so they race with it at once */
    struct dt_range r = {region, len};
    double w = dt_wait_merged(&r, 1, 0.5, 10000);
    dt_out("initial_merge_wait_ms", "%.0f", w);
    dt_out("initial_merged_like", "%zu", dt_merged_like(region, len));

    pthread_t th[64];
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, writer, (void *)t) != 0)
            dt_die("pthread_create");
    dt_sleep_ms(ms);
    atomic_store(&stop, 1);
    for (long t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);

    size_t final1 = dt_count_diff(region, shadow, len);
    dt_sleep_ms(300);
    size_t final2 = dt_count_diff(region, shadow, len);
    size_t during = atomic_load(&mism_during);
    dt_out("ops", "%lu", atomic_load(&ops_total));
    dt_out("fills", "%lu", atomic_load(&fills));
    dt_out("pokes", "%lu", atomic_load(&pokes));
    dt_out("reverts", "%lu", atomic_load(&reverts));
    dt_out("observed_shared", "%lu", atomic_load(&shared_seen));
    dt_out("observed_zero_freed", "%lu", atomic_load(&zero_seen));
    dt_out("shared_pages_at_end", "%zu", dt_file_pages(region, len));
    dt_out("pages_with_lost_writes", "%lu", atomic_load(&pages_hit));
    dt_out("mismatches_during", "%zu", during);
    dt_out("mismatches_final", "%zu", final1);
    dt_out("mismatches_after_settle", "%zu", final2);
    dt_out("mismatches", "%zu", during + final1 + final2);
    if (during + final1 + final2)
        dt_fail("%zu bytes lost during the run, %zu at the end, %zu after settling", during, final1,
                final2);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
