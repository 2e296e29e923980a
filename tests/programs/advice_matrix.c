/* The madvise conformance matrix (issue 7): one program, three modes.
 *
 *   advice_matrix cell --advice NAME --phase before|after|partial [--shim] [--pages N]
 *   advice_matrix qemu [--shim] [--mib M]
 *   advice_matrix prctl [--shim]
 *
 * "cell" applies one madvise advice at one moment of a region's life and
 * prints everything a program can observe afterwards as key=value lines:
 * madvise's result, what each page reads, what a forked child reads and
 * writes, the VmFlags of every page's VMA, and whether later writes stick.
 * The test driver runs each cell without the shim (the reference: plain
 * anonymous memory) and under LD_PRELOAD, and compares every key that does
 * not start with "info_". "--shim" only tells the program to wait for the
 * scanner (without a shim nothing ever merges, so there is nothing to wait
 * for); it changes nothing that is compared.
 *
 * Page classes in the per-page strings (one character per page):
 *   O  the page's original content          Z  all zero
 *   W  the parent's marker (after a write)  C  the child's marker
 *   S  SIGSEGV (no mapping, or a guard page) X  anything else
 *
 * Region layout ("--pages N", default 128): pages [0, dup_end) hold
 * duplicates (pattern i % 4, one of 4 random pages) with an all-zero page
 * wherever i % 16 == 13; in phase "partial" dup_end = N/2 and pages
 * [N/2, N) are unique random pages, so only the first half can merge.
 * Phases:
 *   before   fill, advise the whole region, then wait for the merge (the
 *            region only becomes duplicate after the advice: see "arming"
 *            in run_cell)
 *   after    fill, wait until merged, read some merged pages, advise
 *   partial  as after, but advise [N/4-2, 3N/4+2) with a length that is not
 *            a multiple of the page size (the kernel rounds it up), which
 *            cuts through merged pieces and unmerged pages alike.
 * Then, in every phase: VmFlags and reads (flags1, read1), a forked child's
 * reads and writes (child_read, child_write), the same again after the
 * scanner had time to act (read2, flags2), a write to every page (write) and
 * a last read after more scanning (final).
 * The region has an unmapped page on each side, so no other mapping can
 * ever join its VMAs.
 */
#include "dtest.h"
#include <setjmp.h>
#include <sys/prctl.h>

#define P DT_PAGE
#define MAXPAGES 1024

#define ADV_WIPEONFORK 18
#define ADV_KEEPONFORK 19
#define ADV_COLD 20
#define ADV_PAGEOUT 21
#define ADV_POPULATE_READ 22
#define ADV_POPULATE_WRITE 23
#define ADV_DONTNEED_LOCKED 24
#define ADV_COLLAPSE 25
#define ADV_GUARD_INSTALL 102
#define ADV_GUARD_REMOVE 103

enum { MERGE_NO = 0, MERGE_YES = 1, MERGE_MAYBE = 2 };

struct advice {
    const char *name;
    int adv;
    int pre; /* advice applied to the same range just before (-1: none) */
    /* phase "before": may the shim still merge the region after this advice?
     * YES: the region must end up merged (we wait for it, 10 s timeout).
     * NO: contents are gone (DONTNEED, guards) or merging is excluded
     * (WIPEONFORK, UNMERGEABLE). MAYBE: MADV_FREE'd pages keep their old
     * contents until reclaimed and may be merged meanwhile. */
    int merge_before;
    /* phase "before": when the duplicates become duplicates (see run_cell) */
    int arm;
};

enum { ARM_AFTER = 0, ARM_BEFORE = 1, ARM_NEVER = 2 };

