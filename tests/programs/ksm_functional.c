/* The cases of the kernel's tools/testing/selftests/mm/ksm_functional_tests.c
 * that apply to a userspace shim, rewritten for libdedup: "KSM merging" is the
 * shim's scanner (DEDUP_SCOPE=all or advised + MADV_MERGEABLE), "wait for two
 * full scans" is polling our own pagemap until the range looks merged, and
 * range_maps_duplicates() is the same PFN comparison (PFNs are visible to
 * root; without them the PFN check is reported as -1 and only the bit-61
 * checks remain).
 *
 *   ksm_functional test_unmerge | test_unmerge_zero_pages |
 *                  test_unmerge_discarded | test_prot_none |
 *                  test_prot_none_never_merged | test_fork | test_prctl
 */
#include "dtest.h"
#include <sys/prctl.h>

#define SIZE (2UL << 20)

/* __mmap_and_merge_range(): fill with val, set prot, MADV_MERGEABLE, then wait
 * until wait_frac of the pages look merged (0: no wait). A case that checks
 * how many pages merged must wait for that many: the scanner goes on merging
 * after the wait ends, so a lower wait makes the check race it. */
static unsigned char *mmap_and_merge_range(unsigned char val, size_t size, int prot, double wait_frac)
{
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        dt_die("mmap");
    if (madvise(map, size, MADV_NOHUGEPAGE) && errno != EINVAL)
        dt_fail("MADV_NOHUGEPAGE failed: %s", strerror(errno));
    memset(map, val, size);
    if (mprotect(map, size, prot))
        dt_die("mprotect");
    int r = madvise(map, size, MADV_MERGEABLE);
    dt_out("madv_mergeable", "%d", r);
    if (r)
        dt_fail("MADV_MERGEABLE failed: %s", strerror(errno));
    if (wait_frac > 0) {
        struct dt_range rg = {map, size};
        double w = dt_wait_merged(&rg, 1, wait_frac, 20000);
        dt_out("merge_wait_ms", "%.0f", w);
        if (w < 0)
            dt_fail("no pages got merged (%zu of %zu look merged)", dt_merged_like(map, size),
                    size / DT_PAGE);
    }
    return map;
}

/* A read-write control region of duplicates; returns once it merged, which
 * shows that the scanner has been over the address space. */
static void wait_for_control_merge(void)
{
    size_t clen = 2UL << 20;
    unsigned char *c = mmap(NULL, clen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED)
        dt_die("mmap control");
    memset(c, 0x3c, clen);
    madvise(c, clen, MADV_MERGEABLE);
    struct dt_range rg = {c, clen};
    double w = dt_wait_merged(&rg, 1, 0.95, 20000);
    dt_out("control_merge_wait_ms", "%.0f", w);
    if (w < 0)
        dt_fail("control region did not merge");
}

static void check_unmerged(const char *tag, unsigned char *map, size_t size)
{
    char k[64];
    long d = dt_dup_pfns(map, size);
    snprintf(k, sizeof k, "%s_dup_pfns", tag);
    dt_out(k, "%ld", d);
    size_t f = dt_file_pages(map, size);
    snprintf(k, sizeof k, "%s_file_pages", tag);
    dt_out(k, "%zu", f);
    if (d > 0)
        dt_fail("%s: range maps duplicates (%ld pages share a PFN)", tag, d);
    if (f)
        dt_fail("%s: %zu pages are still shared (bit 61)", tag, f);
}

static void test_unmerge(void)
{
    unsigned char *map = mmap_and_merge_range(0xcf, SIZE, PROT_READ | PROT_WRITE, 1.0);
    /* precondition: reading the merged range shows shared PFNs */
    dt_touch_read(map, SIZE);
    dt_out("merged_dup_pfns", "%ld", dt_dup_pfns(map, SIZE));
    dt_out("merged_file_pages", "%zu", dt_file_pages(map, SIZE));
    int r = madvise(map, SIZE, MADV_UNMERGEABLE);
    dt_out("madv_unmergeable", "%d", r);
    if (r)
        dt_fail("MADV_UNMERGEABLE failed: %s", strerror(errno));
    check_unmerged("untouched", map, SIZE);
    dt_touch_read(map, SIZE);
    check_unmerged("touched", map, SIZE);
    size_t bad = dt_count_not(map, SIZE, 0xcf);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes are not 0xcf", bad);
    munmap(map, SIZE);
}

