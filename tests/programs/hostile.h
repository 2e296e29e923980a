/* Shared pieces of the hostile kernel-write programs (tests/programs/hostile_*.c).
 *
 * Pattern pages: page i of a pattern region holds h_byte(i % H_PAT, off, v),
 * so a region of P pages holds P / H_PAT copies of each of H_PAT distinct
 * pages (never all zero): the shim merges it over and over. A pattern file
 * holds 2 * H_PAT pages of the same pattern, so a read of up to H_PAT pages
 * at offset (page % H_PAT) * 4096 writes exactly the bytes the region holds
 * already: a correct run never changes content, and any difference is a
 * lost or misplaced kernel write.
 *
 * Readers: threads that read(2)/pread(2) random runs of a target range from
 * the pattern file and count EFAULT, short reads, other errors and content
 * mismatches. None of those happen without the shim.
 */
#ifndef HOSTILE_H
#define HOSTILE_H

#include "dtest.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#define H_PAT 16

static inline unsigned char h_byte(size_t page, size_t off, unsigned variant)
{
    return (unsigned char)((page % H_PAT) * 31 + off * 7 + variant * 101 + 1);
}

static inline void h_fill(unsigned char *dst, size_t first_page, size_t npages, unsigned variant)
{
    for (size_t p = 0; p < npages; p++)
        for (size_t o = 0; o < DT_PAGE; o++)
            dst[p * DT_PAGE + o] = h_byte(first_page + p, o, variant);
}

/* Bytes of [dst, dst + npages pages) that differ from the pattern. */
static inline size_t h_check(const unsigned char *dst, size_t first_page, size_t npages, unsigned variant)
{
    size_t bad = 0;
    for (size_t p = 0; p < npages; p++)
        for (size_t o = 0; o < DT_PAGE; o++)
            bad += dst[p * DT_PAGE + o] != h_byte(first_page + p, o, variant);
    return bad;
}

/* Cheap check: a few bytes of each page. Returns pages that differ. */
static inline size_t h_check_sampled(const unsigned char *dst, size_t first_page, size_t npages, unsigned variant)
{
    size_t bad = 0;
    for (size_t p = 0; p < npages; p++)
        for (size_t o = 0; o < DT_PAGE; o += 509)
            if (dst[p * DT_PAGE + o] != h_byte(first_page + p, o, variant)) {
                bad++;
                break;
            }
    return bad;
}

static inline unsigned char *h_map(size_t pages)
{
    void *p = mmap(NULL, pages * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap region");
    return (unsigned char *)p;
}

/* An unlinked temporary file of 2 * H_PAT pattern pages. */
static inline int h_pattern_file(unsigned variant)
{
    char path[] = "/tmp/hostile-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        dt_die("mkstemp");
    unlink(path);
    unsigned char page[DT_PAGE];
    for (size_t p = 0; p < 2 * H_PAT; p++) {
        for (size_t o = 0; o < DT_PAGE; o++)
            page[o] = h_byte(p, o, variant);
        if (pwrite(fd, page, DT_PAGE, (off_t)(p * DT_PAGE)) != (ssize_t)DT_PAGE)
            dt_die("write pattern file");
    }
    return fd;
}

/* An unlinked temporary file holding buf[0..len). */
static inline int h_file_from(const void *buf, size_t len)
{
    char path[] = "/tmp/hostile-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        dt_die("mkstemp");
    unlink(path);
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(fd, (const char *)buf + done, len - done, (off_t)done);
        if (w <= 0)
            dt_die("write file");
        done += (size_t)w;
    }
    return fd;
}

static inline int h_shim_loaded(void)
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

/* Bytes of [a, a+len) that lie in file-backed VMAs (inode != 0): the shim's
 * memfd pieces, i.e. what an unmerge or a consolidation has to copy. */
static inline size_t h_file_vma_bytes(const void *a, size_t len)
{
    uintptr_t lo = (uintptr_t)a, hi = lo + len;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[512];
    size_t total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e, off, inode;
        char perms[8];
        unsigned dmaj, dmin;
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &s, &e, perms, &off, &dmaj, &dmin, &inode) != 7)
            continue;
        if (inode == 0 || e <= lo || s >= hi)
            continue;
        uintptr_t ol = s > lo ? s : lo, oh = e < hi ? e : hi;
        total += oh - ol;
    }
    fclose(f);
    return total;
}