static const struct advice g_advices[] = {
    {"NORMAL", MADV_NORMAL, -1, MERGE_YES, ARM_AFTER},
    {"RANDOM", MADV_RANDOM, -1, MERGE_YES, ARM_AFTER},
    {"SEQUENTIAL", MADV_SEQUENTIAL, -1, MERGE_YES, ARM_AFTER},
    {"WILLNEED", MADV_WILLNEED, -1, MERGE_YES, ARM_AFTER},
    {"DONTNEED", MADV_DONTNEED, -1, MERGE_NO, ARM_NEVER},
    {"DONTNEED_LOCKED", ADV_DONTNEED_LOCKED, -1, MERGE_NO, ARM_NEVER},
    {"FREE", MADV_FREE, -1, MERGE_MAYBE, ARM_BEFORE},
    {"REMOVE", MADV_REMOVE, -1, MERGE_YES, ARM_AFTER},
    {"DONTFORK", MADV_DONTFORK, -1, MERGE_YES, ARM_AFTER},
    {"DOFORK", MADV_DOFORK, MADV_DONTFORK, MERGE_YES, ARM_AFTER},
    {"WIPEONFORK", ADV_WIPEONFORK, -1, MERGE_NO, ARM_AFTER},
    {"KEEPONFORK", ADV_KEEPONFORK, ADV_WIPEONFORK, MERGE_YES, ARM_AFTER},
    {"DONTDUMP", MADV_DONTDUMP, -1, MERGE_YES, ARM_AFTER},
    {"DODUMP", MADV_DODUMP, MADV_DONTDUMP, MERGE_YES, ARM_AFTER},
    {"HUGEPAGE", MADV_HUGEPAGE, -1, MERGE_YES, ARM_AFTER},
    {"NOHUGEPAGE", MADV_NOHUGEPAGE, MADV_HUGEPAGE, MERGE_YES, ARM_AFTER},
    {"COLLAPSE", ADV_COLLAPSE, -1, MERGE_YES, ARM_AFTER},
    {"COLD", ADV_COLD, -1, MERGE_YES, ARM_AFTER},
    {"PAGEOUT", ADV_PAGEOUT, -1, MERGE_YES, ARM_AFTER},
    {"POPULATE_READ", ADV_POPULATE_READ, -1, MERGE_YES, ARM_AFTER},
    {"POPULATE_WRITE", ADV_POPULATE_WRITE, -1, MERGE_YES, ARM_AFTER},
    {"MERGEABLE", MADV_MERGEABLE, -1, MERGE_YES, ARM_AFTER},
    {"UNMERGEABLE", MADV_UNMERGEABLE, -1, MERGE_NO, ARM_AFTER},
    {"GUARD_INSTALL", ADV_GUARD_INSTALL, -1, MERGE_NO, ARM_NEVER},
    {"GUARD_REMOVE", ADV_GUARD_REMOVE, ADV_GUARD_INSTALL, MERGE_NO, ARM_NEVER},
    {"UNKNOWN_77", 77, -1, MERGE_YES, ARM_AFTER},
};

/* ---- the region and its expected contents ------------------------------ */

static unsigned char *g_base;   /* the region */
static size_t g_n;              /* pages */
static size_t g_dup_end;        /* pages [0, g_dup_end) are the duplicate part */
static unsigned char *g_exp;    /* expected original contents (scratch) */
static unsigned char *g_buf;    /* one scratch page for reads */
static unsigned char *g_mark;   /* one scratch page for markers */

static unsigned char *pg(size_t i) { return g_base + i * P; }

static int is_zero_page(size_t i) { return i < g_dup_end && i % 16 == 13; }

static void make_expected(void)
{
    for (size_t i = 0; i < g_n; i++) {
        unsigned char *e = g_exp + i * P;
        if (is_zero_page(i))
            memset(e, 0, P);
        else if (i < g_dup_end)
            dt_fill_random(e, P, 100 + i % 4);
        else
            dt_fill_random(e, P, 10000 + i);
    }
}

static void parent_marker(size_t i, unsigned char *dst) { dt_fill_random(dst, P, 50000 + i); }
static void child_marker(size_t i, unsigned char *dst) { dt_fill_random(dst, P, 70000 + i); }

/* ---- fault-tolerant probes --------------------------------------------- */

static sigjmp_buf g_jb;
static volatile sig_atomic_t g_probing;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (g_probing) {
        g_probing = 0;
        siglongjmp(g_jb, 1);
    }
    signal(sig, SIG_DFL); /* not a probe: return and die of it */
}

static void install_segv_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGBUS, &sa, NULL))
        dt_die("sigaction");
}