static void test_unmerge_zero_pages(void)
{
    unsigned char *map = mmap_and_merge_range(0x00, SIZE, PROT_READ | PROT_WRITE, 0.95);
    struct dt_pm st;
    dt_pm_scan(map, SIZE, &st, NULL, NULL);
    dt_out("zero_nonpresent", "%zu", st.nonpresent);
    dt_out("zero_file", "%zu", st.file);
    int r = madvise(map, SIZE / 2, MADV_UNMERGEABLE);
    dt_out("madv_unmergeable", "%d", r);
    if (r)
        dt_fail("MADV_UNMERGEABLE failed: %s", strerror(errno));
    for (size_t offs = SIZE / 2; offs < SIZE; offs += DT_PAGE)
        *((unsigned int *)&map[offs]) = (unsigned int)offs;
    dt_touch_read(map, SIZE);
    check_unmerged("touched", map, SIZE);
    size_t bad = dt_count_not(map, SIZE / 2, 0);
    for (size_t offs = SIZE / 2; offs < SIZE; offs += DT_PAGE) {
        if (*((unsigned int *)&map[offs]) != (unsigned int)offs)
            bad++;
        bad += dt_count_not(map + offs + 4, DT_PAGE - 4, 0);
    }
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong", bad);
    munmap(map, SIZE);
}

static void test_unmerge_discarded(void)
{
    unsigned char *map = mmap_and_merge_range(0xcf, SIZE, PROT_READ | PROT_WRITE, 0.95);
    int r = madvise(map, SIZE / 2, MADV_DONTNEED);
    dt_out("madv_dontneed", "%d", r);
    if (r)
        dt_fail("MADV_DONTNEED failed: %s", strerror(errno));
    r = madvise(map, SIZE, MADV_UNMERGEABLE);
    dt_out("madv_unmergeable", "%d", r);
    if (r)
        dt_fail("MADV_UNMERGEABLE failed: %s", strerror(errno));
    check_unmerged("untouched", map, SIZE);
    dt_touch_read(map, SIZE);
    check_unmerged("touched", map, SIZE);
    size_t bad = dt_count_not(map, SIZE / 2, 0) + dt_count_not(map + SIZE / 2, SIZE / 2, 0xcf);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong (want zeros in the discarded half, 0xcf in the other)", bad);
    munmap(map, SIZE);
}

static void test_prot_none(void)
{
    /* the kernel merges PROT_NONE pages; the shim leaves them alone, so only
     * wait for the scanner to have passed, not for a merge */
    unsigned char *map = mmap_and_merge_range(0x11, SIZE, PROT_NONE, 0);
    wait_for_control_merge();
    const char *perms = dt_perms(map, SIZE);
    dt_out("perms", "%s", perms);
    if (strcmp(perms, "---p"))
        dt_fail("PROT_NONE range has perms %s", perms);
    int mfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (mfd < 0)
        dt_die("open /proc/self/mem");
    /* Store a unique value in each page on one half using ptrace */
    for (unsigned int i = 0; i < SIZE / 2; i += DT_PAGE)
        if (pwrite(mfd, &i, sizeof(i), (off_t)(uintptr_t)(map + i)) != sizeof(i))
            dt_fail("ptrace write failed at %u: %s", i, strerror(errno));
    close(mfd);
    int r = madvise(map + SIZE / 2, SIZE / 2, MADV_UNMERGEABLE);
    dt_out("madv_unmergeable", "%d", r);
    if (r)
        dt_fail("MADV_UNMERGEABLE failed: %s", strerror(errno));
    check_unmerged("untouched", map, SIZE);
    if (mprotect(map, SIZE, PROT_READ | PROT_WRITE))
        dt_die("mprotect rw");
    dt_touch_read(map, SIZE);
    check_unmerged("touched", map, SIZE);
    size_t bad = 0;
    for (unsigned int i = 0; i < SIZE; i += DT_PAGE) {
        if (i < SIZE / 2) {
            if (*(unsigned int *)(map + i) != i)
                bad++;
            bad += dt_count_not(map + i + 4, DT_PAGE - 4, 0x11);
        } else {
            bad += dt_count_not(map + i, DT_PAGE, 0x11);
        }
    }
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong", bad);
    munmap(map, SIZE);
}

/* PROT_NONE from birth, duplicates written through /proc/self/mem: the shim
 * must never merge it (and must keep it PROT_NONE). */
