/* process_madvise(2) on this process with MADV_COLLAPSE over a region that
 * the shim has merged: must do what it does on plain anonymous memory
 * (collapse the range into huge pages), with the bytes intact.
 * Output: merged_pages (before the call), ret, err, huge_kb_after, mismatches.
 * Argument: "shim" waits for the merge first.
 */
#include "dtest.h"

#include <sys/syscall.h>
#include <sys/uio.h>

#define BLOCK (2UL << 20)
#define LEN (2 * BLOCK)

int main(int argc, char **argv)
{
    int shim = argc > 1 && !strcmp(argv[1], "shim");
    unsigned char *raw = mmap(NULL, LEN + BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        dt_die("mmap");
    unsigned char *p = (unsigned char *)(((uintptr_t)raw + BLOCK - 1) & ~(BLOCK - 1));
    if (madvise(p, LEN, MADV_NOHUGEPAGE))  /* small pages first, so there is something to collapse */
        dt_die("madvise");
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        dt_fill_random(p + i * DT_PAGE, DT_PAGE, 3 + i % 8);
    size_t merged = dt_merged_like(p, LEN);
    for (double t0 = dt_now_ms(); shim && merged < LEN / DT_PAGE - 8 && dt_now_ms() - t0 < 10000;) {
        dt_sleep_ms(20);
        merged = dt_merged_like(p, LEN);
    }
    dt_out("merged_pages", "%zu", merged);
    if (madvise(p, LEN, MADV_HUGEPAGE))
        dt_die("madvise HUGEPAGE");
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pidfd < 0)
        dt_die("pidfd_open");
    struct iovec iov = {p, LEN};
    errno = 0;
    long r = process_madvise(pidfd, &iov, 1, 25 /* MADV_COLLAPSE */, 0);  /* glibc's wrapper */
    dt_out("ret", "%ld", r);
    dt_out("err", "%d", r < 0 ? errno : 0);
    dt_out("huge_kb_after", "%ld", dt_anon_huge_kb(p, LEN));
    size_t bad = 0;
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        bad += dt_check_random(p + i * DT_PAGE, DT_PAGE, 3 + i % 8);
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
