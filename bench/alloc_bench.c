/*
 * alloc_bench — malloc/free cost from several threads, in ns per call.
 *
 * For each size class and thread count, every thread repeatedly frees one of
 * its SLOTS live allocations and allocates a new one in its place, for a fixed
 * wall time; the result is wall time / operations per thread, reported per
 * malloc+free pair ("ns per call pair").  Run it with and without
 * LD_PRELOAD=libdedup.so to see the shim's interposition overhead.
 *
 *   small:         8 .. 1024 bytes (first byte written)
 *   large:         64 KiB .. 1 MiB, sizes mixed at random (at or above the
 *                  shim's threshold; not touched, so the cost is the
 *                  allocator's own, and any mmap/munmap it makes)
 *   large-same:    one size (256 KiB) freed and allocated again, not touched
 *   large-touched: as large, and one byte of every page of a new block is
 *                  written (what page faults on fresh memory add)
 *
 * Output: one JSON object per line:
 *   {"class":"small","threads":2,"ns_per_pair":..,"pairs":..,"seconds":..}
 * Options: -d SECONDS per measurement (default 0.3), -r REPEATS (median, default 3),
 *          -t LIST thread counts (default 1,2,4),
 *          -c CLASSES: comma-separated class names, or both (small,large,
 *          the default) or all.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 64

enum { SMALL, LARGE, LARGE_SAME, LARGE_TOUCHED, NCLASSES };
static const char *class_name[NCLASSES] = {"small", "large", "large-same", "large-touched"};

struct job {
    int cls;
    uint64_t seed;
    uint64_t pairs;
    pthread_t tid;
};

static atomic_int go, stop;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void *worker(void *arg)
{
    struct job *j = arg;
    void *slot[SLOTS];
    memset(slot, 0, sizeof slot);
    uint64_t s = j->seed | 1, n = 0;
    while (!atomic_load_explicit(&go, memory_order_acquire)) {
    }
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 16; k++) {
            uint64_t r = xorshift(&s);
            unsigned i = (unsigned)(r % SLOTS);
            size_t sz = j->cls == SMALL        ? (size_t)(8 + (r >> 8) % 1017)
                        : j->cls == LARGE_SAME ? (size_t)256 * 1024
                                               : (size_t)(64 * 1024 + (r >> 8) % (960 * 1024));
            free(slot[i]);
            slot[i] = malloc(sz);
            if (!slot[i]) {
                perror("malloc");
                exit(1);
            }
            if (j->cls == SMALL) *(volatile char *)slot[i] = (char)k;
            if (j->cls == LARGE_TOUCHED)
                for (size_t o = 0; o < sz; o += 4096) ((volatile char *)slot[i])[o] = (char)k;
        }
        n += 16;
    }
    for (int i = 0; i < SLOTS; i++) free(slot[i]);
    j->pairs = n;
    return NULL;
}

static double measure(int cls, int threads, double seconds, uint64_t *pairs_out)
{
    struct job *jobs = calloc((size_t)threads, sizeof *jobs);
    if (!jobs) {
        perror("calloc");
        exit(1);
    }
    atomic_store(&go, 0);
    atomic_store(&stop, 0);
    for (int t = 0; t < threads; t++) {
        jobs[t].cls = cls;
        jobs[t].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1);
        if (pthread_create(&jobs[t].tid, NULL, worker, &jobs[t])) {
            perror("pthread_create");
            exit(1);
        }
    }
    double t0 = now();
    atomic_store_explicit(&go, 1, memory_order_release);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    uint64_t total = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(jobs[t].tid, NULL);
        total += jobs[t].pairs;
    }
    double el = now() - t0;
    free(jobs);
    *pairs_out = total;
    /* wall time per pair as seen by one thread */
    return el * 1e9 / ((double)total / threads);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    double seconds = 0.3;
    int repeats = 3;
    const char *tlist = "1,2,4", *classes = "both";
    int c;
    while ((c = getopt(argc, argv, "d:r:t:c:h")) != -1) {
        switch (c) {
        case 'd': seconds = atof(optarg); break;
        case 'r': repeats = atoi(optarg); break;
        case 't': tlist = optarg; break;
        case 'c': classes = optarg; break;
        default:
            fprintf(stderr, "usage: alloc_bench [-d SECONDS] [-r REPEATS] [-t 1,2,4] "
                            "[-c small,large,large-same,large-touched|both|all]\n");
            return 1;
        }
    }
    if (seconds <= 0 || repeats < 1 || repeats > 99) {
        fprintf(stderr, "alloc_bench: bad -d or -r\n");
        return 1;
    }
    if (!strcmp(classes, "both")) classes = "small,large";
    if (!strcmp(classes, "all")) classes = "small,large,large-same,large-touched";
    int want[NCLASSES] = {0};
    {
        char cbuf[256];
        snprintf(cbuf, sizeof cbuf, "%s", classes);
        for (char *save = NULL, *tok = strtok_r(cbuf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int found = 0;
            for (int c2 = 0; c2 < NCLASSES; c2++)
                if (!strcmp(tok, class_name[c2])) want[c2] = found = 1;
            if (!found) {
                fprintf(stderr, "alloc_bench: unknown class %s\n", tok);
                return 1;
            }
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int cls = 0; cls < NCLASSES; cls++) {
        if (!want[cls]) continue;
        char buf[256];
        snprintf(buf, sizeof buf, "%s", tlist);
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int threads = atoi(tok);
            if (threads < 1 || threads > 256) continue;
            double v[99];
            uint64_t pairs = 0, p;
            for (int r = 0; r < repeats; r++) {
                v[r] = measure(cls, threads, seconds, &p);
                pairs += p;
            }
            qsort(v, (size_t)repeats, sizeof v[0], cmp_double);
            printf("{\"class\":\"%s\",\"threads\":%d,\"ns_per_pair\":%.1f,\"min_ns\":%.1f,"
                   "\"max_ns\":%.1f,\"pairs\":%llu,\"seconds\":%.2f}\n",
                   class_name[cls], threads, v[repeats / 2], v[0], v[repeats - 1],
                   (unsigned long long)pairs, seconds * repeats);
        }
    }
    return 0;
}
