/* Store rotation after fork: the parent gives back canonical pages that only
 * a (possibly exited) forked child could still map.
 *
 * Every region holds pairs of byte-identical pages, every pair distinct, so a
 * region of N pages needs N/2 canonical slots. Page content: word k of the
 * page is v + k, v = mix64(seed ^ key) (a bijection, so distinct keys give
 * distinct pages; never an all-zero page).
 *
 * Modes (argv[1]):
 *   exit_then_free  64 MiB merged, fork a child that verifies and exits, the
 *                   parent unmaps the region, then waits for a rotation and
 *                   for Shmem to fall >= 24 MiB below its level after merge.
 *   live_child      R1 32 MiB and R2 16 MiB merged; fork a child that keeps
 *                   verifying both (and COW-writes a few R2 pages of its own)
 *                   for >= 4 s and until it has seen the parent rotate; the
 *                   parent unmaps R1 and runs 2 writer threads on R2 (shadow
 *                   copy in MAP_SHARED memory), verifies R2, waits for the
 *                   rotation and for R2's untouched pages to be merged again.
 *   repeated        12 rounds of: 8 MiB merged, fork a verifying child, wait,
 *                   unmap. Shmem at the end must not hold every round's pages.
 *
 * Without the shim (no libdedup in /proc/self/maps) every wait is skipped and
 * only the contents are checked. Rotation figures come from the live stats
 * file /dev/shm/libdedup.<pidns>.<pid>.json; store_rotations=-1 means the key is not
 * there (a library without store rotation).
 */
#include "dtest.h"

#include <pthread.h>
#include <sys/stat.h>

#define KEY_R1 (1ULL << 40)
#define KEY_R2 (2ULL << 40)
#define KEY_CHILD (3ULL << 40)

static uint64_t g_seed;
static int g_shim;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t pair_value(uint64_t key, size_t pair) { return mix64(g_seed ^ (key | pair)); }

static inline void fill_page(unsigned char *p, uint64_t v)
{
    uint64_t *w = (uint64_t *)p;
    for (size_t k = 0; k < DT_PAGE / 8; k++)
        w[k] = v + k;
}

/* Number of wrong 64-bit words in the page. */
static inline size_t check_page(const unsigned char *p, uint64_t v)
{
    const uint64_t *w = (const uint64_t *)p;
    size_t bad = 0;
    for (size_t k = 0; k < DT_PAGE / 8; k++)
        bad += w[k] != v + k;
    return bad;
}

static void fill_region(unsigned char *a, size_t pages, uint64_t key)
{
    for (size_t i = 0; i < pages; i++)
        fill_page(a + i * DT_PAGE, pair_value(key, i / 2));
}

/* Wrong words in the region; reports the first few wrong pages on stderr. */
static size_t check_region(const char *who, const unsigned char *a, size_t pages, uint64_t key)
{
    size_t bad = 0;
    int shown = 0;
    for (size_t i = 0; i < pages; i++) {
        size_t b = check_page(a + i * DT_PAGE, pair_value(key, i / 2));
        if (b && shown++ < 5)
            fprintf(stderr, "%s: page %zu has %zu wrong words\n", who, i, b);
        bad += b;
    }
    return bad;
}

static unsigned char *map_region(size_t pages)
{
    void *p = mmap(NULL, pages * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap region");
    return (unsigned char *)p;
}

/* Pages of the range that are merged: read every page (a merged page nobody
 * touched since the merge is not present, so pagemap would not say "file"),
 * then count present file pages. */
static size_t merged_pages(const void *a, size_t len)
{
    dt_touch_read(a, len);
    return dt_file_pages(a, len);
}

static size_t wait_merged(const char *what, const void *a, size_t pages, double frac, double timeout_ms)
{
    double t0 = dt_now_ms();
    /* rounded up: the test checks merged_before >= 0.95 * pages, and
     * 0.95 * 16384 rounded down stopped the wait a page short of it */
    double exact = frac * (double)pages;
    size_t want = (size_t)exact, m = 0;
    if ((double)want < exact)
        want++;
    for (;;) {
        m = merged_pages(a, pages * DT_PAGE);
        if (m >= want || dt_now_ms() - t0 > timeout_ms)
            break;
        dt_sleep_ms(20);
    }
    fprintf(stderr, "%s: %zu of %zu pages merged after %.0f ms\n", what, m, pages, dt_now_ms() - t0);
    return m;
}

static int shim_loaded(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "libdedup"))
            found = 1;
    fclose(f);
    return found;
}

