/* realloc of blocks bigger than the large heap's arenas take (4 MiB), which
 * have a mapping of their own: the shim resizes or moves the mapping
 * (mremap), as glibc does for its mmapped chunks, unless the scanner merged
 * pages of the block; then it copies, as before.
 *
 *   big_realloc [--rounds N] [--no-wait]
 *
 * grow: an 8 MiB block of unique bytes grows to 64 MiB. Prints grow_faults
 *   (page faults the realloc took: a copy faults in the 2048 pages of a new
 *   mapping, mremap none) and grow_bad_bytes; then the new part is filled
 *   with duplicates and the program waits for them to merge
 *   (grow_merge_wait_ms, -1 on timeout; not with --no-wait, for a run
 *   without the shim): the registry followed the block.
 * race: N rounds on one block of 4-page-periodic duplicates (merged while it
 *   lives) that the program writes to, grows and shrinks by realloc between
 *   5 and 40 MiB at random, with a short pause for the scanner between
 *   rounds; every page is checked after each realloc. Prints race_rounds,
 *   race_moved (rounds whose realloc took fewer faults than a quarter of the
 *   block's pages), race_bad_bytes. Exits 1 if a byte differs.
 */
#include "dtest.h"

#include <malloc.h>
#include <sys/resource.h>

static long minflt(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Page i of the race block holds (i % 4) + 16 * version[i]. */
static unsigned char page_byte(size_t i, const unsigned char *version)
{
    return (unsigned char)(i % 4 + 16 * version[i]);
}

int main(int argc, char **argv)
{
    long rounds = dt_arg_long(argc, argv, "--rounds", 40);
    size_t small = 8UL << 20, big = 64UL << 20;

    unsigned char *p = malloc(small);
    if (!p)
        dt_die("malloc");
    dt_fill_random(p, small, 5);
    long f0 = minflt();
    unsigned char *q = realloc(p, big);
    long f1 = minflt();
    if (!q)
        dt_die("realloc");
    dt_out("grow_faults", "%ld", f1 - f0);
    size_t bad = dt_check_random(q, small, 5);
    dt_out("grow_bad_bytes", "%zu", bad);
    /* the new part, from its first whole page: duplicates */
    unsigned char *fresh = (unsigned char *)(((uintptr_t)q + small + DT_PAGE - 1) & ~(uintptr_t)(DT_PAGE - 1));
    size_t fresh_len = (size_t)(q + big - fresh) & ~(size_t)(DT_PAGE - 1);
    memset(fresh, 0x6b, fresh_len);
    struct dt_range rg = {fresh, fresh_len};
    if (!dt_arg_flag(argc, argv, "--no-wait"))
        dt_out("grow_merge_wait_ms", "%.0f", dt_wait_merged(&rg, 1, 0.9, 20000));
    bad += dt_check_random(q, small, 5) + dt_count_not(fresh, fresh_len, 0x6b);
    free(q);

    /* race */
    size_t max_pages = (40UL << 20) / DT_PAGE;
    unsigned char *version = calloc(max_pages, 1);
    size_t pages = (5UL << 20) / DT_PAGE;
    unsigned char *b = malloc(pages * DT_PAGE);
    if (!b || !version)
        dt_die("malloc");
    for (size_t i = 0; i < pages; i++)
        memset(b + i * DT_PAGE, page_byte(i, version), DT_PAGE);
    uint64_t rng = 88172645463325252ULL;
    long moved = 0, r;
    size_t race_bad = 0;
    for (r = 0; r < rounds; r++) {
        dt_sleep_ms(5 + (double)(r % 4) * 10);
        /* the program's own writes: some pages change (breaking merges) */
        for (int k = 0; k < 64; k++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t i = rng % pages;
            version[i] = (unsigned char)((version[i] + 1) % 8);
            memset(b + i * DT_PAGE, page_byte(i, version), DT_PAGE);
        }
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        size_t npages = (5UL << 20) / DT_PAGE + rng % (max_pages - (5UL << 20) / DT_PAGE);
        long g0 = minflt();
        unsigned char *nb = realloc(b, npages * DT_PAGE);
        long g1 = minflt();
        if (!nb)
            dt_die("realloc");
        b = nb;
        size_t keep = npages < pages ? npages : pages;
        if ((size_t)(g1 - g0) < keep / 4)
            moved++;
        for (size_t i = 0; i < keep; i++)
            race_bad += dt_count_not(b + i * DT_PAGE, DT_PAGE, page_byte(i, version));
        for (size_t i = keep; i < npages; i++) {
            version[i] = 0;
            memset(b + i * DT_PAGE, page_byte(i, version), DT_PAGE);
        }
        pages = npages;
        if (race_bad)
            break;
    }
    free(b);
    free(version);
    dt_out("race_rounds", "%ld", r);
    dt_out("race_moved", "%ld", moved);
    dt_out("race_bad_bytes", "%zu", race_bad);
    if (bad || race_bad)
        dt_fail("%zu bytes wrong after realloc (%zu in the race)", bad + race_bad, race_bad);
    return 0;
}
