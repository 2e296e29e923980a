/* Shared helpers for the libdedup integration test programs.
 *
 * Header-only (each program is one translation unit built by the Makefile).
 * Nothing here allocates >= 64 KiB with malloc: scratch memory that must not
 * be registered by the shim comes from MAP_SHARED anonymous mappings, which
 * the shim never registers.
 *
 * Output convention: machine-readable "key=value" lines on stdout, human
 * diagnostics on stderr, exit code 0 on success.
 */
#ifndef DTEST_H
#define DTEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DT_PAGE 4096UL

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61) /* file page or shared anon: merged onto memfd */
#define PM_EXCL (1ULL << 56)
#define PM_PFN_MASK ((1ULL << 55) - 1)

static int dt_failed;

static inline void dt_out(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void dt_out(const char *key, const char *fmt, ...)
{
    va_list ap;
    printf("%s=", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* Record a failure (message to stderr), the program exits nonzero at the end. */
static inline void dt_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void dt_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    dt_failed = 1;
}

static inline void dt_die(const char *what)
{
    fprintf(stderr, "FATAL: %s: %s\n", what, strerror(errno));
    fflush(stderr);
    exit(2);
}

static inline double dt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void dt_sleep_ms(double ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - ts.tv_sec * 1000.0) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- deterministic pseudo-random data -------------------------------- */

static inline uint64_t dt_rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline void dt_fill_random(void *dst, size_t len, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
    if (s == 0)
        s = 1;
    unsigned char *p = (unsigned char *)dst;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = dt_rng_next(&s);
        memcpy(p + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = dt_rng_next(&s);
        memcpy(p + i, &v, len - i);
    }
}

/* Number of bytes of buf[0..len) that differ from the random stream of seed. */
static inline size_t dt_check_random(const void *buf, size_t len, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
    if (s == 0)
        s = 1;
    const unsigned char *p = (const unsigned char *)buf;
    size_t bad = 0, i = 0;
    for (; i < len; i += 8) {
        uint64_t v = dt_rng_next(&s);
        size_t n = len - i < 8 ? len - i : 8;
        if (memcmp(p + i, &v, n) != 0) {
            const unsigned char *e = (const unsigned char *)&v;
            for (size_t k = 0; k < n; k++)
                bad += p[i + k] != e[k];
        }
    }
    return bad;
}

static inline size_t dt_count_not(const void *buf, size_t len, unsigned char val)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t bad = 0;
    for (size_t i = 0; i < len; i++)
        bad += p[i] != val;
    return bad;
}

static inline size_t dt_count_diff(const void *a, const void *b, size_t len)
{
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    size_t bad = 0;
    for (size_t i = 0; i < len; i += DT_PAGE) {
        size_t n = len - i < DT_PAGE ? len - i : DT_PAGE;
        if (memcmp(p + i, q + i, n) != 0)
            for (size_t k = 0; k < n; k++)
                bad += p[i + k] != q[i + k];
    }
    return bad;
}

/* Scratch memory the shim never registers (shared anonymous). */
static inline void *dt_scratch(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap scratch");
    return p;
}

/* ---- /proc/self/pagemap ---------------------------------------------- */

static inline int dt_pagemap_fd(void)
{
    static int fd = -1;
    if (fd < 0) {
        fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            dt_die("open /proc/self/pagemap");
    }
    return fd;
}

static inline uint64_t dt_pm_entry(const void *addr)
{
    uint64_t e = 0;
    off_t off = (off_t)((uintptr_t)addr / DT_PAGE * 8);
    if (pread(dt_pagemap_fd(), &e, 8, off) != 8)
        dt_die("pread pagemap");
    return e;
}

struct dt_pm {
    size_t pages;
    size_t present;
    size_t file;       /* present and bit 61: merged (still shared) */
    size_t nonpresent; /* neither present nor swapped */
    size_t anon;       /* present, bit 61 clear */
};

/* Calls cb(index, entry, ctx) for each page of [addr, addr+len) if cb != NULL. */
static inline void dt_pm_scan(const void *addr, size_t len, struct dt_pm *st,
                       void (*cb)(size_t, uint64_t, void *), void *ctx)
{
    uint64_t buf[512];
    uintptr_t start = (uintptr_t)addr & ~(DT_PAGE - 1);
    uintptr_t end = ((uintptr_t)addr + len + DT_PAGE - 1) & ~(DT_PAGE - 1);
    size_t n = (end - start) / DT_PAGE, idx = 0;
    memset(st, 0, sizeof(*st));
    while (idx < n) {
        size_t chunk = n - idx < 512 ? n - idx : 512;
        ssize_t r = pread(dt_pagemap_fd(), buf, chunk * 8, (off_t)((start / DT_PAGE + idx) * 8));
        if (r != (ssize_t)(chunk * 8))
            dt_die("pread pagemap range");
        for (size_t k = 0; k < chunk; k++) {
            uint64_t e = buf[k];
            st->pages++;
            if (e & PM_PRESENT) {
                st->present++;
                if (e & PM_FILE)
                    st->file++;
                else
                    st->anon++;
            } else if (!(e & PM_SWAPPED)) {
                st->nonpresent++;
            }
            if (cb)
                cb(idx + k, e, ctx);
        }
        idx += chunk;
    }
}

/* Pages that look merged: present+file, or not present at all (an untouched
 * merged page, or a reclaimed zero page). Only meaningful for ranges that
 * were fully written (so present) before. */
static inline size_t dt_merged_like(const void *addr, size_t len)
{
    struct dt_pm st;
    dt_pm_scan(addr, len, &st, NULL, NULL);
    return st.file + st.nonpresent;
}

static inline size_t dt_file_pages(const void *addr, size_t len)
{
    struct dt_pm st;
    dt_pm_scan(addr, len, &st, NULL, NULL);
    return st.file;
}

struct dt_pfn_ctx {
    uint64_t *pfns;
    size_t n;
};

/* The PFN a read of untouched anonymous memory maps: the kernel's shared
 * zero page where it has one (then every such read shares it), else a page
 * of a probe mapping that is never unmapped, so no other page can have its
 * PFN. 0 when PFNs are hidden. */
static inline uint64_t dt_zero_pfn(void)
{
    static uint64_t pfn = ~0ULL;
    if (pfn == ~0ULL) {
        volatile unsigned char *probe = mmap(NULL, DT_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (probe == MAP_FAILED)
            return 0;
        (void)probe[0];
        pfn = dt_pm_entry((const void *)probe) & PM_PFN_MASK;
    }
    return pfn;
}

static inline void dt_pfn_cb(size_t idx, uint64_t e, void *ctx)
{
    (void)idx;
    struct dt_pfn_ctx *c = (struct dt_pfn_ctx *)ctx;
    if ((e & PM_PRESENT) && (e & PM_PFN_MASK) && (e & PM_PFN_MASK) != dt_zero_pfn())
        c->pfns[c->n++] = e & PM_PFN_MASK;
}

static inline int dt_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The kernel selftest's range_maps_duplicates(): number of present pages that
 * map a PFN already mapped by another page of the range. Pages that map the
 * kernel's shared zero page (a read of untouched or discarded memory, on a
 * kernel that has one) are not duplicates of ours and are left out. Returns
 * -1 when PFNs are not visible (not CAP_SYS_ADMIN). */
static inline long dt_dup_pfns(const void *addr, size_t len)
{
    size_t pages = (len + DT_PAGE - 1) / DT_PAGE + 1;
    size_t bytes = (pages * 8 + DT_PAGE - 1) & ~(DT_PAGE - 1);
    struct dt_pfn_ctx c = {(uint64_t *)dt_scratch(bytes), 0};
    struct dt_pm st;
    dt_pm_scan(addr, len, &st, dt_pfn_cb, &c);
    long dups = 0;
    if (st.present > 0 && c.n == 0 && dt_zero_pfn() == 0) {
        dups = -1; /* PFNs hidden */
    } else {
        qsort(c.pfns, c.n, 8, dt_cmp_u64);
        for (size_t i = 1; i < c.n; i++)
            dups += c.pfns[i] == c.pfns[i - 1];
    }
    munmap(c.pfns, bytes);
    return dups;
}

/* ---- Pss ------------------------------------------------------------- */

static inline long dt_rollup_pss_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        dt_die("open smaps_rollup");
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Pss (kB) of the part of the address space [a, a+len): sum over the VMAs of
 * /proc/self/smaps, each VMA's Pss weighted by the fraction of it inside the
 * range (exact for VMAs fully inside, which the merged runs are). */
static inline double dt_region_pss_kb(const void *a, size_t len)
{
    uintptr_t lo = (uintptr_t)a, hi = lo + len;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        dt_die("open smaps");
    char line[512];
    unsigned long vs = 0, ve = 0;
    double total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        long kb;
        char c;
        if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            vs = s;
            ve = e;
        } else if (sscanf(line, "Pss: %ld kB", &kb) == 1) {
            uintptr_t ol = vs > lo ? vs : lo, oh = ve < hi ? ve : hi;
            if (oh > ol && ve > vs)
                total += (double)kb * (double)(oh - ol) / (double)(ve - vs);
        }
    }
    fclose(f);
    return total;
}