/* Reads a small file into buf (NUL-terminated); -1 if it cannot be opened. */
static ssize_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    return (ssize_t)n;
}

static long meminfo_shmem_kb(void)
{
    static char buf[8192];
    if (slurp("/proc/meminfo", buf, sizeof buf) < 0)
        dt_die("read /proc/meminfo");
    char *p = strstr(buf, "\nShmem:");
    return p ? strtol(p + 7, NULL, 10) : -1;
}

/* RssShmem of this process (kB): shmem pages it maps, i.e. here the canonical
 * pages its views of the memfd hold. Unlike Shmem, other processes do not
 * change it. */
static long rss_shmem_kb(void)
{
    static char buf[8192];
    if (slurp("/proc/self/status", buf, sizeof buf) < 0)
        dt_die("read /proc/self/status");
    char *p = strstr(buf, "\nRssShmem:");
    return p ? strtol(p + 10, NULL, 10) : -1;
}

/* The live stats of process pid. Returns -1: no file yet, 0: file without a
 * "store_rotations" key, 1: key found. *kept is -1 without "fork_kept_pages". */
static int live_stats(pid_t pid, long *rotations, long *kept, double *seconds)
{
    static char buf[16384 + 1];
    char path[64];
    dt_live_path(path, sizeof path, (long)pid);
    *rotations = -1;
    *kept = -1;
    if (slurp(path, buf, sizeof buf) <= 0 || !strstr(buf, "\"pages_registered\""))
        return -1;
    char *sec = strstr(buf, "\"seconds\":");
    if (seconds)
        *seconds = sec ? strtod(sec + strlen("\"seconds\":"), NULL) : -1;
    char *k = strstr(buf, "\"fork_kept_pages\":");
    if (k)
        *kept = strtol(k + strlen("\"fork_kept_pages\":"), NULL, 10);
    char *r = strstr(buf, "\"store_rotations\":");
    if (!r)
        return 0;
    *rotations = strtol(r + strlen("\"store_rotations\":"), NULL, 10);
    return 1;
}

/* Polls the live stats of `pid` until store_rotations >= min_rot and
 * fork_kept_pages is 0 (when reported) in a live file written after the call
 * began (its "seconds" changed: the file is rewritten about every second, so
 * an older one may predate the caller's munmap) and, if shmem_below_kb >= 0,
 * Shmem is at most shmem_below_kb. Gives up after timeout_ms, or after 3 s of a live
 * file with no "store_rotations" key at all (a library without rotation).
 * Returns the last store_rotations seen (-1: key absent). */
static long wait_rotation(pid_t pid, long min_rot, long shmem_below_kb, double timeout_ms, long *kept_out)
{
    double t0 = dt_now_ms(), keyless_since = -1, first_seconds = -2, seconds = -1;
    long rot = -1, kept = -1;
    for (;;) {
        int st = live_stats(pid, &rot, &kept, &seconds);
        double now = dt_now_ms();
        if (st >= 0 && first_seconds == -2)
            first_seconds = seconds;
        if (st == 1) {
            keyless_since = -1;
            if (rot >= min_rot && kept <= 0 && seconds != first_seconds &&
                (shmem_below_kb < 0 || meminfo_shmem_kb() <= shmem_below_kb))
                break;
        } else if (st == 0) {
            if (keyless_since < 0)
                keyless_since = now;
            else if (now - keyless_since > 3000)
                break;
        }
        if (now - t0 > timeout_ms)
            break;
        dt_sleep_ms(50);
    }
    fprintf(stderr, "wait_rotation(pid %ld): store_rotations %ld, fork_kept_pages %ld after %.0f ms\n",
            (long)pid, rot, kept, dt_now_ms() - t0);
    if (kept_out)
        *kept_out = kept;
    return rot;
}