/* Copies page i into g_buf; 0 on success, 1 if the read faulted. */
static int read_page(size_t i)
{
    if (sigsetjmp(g_jb, 1))
        return 1;
    g_probing = 1;
    __asm__ __volatile__("" ::: "memory");
    memcpy(g_buf, (const void *)pg(i), P);
    __asm__ __volatile__("" ::: "memory");
    g_probing = 0;
    return 0;
}

/* Writes g_mark to page i; 0 on success, 1 if the write faulted. */
static int write_page(size_t i)
{
    if (sigsetjmp(g_jb, 1))
        return 1;
    g_probing = 1;
    __asm__ __volatile__("" ::: "memory");
    memcpy(pg(i), g_mark, P);
    __asm__ __volatile__("" ::: "memory");
    g_probing = 0;
    return 0;
}

static char classify(size_t i)
{
    if (read_page(i))
        return 'S';
    if (dt_count_not(g_buf, P, 0) == 0)
        return 'Z';
    if (memcmp(g_buf, g_exp + i * P, P) == 0)
        return 'O';
    parent_marker(i, g_mark);
    if (memcmp(g_buf, g_mark, P) == 0)
        return 'W';
    child_marker(i, g_mark);
    if (memcmp(g_buf, g_mark, P) == 0)
        return 'C';
    return 'X';
}

static void classify_all(char *out)
{
    for (size_t i = 0; i < g_n; i++)
        out[i] = classify(i);
    out[g_n] = 0;
}

/* ---- VMAs: /proc/self/smaps -------------------------------------------- */

static const char *const g_flag_names[] = {"dc", "dd", "hg", "nh", "wf", "rr", "sr", "mg"};
#define NFLAGS 8

struct page_vma {
    unsigned flags; /* bit k: g_flag_names[k] */
    int memfd;      /* the VMA maps the shim's memfd */
    int mapped;
};

/* For each page of [base, base + n pages): the VmFlags and backing of its
 * VMA. Returns the number of VMAs overlapping the range. */
static size_t read_vmas(const unsigned char *base, size_t n, struct page_vma *pv, int want_flags)
{
    uintptr_t lo = (uintptr_t)base, hi = lo + n * P;
    memset(pv, 0, n * sizeof *pv);
    FILE *f = fopen(want_flags ? "/proc/self/smaps" : "/proc/self/maps", "r");
    if (!f)
        dt_die("open smaps");
    char line[1024];
    unsigned long vs = 0, ve = 0;
    int cur_memfd = 0, in_range = 0;
    size_t vmas = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        int hdr = ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) &&
                  sscanf(line, "%lx-%lx ", &s, &e) == 2;
        if (hdr) {
            vs = s;
            ve = e;
            cur_memfd = strstr(line, "libdedup-canonical") != NULL;
            in_range = ve > lo && vs < hi;
            if (in_range) {
                vmas++;
                for (uintptr_t a = vs > lo ? vs : lo; a < ve && a < hi; a += P) {
                    pv[(a - lo) / P].memfd = cur_memfd;
                    pv[(a - lo) / P].mapped = 1;
                }
            }
            continue;
        }
        if (!in_range || strncmp(line, "VmFlags:", 8) != 0)
            continue;
        unsigned fl = 0;
        for (char *t = strtok(line + 8, " \n"); t; t = strtok(NULL, " \n"))
            for (int k = 0; k < NFLAGS; k++)
                if (strcmp(t, g_flag_names[k]) == 0)
                    fl |= 1u << k;
        for (uintptr_t a = vs > lo ? vs : lo; a < ve && a < hi; a += P)
            pv[(a - lo) / P].flags = fl;
    }
    fclose(f);
    return vmas;
}

/* Prints one string per flag: '1' where the page's VMA has it. "mg" is
 * info only: the shim never passes MADV_MERGEABLE on to the kernel (by
 * design, docs/DESIGN.md: kernel KSM must not also act on the range). */
