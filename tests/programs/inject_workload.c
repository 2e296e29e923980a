/* Workload for the failure-injection tests (run under fault_inject).
 *
 *   inject_workload [--copies N] [--buf-kib K] [--malloc-copies M]
 *                   [--zero-kib Z] [--timeout-ms T] [--seed S]
 *                   [--fill-fds | --dup2-all] [--no-warmup] [--keep-fds]
 *                   [--churn-ms T] [--count-fds]
 *
 * Holds duplicates the shim can merge three ways:
 *   - N copies of one random K KiB buffer in one private anonymous mmap;
 *   - M big malloc'd copies of it (served from the shim's own mappings);
 *   - a Z KiB private anonymous mmap written with zeros (zero pages).
 * Waits (polling its own pagemap, every 10 ms) until the copies and the zero
 * region look merged or T ms have passed, then verifies every byte, writes one
 * byte into every page of every copy (copy-on-write of merged pages) and
 * verifies again, and reads the zero region back.
 *
 * --fill-fds   before allocating anything, open /dev/null until EMFILE: the
 *              program itself has used up its descriptors (prints fds_filled).
 *              They are closed before exit unless --keep-fds.
 * --churn-ms T with --fill-fds or --dup2-all, after the checks: close one
 *              of those descriptors and, for T ms, open and close one
 *              descriptor in a loop. Prints churn_opens and churn_emfile (opens that failed
 *              with EMFILE: someone else held the last free descriptor).
 * --dup2-all   before allocating anything, dup2(0, fd) onto every descriptor
 *              number from 3 up to the limit except its own pagemap's (as
 *              programs that set up fixed descriptor numbers do): every
 *              dup2 must succeed (prints dup2_done, dup2_failed), and the
 *              table is then full. They are closed before exit unless
 *              --keep-fds.
 * Both --fill-fds and --dup2-all first wait (up to T ms) until a small
 * zero-filled warm-up region is given back, i.e. until the shim's scanner is
 * at work, and print warmup_merge_wait_ms; --no-warmup skips that (then who
 * gets the last descriptors first, the program or the shim, is a race).
 * --count-fds  after merging, count how many descriptors the program can still
 *              open (prints fds_free), then close them again.
 *
 * Prints key=value lines: rlimit_nofile, rlimit_nofile_max, dup_pages, zero_pages, dup_merge_wait_ms and
 * zero_merge_wait_ms (-1: not within T), dup_merged_like, zero_merged_like,
 * dup_shared_after_read (pagemap bit 61 after reading the copies),
 * mismatches (bytes that differ from what was written, all checks together),
 * result=ok|fail. Exit 0 iff no byte was wrong.
 */
#include "dtest.h"
#include <sys/resource.h>

static int filled[65536];
static int nfilled;

static int open_until_emfile(int *out, int cap)
{
    int n = 0;
    while (n < cap) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != EMFILE)
                dt_fail("open /dev/null: %s (expected EMFILE at the limit)", strerror(errno));
            break;
        }
        out[n++] = fd;
    }
    return n;
}

