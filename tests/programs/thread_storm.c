/* Thread stress against the merging scanner (run with DEDUP_SLEEP_MS=0).
 *
 *   thread_storm storm [--threads N] [--concurrency C] [--ms T] [--seed S]
 *       N short-lived threads, at most C alive at once, created until N have
 *       run or T ms have passed. Each one mmaps a private anonymous region
 *       and mallocs a buffer (64..256 KiB each, so both are registered),
 *       fills them with duplicate pages (a few patterns shared by all the
 *       threads, plus zero pages), lets the scanner at them (5..40 ms, less
 *       once a page of theirs is seen merged),
 *       verifies every byte, writes one byte into every page (copy-on-write
 *       of merged pages), verifies again, and frees them: munmap / free.
 *       Prints threads_run, merged_seen (pages that looked merged just
 *       before the first verification: shared, or given back), mismatches.
 *
 *   thread_storm exiting [--threads N] [--seed S]
 *       N threads (at most 32 alive at once) each allocate (mmap and malloc),
 *       fill with duplicates, then keep rewriting the same contents for a
 *       few ms (so that their writes meet the scanner's write-protect window)
 *       and exit, leaving their memory alive. Every other region left behind
 *       is freed at once by the next thread (a region freed by another thread
 *       while being merged); the main thread waits until the rest is merged,
 *       verifies every byte and frees it. Prints threads_run, merged_final,
 *       mismatches.
 *
 *   thread_storm exit_race --how thread|main|_exit|exit_group
 *                          [--max-delay-ms D] [--seed S] [--writers W]
 *       A region of duplicates is merged; W writer threads then hammer it
 *       (whole-page pattern fills, byte pokes; each thread owns its pages and
 *       checks each page against a shadow copy before every write: a lost
 *       write prints "LOST WRITE" and _exit(3)s). After a random delay
 *       (0..D ms from the seed) the process ends while they write:
 *         thread      a separate thread calls exit(0)
 *         main        the main thread returns 0 from main
 *         _exit       a writer thread calls _exit(7) in the middle of its loop
 *         exit_group  a writer thread calls syscall(SYS_exit_group, 9)
 *       Before ending it prints ending_at_ms, ops and shared_seen (operations
 *       that found their page merged).
 *
 * Scratch (shadow copies, tables) is MAP_SHARED anonymous memory, which the
 * shim never registers. Exit status 0 iff no byte was wrong (except the
 * deliberate statuses of exit_race).
 */
#include "dtest.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static atomic_ulong g_mismatch, g_merged_seen, g_threads_run, g_alloc_fail;
static uint64_t g_seed = 1;

static unsigned char pat(unsigned k) { return (unsigned char)(0x31 + 29 * (k % 5)); }

/* Page i of an n-page duplicate layout: pattern or zero (every 4th page). */
static unsigned char page_value(size_t i, unsigned salt) { return (i % 4 == 3) ? 0 : pat((unsigned)i + salt); }

static void fill_dups(unsigned char *p, size_t len, unsigned salt)
{
    for (size_t off = 0; off < len; off += DT_PAGE) {
        size_t n = len - off < DT_PAGE ? len - off : DT_PAGE;
        memset(p + off, page_value(off / DT_PAGE, salt), n);
    }
}

static size_t check_dups(const unsigned char *p, size_t len, unsigned salt)
{
    size_t bad = 0;
    for (size_t off = 0; off < len; off += DT_PAGE) {
        size_t n = len - off < DT_PAGE ? len - off : DT_PAGE;
        bad += dt_count_not(p + off, n, page_value(off / DT_PAGE, salt));
    }
    return bad;
}

/* Whole pages inside [p, p+len) that are shared (pagemap bit 61). */
static size_t shared_pages(const void *p, size_t len)
{
    uintptr_t s = ((uintptr_t)p + DT_PAGE - 1) & ~(DT_PAGE - 1);
    uintptr_t e = ((uintptr_t)p + len) & ~(DT_PAGE - 1);
    return e > s ? dt_file_pages((void *)s, e - s) : 0;
}

