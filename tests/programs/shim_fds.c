/* The shim's descriptors are invisible and survive what daemons do to fds.
 *
 * Fills a region with duplicates and waits until it is merged (under the
 * shim), then: probes every descriptor below the soft RLIMIT_NOFILE with
 * fstat and fcntl and reports the ones that answer (must be exactly the ones
 * this program opened); closes every fd like a daemon (close loop, then
 * closefrom, then close_range); dup2s and dup3s its own files onto the
 * numbers the shim uses; and after each step writes a fresh set of
 * duplicates that must merge again, checking every byte of every region.
 *
 * Output: probe_fds=<comma list>, expected_fds=<comma list>, shim_fds=<n>
 * (descriptors /proc/self/fd shows pointing at the shim's files),
 * close_ebadf=<n shim fds where close gave EBADF>, dup2_ok=<0|1>,
 * merged_after_<step>=<file pages>, mismatches=<bytes>.
 * Argument: "shim" (wait for merges) or "plain" (no waiting).
 */
#include "dtest.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define REGION_PAGES 512

static int under_shim;

struct region {
    unsigned char *p;
    uint64_t seed;
};

static struct region regions[16];
static int nregions;

/* 512 pages: 8 distinct random pages repeated. */
static void new_region(void)
{
    struct region *r = &regions[nregions];
    r->seed = 1000 + (uint64_t)nregions;
    r->p = mmap(NULL, REGION_PAGES * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r->p == MAP_FAILED)
        dt_die("mmap");
    for (int i = 0; i < REGION_PAGES; i++)
        dt_fill_random(r->p + (size_t)i * DT_PAGE, DT_PAGE, r->seed + (uint64_t)(i % 8));
    nregions++;
}

/* Pages of r that are merged (file pages, or not present since the merge
 * mapped them), reading pagemap through a fresh descriptor: this program
 * closes all of its descriptors on the way. */
static size_t merged_pages(struct region *r)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        dt_die("open pagemap");
    uint64_t e[REGION_PAGES];
    if (pread(fd, e, sizeof e, (off_t)((uintptr_t)r->p / DT_PAGE * 8)) != (ssize_t)sizeof e)
        dt_die("pread pagemap");
    close(fd);
    size_t n = 0;
    for (int i = 0; i < REGION_PAGES; i++)
        n += (e[i] & PM_FILE) || !(e[i] & (PM_PRESENT | PM_SWAPPED));
    return n;
}

static size_t wait_merged(struct region *r)
{
    size_t f = merged_pages(r);
    for (double end = dt_now_ms() + 10000; under_shim && f < REGION_PAGES - 8 && dt_now_ms() < end;) {
        dt_sleep_ms(20);
        f = merged_pages(r);
    }
    return f;
}

static void step(const char *name)
{
    new_region();
    char key[64];
    snprintf(key, sizeof key, "merged_after_%s", name);
    dt_out(key, "%zu", wait_merged(&regions[nregions - 1]));
}

static size_t verify_all(void)
{
    size_t bad = 0;
    for (int k = 0; k < nregions; k++)
        for (int i = 0; i < REGION_PAGES; i++)
            bad += dt_check_random(regions[k].p + (size_t)i * DT_PAGE, DT_PAGE, regions[k].seed + (uint64_t)(i % 8));
    return bad;
}

/* Descriptors that answer fstat and fcntl(F_GETFD), as a comma list. */
static void probe(char *out, size_t cap, int extra1, int extra2)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    size_t used = 0;
    out[0] = 0;
    for (int fd = 0; fd < (int)rl.rlim_cur; fd++) {
        struct stat st;
        int a = fstat(fd, &st) == 0, b = fcntl(fd, F_GETFD) >= 0;
        if (a != b)
            dt_fail("fd %d: fstat says %d, fcntl says %d", fd, a, b);
        if ((a || fd == extra1 || fd == extra2) && used + 16 < cap)
            used += (size_t)snprintf(out + used, cap - used, "%s%d", used ? "," : "", fd);
    }
}

/* The shim's descriptors, from /proc/self/fd (which still lists them). */
static int shim_fds(int *fds, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        dt_die("opendir /proc/self/fd");
    int n = 0, dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == dfd)
            continue;
        char path[64], target[256];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(path, target, sizeof target - 1);
        if (l <= 0)
            continue;
        target[l] = 0;
        if (strstr(target, "libdedup") || strstr(target, "pagemap"))
            fds[n++] = fd;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    under_shim = argc > 1 && !strcmp(argv[1], "shim");
    /* Before the first mapping the shim has opened nothing: what answers now
     * (the inherited descriptors), plus the two files opened below, is what
     * must answer later. */
    char seen[4096], want[4096];
    int f1 = open("/dev/null", O_RDONLY), f2 = open("/dev/zero", O_RDONLY);
    if (f1 < 0 || f2 < 0)
        dt_die("open");
    probe(want, sizeof want, -1, -1);
    step("start");
    probe(seen, sizeof seen, -1, -1);
    dt_out("probe_fds", "%s", seen);
    dt_out("expected_fds", "%s", want);

    int ours[8];
    int n = shim_fds(ours, 8);
    dt_out("shim_fds", "%d", n);
    int ebadf = 0;
    for (int i = 0; i < n; i++) {
        errno = 0;
        struct stat st;
        if (close(ours[i]) == -1 && errno == EBADF && fstat(ours[i], &st) == -1 && errno == EBADF &&
            dup(ours[i]) == -1 && errno == EBADF && lseek(ours[i], 0, SEEK_SET) == -1 && errno == EBADF)
            ebadf++;
    }
    dt_out("close_ebadf", "%d", ebadf);

    /* dup2/dup3 onto the shim's numbers: the program gets them. */
    int dup_ok = 1;
    for (int i = 0; i < n; i++) {
        int r = i % 2 ? dup3(f2, ours[i], O_CLOEXEC) : dup2(f2, ours[i]);
        struct stat a, b;
        if (r != ours[i] || fstat(ours[i], &a) || fstat(f2, &b) || a.st_ino != b.st_ino || a.st_rdev != b.st_rdev) {
            dt_fail("dup onto shim fd %d: r=%d errno=%d", ours[i], r, errno);
            dup_ok = 0;
        }
        char c = 1;
        if (read(ours[i], &c, 1) != 1 || c != 0) {  /* it is /dev/zero now */
            dt_fail("fd %d does not read /dev/zero after dup2", ours[i]);
            dup_ok = 0;
        }
    }
    dt_out("dup2_ok", "%d", dup_ok);
    step("dup2");

    /* A daemon closes everything. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int keep = dup(2);  /* stderr for diagnostics */
    for (int fd = 3; fd < (int)rl.rlim_cur; fd++)
        if (fd != keep)
            close(fd);
    step("close_loop");
    /* The raw system call bypasses the shim (CPython's subprocess makes it):
     * the shim must survive losing its descriptors. */
    syscall(SYS_close_range, 3u, ~0u, 0);
    step("raw_close_range");
    closefrom(keep + 1);
    close_range(3, (unsigned)keep - 1, 0);
    step("closefrom");

    size_t bad = verify_all();
    dt_out("mismatches", "%zu", bad);
    if (bad)
        dt_fail("%zu bytes differ", bad);
    return dt_failed ? 1 : 0;
}
