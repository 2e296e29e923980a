/* Memory the shim never saw mapped (an mmap by a syscall instruction of the
 * program: glibc's syscall() is interposed too) that carries
 * advice before madvise(MADV_MERGEABLE) registers it: DONTFORK, DONTDUMP.
 * After the merge every piece of the range must still carry both (VmFlags
 * dc and dd), a forked child must not see the range, and the bytes must be
 * intact.
 * Output: merged_pages, pieces, pieces_dc_dd, child_sigsegv, mismatches.
 * Argument: "shim" waits for the merge.
 */
#include "dtest.h"

#include <sys/syscall.h>

#define LEN (4UL << 20)

int main(int argc, char **argv)
{
    int shim = argc > 1 && !strcmp(argv[1], "shim");
    unsigned char *p = (unsigned char *)dt_unseen_mmap(LEN);
    if (p == MAP_FAILED)
        dt_die("mmap");
    if (madvise(p, LEN, MADV_DONTFORK) || madvise(p, LEN, MADV_DONTDUMP))
        dt_die("madvise");
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        dt_fill_random(p + i * DT_PAGE, DT_PAGE, 7 + i % 4);
    if (madvise(p, LEN, MADV_MERGEABLE) && shim)
        dt_die("madvise MERGEABLE");
    size_t merged = dt_merged_like(p, LEN);
    for (double t0 = dt_now_ms(); shim && merged < LEN / DT_PAGE - 4 && dt_now_ms() - t0 < 10000;) {
        dt_sleep_ms(20);
        merged = dt_merged_like(p, LEN);
    }
    dt_out("merged_pages", "%zu", merged);

    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        dt_die("smaps");
    char line[512];
    int in = 0, pieces = 0, both = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = lo < (uintptr_t)p + LEN && hi > (uintptr_t)p;
            pieces += in;
        } else if (in && !strncmp(line, "VmFlags:", 8)) {
            both += strstr(line, " dc") && strstr(line, " dd");
        }
    }
    fclose(f);
    dt_out("pieces", "%d", pieces);
    dt_out("pieces_dc_dd", "%d", both);

    pid_t pid = fork();
    if (pid == 0) {
        volatile unsigned char c = p[LEN / 2];
        (void)c;
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    dt_out("child_sigsegv", "%d", WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    size_t bad = 0;
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        bad += dt_check_random(p + i * DT_PAGE, DT_PAGE, 7 + i % 4);
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