/* Whole pages inside [p, p+len), all written before, that look merged:
 * shared, or not present (merged and not touched since, or a zero page
 * given back). */
static size_t merged_like_pages(const void *p, size_t len)
{
    uintptr_t s = ((uintptr_t)p + DT_PAGE - 1) & ~(DT_PAGE - 1);
    uintptr_t e = ((uintptr_t)p + len) & ~(DT_PAGE - 1);
    return e > s ? dt_merged_like((void *)s, e - s) : 0;
}

/* ---- storm ------------------------------------------------------------ */

static atomic_int g_alive;

static void *storm_worker(void *arg)
{
    uint64_t s = g_seed * 7919ULL + (uint64_t)(uintptr_t)arg * 104729ULL + 1;
    unsigned salt = (unsigned)(dt_rng_next(&s) % 5);
    size_t mlen = (16 + dt_rng_next(&s) % 49) * DT_PAGE;  /* 64..256 KiB */
    size_t blen = (64 << 10) + dt_rng_next(&s) % (192 << 10);
    unsigned char *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *b = malloc(blen);
    if (m == MAP_FAILED || !b) {
        atomic_fetch_add(&g_alloc_fail, 1);
        if (m != MAP_FAILED)
            munmap(m, mlen);
        free(b);
        atomic_fetch_sub(&g_alive, 1);
        return NULL;
    }
    fill_dups(m, mlen, salt);
    fill_dups(b, blen, salt + 1);
    /* give the scanner a go: up to 40 ms, until some page is merged */
    double until = dt_now_ms() + 5 + (double)(dt_rng_next(&s) % 36);
    size_t seen = 0;
    while (dt_now_ms() < until && (seen = dt_merged_like(m, mlen) + merged_like_pages(b, blen)) == 0)
        dt_sleep_ms(2);
    atomic_fetch_add(&g_merged_seen, seen);
    size_t bad = check_dups(m, mlen, salt) + check_dups(b, blen, salt + 1);
    for (size_t off = 0; off < mlen; off += DT_PAGE)
        m[off + 100] ^= 0xff;
    for (size_t off = 0; off < blen; off += DT_PAGE)
        b[off] ^= 0xff;
    for (size_t off = 0; off < mlen; off += DT_PAGE)
        bad += m[off + 100] != (unsigned char)(page_value(off / DT_PAGE, salt) ^ 0xff);
    for (size_t off = 0; off < blen; off += DT_PAGE)
        bad += b[off] != (unsigned char)(page_value(off / DT_PAGE, salt + 1) ^ 0xff);
    for (size_t off = 0; off < mlen; off += DT_PAGE)
        m[off + 100] ^= 0xff;
    for (size_t off = 0; off < blen; off += DT_PAGE)
        b[off] ^= 0xff;
    bad += check_dups(m, mlen, salt) + check_dups(b, blen, salt + 1);
    if (bad) {
        atomic_fetch_add(&g_mismatch, bad);
        fprintf(stderr, "thread %lu: %zu bytes wrong\n", (unsigned long)(uintptr_t)arg, bad);
    }
    free(b);
    if (munmap(m, mlen) != 0)
        dt_fail("munmap: %s", strerror(errno));
    atomic_fetch_add(&g_threads_run, 1);
    atomic_fetch_sub(&g_alive, 1);
    return NULL;
}

