/* Other kernel writers into memory the shim keeps merging.
 *
 *   hostile_other_writers --call fstat|wait4|waitid|fionread|vmsplice|vmreadv|aio
 *                         [--ms T] [--min-merges M] [--max-ms U] [--threads K]
 *                         [--pages P]
 *
 * The shim pins the buffers of the read/recv/getdents/getrandom families.
 * Every other system call that writes into user memory meets write-protect
 * windows unprotected and fails with EFAULT (or writes short):
 *   fstat     fstat(fd, buf): a struct stat (fstat is interposed by the
 *             shim, for its own descriptors, but not pinned)
 *   wait4     wait4(child, &status, 0, NULL): the status word (a child
 *             forked and reaped per call: slow, few calls)
 *   waitid    waitid(P_PID, child, &info, WEXITED | WNOHANG) on a child
 *             that lives on: no state to report, and the kernel writes a
 *             zeroed siginfo (the event loops of servers poll like this)
 *   fionread  ioctl(pipe, FIONREAD, &n): an int (any ioctl that writes)
 *   vmsplice  vmsplice(pipe read end, iov): copies pipe data into memory
 *   vmreadv   process_vm_readv(self, local iov, remote iov)
 *   aio       io_submit(IOCB_CMD_PREAD) of a regular file (Linux AIO)
 *
 * A region of P pages merges over and over: page i holds a header (the
 * bytes the call writes: the struct stat of the file, a zero status word,
 * a zero count; none for the bulk calls) followed by pattern page i % 16,
 * and the calls write exactly those bytes again, so that contents never
 * change while every write breaks copy-on-write and the scanner merges the
 * page once more. K threads make the call into random pages for T ms.
 *
 * With the shim the run goes on after T ms until the scanner has merged M
 * pages (its live stats), at most U ms.
 *
 * Prints calls, efaults, short_writes, call_errors, mismatches; exits 1 if
 * any call failed or wrote wrong bytes.
 */
#include "hostile.h"

#include <linux/aio_abi.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>

static const char *call;
static unsigned char *region, *src;
static size_t npages, hdr;
static unsigned char ref[256];
static int file_fd;
static pid_t g_child = -1;
static atomic_int stop;
static atomic_ulong calls, efaults, shorts, errors, mismatches;

