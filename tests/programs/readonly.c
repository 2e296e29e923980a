/* Read-only regions of duplicates.
 *
 *   readonly born|mprotect [--no-wait] [--mib M] [--hold-ms H]
 *
 * born:     the region is mmap'd PROT_READ and filled through /proc/self/mem
 *           (as the kernel selftests do), so it is never writable. It must
 *           never merge (no page ever shared / discarded).
 * mprotect: the region is mmap'd read-write, filled, then mprotect(PROT_READ).
 *
 * In both modes a read-write control region of duplicates must merge (this
 * proves the scanner ran over everything; --no-wait skips that, for a run
 * without the shim), then the region must still be r--p in /proc/self/maps,
 * hold its bytes, and a write to it in a forked child must die of SIGSEGV
 * ("child_signal=11"). Finally it is made writable again and written.
 */
#include "dtest.h"

static unsigned char *g_ro;

static void child_write(void *arg)
{
    (void)arg;
    ((volatile unsigned char *)g_ro)[5 * DT_PAGE + 7] = 0x77;
    _exit(0); /* survived the write: wrong */
}

static void fill_expect(unsigned char *p, size_t len)
{
    for (size_t off = 0; off < len; off += DT_PAGE)
        memset(p + off, 0x30 + (int)((off / DT_PAGE) % 4), DT_PAGE);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "born") && strcmp(argv[1], "mprotect"))) {
        fprintf(stderr, "usage: readonly born|mprotect [opts]\n");
        return 2;
    }
    int born = strcmp(argv[1], "born") == 0;
    size_t len = (size_t)dt_arg_long(argc, argv, "--mib", 4) << 20;
    double hold = (double)dt_arg_long(argc, argv, "--hold-ms", 500);
    int nowait = dt_arg_flag(argc, argv, "--no-wait");

    unsigned char *expect = dt_scratch(len);
    fill_expect(expect, len);
    unsigned char *ro;
    if (born) {
        ro = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ro == MAP_FAILED)
            dt_die("mmap");
        int mfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
        if (mfd < 0)
            dt_die("open /proc/self/mem");
        for (size_t off = 0; off < len; off += DT_PAGE)
            if (pwrite(mfd, expect + off, DT_PAGE, (off_t)(uintptr_t)(ro + off)) != (ssize_t)DT_PAGE)
                dt_die("pwrite /proc/self/mem");
        close(mfd);
    } else {
        ro = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ro == MAP_FAILED)
            dt_die("mmap");
        memcpy(ro, expect, len);
        if (mprotect(ro, len, PROT_READ) != 0)
            dt_die("mprotect");
    }
    g_ro = ro;
    size_t max_merged = dt_merged_like(ro, len);

    /* control region: read-write duplicates */
    size_t clen = 4UL << 20;
    unsigned char *ctl = mmap(NULL, clen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED)
        dt_die("mmap control");
    for (size_t off = 0; off < clen; off += DT_PAGE)
        memset(ctl + off, 0x60 + (int)((off / DT_PAGE) % 3), DT_PAGE);
    if (!nowait) {
        struct dt_range r = {ctl, clen};
        double t0 = dt_now_ms();
        while (dt_merged_like(ctl, clen) < clen / DT_PAGE * 95 / 100) {
            size_t m = dt_merged_like(ro, len);
            if (m > max_merged)
                max_merged = m;
            if (dt_now_ms() - t0 > 20000) {
                dt_fail("control region did not merge");
                break;
            }
            dt_sleep_ms(10);
        }
        (void)r;
        dt_out("control_merge_wait_ms", "%.0f", dt_now_ms() - t0);
    }
    double t0 = dt_now_ms();
    while (dt_now_ms() - t0 < hold) {
        size_t m = dt_merged_like(ro, len);
        if (m > max_merged)
            max_merged = m;
        dt_sleep_ms(10);
    }
    dt_out("ro_max_merged_like", "%zu", max_merged);
    if (born && max_merged)
        dt_fail("%zu pages of a never-writable region merged", max_merged);

    const char *perms = dt_perms(ro, len);
    dt_out("ro_perms", "%s", perms);
    if (strcmp(perms, "r--p") != 0)
        dt_fail("region perms are %s, want r--p", perms);
    size_t bad = dt_count_diff(ro, expect, len);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong", bad);
    dt_out("ro_file_pages", "%zu", dt_file_pages(ro, len));

    int st = dt_in_child(child_write, NULL);
    dt_out("child_signal", "%d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV)
        dt_fail("write to the read-only region in a child did not die of SIGSEGV (status 0x%x)", st);

    /* still intact in the parent, then writable again */
    bad = dt_count_diff(ro, expect, len);
    if (bad)
        dt_fail("%zu bytes wrong after the child", bad);
    if (mprotect(ro, len, PROT_READ | PROT_WRITE) != 0)
        dt_die("mprotect rw");
    for (size_t off = 0; off < len; off += 3 * DT_PAGE) {
        ro[off + 11] ^= 0x5a;
        expect[off + 11] ^= 0x5a;
    }
    bad = dt_count_diff(ro, expect, len) + dt_count_diff(ro, expect, len);
    dt_out("mismatches_after_rw", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong after making it writable and writing", bad);
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