static int run_storm(int argc, char **argv)
{
    long n = dt_arg_long(argc, argv, "--threads", 300);
    long conc = dt_arg_long(argc, argv, "--concurrency", 48);
    double ms = (double)dt_arg_long(argc, argv, "--ms", 5000);
    double t0 = dt_now_ms();
    long created = 0;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 128 << 10);
    while (created < n && dt_now_ms() - t0 < ms) {
        if (atomic_load(&g_alive) >= conc) {
            dt_sleep_ms(0.2);
            continue;
        }
        atomic_fetch_add(&g_alive, 1);
        pthread_t t;
        int rc = pthread_create(&t, &at, storm_worker, (void *)(uintptr_t)created);
        if (rc != 0) {
            atomic_fetch_sub(&g_alive, 1);
            dt_fail("pthread_create: %s", strerror(rc));
            break;
        }
        created++;
    }
    while (atomic_load(&g_alive) > 0)
        dt_sleep_ms(1);
    dt_out("threads_created", "%ld", created);
    dt_out("threads_run", "%lu", atomic_load(&g_threads_run));
    dt_out("alloc_failures", "%lu", atomic_load(&g_alloc_fail));
    dt_out("merged_seen", "%lu", atomic_load(&g_merged_seen));
    dt_out("storm_ms", "%.0f", dt_now_ms() - t0);
    return 0;
}

/* ---- exiting ---------------------------------------------------------- */

struct left {
    unsigned char *m, *b;
    size_t mlen, blen;
    unsigned salt;
    atomic_int state; /* 0 empty, 1 published, 2 freed by another thread */
};
static struct left *g_left;
static long g_nleft;

static void *exiting_worker(void *arg)
{
    long id = (long)(uintptr_t)arg;
    uint64_t s = g_seed * 31337ULL + (uint64_t)id * 7777ULL + 3;
    struct left *L = &g_left[id];
    L->salt = (unsigned)(dt_rng_next(&s) % 5);
    L->mlen = (16 + dt_rng_next(&s) % 33) * DT_PAGE;
    L->blen = (64 << 10) + dt_rng_next(&s) % (64 << 10);
    L->m = mmap(NULL, L->mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    L->b = malloc(L->blen);
    if (L->m == MAP_FAILED || !L->b) {
        atomic_fetch_add(&g_alloc_fail, 1);
        atomic_fetch_sub(&g_alive, 1);
        pthread_exit(NULL);
    }
    fill_dups(L->m, L->mlen, L->salt);
    fill_dups(L->b, L->blen, L->salt + 1);
    /* keep writing the same contents: writes meet merge windows */
    double until = dt_now_ms() + (double)(dt_rng_next(&s) % 8);
    while (dt_now_ms() < until) {
        fill_dups(L->m, L->mlen, L->salt);
        fill_dups(L->b, L->blen, L->salt + 1);
    }
    atomic_store(&L->state, 1);
    /* free what the previous odd-numbered thread left, maybe mid-merge */
    if (id % 2 == 0 && id > 0) {
        struct left *P = &g_left[id - 1];
        int one = 1;
        if (atomic_compare_exchange_strong(&P->state, &one, 2)) {
            size_t bad = check_dups(P->m, P->mlen, P->salt) + check_dups(P->b, P->blen, P->salt + 1);
            if (bad) {
                atomic_fetch_add(&g_mismatch, bad);
                fprintf(stderr, "region of thread %ld: %zu bytes wrong\n", id - 1, bad);
            }
            munmap(P->m, P->mlen);
            free(P->b);
        }
    }
    atomic_fetch_add(&g_threads_run, 1);
    atomic_fetch_sub(&g_alive, 1);
    if (id % 3 == 0)
        pthread_exit(NULL);
    return NULL;
}

static int run_exiting(int argc, char **argv)
{
    g_nleft = dt_arg_long(argc, argv, "--threads", 200);
    if (g_nleft < 2 || g_nleft > 4096)
        return 2;
    g_left = dt_scratch(((size_t)g_nleft * sizeof(struct left) + DT_PAGE - 1) & ~(DT_PAGE - 1));
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 128 << 10);
    double t0 = dt_now_ms();
    for (long i = 0; i < g_nleft; i++) {
        while (atomic_load(&g_alive) >= 32)
            dt_sleep_ms(0.2);
        atomic_fetch_add(&g_alive, 1);
        pthread_t t;
        int rc = pthread_create(&t, &at, exiting_worker, (void *)(uintptr_t)i);
        if (rc != 0) {
            atomic_fetch_sub(&g_alive, 1);
            dt_fail("pthread_create: %s", strerror(rc));
            break;
        }
    }
    while (atomic_load(&g_alive) > 0)
        dt_sleep_ms(1);
    dt_out("spawn_ms", "%.0f", dt_now_ms() - t0);
    /* wait for the regions left behind to be merged */
    size_t total = 0;
    for (long i = 0; i < g_nleft; i++)
        if (atomic_load(&g_left[i].state) == 1)
            total += g_left[i].mlen / DT_PAGE;
    size_t merged = 0;
    double w0 = dt_now_ms();
    while (dt_now_ms() - w0 < 8000) {
        merged = 0;
        for (long i = 0; i < g_nleft; i++)
            if (atomic_load(&g_left[i].state) == 1)
                merged += dt_merged_like(g_left[i].m, g_left[i].mlen);
        /* the test checks left_merged_like >= 0.9 * left_pages: round up
         * (total * 9 / 10 stopped one page short of it) */
        if (merged * 10 >= total * 9)
            break;
        dt_sleep_ms(10);
    }
    dt_out("left_merge_wait_ms", "%.0f", dt_now_ms() - w0);
    dt_out("left_pages", "%zu", total);
    dt_out("left_merged_like", "%zu", merged);
    size_t bad = 0, shared = 0;
    for (long i = 0; i < g_nleft; i++) {
        struct left *L = &g_left[i];
        if (atomic_load(&L->state) != 1)
            continue;
        bad += check_dups(L->m, L->mlen, L->salt) + check_dups(L->b, L->blen, L->salt + 1);
        shared += dt_file_pages(L->m, L->mlen) + shared_pages(L->b, L->blen);
        munmap(L->m, L->mlen);
        free(L->b);
    }
    atomic_fetch_add(&g_mismatch, bad);
    dt_out("threads_run", "%lu", atomic_load(&g_threads_run));
    dt_out("alloc_failures", "%lu", atomic_load(&g_alloc_fail));
    dt_out("merged_final", "%zu", shared);
    return 0;
}

