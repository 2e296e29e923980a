/* The program's own userfaultfd (MISSING mode) on memory the shim merges.
 *
 *   hostile_uffd [--user-mode] [--wait-ms T]
 *
 * Programs register their memory with userfaultfd to be told about the
 * first touch of a page (post-copy live migration, checkpoint/restore,
 * garbage collectors, lazy loaders): a MISSING fault arrives exactly when a
 * page has no contents yet, and the handler supplies them. That contract
 * breaks if someone else changes the mapping under the registration:
 *   - the shim gives an all-zero page back with MADV_DONTNEED: the next
 *     read of it raises a MISSING fault the program never caused (spurious),
 *     and the handler's contents replace the zeros the program wrote;
 *   - a merge replaces the pages by a new mapping (mremap of a memfd
 *     piece), which carries no registration: faults of those pages never
 *     reach the program any more (MADV_DONTNEED, then a read: zeros, and no
 *     fault), and VmFlags lose "um".
 *
 * R (256 pages: 224 pages every one different, then 32 pages the program
 * wrote zeros into) is registered (UFFDIO_REGISTER_MODE_MISSING) with a
 * handler thread that answers every fault with UFFDIO_COPY of a marker page.
 * Then T, a copy of R's first 224 pages, is written, so that R can merge,
 * and C with its twin, a region that is not registered and merges in any
 * case (proof that the scanner went over the memory). The program waits
 * until C merged, and 300 ms more, and checks:
 *   reg_dropped_pages  pages of R whose VMA lost the "um" flag (0)
 *   spurious_faults    MISSING faults before the program discarded anything (0)
 *   bad_pages          pages of R not holding what the program wrote (0)
 *   then MADV_DONTNEED on 16 pages of R and a read of each:
 *   dontneed_faults    faults that arrived for them (16)
 *   dontneed_marker_pages pages holding the handler's marker afterwards (16)
 * --user-mode creates the userfaultfd with UFFD_USER_MODE_ONLY.
 * Exits 1 if anything differs from the kernel's behaviour without the shim.
 */
#include "hostile.h"

#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define NP 256
#define NZERO 32
#define NDATA (NP - NZERO)
#define NDISCARD 16

static unsigned char *r;
static int uffd;
static unsigned char *marker;
static atomic_int expect_fault[NP];
static atomic_long faults, spurious, expected_seen;
static atomic_int quit;

static void *handler(void *arg)
{
    (void)arg;
    struct pollfd p = {uffd, POLLIN, 0};
    while (!atomic_load(&quit)) {
        int n = poll(&p, 1, 20);
        if (n <= 0)
            continue;
        struct uffd_msg msg;
        ssize_t got = read(uffd, &msg, sizeof msg);
        if (got != (ssize_t)sizeof msg)
            continue;
        if (msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uintptr_t a = (uintptr_t)msg.arg.pagefault.address & ~(DT_PAGE - 1);
        atomic_fetch_add(&faults, 1);
        size_t idx = (a - (uintptr_t)r) / DT_PAGE;
        if (a >= (uintptr_t)r && idx < NP && atomic_load(&expect_fault[idx])) {
            atomic_fetch_add(&expected_seen, 1);
        } else {
            atomic_fetch_add(&spurious, 1);
            fprintf(stderr, "spurious MISSING fault at page %zd of R\n", a >= (uintptr_t)r ? (ssize_t)idx : -1);
        }
        struct uffdio_copy cp = {.dst = a, .src = (uintptr_t)marker, .len = DT_PAGE, .mode = 0, .copy = 0};
        if (ioctl(uffd, UFFDIO_COPY, &cp) != 0) {
            struct uffdio_range wr = {.start = a, .len = DT_PAGE};
            ioctl(uffd, UFFDIO_WAKE, &wr);
        }
    }
    return NULL;
}

/* Pages of [a, a+len) whose VMA's VmFlags lack "um" (userfaultfd missing). */
static long pages_without_um(const void *a, size_t len)
{
    uintptr_t lo = (uintptr_t)a, hi = lo + len;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        dt_die("open smaps");
    char line[1024];
    unsigned long s = 0, e = 0;
    long missing = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long x, y;
        if (sscanf(line, "%lx-%lx ", &x, &y) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            s = x;
            e = y;
            continue;
        }
        if (strncmp(line, "VmFlags:", 8) == 0 && e > lo && s < hi) {
            uintptr_t ol = s > lo ? s : lo, oh = e < hi ? e : hi;
            if (!strstr(line, " um"))
                missing += (long)((oh - ol) / DT_PAGE);
        }
    }
    fclose(f);
    return missing;
}

