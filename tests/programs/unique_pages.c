/* A program without duplicates: a mmap'd region and some big mallocs, every
 * page unique random data. It holds for --hold-ms, re-verifying its data and
 * watching its pagemap, and prints only deterministic output (identical with
 * and without the shim).
 *
 *   unique_pages [--mib M] [--hold-ms H] [--churn-mib C]
 *
 * --churn-mib C: a thread also keeps rewriting C MiB of its own (every page
 * with new unique content, then 1 ms of sleep), so that every scanner pass
 * finds changed pages (the output does not depend on it).
 */
#include <pthread.h>

#include "dtest.h"

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static unsigned char *g_churn;
static size_t g_churn_len;
static volatile int g_stop;

static void *churner(void *arg)
{
    (void)arg;
    uint64_t stamp = 1;
    while (!g_stop) {
        for (size_t off = 0; off < g_churn_len; off += DT_PAGE, stamp++)
            dt_fill_random(g_churn + off, 64, stamp);
        dt_sleep_ms(1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    size_t mib = (size_t)dt_arg_long(argc, argv, "--mib", 16);
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 1000);
    size_t total = mib << 20;
    g_churn_len = (size_t)dt_arg_long(argc, argv, "--churn-mib", 0) << 20;
    pthread_t churn_thread;
    if (g_churn_len) {
        g_churn = mmap(NULL, g_churn_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_churn == MAP_FAILED)
            dt_die("mmap churn");
        dt_fill_random(g_churn, g_churn_len, 999);
        if (pthread_create(&churn_thread, NULL, churner, NULL) != 0)
            dt_die("pthread_create");
    }
    enum { NM = 4 };
    size_t msz = 256 * 1024 + 100;

    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    dt_fill_random(region, total, 1001);
    unsigned char *m[NM];
    for (int i = 0; i < NM; i++) {
        m[i] = malloc(msz);
        if (!m[i])
            dt_die("malloc");
        dt_fill_random(m[i], msz, 2000 + i);
    }

    size_t file_seen = 0, bad = 0;
    double t0 = dt_now_ms();
    int rounds = 0;
    do {
        dt_sleep_ms(50);
        file_seen += dt_file_pages(region, total);
        for (int i = 0; i < NM; i++)
            file_seen += dt_file_pages(m[i], msz);
        bad += dt_check_random(region, total, 1001);
        for (int i = 0; i < NM; i++)
            bad += dt_check_random(m[i], msz, 2000 + i);
        rounds++;
    } while (dt_now_ms() - t0 < hold);
    if (g_churn_len) {
        g_stop = 1;
        pthread_join(churn_thread, NULL);
    }

    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, region, total);
    for (int i = 0; i < NM; i++)
        h = fnv(h, m[i], msz);
    dt_out("pages", "%zu", total / DT_PAGE);
    dt_out("checksum", "%016" PRIx64, h);
    dt_out("mismatches", "%zu", bad);
    dt_out("file_pages_seen", "%zu", file_seen);
    if (bad)
        dt_fail("%zu bytes changed (over %d rounds)", bad, rounds);
    if (file_seen)
        dt_fail("unique pages were seen shared (%zu page-observations)", file_seen);
    /* no free/munmap: the memory stays registered until exit, so the stats
     * file shows what was scanned */
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