/* ---- exit_race --------------------------------------------------------- */

#define RACE_PAGES 1024 /* 4 MiB */
static unsigned char *r_region, *r_shadow;
static int r_writers;
static const char *r_how;
static atomic_ulong r_ops, r_shared;
static atomic_int r_go;
static double r_t0, r_end_at;

static void lost(long t, size_t pg, size_t bad)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "LOST WRITE: thread %ld page %zu: %zu bytes differ\n", t, pg, bad);
    if (write(2, msg, (size_t)n) < 0) {
    }
    _exit(3);
}

static void report_end(void)
{
    dt_out("ending_at_ms", "%.0f", dt_now_ms() - r_t0);
    dt_out("ops", "%lu", atomic_load(&r_ops));
    dt_out("shared_seen", "%lu", atomic_load(&r_shared));
}

static void *race_writer(void *arg)
{
    long t = (long)arg;
    uint64_t s = g_seed * 1000003ULL + (uint64_t)t * 7919ULL + 11;
    size_t mine = RACE_PAGES / (size_t)r_writers;
    int ender = t == 0 && (!strcmp(r_how, "_exit") || !strcmp(r_how, "exit_group"));
    unsigned long ops = 0;
    while (!atomic_load(&r_go)) {
    }
    for (;;) {
        size_t pg = (size_t)t + (size_t)r_writers * (size_t)(dt_rng_next(&s) % mine);
        unsigned char *p = r_region + pg * DT_PAGE, *sh = r_shadow + pg * DT_PAGE;
        if ((ops & 15) == 0 && (dt_pm_entry(p) & PM_FILE))
            atomic_fetch_add_explicit(&r_shared, 1, memory_order_relaxed);
        if (memcmp(p, sh, DT_PAGE) != 0)
            lost(t, pg, dt_count_diff(p, sh, DT_PAGE));
        uint64_t r = dt_rng_next(&s);
        if (r % 4 == 0) {
            unsigned char v = pat((unsigned)(r >> 8));
            memset(sh, v, DT_PAGE);
            memset(p, v, DT_PAGE);
        } else {
            size_t off = (size_t)((r >> 16) % DT_PAGE);
            unsigned char v = (unsigned char)(r >> 40);
            sh[off] = v;
            ((volatile unsigned char *)p)[off] = v;
        }
        ops++;
        if ((ops & 63) == 0) {
            atomic_fetch_add_explicit(&r_ops, 64, memory_order_relaxed);
            if (ender && dt_now_ms() >= r_end_at) {
                /* mid-loop: the other writers are writing right now */
                report_end();
                if (!strcmp(r_how, "_exit"))
                    _exit(7);
                syscall(SYS_exit_group, 9);
            }
            if ((ops & 1023) == 0)
                usleep(50); /* let pages sit still long enough to merge */
        }
    }
    return NULL;
}