static void test_prot_none_never_merged(void)
{
    unsigned char *map = mmap(NULL, SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        dt_die("mmap");
    int r = madvise(map, SIZE, MADV_MERGEABLE);
    dt_out("madv_mergeable", "%d", r);
    int mfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (mfd < 0)
        dt_die("open /proc/self/mem");
    unsigned char page[DT_PAGE];
    memset(page, 0x11, sizeof page);
    for (size_t off = 0; off < SIZE; off += DT_PAGE)
        if (pwrite(mfd, page, DT_PAGE, (off_t)(uintptr_t)(map + off)) != (ssize_t)DT_PAGE)
            dt_die("pwrite /proc/self/mem");
    close(mfd);
    wait_for_control_merge();
    size_t maxm = 0;
    double t0 = dt_now_ms();
    while (dt_now_ms() - t0 < 300) {
        size_t m = dt_merged_like(map, SIZE);
        if (m > maxm)
            maxm = m;
        dt_sleep_ms(10);
    }
    dt_out("max_merged_like", "%zu", maxm);
    if (maxm)
        dt_fail("%zu PROT_NONE pages were merged or discarded", maxm);
    const char *perms = dt_perms(map, SIZE);
    dt_out("perms", "%s", perms);
    if (strcmp(perms, "---p"))
        dt_fail("PROT_NONE range has perms %s", perms);
    if (mprotect(map, SIZE, PROT_READ))
        dt_die("mprotect");
    size_t bad = dt_count_not(map, SIZE, 0x11);
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes wrong", bad);
    munmap(map, SIZE);
}

/* Merge, then fork: both sides keep private copy-on-write semantics. After
 * the fork the parent rewrites 3/4 of the range (so it stops mapping the
 * canonical pages that existed at the fork) and lets its scanner run; only
 * then does the child read: it must still see the pre-fork contents
 * everywhere (a canonical slot freed by the parent would read as zeros). */
static void test_fork(void)
{
    const long copies = 8;
    const size_t buf = 256 * 1024, total = copies * buf;
    unsigned char *map = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        dt_die("mmap");
    unsigned char *orig = dt_scratch(total);
    dt_fill_random(map, buf, 31);
    for (long i = 1; i < copies; i++)
        memcpy(map + i * buf, map, buf);
    memcpy(orig, map, total);
    madvise(map, total, MADV_MERGEABLE);
    struct dt_range rg = {map, total};
    double w = dt_wait_merged(&rg, 1, 0.95, 20000);
    dt_out("merge_wait_ms", "%.0f", w);
    if (w < 0)
        dt_fail("range did not merge");
    dt_touch_read(map, total / 2); /* half present, half not yet faulted in */

    int go[2];
    if (pipe(go))
        dt_die("pipe");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        dt_die("fork");
    if (pid == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(3);
        size_t bad = dt_count_diff(map, orig, total);
        /* the child's own writes stay in the child */
        for (size_t off = 0; off < total; off += 2 * DT_PAGE)
            map[off + 1] ^= 0xff;
        size_t bad2 = 0;
        for (size_t off = 0; off < total; off += DT_PAGE) {
            unsigned char want = (unsigned char)(orig[off + 1] ^ ((off / DT_PAGE) % 2 ? 0 : 0xff));
            bad2 += map[off + 1] != want;
        }
        fprintf(stderr, "child: %zu bytes wrong before writing, %zu after\n", bad, bad2);
        exit(bad || bad2 ? 1 : 0);
    }
    close(go[0]);
    /* parent: overwrite 3/4 of the range with new (still duplicated) data;
     * `orig` (shared with the child) stays the pre-fork image, `mine` is the
     * parent's expectation */
    unsigned char *mine = dt_scratch(total);
    memcpy(mine, orig, total);
    size_t part = total / 4 * 3;
    for (size_t off = 0; off < part; off += DT_PAGE) {
        memset(map + off, 0x50 + (int)((off / DT_PAGE) % 5), DT_PAGE);
        memset(mine + off, 0x50 + (int)((off / DT_PAGE) % 5), DT_PAGE);
    }
    dt_sleep_ms(400); /* scanner runs at full speed in the tests */
    if (write(go[1], "g", 1) != 1)
        dt_die("write go");
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    dt_out("child_status", "%d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        dt_fail("child saw wrong contents (status 0x%x)", st);
    size_t bad = dt_count_diff(map, mine, total);
    dt_out("parent_mismatches", "%zu", bad);
    if (bad)
        dt_fail("parent: %zu bytes wrong after the child's writes", bad);
}

/* test_prctl: PR_SET/GET_MEMORY_MERGE is the kernel's KSM switch. The shim
 * does not implement it, but must not change what it returns: the driver
 * compares this output with a run without the shim. */
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
static void test_prctl(void)
{
    int r = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
    dt_out("prctl_set_1", "%d:%s", r, dt_errname(r ? errno : 0));
    r = prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
    dt_out("prctl_get_after_1", "%d:%s", r, dt_errname(r < 0 ? errno : 0));
    r = prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0);
    dt_out("prctl_set_0", "%d:%s", r, dt_errname(r ? errno : 0));
    r = prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
    dt_out("prctl_get_after_0", "%d:%s", r, dt_errname(r < 0 ? errno : 0));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: ksm_functional TEST\n");
        return 2;
    }
    const char *t = argv[1];
    if (!strcmp(t, "test_unmerge"))
        test_unmerge();
    else if (!strcmp(t, "test_unmerge_zero_pages"))
        test_unmerge_zero_pages();
    else if (!strcmp(t, "test_unmerge_discarded"))
        test_unmerge_discarded();
    else if (!strcmp(t, "test_prot_none"))
        test_prot_none();
    else if (!strcmp(t, "test_prot_none_never_merged"))
        test_prot_none_never_merged();
    else if (!strcmp(t, "test_prctl"))
        test_prctl();
    else if (!strcmp(t, "test_fork"))
        test_fork();
    else {
        fprintf(stderr, "unknown test %s\n", t);
        return 2;
    }
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