/* VMAs of /proc/self/maps that overlap [a, a+len). */
static inline long h_vmas_in(const void *a, size_t len)
{
    uintptr_t lo = (uintptr_t)a, hi = lo + len;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        dt_die("open maps");
    char line[512];
    long n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && e > lo && s < hi)
            n++;
    }
    fclose(f);
    return n;
}

static inline long h_count_vmas(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        dt_die("open maps");
    static char buf[1 << 16];
    long n = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < r; i++)
            n += buf[i] == '\n';
    close(fd);
    return n;
}

static inline long h_read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = 0;
    if (f && fscanf(f, "%ld", &v) != 1)
        v = 0;
    if (f)
        fclose(f);
    return v;
}

/* Waits (polling every 5 ms, at most timeout_ms) until at least min_bytes of
 * [a, a+len) lie in memfd pieces. Returns 1 if reached. */
static inline int h_wait_file_vmas(const void *a, size_t len, size_t min_bytes, double timeout_ms)
{
    double t0 = dt_now_ms();
    for (;;) {
        if (h_file_vma_bytes(a, len) >= min_bytes)
            return 1;
        if (dt_now_ms() - t0 > timeout_ms)
            return 0;
        dt_sleep_ms(5);
    }
}

/* ---- where threads run -------------------------------------------------- */

/* Puts the shim's scanner thread ("dedup-scan") on the first CPU this
 * process may use and the calling thread on the second one, so that the
 * kernel writes the caller makes really run while the scanner has a window
 * open. Left to the scheduler on a loaded 2-CPU machine, the two often
 * shared one CPU for a whole run: the scanner's microsecond windows then
 * never met a write, and a broken library passed. Affinity changes no
 * result a correct library gives. Without the shim (no scanner thread)
 * nothing is changed. Returns 1 if both were placed. */
static inline int h_spread_from_scanner(void)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2)
        return 0;
    int cpus[2], n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
        if (CPU_ISSET(c, &allowed))
            cpus[n++] = c;
    int placed = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(comm, sizeof comm, f))
            comm[0] = 0;
        fclose(f);
        if (strncmp(comm, "dedup-scan", 10) == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpus[0], &one);
            placed = sched_setaffinity((pid_t)atoi(e->d_name), sizeof one, &one) == 0;
        }
    }
    if (d)
        closedir(d);
    if (!placed)
        return 0;
    cpu_set_t mine;
    CPU_ZERO(&mine);
    CPU_SET(cpus[1], &mine);
    return sched_setaffinity(0, sizeof mine, &mine) == 0;
}

/* ---- reader threads ---------------------------------------------------- */

enum { H_READ_PREAD = 1, H_READ_READ = 2 };

struct h_readers {
    /* set before h_readers_start */
    unsigned char *base; /* target: runs inside [base, base + pages pages) */
    size_t pages;        /* page i of base holds pattern page i % H_PAT */
    size_t max_run;      /* 1..H_PAT pages per call */
    int fd;              /* pattern file (variant 0), or a copy of expect */
    /* If set: the file holds the whole target's intended content, which is
     * also here (memory the shim never registers); page i is read from
     * offset i * 4096 and checked against expect. */
    const unsigned char *expect;
    int kinds;           /* H_READ_* bitmask */
    int nthreads;
    /* results */
    atomic_int stop;
    atomic_ulong calls, efaults, shorts, errors, mismatches;
    pthread_t t[16];
};

struct h_reader_arg {
    struct h_readers *h;
    unsigned seed;
};