static void print_flags(const char *tag)
{
    static struct page_vma pv[MAXPAGES];
    size_t vmas = read_vmas(g_base, g_n, pv, 1);
    char s[MAXPAGES + 1], key[64];
    for (int k = 0; k < NFLAGS; k++) {
        for (size_t i = 0; i < g_n; i++)
            s[i] = pv[i].mapped ? ((pv[i].flags >> k) & 1 ? '1' : '0') : '-';
        s[g_n] = 0;
        snprintf(key, sizeof key, "%s%s_%s", k == NFLAGS - 1 ? "info_" : "", tag, g_flag_names[k]);
        dt_out(key, "%s", s);
    }
    size_t memfd = 0;
    for (size_t i = 0; i < g_n; i++)
        memfd += pv[i].memfd;
    snprintf(key, sizeof key, "info_%s_vmas", tag);
    dt_out(key, "%zu", vmas);
    snprintf(key, sizeof key, "info_%s_memfd_pages", tag);
    dt_out(key, "%zu", memfd);
}

/* ---- waiting for the scanner (only with --shim) ------------------------ */

/* Page i of [0, upto) "merged": its VMA maps the memfd, or it is a zero page
 * the shim gave back (not present). */
static size_t count_merged(size_t upto, size_t *want)
{
    static struct page_vma pv[MAXPAGES];
    read_vmas(g_base, g_n, pv, 0);
    size_t m = 0;
    *want = 0;
    for (size_t i = 0; i < upto; i++) {
        (*want)++;
        if (pv[i].memfd)
            m++;
        else if (is_zero_page(i) && !(dt_pm_entry(pg(i)) & (PM_PRESENT | PM_SWAPPED)))
            m++;
    }
    return m;
}

static void die_loudly(const char *what)
{
    dt_out("error", "%s", what);
    fprintf(stderr, "FATAL: %s\n", what);
    exit(3);
}

static double wait_region_merged(size_t upto)
{
    double t0 = dt_now_ms();
    size_t want = 0, m = 0;
    for (;;) {
        m = count_merged(upto, &want);
        if (m == want)
            return dt_now_ms() - t0;
        if (dt_now_ms() - t0 > 10000) {
            char msg[160];
            snprintf(msg, sizeof msg, "region never merged: %zu of %zu duplicate pages after 10 s", m, want);
            die_loudly(msg);
        }
        dt_sleep_ms(2);
    }
}

/* Lets the scanner make passes over everything: maps a fresh sentinel of
 * duplicates (registered, but never adjacent to the region: the region has
 * one-page holes around it) and waits until it is merged. A page merges
 * only after it was seen twice, so the scanner has been around the whole
 * address space since this call began. */
static void settle(int shim)
{
    if (!shim)
        return;
    static unsigned seq;
    size_t len = 16 * P;
    unsigned char *s = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        dt_die("mmap sentinel");
    uint64_t seed = 900000 + (uint64_t)getpid() * 64 + ++seq;
    for (size_t i = 0; i < 16; i++)
        dt_fill_random(s + i * P, P, seed * 8 + i % 8);
    double t0 = dt_now_ms();
    for (;;) {
        static struct page_vma pv[16];
        read_vmas(s, 16, pv, 0);
        size_t m = 0;
        for (size_t i = 0; i < 16; i++)
            m += pv[i].memfd;
        if (m == 16)
            break;
        if (dt_now_ms() - t0 > 10000)
            die_loudly("sentinel never merged: the scanner is not running");
        dt_sleep_ms(2);
    }
    munmap(s, len);
    dt_sleep_ms(10);
}

/* ---- one cell ---------------------------------------------------------- */

