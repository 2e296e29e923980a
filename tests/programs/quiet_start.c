/* What a process that registers nothing finds of the shim: nothing.
 *
 * A short program (as a shell or a build starts by the thousand) makes small
 * mallocs, a small anonymous mapping, reads a file and installs a signal
 * handler (none of it registered: every size is below DEDUP_MIN_REGION and
 * DEDUP_MALLOC_MIN), then looks at itself: the descriptors in /proc/self/fd,
 * the threads in /proc/self/task, and the mappings in /proc/self/maps that
 * are the shim's (its memfd, its files in /dev/shm).
 *
 * With --malloc-kib K it also keeps K KiB of large mallocs (64 KiB each,
 * written), which the shim does register: below DEDUP_START_MIN the
 * process must still find nothing of the shim; at or above it, a scanner
 * thread and the shim's descriptors and mappings.
 *
 * With --mark it writes "-- registered --" to stderr after those mallocs
 * (the runtime has activated by then if K is at DEDUP_START_MIN or more),
 * for a test that reads ld.so's LD_DEBUG lines on either side of it.
 *
 * Output: fds=<comma list> (without the one that reads the directory),
 * threads=<n>, shim_maps=<n>.
 */
#include "dtest.h"

#include <dirent.h>

static void noop(int sig) { (void)sig; }

int main(int argc, char **argv)
{
    long kib = dt_arg_long(argc, argv, "--malloc-kib", 0);
    for (long i = 0; i < kib / 64; i++) {
        char *b = malloc(64 * 1024);
        if (!b)
            dt_die("malloc");
        memset(b, (int)i, 64 * 1024); /* kept: in use until exit */
    }
    if (dt_arg_flag(argc, argv, "--mark")) {
        static const char mark[] = "-- registered --\n";
        if (write(2, mark, sizeof mark - 1) < 0)
            dt_die("write");
    }
    /* What a short program does; nothing here is registered. */
    char *small[64];
    for (int i = 0; i < 64; i++) {
        small[i] = malloc((size_t)(16 + i * 256));
        if (!small[i])
            dt_die("malloc");
        memset(small[i], i, 16);
    }
    void *m = mmap(NULL, 4 * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        dt_die("mmap");
    memset(m, 1, 4 * DT_PAGE);
    munmap(m, 4 * DT_PAGE);
    char buf[256];
    int f = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (f < 0 || read(f, buf, sizeof buf) <= 0)
        dt_die("read /proc/self/stat");
    close(f);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        dt_die("sigaction");
    for (int i = 0; i < 64; i++)
        free(small[i]);

    /* Descriptors, read with raw getdents64 into a stack buffer. */
    char fds[512] = "";
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        dt_die("open /proc/self/fd");
    char dents[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(dents + off);
            if (d->name[0] != '.' && atoi(d->name) != dfd) {
                size_t used = strlen(fds);
                snprintf(fds + used, sizeof fds - used, "%s%s", used ? "," : "", d->name);
            }
            off += d->reclen;
        }
    }
    close(dfd);

    int threads = 0;
    DIR *t = opendir("/proc/self/task");
    if (!t)
        dt_die("opendir /proc/self/task");
    for (struct dirent *e; (e = readdir(t));)
        threads += e->d_name[0] != '.';
    closedir(t);

    int shim_maps = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        dt_die("fopen /proc/self/maps");
    char line[512];
    while (fgets(line, sizeof line, maps))
        shim_maps += strstr(line, "libdedup-canonical") != NULL || strstr(line, "/dev/shm/") != NULL;
    fclose(maps);

    dt_out("fds", "%s", fds);
    dt_out("threads", "%d", threads);
    dt_out("shim_maps", "%d", shim_maps);
    return 0;
}
