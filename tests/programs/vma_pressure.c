/* The VMA budget.
 *
 *   vma_pressure budget   scattered duplicates (every other page) to merge;
 *                         prints vmas=<count> after the merging settled, so
 *                         the test can check the count stayed within budget
 *   vma_pressure grow     the same, then the program itself creates VMAs
 *                         (mprotect of every other page of a big mapping) in
 *                         steps until its own would be 200 short of
 *                         vm.max_map_count (counted from the VMAs it had at
 *                         its start, not from what /proc/self/maps shows at
 *                         each step: that includes the shim's, given back a
 *                         moment later). Every call must succeed, as it
 *                         would without the shim: the shim has to give its
 *                         VMAs back in time.
 */
#include "dtest.h"

static long count_vmas(void)
{
    int fd = open("/proc/self/maps", O_RDONLY);
    static char buf[1 << 16];
    long n = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < r; i++) n += buf[i] == '\n';
    close(fd);
    return n;
}

static long read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = 0;
    if (f && fscanf(f, "%ld", &v) != 1) v = 0;
    if (f) fclose(f);
    return v;
}

static long file_pages(unsigned char *a, size_t n)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    long c = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = 0;
        if (pread(fd, &e, 8, (off_t)((uintptr_t)(a + i * DT_PAGE) / DT_PAGE * 8)) == 8 && (e & PM_FILE)) c++;
    }
    close(fd);
    return c;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "budget";
    size_t n = 8192;
    long at_start = count_vmas();
    unsigned char *a = mmap(NULL, n * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        if (i % 2 == 0) { memset(a + i * DT_PAGE, 0x5a, DT_PAGE); continue; }
        for (size_t o = 0; o < DT_PAGE; o += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(a + i * DT_PAGE + o, &x, 8); }
    }
    /* wait until merging settles (no change for 1.5 s, at most 20 s) */
    long last = -1, stable = 0;
    for (int t = 0; t < 200 && stable < 15; t++) {
        usleep(100 * 1000);
        long now = count_vmas();
        stable = now == last ? stable + 1 : 0;
        last = now;
    }
    dt_out("vmas", "%ld", count_vmas());
    dt_out("max_map_count", "%ld", read_long("/proc/sys/vm/max_map_count"));
    dt_out("merged_pages_mapped", "%ld", file_pages(a, n));
    if (!strcmp(mode, "grow")) {
        long max = read_long("/proc/sys/vm/max_map_count");
        size_t big = (size_t)max + 2000; /* every other page split off: max/2 + 1000 VMAs */
        unsigned char *b = mmap(NULL, big * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (b == MAP_FAILED) { perror("mmap"); return 2; }
        size_t i = 1;
        long failures = 0;
        /* Without the shim: at_start, a and b, and 2 more for each page split off. */
        long own = at_start + 2;
        while (own + 2 <= max - 200 && i < big) {
            long step = (max - 200 - own) / 2;
            if (step > 1000) step = 1000;
            for (long k = 0; k < step && i < big; k++, i += 2, own += 2)
                if (mprotect(b + i * DT_PAGE, DT_PAGE, PROT_READ) != 0) { failures++; fprintf(stderr, "mprotect failed at vmas=%ld: %s\n", count_vmas(), strerror(errno)); break; }
            if (failures) break;
            usleep(100 * 1000); /* a program's growth takes time; the scanner looks twice a second */
        }
        dt_out("grown_to", "%ld", count_vmas());
        dt_out("failures", "%ld", failures);
        if (failures) return 1;
    }
    for (size_t i = 0; i < n; i += 2)
        if (a[i * DT_PAGE + 17] != 0x5a || a[i * DT_PAGE + 4000] != 0x5a) { fprintf(stderr, "FAIL: page %zu changed\n", i); return 1; }
    return 0;
}
