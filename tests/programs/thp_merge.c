/* Transparent huge pages under the shim (issue 7, item 3).
 *
 * Maps a 2 MiB-aligned region of 16 MiB with MADV_HUGEPAGE and fills it:
 *   dups     each 2 MiB block a copy of one block of 512 distinct pages:
 *            every huge page is a whole run of duplicates (merged without
 *            splitting);
 *   unique   random content: nothing to merge, the huge pages must stay;
 *   partial  the first half of each block duplicates the first block's,
 *            the second half is unique: merging splits every huge page.
 * The region is mapped with a raw mmap system call, which the shim does not
 * see, and filled before madvise(MADV_MERGEABLE) registers it: the scanner
 * never meets a huge page half written (it would rightly split that one).
 * Waits (under the shim) until the expected pages are merged or 10 s passed,
 * then lets the scanner run a while longer and reports:
 *   huge_kb_before, huge_kb_after (AnonHugePages of the region, smaps),
 *   merged_pages (pagemap: file or untouched), mismatches.
 * Arguments: mode, then "shim" or "plain".
 */
#include "dtest.h"

#include <sys/syscall.h>

#define BLOCK (2UL << 20)
#define REGION (8 * BLOCK)

static unsigned char *region;

static uint64_t seed_of(const char *mode, size_t page)
{
    size_t block = page / 512, in = page % 512;
    if (!strcmp(mode, "dups"))
        return 100 + in;
    if (!strcmp(mode, "partial"))
        return in < 256 ? 100 + in : 10000 + page;
    return 10000 + block * 512 + in;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *mode = argv[1];
    int shim = !strcmp(argv[2], "shim");
    unsigned char *raw = (unsigned char *)dt_unseen_mmap(REGION + BLOCK);
    if (raw == MAP_FAILED)
        dt_die("mmap");
    region = (unsigned char *)(((uintptr_t)raw + BLOCK - 1) & ~(BLOCK - 1));
    if (madvise(region, REGION, MADV_HUGEPAGE))
        dt_die("madvise HUGEPAGE");
    size_t pages = REGION / DT_PAGE;
    for (size_t i = 0; i < pages; i++)
        dt_fill_random(region + i * DT_PAGE, DT_PAGE, seed_of(mode, i));
    long before = dt_anon_huge_kb(region, REGION);
    dt_out("huge_kb_before", "%ld", before);
    if (madvise(region, REGION, MADV_MERGEABLE) && shim)
        dt_die("madvise MERGEABLE");
    if (madvise(region, REGION, MADV_HUGEPAGE))  /* now on a registered region: recorded */
        dt_die("madvise HUGEPAGE");

    size_t expect = !strcmp(mode, "dups") ? pages - 8 : !strcmp(mode, "partial") ? pages / 2 - 8 : 0;
    double t0 = dt_now_ms();
    size_t merged = dt_merged_like(region, REGION);
    while (shim && merged < expect && dt_now_ms() - t0 < 10000) {
        dt_sleep_ms(20);
        merged = dt_merged_like(region, REGION);
    }
    if (shim)
        dt_sleep_ms(500);  /* more passes over what is left */
    merged = dt_merged_like(region, REGION);
    dt_out("merged_pages", "%zu", merged);
    dt_out("huge_kb_after", "%ld", dt_anon_huge_kb(region, REGION));
    size_t bad = 0;
    for (size_t i = 0; i < pages; i++)
        bad += dt_check_random(region + i * DT_PAGE, DT_PAGE, seed_of(mode, i));
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