static int bulk(void) { return !strcmp(call, "vmsplice") || !strcmp(call, "vmreadv") || !strcmp(call, "aio"); }

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 3;
    int pfd[2] = {-1, -1};
    if ((!strcmp(call, "fionread") || !strcmp(call, "vmsplice")) && pipe(pfd) != 0)
        dt_die("pipe");
    aio_context_t ctx = 0;
    if (!strcmp(call, "aio") && syscall(SYS_io_setup, 8, &ctx) != 0)
        dt_die("io_setup");
    pid_t self = getpid();
    h_spread_from_scanner();
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t run = bulk() ? 1 + (size_t)rand_r(&seed) % 4 : 1;
        size_t first = (size_t)rand_r(&seed) % (npages - run + 1);
        unsigned char *dst = region + first * DT_PAGE;
        size_t len = bulk() ? run * DT_PAGE : hdr;
        long r = -1;
        int err = 0;
        if (!strcmp(call, "fstat")) {
            r = fstat(file_fd, (struct stat *)dst);
            r = r == 0 ? (long)hdr : -1;
        } else if (!strcmp(call, "wait4")) {
            pid_t pid = fork();
            if (pid < 0)
                dt_die("fork");
            if (pid == 0)
                _exit(0);
            pid_t w;
            while ((w = wait4(pid, (int *)dst, 0, NULL)) < 0 && errno == EINTR) {
            }
            if (w < 0) {
                err = errno;
                /* reap it anyway, so that children do not pile up */
                int st;
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
                }
                errno = err;
                r = -1;
            } else {
                r = (long)hdr;
            }
        } else if (!strcmp(call, "waitid")) {
            r = waitid(P_PID, (id_t)g_child, (siginfo_t *)dst, WEXITED | WNOHANG);
            r = r == 0 ? (long)hdr : -1;
        } else if (!strcmp(call, "fionread")) {
            r = ioctl(pfd[0], FIONREAD, (int *)dst);
            r = r == 0 ? (long)hdr : -1;
        } else if (!strcmp(call, "vmsplice")) {
            const unsigned char *s = src + (first % H_PAT) * DT_PAGE;
            if (write(pfd[1], s, len) != (ssize_t)len)
                dt_die("write pipe");
            size_t got = 0;
            r = 0;
            while (got < len) {
                struct iovec iov = {dst + got, len - got};
                ssize_t n = vmsplice(pfd[0], &iov, 1, 0);
                if (n <= 0) {
                    r = -1;
                    break;
                }
                got += (size_t)n;
                r = (long)got;
            }
            if (r < 0) {
                err = errno;
                char tmp[4 * 4096];
                while (got < len) { /* drain, so that the next call starts clean */
                    ssize_t n = read(pfd[0], tmp, len - got < sizeof tmp ? len - got : sizeof tmp);
                    if (n <= 0)
                        break;
                    got += (size_t)n;
                }
                errno = err;
            }
        } else if (!strcmp(call, "vmreadv")) {
            struct iovec l = {dst, len}, rm = {src + (first % H_PAT) * DT_PAGE, len};
            r = process_vm_readv(self, &l, 1, &rm, 1, 0);
        } else if (!strcmp(call, "aio")) {
            struct iocb cb;
            memset(&cb, 0, sizeof cb);
            cb.aio_lio_opcode = IOCB_CMD_PREAD;
            cb.aio_fildes = (uint32_t)file_fd;
            cb.aio_buf = (uint64_t)(uintptr_t)dst;
            cb.aio_nbytes = len;
            cb.aio_offset = (int64_t)((first % H_PAT) * DT_PAGE);
            struct iocb *cbs[1] = {&cb};
            if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) {
                r = -1;
            } else {
                struct io_event ev;
                long n;
                while ((n = syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL)) < 0 && errno == EINTR) {
                }
                if (n != 1)
                    dt_die("io_getevents");
                r = (long)ev.res;
                if (r < 0) {
                    errno = (int)-r;
                    r = -1;
                }
            }
        }
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
        if (r < 0) {
            if (errno == EFAULT)
                atomic_fetch_add_explicit(&efaults, 1, memory_order_relaxed);
            else {
                atomic_fetch_add_explicit(&errors, 1, memory_order_relaxed);
                fprintf(stderr, "%s: %s\n", call, strerror(errno));
            }
            continue;
        }
        if ((size_t)r < len) {
            atomic_fetch_add_explicit(&shorts, 1, memory_order_relaxed);
            continue;
        }
        int bad = bulk() ? h_check_sampled(dst, first, run, 0) != 0 : memcmp(dst, ref, hdr) != 0;
        if (bad)
            atomic_fetch_add_explicit(&mismatches, 1, memory_order_relaxed);
    }
    if (ctx)
        syscall(SYS_io_destroy, ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    call = dt_arg_str(argc, argv, "--call", "fstat");
    long ms = dt_arg_long(argc, argv, "--ms", 2000);
    long min_merges = dt_arg_long(argc, argv, "--min-merges", 0);
    long max_ms = dt_arg_long(argc, argv, "--max-ms", 3 * ms);
    long threads = dt_arg_long(argc, argv, "--threads", 2);
    long pages = dt_arg_long(argc, argv, "--pages", 64);
    npages = (size_t)(pages < 2 * H_PAT ? 2 * H_PAT : pages) / H_PAT * H_PAT;
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    dt_out("call", "%s", call);
    file_fd = h_pattern_file(0);
    src = (unsigned char *)dt_scratch(2 * H_PAT * DT_PAGE);
    h_fill(src, 0, 2 * H_PAT, 0);

    /* the bytes the call writes, once, into memory the shim never registers */
    memset(ref, 0, sizeof ref);
    if (!strcmp(call, "fstat")) {
        struct stat st;
        if (fstat(file_fd, &st) != 0)
            dt_die("fstat");
        memcpy(ref, &st, sizeof st);
        hdr = sizeof st;
    } else if (!strcmp(call, "wait4") || !strcmp(call, "fionread")) {
        hdr = sizeof(int); /* exit status 0, empty pipe: 0 */
    } else if (!strcmp(call, "waitid")) {
        hdr = sizeof(siginfo_t); /* all zero */
        g_child = fork();
        if (g_child < 0)
            dt_die("fork");
        if (g_child == 0) {
            pause();
            _exit(0);
        }
    } else if (bulk()) {
        hdr = 0;
    } else {
        fprintf(stderr, "unknown --call %s\n", call);
        return 2;
    }
    region = h_map(npages);
    h_fill(region, 0, npages, 0);
    for (size_t i = 0; i < npages && hdr; i++)
        memcpy(region + i * DT_PAGE, ref, hdr);
    if (hdr) /* the pattern with its headers: what bulk checks expect */
        for (size_t i = 0; i < 2 * H_PAT; i++)
            memcpy(src + i * DT_PAGE, ref, hdr);
    dt_sleep_ms(300); /* let the scanner merge the copies first */

    pthread_t t[16];
    if (threads > 16)
        threads = 16;
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1)) != 0)
            dt_die("pthread_create");
    double t0 = dt_now_ms();
    long merged = h_run_for((double)ms, min_merges, (double)max_ms, shim);
    atomic_store(&stop, 1);
    dt_out("run_ms", "%.0f", dt_now_ms() - t0);
    dt_out("live_pages_merged", "%ld", merged);
    for (long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
    }
    size_t bad = 0;
    for (size_t i = 0; i < npages; i++) {
        bad += memcmp(region + i * DT_PAGE, ref, hdr) != 0;
        bad += h_check_sampled(region + i * DT_PAGE + 0, i, 1, 0) != 0 && !hdr;
    }
    dt_out("calls", "%lu", atomic_load(&calls));
    dt_out("efaults", "%lu", atomic_load(&efaults));
    dt_out("short_writes", "%lu", atomic_load(&shorts));
    dt_out("call_errors", "%lu", atomic_load(&errors));
    dt_out("mismatches", "%lu", atomic_load(&mismatches));
    dt_out("final_bad_pages", "%zu", bad);
    return atomic_load(&efaults) || atomic_load(&shorts) || atomic_load(&errors) || atomic_load(&mismatches) || bad
               ? 1
               : 0;
}
