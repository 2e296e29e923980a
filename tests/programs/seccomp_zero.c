/* Zero pages given back while a seccomp filter forbids process_madvise.
 *
 * The scanner gives a batch's zero pages back with one process_madvise
 * (scanner/zero_giveback.h), except where a seccomp filter may forbid it.
 * This program fills a region in two halves of zero pages and random pages
 * (one page in three zero, scattered), and waits after each half until its
 * zero pages are gone from pagemap (given back). Between the halves it
 * installs a filter that kills the process on process_madvise and allows
 * every other call:
 *   --install tsync   seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) through libc's
 *                     syscall(): every thread gets it, the scanner's too;
 *   --install raw     the same call made inline, which no interposer sees
 *                     (the limit the README names: the process is killed);
 *   --install exec    before the first half, then executes itself with
 *                     --install none: its scanner starts under the filter;
 *   --install none    no filter.
 * At the end every byte is checked. --wait-ms N bounds each wait.
 *
 * Output: zero_pages=<per half>, given_back_1=, given_back_2= (zero pages of
 * each half not present when the wait ended), bad_bytes=<n>.
 */
#include "dtest.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define PAGES 3072 /* 12 MiB; each half 1536 pages, 512 of them zero */

static int is_zero_page(size_t i) { return i % 3 == 1; }

static long seccomp_inline(long op, long flags, const void *prog)
{
    long r;
    register long r10 __asm__("r10") = 0;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"((long)SYS_seccomp), "D"(op), "S"(flags), "d"((long)prog), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

static void install_filter(const char *how)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_madvise, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        dt_die("PR_SET_NO_NEW_PRIVS");
    long r = strcmp(how, "raw") == 0
                 ? seccomp_inline(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)
                 : syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (r != 0)
        dt_die("seccomp");
}

static void fill(char *m, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (is_zero_page(i))
            memset(m + i * DT_PAGE, 0, DT_PAGE); /* present, and zero */
        else
            dt_fill_random(m + i * DT_PAGE, DT_PAGE, 1000 + i);
    }
}

/* Waits (up to --wait-ms, default 10 s) until the zero pages of [from, to)
 * are not present; returns how many are not. */
static long g_wait_ms = 10000;
static long wait_given_back(char *m, size_t from, size_t to)
{
    long gone = 0, want = 0;
    for (size_t i = from; i < to; i++)
        want += is_zero_page(i);
    for (double t0 = dt_now_ms(); dt_now_ms() - t0 < g_wait_ms; dt_sleep_ms(10)) {
        gone = 0;
        for (size_t i = from; i < to; i++)
            if (is_zero_page(i) && !(dt_pm_entry(m + i * DT_PAGE) & PM_PRESENT))
                gone++;
        if (gone == want)
            break;
    }
    return gone;
}

int main(int argc, char **argv)
{
    const char *how = dt_arg_str(argc, argv, "--install", "none");
    g_wait_ms = dt_arg_long(argc, argv, "--wait-ms", 10000);
    if (strcmp(how, "exec") == 0) {
        install_filter("tsync");
        execl("/proc/self/exe", argv[0], "--install", "none", (char *)NULL);
        dt_die("exec");
    }
    char *m = mmap(NULL, PAGES * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        dt_die("mmap");
    size_t half = PAGES / 2;
    fill(m, 0, half);
    dt_out("zero_pages", "%ld", (long)(half / 3));
    dt_out("given_back_1", "%ld", wait_given_back(m, 0, half));
    if (strcmp(how, "tsync") == 0 || strcmp(how, "raw") == 0)
        install_filter(how);
    fill(m, half, PAGES);
    dt_out("given_back_2", "%ld", wait_given_back(m, half, PAGES));
    size_t bad = 0;
    for (size_t i = 0; i < PAGES; i++)
        bad += is_zero_page(i) ? dt_count_not(m + i * DT_PAGE, DT_PAGE, 0)
                               : dt_check_random(m + i * DT_PAGE, DT_PAGE, 1000 + i);
    dt_out("bad_bytes", "%zu", bad);
    return bad != 0;
}
