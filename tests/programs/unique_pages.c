/* A program without duplicates: a mmap'd region and some big mallocs, every
 * page unique random data. It holds for --hold-ms, re-verifying its data and
 * watching its pagemap, and prints only deterministic output (identical with
 * and without the shim).
 *
 *   unique_pages [--mib M] [--hold-ms H]
 */
#include "dtest.h"

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int main(int argc, char **argv)
{
    size_t mib = (size_t)dt_arg_long(argc, argv, "--mib", 16);
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 1000);
    size_t total = mib << 20;
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
