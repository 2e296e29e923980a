/* Duplicate pages written, then threads that keep the CPUs busy without
 * touching them: the scanner waits for the program to calm down (busy_wait.h)
 * for at most DEDUP_BUSY_WAIT_MS in a row, then merges anyway.
 *
 *   busy_dups [--mib M] [--threads T] [--spin-ms S] [--timeout-ms W]
 *
 * Prints: pages, merged_at_spin_end (pages that looked merged when the
 * spinning threads stopped), merged_after (after waiting up to W ms more for
 * 90% of them), calm_ms (how long that took, -1 if it did not happen), and
 * mismatches (bytes that differ from the pattern). Exit 1 on a mismatch.
 */
#include <pthread.h>

#include "dtest.h"

static volatile int g_stop;

static void *spin(void *arg)
{
    uint64_t x = (uint64_t)(uintptr_t)arg + 1;
    while (!g_stop)
        for (int i = 0; i < 4096; i++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
    return (void *)(uintptr_t)x;
}

int main(int argc, char **argv)
{
    size_t len = (size_t)dt_arg_long(argc, argv, "--mib", 64) << 20;
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    double spin_ms = (double)dt_arg_long(argc, argv, "--spin-ms", 1200);
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 10000);
    size_t pages = len / 4096;
    unsigned char pattern[4096];
    pthread_t tid[16];

    if (threads < 1 || threads > 16) {
        fprintf(stderr, "bad --threads\n");
        return 2;
    }
    dt_fill_random(pattern, sizeof pattern, 7);
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap");
    for (size_t i = 0; i < pages; i++)
        memcpy(p + i * 4096, pattern, 4096);

    for (long t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, spin, (void *)(uintptr_t)t) != 0)
            dt_die("pthread_create");
    dt_sleep_ms(spin_ms);
    size_t at_end = dt_merged_like(p, len);
    g_stop = 1;
    for (long t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);

    struct dt_range r = {p, len};
    double calm = dt_wait_merged(&r, 1, 0.9, timeout);
    size_t after = dt_merged_like(p, len);
    size_t bad = 0;
    for (size_t i = 0; i < pages; i++)
        bad += dt_count_diff(p + i * 4096, pattern, 4096);

    dt_out("pages", "%zu", pages);
    dt_out("merged_at_spin_end", "%zu", at_end);
    dt_out("merged_after", "%zu", after);
    dt_out("calm_ms", "%.0f", calm);
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