static unsigned char *map_with_holes(size_t n)
{
    unsigned char *m = mmap(NULL, (n + 2) * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        dt_die("mmap region");
    munmap(m, P);
    munmap(m + (n + 1) * P, P);
    return m + P;
}

static void arm(void)
{
    for (size_t i = 0; i < g_n; i++)
        memcpy(pg(i) + P - 8, g_exp + i * P + P - 8, 8);
}

static void report_madv(const char *key, int r)
{
    dt_out(key, "%d:%s", r, dt_errname(r ? errno : 0));
}

static int run_cell(const struct advice *a, const char *phase, int shim, size_t n)
{
    int partial = strcmp(phase, "partial") == 0, before = strcmp(phase, "before") == 0;
    if (!partial && !before && strcmp(phase, "after") != 0) {
        fprintf(stderr, "unknown phase %s\n", phase);
        return 2;
    }
    install_segv_handler();
    g_n = n;
    g_dup_end = partial ? n / 2 : n;
    g_exp = dt_scratch(n * P);
    g_buf = dt_scratch(P);
    g_mark = dt_scratch(P);
    char *child_read = dt_scratch(2 * P), *child_write = child_read + P; /* shared with the child */
    make_expected();

    /* Filled with the last 8 bytes of every page made unique, so nothing
     * can merge yet; "arming" sets those bytes right. Phase "before" must
     * apply the advice to pages that are not merged: a scanner at full speed
     * merges most of a region while it is being filled, and an madvise call
     * under the shim can wait milliseconds for the scanner's lock, during
     * which the scanner merges whatever is already duplicate. So in phase
     * "before" the region is armed AFTER the advice (ARM_AFTER: the advice
     * leaves contents alone, the program then writes the last bytes, as a
     * program finishing its data would); advice that destroys the contents
     * never needs arming (ARM_NEVER: DONTNEED, guards: the pages are zero
     * or inaccessible afterwards in both runs); MADV_FREE arms before
     * (ARM_BEFORE) so its lazily freed pages are duplicates: the merge may
     * then land before or after the advice, and both are covered by the
     * FREE relaxation of the comparison (old contents or zero). The other
     * phases arm right after filling. The reference run does exactly the
     * same writes. */
    g_base = map_with_holes(n);
    for (size_t i = 0; i < n; i++) {
        memcpy(pg(i), g_exp + i * P, P);
        uint64_t t = (i + 1) * 0x9E3779B97F4A7C15ULL;
        unsigned char *tail = pg(i) + P - 8;
        for (int k = 0; k < 8; k++)
            tail[k] ^= (unsigned char)(t >> (8 * k)) | 1;
    }

    size_t rs = 0, re = n, len = n * P;
    if (partial) {
        rs = n / 4 - 2;
        re = 3 * n / 4 + 2;
        len = (re - rs) * P - 123;
    }
    dt_out("info_advice", "%s", a->name);
    dt_out("info_phase", "%s", phase);
    dt_out("info_range", "%zu-%zu", rs, re);

    size_t want = 0;
    if (!before) {
        arm();
        if (shim)
            dt_out("info_merge_wait_ms", "%.1f", wait_region_merged(g_dup_end));
        /* Bring two thirds of the merged pages back in (read faults), so the
         * advice meets present merged pages, never-touched merged pages and
         * zero pages the shim gave back. Done in the reference too. */
        for (size_t i = 0; i < g_dup_end; i++)
            if (i % 3 != 0 && !is_zero_page(i))
                (void)*(volatile unsigned char *)pg(i);
        if (shim) {
            size_t nf = 0, nt = 0;
            for (size_t i = 0; i < g_dup_end; i++)
                if (i % 3 != 0 && !is_zero_page(i)) {
                    nt++;
                    nf += (dt_pm_entry(pg(i)) & (PM_PRESENT | PM_FILE)) == (PM_PRESENT | PM_FILE);
                }
            dt_out("info_pm_file_pages", "%zu", nf);
            if (nf != nt)
                die_loudly("merged pages are not PM_FILE after a read");
        }
    }

    void *addr = pg(rs);
    if (before && a->arm == ARM_BEFORE)
        arm();
    int pre = a->pre >= 0 ? madvise(addr, len, a->pre) : 0;
    int pre_errno = errno;
    int r = madvise(addr, len, a->adv);
    int r_errno = errno;
    if (before && shim) { /* pages mapping the memfd right after the advice (0 unless ARM_BEFORE) */
        static struct page_vma pv[MAXPAGES];
        read_vmas(g_base, n, pv, 0);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            m += pv[i].memfd;
        dt_out("info_merged_at_advice", "%zu", m);
    }
    errno = pre_errno;
    if (a->pre >= 0)
        report_madv("pre_madv", pre);
    errno = r_errno;
    report_madv("madv", r);
    if (before && a->arm == ARM_AFTER)
        arm();

    if (before && shim) {
        if (a->merge_before == MERGE_YES)
            dt_out("info_merge_wait_ms", "%.1f", wait_region_merged(g_dup_end));
        else
            settle(shim);
        dt_out("info_merged_after_wait", "%zu", count_merged(g_dup_end, &want));
    }

    /* 1. VmFlags of every page's VMA, and what the parent reads. */
    print_flags("flags1");
    char s[MAXPAGES + 1];
    classify_all(s);
    dt_out("read1", "%s", s);

    /* 2. A forked child reads every page, then writes its marker to every
     *    page and reads it back. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        dt_die("fork");
    if (pid == 0) {
        for (size_t i = 0; i < n; i++)
            child_read[i] = classify(i);
        for (size_t i = 0; i < n; i++) {
            child_marker(i, g_mark);
            child_write[i] = write_page(i) ? 'S' : classify(i);
        }
        child_read[n] = child_write[n] = 0;
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st))
        dt_out("child_status", "exit:%d", WEXITSTATUS(st));
    else
        dt_out("child_status", "signal:%d", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    child_read[n] = child_write[n] = 0;
    dt_out("child_read", "%s", child_read);
    dt_out("child_write", "%s", child_write);

    /* 3. After the scanner had time to act again: the same observations. */
    settle(shim);
    classify_all(s);
    dt_out("read2", "%s", s);
    print_flags("flags2");

    /* 4. Later writes: every page written, none lost. */
    char w[MAXPAGES + 1];
    for (size_t i = 0; i < n; i++) {
        parent_marker(i, g_mark);
        w[i] = write_page(i) ? 'S' : classify(i);
    }
    w[n] = 0;
    dt_out("write", "%s", w);
    settle(shim);
    classify_all(s);
    dt_out("final", "%s", s);
    dt_out("result", "ok");
    return 0;
}

/* ---- QEMU-style guest RAM ---------------------------------------------- */

struct vma_counts {
    size_t vmas, dd, dc, hg, memfd;
};

static struct vma_counts count_vma_flags(const unsigned char *base, size_t len)
{
    struct vma_counts c = {0, 0, 0, 0, 0};
    uintptr_t lo = (uintptr_t)base, hi = lo + len;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        dt_die("open smaps");
    char line[1024];
    int in_range = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) &&
            sscanf(line, "%lx-%lx ", &s, &e) == 2) {
            in_range = e > lo && s < hi;
            if (in_range) {
                c.vmas++;
                c.memfd += strstr(line, "libdedup-canonical") != NULL;
            }
            continue;
        }
        if (!in_range || strncmp(line, "VmFlags:", 8) != 0)
            continue;
        c.dd += strstr(line, " dd") != NULL;
        c.dc += strstr(line, " dc") != NULL;
        c.hg += strstr(line, " hg") != NULL;
    }
    fclose(f);
    return c;
}

