/* Many unique pages that do not change, held until the scanner has backed
 * off from them (KSM's smart scan), then duplicates of a few of them written
 * late, over other unique pages: each pair must still merge within the
 * back-off's bound. Reads the shim's live file for the pass count (it is
 * rewritten about every second: the scanner must be paced so that a pass
 * takes about half a second or more for the count to mean anything).
 *
 *   late_duplicate [--mib M] [--warm-passes W] [--pairs P] [--timeout-ms T]
 *
 * Prints: warm_passes_seen, skipped_before_write (pages_skipped when the
 * duplicates were written), pairs, pairs_merged, passes_to_merge (full
 * passes from the write until every pair was seen merged; the live file may
 * be up to a second old, so at most one pass more than the truth), and
 * mismatches (bytes that differ from a shadow copy the shim never sees).
 */
#include "dtest.h"

static char g_buf[32768 + 1];

/* The live file's value of "key", or -1. */
static long live_value(const char *key)
{
    char path[96], pat[64];
    dt_live_path(path, sizeof path, (long)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, g_buf, sizeof g_buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    g_buf[n] = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *p = strstr(g_buf, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Waits until the live file's full_scans changes (the file was just
 * rewritten: its numbers are fresh) and returns the new value, or -1. */
static long fresh_full_scans(double timeout_ms)
{
    long v0 = live_value("full_scans");
    double t0 = dt_now_ms();
    while (dt_now_ms() - t0 < timeout_ms) {
        dt_sleep_ms(10);
        long v = live_value("full_scans");
        if (v != v0 && v >= 0)
            return v;
    }
    return -1;
}

static int merged(const unsigned char *page)
{
    (void)*(const volatile unsigned char *)page; /* a merged page is not present until read */
    return (dt_pm_entry(page) & PM_PRESENT) && (dt_pm_entry(page) & PM_FILE);
}

int main(int argc, char **argv)
{
    size_t mib = (size_t)dt_arg_long(argc, argv, "--mib", 32);
    long warm = dt_arg_long(argc, argv, "--warm-passes", 12);
    int npairs = (int)dt_arg_long(argc, argv, "--pairs", 16);
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 60000);
    size_t total = mib << 20, pages = total / DT_PAGE;
    if (npairs < 1 || (size_t)npairs * 4 > pages)
        npairs = 1;

    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    unsigned char *shadow = dt_scratch(total);
    dt_fill_random(region, total, 7077);
    memcpy(shadow, region, total);

    /* Until the scanner made `warm` full passes over the unique pages. */
    double t0 = dt_now_ms();
    long scans = -1;
    while (dt_now_ms() - t0 < timeout) {
        scans = live_value("full_scans");
        if (scans >= warm)
            break;
        dt_sleep_ms(50);
    }
    dt_out("warm_passes_seen", "%ld", scans);
    long s0 = fresh_full_scans(5000);
    dt_out("skipped_before_write", "%ld", live_value("pages_skipped"));

    /* Pair i: page (pages/2 + i*3) becomes a copy of page (i*5): both were
     * unique and unchanged for `warm` passes. */
    size_t *src = calloc((size_t)npairs, sizeof *src), *dst = calloc((size_t)npairs, sizeof *dst);
    if (!src || !dst)
        dt_die("calloc");
    for (int i = 0; i < npairs; i++) {
        src[i] = (size_t)i * 5;
        dst[i] = pages / 2 + (size_t)i * 3;
        memcpy(region + dst[i] * DT_PAGE, region + src[i] * DT_PAGE, DT_PAGE);
        memcpy(shadow + dst[i] * DT_PAGE, shadow + src[i] * DT_PAGE, DT_PAGE);
    }

    int done = 0;
    long s_merged = -1;
    t0 = dt_now_ms();
    while (dt_now_ms() - t0 < timeout) {
        long s = live_value("full_scans");
        done = 0;
        for (int i = 0; i < npairs; i++)
            done += merged(region + src[i] * DT_PAGE) && merged(region + dst[i] * DT_PAGE);
        if (done == npairs) {
            s_merged = s;
            break;
        }
        dt_sleep_ms(20);
    }
    dt_out("pairs", "%d", npairs);
    dt_out("pairs_merged", "%d", done);
    dt_out("passes_to_merge", "%ld", s0 >= 0 && s_merged >= 0 ? s_merged - s0 : -1);
    size_t bad = dt_count_diff(region, shadow, total);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes differ from what the program wrote", bad);
    return dt_failed;
}