/* Distinct inodes of libdedup-canonical mappings in /proc/self/maps. */
static int canonical_inodes(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[512];
    unsigned long inodes[64];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "libdedup-canonical"))
            continue;
        unsigned long ino = 0;
        if (sscanf(line, "%*s %*s %*s %*s %lu", &ino) != 1)
            continue;
        int seen = 0;
        for (int i = 0; i < n; i++)
            seen |= inodes[i] == ino;
        if (!seen && n < 64)
            inodes[n++] = ino;
    }
    fclose(f);
    return n;
}

/* Diagnostics (stderr), per libdedup-canonical inode in /proc/self/maps:
 * its mappings, how many lie in [a, a+len), whether the shim still has its
 * shared view (a current store) and, for a file with no view (a retired
 * store), its first mappings. */
static void dump_canonical_maps(const void *a, size_t len, const unsigned char *written)
{
    unsigned long ino[8] = {0};
    int maps[8] = {0}, in[8] = {0}, wr[8] = {0}, view[8] = {0}, shown[8] = {0}, n = 0;
    char line[512];
    for (int pass = 0; pass < 2; pass++) {
        FILE *f = fopen("/proc/self/maps", "r");
        if (!f)
            return;
        while (fgets(line, sizeof line, f)) {
            unsigned long lo, hi, i;
            char perms[8];
            if (!strstr(line, "libdedup-canonical") ||
                sscanf(line, "%lx-%lx %7s %*s %*s %lu", &lo, &hi, perms, &i) != 4)
                continue;
            int k = 0;
            while (k < n && ino[k] != i)
                k++;
            if (k == n) {
                if (n == 8)
                    continue;
                ino[n++] = i;
            }
            if (pass == 0) {
                maps[k]++;
                if (lo < (uintptr_t)a + len && hi > (uintptr_t)a) {
                    in[k]++;
                    for (uintptr_t p = lo > (uintptr_t)a ? lo : (uintptr_t)a; p < hi && p < (uintptr_t)a + len; p += DT_PAGE)
                        if (written && written[(p - (uintptr_t)a) / DT_PAGE]) {
                            wr[k]++; /* mappings holding a page the writers wrote */
                            break;
                        }
                }
                view[k] |= perms[3] == 's';
            } else if (!view[k] && shown[k]++ < 6) {
                fprintf(stderr, "maps:   inode %lu: %s", i, line);
            }
        }
        fclose(f);
        if (pass == 0)
            for (int k = 0; k < n; k++)
                fprintf(stderr, "maps: inode %lu: %d mappings, %d in the region (%d holding written pages), shared view: %s\n",
                        ino[k], maps[k], in[k], wr[k], view[k] ? "yes" : "no (retired store)");
    }
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    fprintf(stderr, "child %ld killed by signal %d\n", (long)pid, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static pid_t fork_or_die(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        dt_die("fork");
    return pid;
}

/* ---- exit_then_free ----------------------------------------------------- */

static int mode_exit_then_free(void)
{
    const size_t pages = 16384; /* 64 MiB, 8192 slots */
    unsigned char *a = map_region(pages);
    fill_region(a, pages, KEY_R1);
    size_t merged = g_shim ? wait_merged("region", a, pages, 0.95, 30000) : merged_pages(a, pages * DT_PAGE);
    dt_out("merged_before", "%zu", merged);
    dt_out("pages", "%zu", pages);
    long s1 = meminfo_shmem_kb();
    dt_out("shmem_before_kb", "%ld", s1);
    long rs1 = rss_shmem_kb();
    dt_out("rss_shmem_before_kb", "%ld", rs1);

    pid_t pid = fork_or_die();
    if (pid == 0) {
        size_t bad = check_region("child", a, pages, KEY_R1);
        _exit(bad ? 1 : 0);
    }
    int cst = wait_child(pid);
    dt_out("child_status", "%d", cst);
    if (cst != 0)
        dt_fail("the child found wrong contents or failed (status %d)", cst);
    size_t bad = check_region("parent", a, pages, KEY_R1);
    dt_out("parent_bad_words", "%zu", bad);
    if (bad)
        dt_fail("parent region has %zu wrong words", bad);
    if (munmap(a, pages * DT_PAGE) != 0)
        dt_die("munmap region");

    long rot = -1, kept = -1;
    if (g_shim)
        rot = wait_rotation(getpid(), 1, s1 - 24 * 1024, 30000, &kept);
    long s2 = meminfo_shmem_kb();
    dt_out("shmem_after_kb", "%ld", s2);
    dt_out("shmem_freed_kb", "%ld", s1 - s2);
    long rs2 = rss_shmem_kb();
    dt_out("rss_shmem_after_kb", "%ld", rs2);
    dt_out("rss_shmem_freed_kb", "%ld", rs1 - rs2);
    dt_out("store_rotations", "%ld", rot);
    dt_out("fork_kept_pages", "%ld", kept);
    dt_out("canonical_inodes", "%d", canonical_inodes());
    return dt_failed;
}

/* ---- live_child --------------------------------------------------------- */

#define R1_PAGES 8192 /* 32 MiB */
#define R2_PAGES 4096 /* 16 MiB */
#define CHILD_MARKED 8 /* R2 pages the child writes: pages 0, 2, 4, ... (even pairs) */

struct writer_arg {
    unsigned char *r2, *shadow, *written;
    int id;
    volatile int *stop;
    unsigned long writes;
};

/* Writer `id` writes only page 2*pair+id of odd pairs: the two writers never
 * touch the same page, and even pairs are never written at all. */
static void *writer(void *p)
{
    struct writer_arg *w = (struct writer_arg *)p;
    uint64_t s = g_seed * 31 + (uint64_t)w->id + 1;
    if (s == 0)
        s = 1;
    unsigned char bytes[64];
    while (!*w->stop) {
        uint64_t r = dt_rng_next(&s);
        size_t pair = (size_t)(r % (R2_PAGES / 2)) | 1;
        size_t page = 2 * pair + (size_t)w->id;
        size_t len = 1 + (size_t)((r >> 20) % 64);
        size_t off = (size_t)((r >> 28) % (DT_PAGE - len + 1));
        uint64_t v = dt_rng_next(&s);
        for (size_t k = 0; k < len; k++)
            bytes[k] = (unsigned char)(v >> (8 * (k % 8))) ^ (unsigned char)k;
        memcpy(w->r2 + page * DT_PAGE + off, bytes, len);
        memcpy(w->shadow + page * DT_PAGE + off, bytes, len);
        w->written[page] = 1;
        w->writes++;
        if ((w->writes & 7) == 0)
            dt_sleep_ms(0.1);
    }
    return NULL;
}

static void child_live(unsigned char *r1, unsigned char *r2)
{
    /* COW in the child: its own marker in a few pages of even pairs */
    for (size_t i = 0; i < CHILD_MARKED; i++)
        fill_page(r2 + 2 * i * DT_PAGE, pair_value(KEY_CHILD, i));
    double t0 = dt_now_ms(), rotated_at = -1, last_poll = 0;
    int keyless = 0;
    long passes = 0;
    size_t bad = 0;
    pid_t parent = getppid();
    for (;;) {
        for (size_t i = 0; i < R1_PAGES; i++)
            bad += check_page(r1 + i * DT_PAGE, pair_value(KEY_R1, i / 2));
        for (size_t i = 0; i < R2_PAGES; i++) {
            int marked = i % 2 == 0 && i / 2 < CHILD_MARKED;
            bad += check_page(r2 + i * DT_PAGE, marked ? pair_value(KEY_CHILD, i / 2) : pair_value(KEY_R2, i / 2));
        }
        passes++;
        if (bad) {
            fprintf(stderr, "child: %zu wrong words after %ld passes\n", bad, passes);
            break;
        }
        double now = dt_now_ms();
        if (now - last_poll > 100 && rotated_at < 0 && !keyless) {
            long rot, kept;
            int st = live_stats(parent, &rot, &kept, NULL);
            if (st == 1 && rot >= 1)
                rotated_at = now;
            if (st == 0 && now - t0 > 4000)
                keyless = 1; /* a library without rotation: do not wait for one */
            last_poll = now;
        }
        /* >= 4 s, and >= 1 s of checks after the parent's rotation was seen */
        if (now - t0 >= 4000 && (!g_shim || keyless || (rotated_at >= 0 && now - rotated_at >= 1000) || now - t0 > 20000))
            break;
    }
    dt_out("child_passes", "%ld", passes);
    dt_out("child_saw_rotation", "%d", rotated_at >= 0);
    dt_out("child_bad_words", "%zu", bad);
    _exit(bad ? 1 : 0);
}

static int mode_live_child(void)
{
    unsigned char *r1 = map_region(R1_PAGES), *r2 = map_region(R2_PAGES);
    fill_region(r1, R1_PAGES, KEY_R1);
    fill_region(r2, R2_PAGES, KEY_R2);
    unsigned char *shadow = (unsigned char *)dt_scratch((size_t)R2_PAGES * DT_PAGE);
    unsigned char *written = (unsigned char *)dt_scratch(R2_PAGES);
    fill_region(shadow, R2_PAGES, KEY_R2);
    size_t m1 = g_shim ? wait_merged("R1", r1, R1_PAGES, 0.95, 30000) : merged_pages(r1, (size_t)R1_PAGES * DT_PAGE);
    size_t m2 = g_shim ? wait_merged("R2", r2, R2_PAGES, 0.95, 30000) : merged_pages(r2, (size_t)R2_PAGES * DT_PAGE);
    dt_out("merged_before", "%zu", m1 + m2);
    dt_out("pages", "%d", R1_PAGES + R2_PAGES);

    pid_t pid = fork_or_die();
    if (pid == 0)
        child_live(r1, r2);

    volatile int stop = 0;
    struct writer_arg wa[2];
    pthread_t th[2];
    for (int t = 0; t < 2; t++) {
        wa[t] = (struct writer_arg){r2, shadow, written, t, &stop, 0};
        if (pthread_create(&th[t], NULL, writer, &wa[t]) != 0)
            dt_die("pthread_create");
    }
    if (munmap(r1, (size_t)R1_PAGES * DT_PAGE) != 0)
        dt_die("munmap R1");
    dt_sleep_ms(3000);
    stop = 1;
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    dt_out("writes", "%lu", wa[0].writes + wa[1].writes);

    size_t bad1 = dt_count_diff(r2, shadow, (size_t)R2_PAGES * DT_PAGE);
    dt_out("parent_bad_bytes_after_writes", "%zu", bad1);

    long rot = -1, kept = -1;
    if (g_shim)
        rot = wait_rotation(getpid(), 1, -1, 30000, &kept);
    dt_out("store_rotations", "%ld", rot);
    dt_out("fork_kept_pages", "%ld", kept);

    /* R2 pages never written: the even pairs (wait for them to be merged) */
    size_t unwritten = 0, remerged = 0;
    double t0 = dt_now_ms();
    for (;;) {
        unwritten = remerged = 0;
        for (size_t pair = 0; pair < R2_PAGES / 2; pair += 2)
            for (size_t i = 2 * pair; i < 2 * pair + 2; i++) {
                if (written[i])
                    continue;
                unwritten++;
                dt_touch_read(r2 + i * DT_PAGE, DT_PAGE);
                if (dt_pm_entry(r2 + i * DT_PAGE) & PM_FILE)
                    remerged++;
            }
        if (!g_shim || remerged * 10 >= unwritten * 9 || dt_now_ms() - t0 > 20000)
            break;
        dt_sleep_ms(50);
    }
    int pct = unwritten ? (int)(remerged * 100 / unwritten) : 0;
    fprintf(stderr, "R2: %zu of %zu unwritten pages merged after %.0f ms\n", remerged, unwritten, dt_now_ms() - t0);
    dt_out("r2_unwritten_pages", "%zu", unwritten);
    dt_out("r2_remerged_pct", "%d", pct);

    size_t bad2 = dt_count_diff(r2, shadow, (size_t)R2_PAGES * DT_PAGE);
    dt_out("parent_bad_bytes_end", "%zu", bad2);
    int intact = bad1 == 0 && bad2 == 0;
    dt_out("parent_intact", "%d", intact);
    if (!intact)
        dt_fail("R2 differs from its shadow: %zu bytes after the writes, %zu at the end", bad1, bad2);

    int cst = wait_child(pid);
    dt_out("child_status", "%d", cst);
    if (cst != 0)
        dt_fail("the child found wrong contents or failed (status %d)", cst);
    /* After the rotation the parent maps at most the new memfd (R2's merged
     * pages): the old one is freed now that the child is gone. */
    int inodes = canonical_inodes();
    for (double t1 = dt_now_ms(); g_shim && inodes > 1 && dt_now_ms() - t1 < 5000; inodes = canonical_inodes())
        dt_sleep_ms(100);
    dt_out("canonical_inodes", "%d", inodes);
    if (inodes > 1)
        dump_canonical_maps(r2, (size_t)R2_PAGES * DT_PAGE, written);
    return dt_failed;
}

/* ---- repeated ------------------------------------------------------------ */

static int mode_repeated(void)
{
    const int rounds = 12;
    const size_t pages = 2048; /* 8 MiB, 1024 slots */
    long shmem_round1 = -1, rss_round1 = -1;
    int all_ok = 1;
    for (int round = 1; round <= rounds; round++) {
        uint64_t key = (uint64_t)(16 + round) << 40;
        unsigned char *a = map_region(pages);
        fill_region(a, pages, key);
        size_t merged = g_shim ? wait_merged("round", a, pages, 0.95, 30000) : merged_pages(a, pages * DT_PAGE);
        long shmem = meminfo_shmem_kb();
        if (round == 1) {
            shmem_round1 = shmem;
            rss_round1 = rss_shmem_kb();
        }
        pid_t pid = fork_or_die();
        if (pid == 0) {
            size_t bad = check_region("child", a, pages, key);
            _exit(bad ? 1 : 0);
        }
        int cst = wait_child(pid);
        size_t bad = check_region("parent", a, pages, key);
        if (munmap(a, pages * DT_PAGE) != 0)
            dt_die("munmap round");
        char k[64];
        snprintf(k, sizeof k, "round%d", round);
        dt_out(k, "merged=%zu child=%d parent_bad_words=%zu shmem_kb=%ld", merged, cst, bad, shmem);
        if (cst != 0 || bad) {
            all_ok = 0;
            dt_fail("round %d: child status %d, parent %zu wrong words", round, cst, bad);
        }
    }
    dt_out("rounds_ok", "%d", all_ok);
    dt_out("shmem_round1_kb", "%ld", shmem_round1);
    long rot = -1, kept = -1;
    if (g_shim)
        rot = wait_rotation(getpid(), 1, shmem_round1 + 2048, 20000, &kept);
    dt_out("shmem_end_kb", "%ld", meminfo_shmem_kb());
    dt_out("rss_shmem_round1_kb", "%ld", rss_round1);
    dt_out("rss_shmem_end_kb", "%ld", rss_shmem_kb());
    dt_out("store_rotations", "%ld", rot);
    dt_out("fork_kept_pages", "%ld", kept);
    dt_out("canonical_inodes", "%d", canonical_inodes());
    return dt_failed;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_seed = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec);
    g_shim = shim_loaded();
    dt_out("seed", "0x%016" PRIx64, g_seed);
    dt_out("with_shim", "%d", g_shim);
    int rc;
    if (!strcmp(mode, "exit_then_free"))
        rc = mode_exit_then_free();
    else if (!strcmp(mode, "live_child"))
        rc = mode_live_child();
    else if (!strcmp(mode, "repeated"))
        rc = mode_repeated();
    else {
        fprintf(stderr, "usage: %s exit_then_free|live_child|repeated\n", argv[0]);
        return 2;
    }
    return rc ? 1 : 0;
}