/* Permission string ("rw-p") of the VMA containing addr, "" if none. All VMAs
 * intersecting [a, a+len) must have the same perms, else returns "mixed". */
static inline const char *dt_perms(const void *a, size_t len)
{
    static char res[16];
    uintptr_t lo = (uintptr_t)a, hi = lo + len;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[512];
    res[0] = 0;
    uintptr_t covered = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) != 3)
            continue;
        if (e <= lo || s >= hi)
            continue;
        uintptr_t ol = s > lo ? s : lo, oh = e < hi ? e : hi;
        covered += oh - ol;
        if (!res[0])
            snprintf(res, sizeof res, "%s", perms);
        else if (strcmp(res, perms) != 0)
            snprintf(res, sizeof res, "mixed");
    }
    fclose(f);
    if (covered != len)
        snprintf(res, sizeof res, "holes");
    return res;
}

/* ---- waiting ----------------------------------------------------------- */

struct dt_range {
    void *addr;
    size_t len;
};

static inline size_t dt_ranges_pages(const struct dt_range *r, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++) {
        uintptr_t s = (uintptr_t)r[i].addr & ~(DT_PAGE - 1);
        uintptr_t e = ((uintptr_t)r[i].addr + r[i].len + DT_PAGE - 1) & ~(DT_PAGE - 1);
        t += (e - s) / DT_PAGE;
    }
    return t;
}