static size_t memfd_pages(const unsigned char *base, size_t len)
{
    uintptr_t lo = (uintptr_t)base, hi = lo + len;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[1024];
    size_t pages = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) != 2 || e <= lo || s >= hi || !strstr(line, "libdedup-canonical"))
            continue;
        uintptr_t a = s > lo ? s : lo, b = e < hi ? e : hi;
        pages += (b - a) / P;
    }
    fclose(f);
    return pages;
}

static int run_qemu(int shim, size_t mib)
{
    size_t len = mib << 20, n = len / P;
    const size_t npat = 16;
    unsigned char *pat = dt_scratch(npat * P);
    for (size_t k = 0; k < npat; k++)
        dt_fill_random(pat + k * P, P, 300 + k);
    /* Pss two ways: the range's own VMAs in /proc/self/smaps (each VMA's
     * Pss is rounded down to whole kB, so 16 merged pages mapped 1024 times
     * each show as 0), and smaps_rollup against a baseline taken before the
     * mapping, which is exact and also counts whatever the shim itself maps
     * (its canonical pages, metadata). */
    long base_kb = dt_rollup_pss_kb();
    dt_out("rollup_baseline_kb", "%ld", base_kb);
    unsigned char *ram = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        dt_die("mmap guest RAM");
    /* QEMU's order for guest RAM (qemu_ram_setup_dump, ram_block_add ->
     * qemu_madvise(HUGEPAGE), memory_try_enable_merging). */
    report_madv("madv_dontfork", madvise(ram, len, MADV_DONTFORK));
    report_madv("madv_hugepage", madvise(ram, len, MADV_HUGEPAGE));
    report_madv("madv_dontdump", madvise(ram, len, MADV_DONTDUMP));
    report_madv("madv_mergeable", madvise(ram, len, MADV_MERGEABLE));
    for (size_t i = 0; i < n; i++)
        memcpy(ram + i * P, pat + (i % npat) * P, P);
    double pss_before = dt_region_pss_kb(ram, len);
    dt_out("pss_before_kb", "%.0f", pss_before);
    dt_out("rollup_before_kb", "%ld", dt_rollup_pss_kb() - base_kb);
    double wait = -1;
    if (shim) {
        double t0 = dt_now_ms();
        while (memfd_pages(ram, len) < n) {
            if (dt_now_ms() - t0 > 30000) {
                dt_out("info_memfd_pages", "%zu", memfd_pages(ram, len));
                die_loudly("guest RAM never merged (30 s)");
            }
            dt_sleep_ms(10);
        }
        wait = dt_now_ms() - t0;
    }
    dt_out("merge_wait_ms", "%.0f", wait);
    dt_out("memfd_pages", "%zu", memfd_pages(ram, len));
    dt_out("pss_after_merge_kb", "%.0f", dt_region_pss_kb(ram, len));
    dt_out("rollup_after_merge_kb", "%ld", dt_rollup_pss_kb() - base_kb);
    /* The guest reads all its RAM: the merged pages come back in, shared. */
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += memcmp(ram + i * P, pat + (i % npat) * P, P) != 0;
    dt_out("pages_wrong", "%zu", bad);
    dt_out("pss_after_read_kb", "%.0f", dt_region_pss_kb(ram, len));
    dt_out("rollup_after_read_kb", "%ld", dt_rollup_pss_kb() - base_kb);
    struct vma_counts c = count_vma_flags(ram, len);
    dt_out("vmas", "%zu", c.vmas);
    dt_out("vmas_memfd", "%zu", c.memfd);
    dt_out("vmas_dd", "%zu", c.dd);
    dt_out("vmas_dc", "%zu", c.dc);
    dt_out("vmas_hg", "%zu", c.hg);
    /* Forked children (QEMU forks helpers) touching guest RAM at spread
     * offsets: each must die of SIGSEGV, the range is not in the child. */
    int segv = 0, probes = 8;
    for (int k = 0; k < probes; k++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            dt_die("fork");
        if (pid == 0) {
            volatile unsigned char *p = ram + (size_t)k * (len / probes) + (size_t)k * 5 * P;
            if (k % 2)
                *p = 1;
            else
                (void)*p;
            _exit(0);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        char key[32];
        snprintf(key, sizeof key, "child%d", k);
        if (WIFSIGNALED(st))
            dt_out(key, "signal:%d", WTERMSIG(st));
        else
            dt_out(key, "exit:%d", WEXITSTATUS(st));
        segv += WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
    }
    dt_out("children_segv", "%d", segv);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += memcmp(ram + i * P, pat + (i % npat) * P, P) != 0;
    dt_out("pages_wrong_after_fork", "%zu", bad);
    dt_out("result", "ok");
    return 0;
}

/* ---- PR_SET_MEMORY_MERGE ----------------------------------------------- */

#define PR_SET_MM_MERGE 67
#define PR_GET_MM_MERGE 68

static void report_prctl(const char *key, int r)
{
    dt_out(key, "%d:%s", r, dt_errname(r < 0 ? errno : 0));
}

/* Waits for an advised control region to merge: the scanner is running and
 * has been over everything since. */
static void advised_control(int shim, const char *key)
{
    size_t len = 32 * P;
    unsigned char *c = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED)
        dt_die("mmap control");
    static unsigned seq;
    ++seq;
    for (size_t i = 0; i < 32; i++)
        dt_fill_random(c + i * P, P, 777000 + seq * 16 + i % 4);
    if (madvise(c, len, MADV_MERGEABLE))
        dt_fail("MADV_MERGEABLE on the control region: %s", strerror(errno));
    if (shim) {
        double t0 = dt_now_ms();
        while (memfd_pages(c, len) < 32) {
            if (dt_now_ms() - t0 > 10000)
                die_loudly("advised control region never merged");
            dt_sleep_ms(5);
        }
        dt_out(key, "%.0f", dt_now_ms() - t0);
    }
    munmap(c, len);
}

