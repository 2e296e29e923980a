/* Calls that need a single-threaded process or change credentials, made
 * after registering memory (so the shim's scanner thread is running).
 * Hostile lifecycle row 4.
 *
 *   hostile_life_creds --op OP [--no-register]
 *
 * OP is one of
 *   report         only report the credentials of every thread
 *   unshare-user   unshare(CLONE_NEWUSER)
 *   unshare-mnt    unshare(CLONE_NEWNS)                        (root)
 *   setns-mnt      setns() into the process's own mount namespace (root)
 *   setns-user     setns() into a user namespace a child created (root)
 *   setuid         setgroups(0), setresgid, setresuid to nobody (root)
 *   raw-setuid     the same through syscall(2), as programs with their own
 *                  thread handling (Go, libpsx) do                (root)
 *
 * Prints scanner=1|0 (a thread named dedup-scan exists before the call),
 * threads_before=N, op_result=0|<errno name>, then the credentials:
 * uid=<real effective saved fs of the calling thread>, threads=N and
 * threads_other_creds=<threads whose Uid/Gid/Groups lines differ from the
 * calling thread's>, and for each such thread cred_<tid>=<comm>:<Uid line>.
 * Finally it maps and fills more memory and checks it (after_ok=1), and
 * exits 0.
 */
#define _GNU_SOURCE
#include "dtest.h"
#include <dirent.h>
#include <grp.h>
#include <sched.h>
#include <sys/syscall.h>

static int count_threads(int *scanner)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        dt_die("opendir task");
    int n = 0;
    *scanner = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f) && strncmp(comm, "dedup-scan", 10) == 0)
                *scanner = 1;
            fclose(f);
        }
    }
    closedir(d);
    return n;
}

/* The Uid:, Gid: and Groups: lines of /proc/self/task/<tid>/status. */
static void cred_lines(const char *tid, char *out, size_t cap)
{
    char path[300], line[512];
    snprintf(path, sizeof path, "/proc/self/task/%s/status", tid);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t used = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Uid:", 4) || !strncmp(line, "Gid:", 4) || !strncmp(line, "Groups:", 7)) {
            int n = snprintf(out + used, cap - used, "%s", line);
            if (n > 0 && (size_t)n < cap - used)
                used += (size_t)n;
        }
    fclose(f);
}

static void report(void)
{
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    dt_out("uid", "%u %u %u", r, e, s);
    char mine[1024], self[32];
    snprintf(self, sizeof self, "%ld", (long)syscall(SYS_gettid));
    cred_lines(self, mine, sizeof mine);
    DIR *d = opendir("/proc/self/task");
    if (!d)
        dt_die("opendir task");
    int n = 0, other = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        n++;
        char theirs[1024];
        cred_lines(de->d_name, theirs, sizeof theirs);
        if (strcmp(theirs, mine) != 0) {
            other++;
            char key[300], comm[64] = "?", path[300];
            snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
            FILE *f = fopen(path, "r");
            if (f) {
                if (fgets(comm, sizeof comm, f))
                    comm[strcspn(comm, "\n")] = 0;
                fclose(f);
            }
            char *nl = strchr(theirs, '\n');
            if (nl)
                *nl = 0;
            for (char *c = theirs; *c; c++)
                if (*c == '\t')
                    *c = ' ';
            snprintf(key, sizeof key, "cred_%s", de->d_name);
            dt_out(key, "%s:%s", comm, theirs);
        }
    }
    closedir(d);
    dt_out("threads", "%d", n);
    dt_out("threads_other_creds", "%d", other);
}

static int setns_user(void)
{
    int go[2], done[2];
    if (pipe(go) || pipe(done))
        dt_die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        dt_die("fork");
    if (pid == 0) {
        close(go[0]);
        close(done[1]);
        char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
        if (write(go[1], &c, 1) != 1)
            _exit(1);
        while (read(done[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    close(go[1]);
    close(done[0]);
    char c = 0;
    if (read(go[0], &c, 1) != 1 || c != 'y') {
        dt_out("setns_child", "unshare failed");
        return -1;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/ns/user", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        dt_die("open ns/user");
    int rc = setns(fd, CLONE_NEWUSER);
    int err = errno;
    close(fd);
    close(done[1]);
    waitpid(pid, NULL, 0);
    errno = err;
    return rc;
}

int main(int argc, char **argv)
{
    const char *op = dt_arg_str(argc, argv, "--op", "report");
    size_t len = 4 << 20;
    unsigned char *a = NULL;
    if (!dt_arg_flag(argc, argv, "--no-register")) {
        a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED)
            dt_die("mmap");
        dt_fill_random(a, len / 2, 7);
        memcpy(a + len / 2, a, len / 2);
    }
    int scanner = 0, n = 0;
    for (int i = 0; i < 200; i++) {
        n = count_threads(&scanner);
        if (scanner)
            break;
        dt_sleep_ms(5);
    }
    dt_out("scanner", "%d", scanner);
    dt_out("threads_before", "%d", n);

    int rc = 0;
    errno = 0;
    if (!strcmp(op, "report")) {
        rc = 0;
    } else if (!strcmp(op, "unshare-user")) {
        rc = unshare(CLONE_NEWUSER);
    } else if (!strcmp(op, "unshare-mnt")) {
        rc = unshare(CLONE_NEWNS);
    } else if (!strcmp(op, "setns-mnt")) {
        int fd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            dt_die("open ns/mnt");
        rc = setns(fd, CLONE_NEWNS);
        int err = errno;
        close(fd);
        errno = err;
    } else if (!strcmp(op, "setns-user")) {
        rc = setns_user();
    } else if (!strcmp(op, "setuid")) {
        rc = setgroups(0, NULL);
        if (rc == 0)
            rc = setresgid(65534, 65534, 65534);
        if (rc == 0)
            rc = setresuid(65534, 65534, 65534);
    } else if (!strcmp(op, "raw-setuid")) {
        rc = (int)syscall(SYS_setgroups, 0, NULL);
        if (rc == 0)
            rc = (int)syscall(SYS_setresgid, 65534, 65534, 65534);
        if (rc == 0)
            rc = (int)syscall(SYS_setresuid, 65534, 65534, 65534);
    } else {
        fprintf(stderr, "unknown --op %s\n", op);
        return 2;
    }
    int err = errno;
    if (rc == 0)
        dt_out("op_result", "0");
    else
        dt_out("op_result", "%s(%d)", dt_errname(err), err);
    report();

    /* The process goes on working: new memory, duplicates, verified. */
    unsigned char *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED)
        dt_die("mmap after");
    dt_fill_random(b, len / 2, 9);
    memcpy(b + len / 2, b, len / 2);
    dt_sleep_ms(100);
    size_t bad = dt_check_random(b, len / 2, 9) + dt_check_random(b + len / 2, len / 2, 9);
    if (a)
        bad += dt_check_random(a, len / 2, 7) + dt_check_random(a + len / 2, len / 2, 7);
    dt_out("after_ok", "%d", bad == 0);
    return bad ? 1 : 0;
}