static void *exiter(void *arg)
{
    (void)arg;
    double d = r_end_at - dt_now_ms();
    if (d > 0)
        dt_sleep_ms(d);
    report_end();
    exit(0);
}

static int run_exit_race(int argc, char **argv)
{
    r_how = dt_arg_str(argc, argv, "--how", "thread");
    long maxd = dt_arg_long(argc, argv, "--max-delay-ms", 300);
    r_writers = (int)dt_arg_long(argc, argv, "--writers", 3);
    if (r_writers < 1 || r_writers > 16 || maxd < 0)
        return 2;
    if (strcmp(r_how, "thread") && strcmp(r_how, "main") && strcmp(r_how, "_exit") &&
        strcmp(r_how, "exit_group"))
        return 2;
    r_t0 = dt_now_ms();
    size_t len = (size_t)RACE_PAGES * DT_PAGE;
    r_region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r_region == MAP_FAILED)
        dt_die("mmap");
    r_shadow = dt_scratch(len);
    for (size_t i = 0; i < RACE_PAGES; i++) {
        memset(r_region + i * DT_PAGE, pat((unsigned)i), DT_PAGE);
        memset(r_shadow + i * DT_PAGE, pat((unsigned)i), DT_PAGE);
    }
    struct dt_range rr = {r_region, len};
    double w = dt_wait_merged(&rr, 1, 0.5, 5000);
    dt_out("initial_merge_wait_ms", "%.0f", w);
    uint64_t s = g_seed * 2654435761ULL + 5;
    double delay = maxd ? (double)(dt_rng_next(&s) % (uint64_t)(maxd + 1)) : 0;
    dt_out("delay_ms", "%.0f", delay);
    pthread_t th[16];
    for (long t = 0; t < r_writers; t++)
        if (pthread_create(&th[t], NULL, race_writer, (void *)t) != 0)
            dt_die("pthread_create");
    r_end_at = dt_now_ms() + delay;
    atomic_store(&r_go, 1);
    if (!strcmp(r_how, "thread")) {
        pthread_t e;
        if (pthread_create(&e, NULL, exiter, NULL) != 0)
            dt_die("pthread_create");
        for (;;)
            pause();
    }
    if (!strcmp(r_how, "main")) {
        double d = r_end_at - dt_now_ms();
        if (d > 0)
            dt_sleep_ms(d);
        report_end();
        return 0;
    }
    for (;;) /* _exit / exit_group: a writer ends the process */
        pause();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    g_seed = (uint64_t)dt_arg_long(argc, argv, "--seed", 1);
    (void)dt_pagemap_fd(); /* opened once, before any thread */
    int rc;
    if (!strcmp(mode, "storm"))
        rc = run_storm(argc, argv);
    else if (!strcmp(mode, "exiting"))
        rc = run_exiting(argc, argv);
    else if (!strcmp(mode, "exit_race"))
        return run_exit_race(argc, argv);
    else {
        fprintf(stderr, "usage: thread_storm storm|exiting|exit_race [options]\n");
        return 2;
    }
    if (rc)
        return rc;
    unsigned long bad = atomic_load(&g_mismatch);
    dt_out("mismatches", "%lu", bad);
    if (bad)
        dt_fail("%lu bytes differ from what was written", bad);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