static int run_prctl(int shim)
{
    size_t n = 256, len = n * P;
    unsigned char *exp = dt_scratch(len);
    for (size_t i = 0; i < n; i++)
        dt_fill_random(exp + i * P, P, 400 + i % 8);
    unsigned char *b = map_with_holes(n);
    memcpy(b, exp, len);

    /* Never advised: with DEDUP_SCOPE=advised it must not merge... */
    advised_control(shim, "info_control1_ms");
    advised_control(shim, "info_control2_ms");
    dt_out("memfd_pages_before", "%zu", memfd_pages(b, len));

    /* ...until the process-wide switch is on. */
    report_prctl("prctl_set_1", prctl(PR_SET_MM_MERGE, 1, 0, 0, 0));
    report_prctl("prctl_get_after_1", prctl(PR_GET_MM_MERGE, 0, 0, 0, 0));
    double wait = -1;
    if (shim) {
        double t0 = dt_now_ms();
        while (memfd_pages(b, len) < n && dt_now_ms() - t0 < 10000)
            dt_sleep_ms(5);
        wait = memfd_pages(b, len) == n ? dt_now_ms() - t0 : -1;
    }
    dt_out("merge_wait_ms", "%.0f", wait);
    dt_out("memfd_pages_after_1", "%zu", memfd_pages(b, len));
    dt_touch_read(b, len);
    dt_out("pm_file_after_1", "%zu", dt_file_pages(b, len));
    dt_out("mismatches_after_1", "%zu", dt_count_diff(b, exp, len));

    report_prctl("prctl_set_0", prctl(PR_SET_MM_MERGE, 0, 0, 0, 0));
    report_prctl("prctl_get_after_0", prctl(PR_GET_MM_MERGE, 0, 0, 0, 0));
    dt_out("memfd_pages_after_0", "%zu", memfd_pages(b, len));
    dt_touch_read(b, len);
    dt_out("pm_file_after_0", "%zu", dt_file_pages(b, len));
    dt_out("mismatches_after_0", "%zu", dt_count_diff(b, exp, len));
    /* and it stays unmerged: merging only what is advised again */
    advised_control(shim, "info_control3_ms");
    advised_control(shim, "info_control4_ms");
    dt_out("memfd_pages_settled", "%zu", memfd_pages(b, len));
    dt_touch_read(b, len);
    dt_out("pm_file_settled", "%zu", dt_file_pages(b, len));
    dt_out("mismatches_settled", "%zu", dt_count_diff(b, exp, len));
    dt_out("result", "%s", dt_failed ? "fail" : "ok");
    return dt_failed;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: advice_matrix cell|qemu|prctl ...\n");
        return 2;
    }
    int shim = dt_arg_flag(argc, argv, "--shim");
    if (strcmp(argv[1], "cell") == 0) {
        const char *name = dt_arg_str(argc, argv, "--advice", "");
        const char *phase = dt_arg_str(argc, argv, "--phase", "after");
        long n = dt_arg_long(argc, argv, "--pages", 128);
        if (n < 32 || n > MAXPAGES || n % 4) {
            fprintf(stderr, "--pages must be a multiple of 4 in [32, %d]\n", MAXPAGES);
            return 2;
        }
        for (size_t k = 0; k < sizeof g_advices / sizeof g_advices[0]; k++)
            if (strcmp(g_advices[k].name, name) == 0)
                return run_cell(&g_advices[k], phase, shim, (size_t)n);
        fprintf(stderr, "unknown advice '%s'\n", name);
        return 2;
    }
    if (strcmp(argv[1], "qemu") == 0)
        return run_qemu(shim, (size_t)dt_arg_long(argc, argv, "--mib", 64));
    if (strcmp(argv[1], "prctl") == 0)
        return run_prctl(shim);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