int main(int argc, char **argv)
{
    int user_mode = dt_arg_flag(argc, argv, "--user-mode");
    long wait_ms = dt_arg_long(argc, argv, "--wait-ms", 5000);
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    marker = (unsigned char *)dt_scratch(DT_PAGE);
    memset(marker, 0xEE, DT_PAGE);

    size_t len = NP * DT_PAGE;
    r = h_map(NP);
    for (size_t i = 0; i < NDATA; i++)
        dt_fill_random(r + i * DT_PAGE, DT_PAGE, 0x5EED0000u + i);
    memset(r + NDATA * DT_PAGE, 0, NZERO * DT_PAGE); /* present, all zero */

    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | (user_mode ? UFFD_USER_MODE_ONLY : 0));
    if (uffd < 0) {
        /* not root and vm.unprivileged_userfaultfd=0, or seccomp: skip */
        fprintf(stderr, "userfaultfd: %s\n", strerror(errno));
        dt_out("uffd_unavailable", "1");
        return 0;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = 0};
    if (ioctl(uffd, UFFDIO_API, &api) != 0)
        dt_die("UFFDIO_API");
    struct uffdio_register reg = {.range = {.start = (uintptr_t)r, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
        dt_die("UFFDIO_REGISTER");
    dt_out("reg_dropped_pages_at_start", "%ld", pages_without_um(r, len));
    pthread_t th;
    if (pthread_create(&th, NULL, handler, NULL) != 0)
        dt_die("pthread_create");

    /* Duplicates: R's twin, and a region the program does not register. */
    unsigned char *t = h_map(NDATA);
    memcpy(t, r, NDATA * DT_PAGE);
    unsigned char *c = h_map(64), *ct = h_map(64);
    for (size_t i = 0; i < 64; i++)
        dt_fill_random(c + i * DT_PAGE, DT_PAGE, 0xC0DE0000u + i);
    memcpy(ct, c, 64 * DT_PAGE);
    int c_merged = 0;
    if (shim) {
        c_merged = h_wait_file_vmas(c, 64 * DT_PAGE, 64 * DT_PAGE, wait_ms);
        dt_sleep_ms(300);
    }
    dt_out("c_merged", "%d", c_merged);
    dt_out("r_memfd_pages", "%zu", h_file_vma_bytes(r, len) / DT_PAGE);
    long dropped = pages_without_um(r, len);
    dt_out("reg_dropped_pages", "%ld", dropped);

    /* Every page holds what the program wrote: reading it raises no fault. */
    long bad = 0;
    for (size_t i = 0; i < NP; i++) {
        unsigned char e[DT_PAGE];
        if (i < NDATA)
            dt_fill_random(e, DT_PAGE, 0x5EED0000u + i);
        else
            memset(e, 0, DT_PAGE);
        bad += memcmp(r + i * DT_PAGE, e, DT_PAGE) != 0;
    }
    dt_out("bad_pages", "%ld", bad);
    long spurious_before = atomic_load(&spurious);
    dt_out("spurious_faults", "%ld", spurious_before);

    /* Discard 16 data pages: each read must now raise a MISSING fault. */
    for (size_t i = 0; i < NDISCARD; i++)
        atomic_store(&expect_fault[i], 1);
    if (madvise(r, NDISCARD * DT_PAGE, MADV_DONTNEED) != 0)
        dt_die("madvise DONTNEED");
    long marker_pages = 0;
    for (size_t i = 0; i < NDISCARD; i++) {
        (void)*(volatile unsigned char *)(r + i * DT_PAGE);
        marker_pages += memcmp(r + i * DT_PAGE, marker, DT_PAGE) == 0;
    }
    dt_out("dontneed_faults", "%ld", atomic_load(&expected_seen));
    dt_out("dontneed_marker_pages", "%ld", marker_pages);
    atomic_store(&quit, 1);
    pthread_join(th, NULL);
    dt_out("faults_total", "%ld", atomic_load(&faults));
    int ok = dropped == 0 && bad == 0 && spurious_before == 0 && atomic_load(&spurious) == 0 &&
             atomic_load(&expected_seen) == NDISCARD && marker_pages == NDISCARD;
    return ok ? 0 : 1;
}