static void *h_reader_main(void *p)
{
    struct h_reader_arg *arg = (struct h_reader_arg *)p;
    struct h_readers *h = arg->h;
    unsigned seed = arg->seed;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", h->fd);
    int own = open(path, O_RDONLY | O_CLOEXEC); /* its own file offset */
    if (own < 0)
        dt_die("open pattern file");
    h_spread_from_scanner();
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        size_t run = 1 + (size_t)rand_r(&seed) % h->max_run;
        if (run > h->pages)
            run = h->pages;
        size_t first = (size_t)rand_r(&seed) % (h->pages - run + 1);
        unsigned char *dst = h->base + first * DT_PAGE;
        size_t len = run * DT_PAGE;
        off_t off = (off_t)((h->expect ? first : first % H_PAT) * DT_PAGE);
        int kind = h->kinds;
        if (kind == (H_READ_PREAD | H_READ_READ))
            kind = (rand_r(&seed) & 1) ? H_READ_PREAD : H_READ_READ;
        ssize_t r;
        if (kind == H_READ_PREAD) {
            r = pread(h->fd, dst, len, off);
        } else {
            if (lseek(own, off, SEEK_SET) != off)
                dt_die("lseek");
            r = read(own, dst, len);
        }
        atomic_fetch_add_explicit(&h->calls, 1, memory_order_relaxed);
        if (r < 0) {
            if (errno == EFAULT)
                atomic_fetch_add_explicit(&h->efaults, 1, memory_order_relaxed);
            else
                atomic_fetch_add_explicit(&h->errors, 1, memory_order_relaxed);
            continue;
        }
        if ((size_t)r < len) {
            atomic_fetch_add_explicit(&h->shorts, 1, memory_order_relaxed);
            continue;
        }
        int bad = h->expect ? memcmp(dst, h->expect + first * DT_PAGE, len) != 0 : h_check_sampled(dst, first, run, 0) != 0;
        if (bad)
            atomic_fetch_add_explicit(&h->mismatches, 1, memory_order_relaxed);
    }
    close(own);
    return NULL;
}

static struct h_reader_arg h_reader_args[16];

static inline void h_readers_start(struct h_readers *h)
{
    if (h->nthreads > 16)
        h->nthreads = 16;
    if (h->max_run < 1)
        h->max_run = 1;
    if (h->max_run > H_PAT)
        h->max_run = H_PAT;
    for (int i = 0; i < h->nthreads; i++) {
        h_reader_args[i].h = h;
        h_reader_args[i].seed = 7919u * (unsigned)(i + 1) + (unsigned)getpid();
        if (pthread_create(&h->t[i], NULL, h_reader_main, &h_reader_args[i]) != 0)
            dt_die("pthread_create");
    }
}

static inline void h_readers_stop(struct h_readers *h)
{
    atomic_store(&h->stop, 1);
    for (int i = 0; i < h->nthreads; i++)
        pthread_join(h->t[i], NULL);
}

static inline void h_readers_report(struct h_readers *h)
{
    dt_out("reads", "%lu", atomic_load(&h->calls));
    dt_out("efaults", "%lu", atomic_load(&h->efaults));
    dt_out("short_reads", "%lu", atomic_load(&h->shorts));
    dt_out("read_errors", "%lu", atomic_load(&h->errors));
    dt_out("mismatches", "%lu", atomic_load(&h->mismatches));
}

static inline int h_readers_clean(struct h_readers *h)
{
    return !atomic_load(&h->efaults) && !atomic_load(&h->shorts) && !atomic_load(&h->errors) &&
           !atomic_load(&h->mismatches);
}

/* ---- the shim's live stats (/dev/shm/libdedup.<pidns>.<pid>.json) --------------- */

/* Value of "key" in the live stats of this process; -1 if absent. */
static inline long h_live_stat(const char *key)
{
    char path[64], buf[16384 + 1], pat[96];
    dt_live_path(path, sizeof path, (long)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    char *p = strstr(buf, pat);
    if (!p)
        return -1;
    return strtol(p + strlen(pat), NULL, 10);
}

/* Sleeps ms, then on (with the shim) until the scanner has merged at least
 * min_merges pages since start (its live stats, refreshed every second), at
 * most max_ms in all: on a loaded machine the scanner gets less CPU, and a
 * run must still see enough merging to mean something. Returns the pages
 * merged seen last (-1 without live stats). */
static inline long h_run_for(double ms, long min_merges, double max_ms, int shim)
{
    double t0 = dt_now_ms();
    dt_sleep_ms(ms);
    long merged = shim ? h_live_stat("pages_merged") : -1;
    while (shim && merged < min_merges && dt_now_ms() - t0 < max_ms) {
        dt_sleep_ms(100);
        merged = h_live_stat("pages_merged");
    }
    return merged;
}

#endif
