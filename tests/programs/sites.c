/* Allocation sites: duplicates made by a known function.
 *
 *   sites [hold_ms]
 *
 * build_lookup_table() allocates 12 copies of the same 1 MiB table with
 * malloc; make_noise() allocates 2 MiB of unique data. After the scanner has
 * merged them (polling Pss), the program prints ready=1, holds for hold_ms
 * (so dedupstat can read it), verifies the copies and exits. A negative
 * hold_ms holds until a byte or EOF on stdin instead: a driver that reads
 * the process from outside lets it go when it is done, however long the
 * scanner took. The summary must name build_lookup_table as the top site.
 */
#include "dtest.h"

static long pss_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Pss:", 4)) v = atol(line + 4);
    if (f) fclose(f);
    return v;
}

__attribute__((noinline)) static unsigned char *build_lookup_table(size_t n)
{
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 131 + (i >> 12) * 7);
    return p;
}

__attribute__((noinline)) static unsigned char *make_noise(size_t n)
{
    unsigned char *p = malloc(n);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = (unsigned char)x; }
    return p;
}

int main(int argc, char **argv)
{
    long hold_ms = argc > 1 ? atol(argv[1]) : 0;
    unsigned char *t[12];
    for (int i = 0; i < 12; i++) t[i] = build_lookup_table(1 << 20);
    unsigned char *noise = make_noise(2 << 20);
    long before = pss_kb();
    for (int i = 0; i < 200 && pss_kb() > before - 8 * 1024; i++) usleep(50 * 1000);
    if (hold_ms < 0) {
        dt_ready("1");
    } else {
        dt_out("ready", "1");
        usleep((useconds_t)hold_ms * 1000);
    }
    for (int i = 1; i < 12; i++)
        if (memcmp(t[0], t[i], 1 << 20)) { fprintf(stderr, "FAIL: copy %d differs\n", i); return 1; }
    dt_out("noise", "%d", noise[12345]);
    return 0;
}