int main(int argc, char **argv)
{
    long copies = dt_arg_long(argc, argv, "--copies", 16);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 256) * 1024;
    long mcopies = dt_arg_long(argc, argv, "--malloc-copies", 4);
    size_t zlen = (size_t)dt_arg_long(argc, argv, "--zero-kib", 1024) * 1024;
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 10000);
    uint64_t seed = (uint64_t)dt_arg_long(argc, argv, "--seed", 7);
    if (copies < 2 || copies > 256 || mcopies < 0 || mcopies > 64 || buf < DT_PAGE || zlen < 65536) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    int pm_fd = dt_pagemap_fd(); /* before any descriptor shortage */

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    dt_out("rlimit_nofile", "%llu", (unsigned long long)rl.rlim_cur);
    dt_out("rlimit_nofile_max", "%llu", (unsigned long long)rl.rlim_max);
    if ((dt_arg_flag(argc, argv, "--dup2-all") || dt_arg_flag(argc, argv, "--fill-fds")) &&
        !dt_arg_flag(argc, argv, "--no-warmup")) {
        /* Warm-up: let the shim get going (its scanner has read our pagemap
         * once a zero page is given back) before the descriptors run out,
         * so that what follows does not depend on who opens first. */
        unsigned char *w = mmap(NULL, 64 * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (w == MAP_FAILED)
            dt_die("mmap warm-up");
        memset(w, 0, 64 * DT_PAGE);
        struct dt_range wr = {w, 64 * DT_PAGE};
        dt_out("warmup_merge_wait_ms", "%.0f", dt_wait_merged(&wr, 1, 0.5, timeout));
        munmap(w, 64 * DT_PAGE);
    }
    if (dt_arg_flag(argc, argv, "--dup2-all")) {
        int done = 0, failed = 0;
        for (rlim_t fd = 3; fd < rl.rlim_cur && fd < 65536; fd++) {
            if ((int)fd == pm_fd)
                continue;
            if (dup2(0, (int)fd) == (int)fd) {
                done++;
                filled[nfilled++] = (int)fd;
            } else
                failed++;
        }
        dt_out("dup2_done", "%d", done);
        dt_out("dup2_failed", "%d", failed);
        if (failed)
            dt_fail("%d dup2 calls failed", failed);
    }
    if (dt_arg_flag(argc, argv, "--fill-fds")) {
        int n = open_until_emfile(filled + nfilled, (int)(sizeof(filled) / sizeof(filled[0])) - nfilled);
        nfilled += n;
        dt_out("fds_filled", "%d", n);
    }

    size_t total = (size_t)copies * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap copies");
    unsigned char *zero = mmap(NULL, zlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (zero == MAP_FAILED)
        dt_die("mmap zero region");
    unsigned char *mbufs[64];
    struct dt_range dr[65];
    int ndr = 0;
    dt_fill_random(region, buf, seed);
    for (long i = 1; i < copies; i++)
        memcpy(region + (size_t)i * buf, region, buf);
    dr[ndr].addr = region;
    dr[ndr++].len = total;
    for (long i = 0; i < mcopies; i++) {
        mbufs[i] = malloc(buf);
        if (!mbufs[i])
            dt_die("malloc");
        memcpy(mbufs[i], region, buf);
        /* the whole pages inside the block */
        uintptr_t s = ((uintptr_t)mbufs[i] + DT_PAGE - 1) & ~(DT_PAGE - 1);
        uintptr_t e = ((uintptr_t)mbufs[i] + buf) & ~(DT_PAGE - 1);
        dr[ndr].addr = (void *)s;
        dr[ndr++].len = e > s ? e - s : 0;
    }
    memset(zero, 0, zlen);

    size_t dup_pages = dt_ranges_pages(dr, ndr), zero_pages = zlen / DT_PAGE;
    dt_out("dup_pages", "%zu", dup_pages);
    dt_out("zero_pages", "%zu", zero_pages);

    double t0 = dt_now_ms(), dup_wait = -1, zero_wait = -1;
    size_t dup_max = 0, zero_max = 0;
    for (;;) {
        size_t d = dt_ranges_merged_like(dr, ndr), z = dt_merged_like(zero, zlen);
        if (d > dup_max)
            dup_max = d;
        if (z > zero_max)
            zero_max = z;
        double now = dt_now_ms() - t0;
        if (dup_wait < 0 && d >= dup_pages * 95 / 100)
            dup_wait = now;
        if (zero_wait < 0 && z >= zero_pages * 95 / 100)
            zero_wait = now;
        if ((dup_wait >= 0 && zero_wait >= 0) || now > timeout)
            break;
        dt_sleep_ms(10);
    }
    dt_out("dup_merge_wait_ms", "%.0f", dup_wait);
    dt_out("zero_merge_wait_ms", "%.0f", zero_wait);
    dt_out("dup_merged_like", "%zu", dup_max);
    dt_out("zero_merged_like", "%zu", zero_max);

    size_t bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_check_random(region + (size_t)i * buf, buf, seed);
    for (long i = 0; i < mcopies; i++)
        bad += dt_check_random(mbufs[i], buf, seed);
    size_t shared = 0;
    for (int i = 0; i < ndr; i++)
        shared += dt_file_pages(dr[i].addr, dr[i].len);
    dt_out("dup_shared_after_read", "%zu", shared);
    size_t zbad = dt_count_not(zero, zlen, 0);
    bad += zbad;
    dt_out("mismatches_first_check", "%zu", bad);

    /* Writes into merged pages must land (copy-on-write), once per page. */
    for (long i = 0; i < copies; i++)
        for (size_t off = 0; off < buf; off += DT_PAGE)
            region[(size_t)i * buf + off + (size_t)i % DT_PAGE] ^= 0x5a;
    for (long i = 0; i < mcopies; i++)
        for (size_t off = 0; off < buf; off += DT_PAGE)
            mbufs[i][off] ^= 0xa5;
    for (size_t off = 0; off < zlen; off += 2 * DT_PAGE)
        zero[off + 17] = 0x33;
    size_t bad2 = 0;
    for (long i = 0; i < copies; i++)
        for (size_t off = 0; off < buf; off += DT_PAGE)
            region[(size_t)i * buf + off + (size_t)i % DT_PAGE] ^= 0x5a; /* back */
    for (long i = 0; i < mcopies; i++)
        for (size_t off = 0; off < buf; off += DT_PAGE)
            mbufs[i][off] ^= 0xa5;
    for (long i = 0; i < copies; i++)
        bad2 += dt_check_random(region + (size_t)i * buf, buf, seed);
    for (long i = 0; i < mcopies; i++)
        bad2 += dt_check_random(mbufs[i], buf, seed);
    for (size_t off = 0; off < zlen; off += DT_PAGE) {
        unsigned char want = (off / DT_PAGE) % 2 == 0 ? 0x33 : 0;
        for (size_t k = 0; k < DT_PAGE; k++)
            bad2 += zero[off + k] != (k == 17 ? want : 0);
    }
    dt_out("mismatches_after_writes", "%zu", bad2);
    bad += bad2;

    if (dt_arg_flag(argc, argv, "--count-fds")) {
        static int more[65536];
        int n = open_until_emfile(more, (int)(sizeof(more) / sizeof(more[0])));
        dt_out("fds_free", "%d", n);
        for (int i = 0; i < n; i++)
            close(more[i]);
    }

    double churn = (double)dt_arg_long(argc, argv, "--churn-ms", 0);
    if (churn > 0 && nfilled > 0) {
        /* At the limit but one: the program's next open must always work. */
        close(filled[--nfilled]);
        unsigned long opens = 0, emfile = 0;
        double c0 = dt_now_ms();
        while (dt_now_ms() - c0 < churn) {
            int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE)
                    emfile++;
                else
                    dt_fail("open /dev/null: %s", strerror(errno));
                continue;
            }
            close(fd);
            opens++;
        }
        dt_out("churn_opens", "%lu", opens);
        dt_out("churn_emfile", "%lu", emfile);
    }

    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes differ from what was written", bad);
    for (long i = 0; i < mcopies; i++)
        free(mbufs[i]);
    munmap(region, total);
    munmap(zero, zlen);
    if (!dt_arg_flag(argc, argv, "--keep-fds"))
        for (int i = 0; i < nfilled; i++)
            close(filled[i]);

    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}
