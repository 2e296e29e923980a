/* A child process made without glibc's fork(), so no pthread_atfork
 * handler runs: syscall(SYS_clone, SIGCHLD), syscall(SYS_clone3) or glibc's
 * clone() wrapper, as container tools and namespace helpers do. Further
 * hostile lifecycle case.
 *
 *   hostile_life_rawfork --how fork|sys-clone|sys-clone3|clone --mode punch|lock
 *                        [--forks N] [--timeout-ms T] [--no-wait]
 *
 * punch: 2 x 4 MiB of identical random data, merged (merge_wait_ms); the
 *        child checks its copy, unmaps it, maps and fills 1 MiB, sleeps
 *        300 ms and exits (3 if its copy was wrong). The parent then checks
 *        its own copy: parent_bad=<bytes>, child_status=<exit status or
 *        128+signal, "hung" after 5 s>.
 * lock:  the scanner runs at full speed over 32 MiB of data (merged) and
 *        64 MiB of unique pages (hashed again on every pass), and
 *        N (default 40) children are made, each mapping, filling and
 *        unmapping 1 MiB and then checking the data. hung=<children still
 *        running after 1 s> (it stops at the first), bad=<children that
 *        exited non-zero>.
 * fork is glibc's fork(): the control, where the shim's fork handlers run.
 */
#define _GNU_SOURCE
#include "dtest.h"
#include <linux/sched.h>
#include <sched.h>
#include <sys/syscall.h>

static const char *g_how;
static unsigned char *g_data;
static size_t g_len, g_buf;
static int g_punch;

static int child_body(void *arg)
{
    (void)arg;
    int bad = 0;
    if (g_punch) {
        bad = dt_check_random(g_data, g_buf, 11) + dt_check_random(g_data + g_buf, g_buf, 11) != 0;
        munmap(g_data, g_len);
    }
    unsigned char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        _exit(4);
    memset(p, 2, 1 << 20);
    munmap(p, 1 << 20);
    if (g_punch) {
        dt_sleep_ms(300);
    } else {
        for (size_t i = 0; i < g_len; i += DT_PAGE)
            bad |= g_data[i] != (unsigned char)(i / DT_PAGE % 251);
    }
    _exit(bad ? 3 : 0);
}

static char g_stack[256 << 10] __attribute__((aligned(16)));

static pid_t make_child(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid;
    if (!strcmp(g_how, "fork")) {
        pid = fork();
    } else if (!strcmp(g_how, "sys-clone")) {
        pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    } else if (!strcmp(g_how, "sys-clone3")) {
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.exit_signal = SIGCHLD;
        pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
    } else if (!strcmp(g_how, "clone")) {
        return clone(child_body, g_stack + sizeof g_stack, SIGCHLD, NULL);
    } else {
        fprintf(stderr, "unknown --how %s\n", g_how);
        exit(2);
    }
    if (pid == 0)
        child_body(NULL);
    return pid;
}

/* Exit status, 128+signal, or -1 if still running after timeout_ms. */
static int wait_child(pid_t pid, double timeout_ms)
{
    double t0 = dt_now_ms();
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0 || dt_now_ms() - t0 > timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        dt_sleep_ms(2);
    }
}

int main(int argc, char **argv)
{
    g_how = dt_arg_str(argc, argv, "--how", "fork");
    const char *mode = dt_arg_str(argc, argv, "--mode", "punch");
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 8000);
    int wait = !dt_arg_flag(argc, argv, "--no-wait");
    g_punch = !strcmp(mode, "punch");

    if (g_punch) {
        g_buf = 4 << 20;
        g_len = 2 * g_buf;
        g_data = mmap(NULL, g_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g_data == MAP_FAILED)
            dt_die("mmap");
        dt_fill_random(g_data, g_buf, 11);
        memcpy(g_data + g_buf, g_data, g_buf);
        struct dt_range r = {g_data, g_len};
        if (wait)
            dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.95, timeout));
        pid_t pid = make_child();
        if (pid < 0)
            dt_die("making the child");
        int st = wait_child(pid, 5000);
        if (st < 0)
            dt_out("child_status", "hung");
        else
            dt_out("child_status", "%d", st);
        size_t bad = dt_check_random(g_data, g_buf, 11) + dt_check_random(g_data + g_buf, g_buf, 11);
        dt_out("parent_bad", "%zu", bad);
        return bad ? 1 : 0;
    }

    g_len = 32 << 20;
    g_data = mmap(NULL, g_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g_data == MAP_FAILED)
        dt_die("mmap");
    for (size_t i = 0; i < g_len; i += DT_PAGE)
        memset(g_data + i, (int)(i / DT_PAGE % 251), DT_PAGE);
    struct dt_range r = {g_data, g_len};
    if (wait)
        dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.9, timeout));
    /* Unique pages: the scanner hashes them again on every pass, holding
     * the mm lock for most of its time. */
    size_t busy_len = 64 << 20;
    unsigned char *busy = mmap(NULL, busy_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (busy == MAP_FAILED)
        dt_die("mmap busy");
    dt_fill_random(busy, busy_len, 12);
    long forks = dt_arg_long(argc, argv, "--forks", 40);
    int hung = 0, bad = 0;
    long k = 0;
    for (; k < forks; k++) {
        pid_t pid = make_child();
        if (pid < 0)
            dt_die("making the child");
        int st = wait_child(pid, 1000);
        hung += st < 0;
        bad += st > 0;
        if (hung)
            break; /* one is enough, and each costs a second */
        /* Keep the scanner busy: rewrite a page in every 64 (same content). */
        for (size_t i = 0; i < g_len; i += 64 * DT_PAGE)
            g_data[i] = (unsigned char)(i / DT_PAGE % 251);
    }
    dt_out("children", "%ld", k < forks ? k + 1 : forks);
    dt_out("hung", "%d", hung);
    dt_out("bad", "%d", bad);
    return hung || bad ? 1 : 0;
}