static inline size_t dt_ranges_merged_like(const struct dt_range *r, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += dt_merged_like(r[i].addr, r[i].len);
    return t;
}

/* Poll (10 ms) until at least `frac` of the ranges' pages look merged. Returns
 * the time waited in ms, or -1 on timeout. Does not touch the ranges.
 * "At least frac" rounds up: a test that checks >= 0.9 * 1024 pages needs
 * 922, and a wait that stopped at 921 (rounding down) left the check to race
 * the scanner for the last page. */
static inline double dt_wait_merged(const struct dt_range *r, int n, double frac, double timeout_ms)
{
    double t0 = dt_now_ms();
    double exact = frac * (double)dt_ranges_pages(r, n);
    size_t want = (size_t)exact;
    if ((double)want < exact)
        want++;
    for (;;) {
        if (dt_ranges_merged_like(r, n) >= want)
            return dt_now_ms() - t0;
        if (dt_now_ms() - t0 > timeout_ms)
            return -1;
        dt_sleep_ms(10);
    }
}

/* Read one byte of every page (makes merged pages present again). */
static inline unsigned dt_touch_read(const void *a, size_t len)
{
    const volatile unsigned char *p = (const volatile unsigned char *)a;
    unsigned acc = 0;
    for (size_t i = 0; i < len; i += DT_PAGE)
        acc += p[i];
    return acc;
}

/* Wait for the test driver: print "ready" and block until a byte or EOF on
 * stdin. With no driver (stdin a tty or /dev/null) returns immediately. */
static inline void dt_ready(const char *tag)
{
    dt_out("ready", "%s", tag);
    char c;
    while (read(0, &c, 1) < 0 && errno == EINTR) {
    }
}

/* Run fn in a forked child; returns the child's raw wait status. */
static inline int dt_in_child(void (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        dt_die("fork");
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static inline const char *dt_errname(int e)
{
    switch (e) {
    case 0: return "0";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EPERM: return "EPERM";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case ENOSYS: return "ENOSYS";
    default: return "other";
    }
}

static inline long dt_arg_long(int argc, char **argv, const char *name, long def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return strtol(argv[i + 1], NULL, 0);
    return def;
}

static inline const char *dt_arg_str(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

static inline int dt_arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

/* AnonHugePages (kB) of the VMAs that overlap [p, p+len), from smaps. */
static inline long dt_anon_huge_kb(const void *p, size_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        dt_die("smaps");
    char line[512];
    long kb = 0;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = lo < (uintptr_t)p + len && hi > (uintptr_t)p;
            continue;
        }
        long v;
        if (in && sscanf(line, "AnonHugePages: %ld kB", &v) == 1)
            kb += v;
    }
    fclose(f);
    return kb;
}

/* mmap by a `syscall` instruction of the program's own: memory no
 * interposer sees mapped (glibc's syscall() is interposed too). */
static inline void *dt_unseen_mmap(size_t len)
{
    long ret;
    register long r10 __asm__("r10") = MAP_PRIVATE | MAP_ANONYMOUS;
    register long r8 __asm__("r8") = -1;
    register long r9 __asm__("r9") = 0;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"((long)SYS_mmap), "D"(0L), "S"((long)len), "d"((long)(PROT_READ | PROT_WRITE)), "r"(r10),
                       "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret < 0 && ret > -4096 ? MAP_FAILED : (void *)ret;
}

/* The shim's live file of process pid (in this PID namespace):
 * /dev/shm/libdedup.<pid namespace inode>.<pid>.json. */
static inline void dt_live_path(char *out, size_t cap, long pid)
{
    struct stat st;
    unsigned long ns = stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long)st.st_ino : 0;
    snprintf(out, cap, "/dev/shm/libdedup.%lu.%ld.json", ns, pid);
}

#endif
