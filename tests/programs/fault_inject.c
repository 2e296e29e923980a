/* Failure-injection launcher: applies faults to itself, then execve's a
 * program with the environment it was given (so LD_PRELOAD takes effect in
 * the exec'd image, and every fault applies to the shim's own calls there).
 *
 *   fault_inject FAULT [FAULT ...] -- PROGRAM [ARGS ...]
 *
 * FAULT is one of:
 *   none                  no fault (the control)
 *   memfd=eperm           seccomp: memfd_create(2) fails with EPERM
 *   memfd=enosys          seccomp: memfd_create(2) fails with ENOSYS
 *   nofile=N              RLIMIT_NOFILE soft limit N (hard limit unchanged)
 *   as=SIZE               RLIMIT_AS soft limit SIZE (K/M/G suffixes)
 *   fsize=SIZE            RLIMIT_FSIZE soft limit SIZE (K/M/G suffixes)
 *
 * The seccomp filter is installed with PR_SET_NO_NEW_PRIVS and
 * seccomp(SECCOMP_SET_MODE_FILTER) through syscall(2); it survives execve.
 * Nothing is printed on stdout (it is the program's). On a setup error the
 * launcher prints "fault_inject: ..." on stderr and exits 126; if the exec
 * fails, 127.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "fault_inject: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "", strerror(errno));
    exit(126);
}

static void usage(const char *msg)
{
    fprintf(stderr, "fault_inject: %s\nusage: fault_inject FAULT [FAULT ...] -- PROGRAM [ARGS ...]\n", msg);
    exit(126);
}

static rlim_t parse_size(const char *s)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s)
        usage("bad size");
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end)
        usage("bad size suffix");
    return (rlim_t)v;
}

static void set_soft_limit(int res, rlim_t v, const char *name)
{
    struct rlimit rl;
    if (getrlimit(res, &rl) != 0)
        die("getrlimit", name);
    if (rl.rlim_max != RLIM_INFINITY && v > rl.rlim_max)
        v = rl.rlim_max;
    rl.rlim_cur = v;
    if (setrlimit(res, &rl) != 0)
        die("setrlimit", name);
}

static void deny_memfd_create(int err)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_memfd_create, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(filter) / sizeof(filter[0])), filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die("prctl(PR_SET_NO_NEW_PRIVS)", NULL);
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
        die("seccomp(SECCOMP_SET_MODE_FILTER)", NULL);
    /* The filter must really be in force: memfd_create now fails with err. */
    long fd = syscall(SYS_memfd_create, "fault_inject-probe", 0);
    if (fd >= 0 || errno != err) {
        errno = fd >= 0 ? 0 : errno;
        die("seccomp filter not effective for memfd_create", NULL);
    }
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "none")) {
        } else if (!strcmp(f, "memfd=eperm")) {
            deny_memfd_create(EPERM);
        } else if (!strcmp(f, "memfd=enosys")) {
            deny_memfd_create(ENOSYS);
        } else if (!strncmp(f, "nofile=", 7)) {
            set_soft_limit(RLIMIT_NOFILE, parse_size(f + 7), "RLIMIT_NOFILE");
        } else if (!strncmp(f, "as=", 3)) {
            set_soft_limit(RLIMIT_AS, parse_size(f + 3), "RLIMIT_AS");
        } else if (!strncmp(f, "fsize=", 6)) {
            set_soft_limit(RLIMIT_FSIZE, parse_size(f + 6), "RLIMIT_FSIZE");
        } else {
            usage("unknown fault");
        }
    }
    if (i >= argc - 1)
        usage("missing -- PROGRAM");
    execve(argv[i + 1], argv + i + 1, environ);
    fprintf(stderr, "fault_inject: execve %s: %s\n", argv[i + 1], strerror(errno));
    return 127;
}
