/* A forked child deduplicates its own memory.
 *
 * The parent fills a region with duplicates and lets them merge, then forks.
 * The child writes the region (breaking every shared page into its own copy,
 * so nothing is shared with the parent), makes one mapping call (munmap of an
 * unrelated page), and waits for its own scanner to merge its copies again.
 * Prints child_merged=<pages> (shared pages in the child after waiting) and
 * parent_intact=1 when the parent's bytes are unchanged afterwards.
 */
#include "dtest.h"

static long shared_pages(unsigned char *a, size_t n)
{
    int fd = open("/proc/self/pagemap", O_RDONLY);
    long c = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = 0;
        volatile unsigned char x = a[i * DT_PAGE];
        (void)x;
        if (pread(fd, &e, 8, (off_t)((uintptr_t)(a + i * DT_PAGE) / DT_PAGE * 8)) == 8 && (e & PM_FILE)) c++;
    }
    close(fd);
    return c;
}

int main(void)
{
    size_t n = 1024;
    unsigned char *a = mmap(NULL, n * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n; i++) memset(a + i * DT_PAGE, (int)(i % 8) + 1, DT_PAGE);
    for (int t = 0; t < 100 && shared_pages(a, n) < (long)n * 9 / 10; t++) usleep(100 * 1000);
    dt_out("parent_merged", "%ld", shared_pages(a, n));
    unsigned char *spare = mmap(NULL, 4 * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (size_t i = 0; i < n; i++) memset(a + i * DT_PAGE, (int)(i % 8) + 101, DT_PAGE);
        munmap(spare + 3 * DT_PAGE, DT_PAGE);  /* one mapping call: the child's scanner may start */
        long merged = 0;
        for (int t = 0; t < 100 && (merged = shared_pages(a, n)) < (long)n * 9 / 10; t++) usleep(100 * 1000);
        for (size_t i = 0; i < n; i++)
            if (a[i * DT_PAGE + 7] != (unsigned char)((i % 8) + 101)) { fprintf(stderr, "FAIL: child page %zu\n", i); _exit(1); }
        dt_out("child_merged", "%ld", merged);
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    int intact = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t o = 0; o < DT_PAGE; o += 511)
            if (a[i * DT_PAGE + o] != (unsigned char)((i % 8) + 1)) intact = 0;
    dt_out("parent_intact", "%d", intact);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 && intact ? 0 : 1;
}
