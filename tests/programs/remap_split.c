/* mremap of a range the shim left in several VMAs, as stress-ng --mremap
 * does: the kernel refuses (EFAULT) to resize or move a range of more than
 * one VMA, so a range that is one VMA without the shim must be one for the
 * kernel again before it resizes or moves it.
 *
 *   remap_split [--pages P]
 *
 * For each case a fresh region of P pages: its first half duplicates (the
 * shim merges them), its second half unique and written, so both halves
 * have their own pages. Once the first half is merged, MADV_UNMERGEABLE
 * gives it back: the shim copies it into place from a scratch mapping of its
 * own, and the kernel keeps that piece a VMA apart (another anon_vma) even
 * though no memfd page is left. Then one mremap:
 *   grow          P -> 2P pages, MREMAP_MAYMOVE
 *   shrink_fixed  P -> P/2 pages to a free address (MAYMOVE|FIXED)
 *   move_fixed    P -> P pages to a free address (MAYMOVE|FIXED)
 *   split_by_prog the program itself made a page read-only first: EFAULT
 *                 is the kernel's answer and must stay so.
 * Prints <case>=<ret>:<errno>, <case>_vmas (VMAs over the region before the
 * mremap), <case>_bad_bytes (contents after), merged_<case> (pages that were
 * merged before the unmerge); exits 1 if a byte differs.
 */
#include "hostile.h"

static void fill_dup(unsigned char *p, size_t pages)
{
    for (size_t i = 0; i < pages; i++)
        memset(p + i * DT_PAGE, 0x40 + (int)(i % 4), DT_PAGE);
}

static size_t check_dup(const unsigned char *p, size_t pages)
{
    size_t bad = 0;
    for (size_t i = 0; i < pages; i++)
        bad += dt_count_not(p + i * DT_PAGE, DT_PAGE, (unsigned char)(0x40 + i % 4));
    return bad;
}

/* A free address for len bytes (mapped, then unmapped again). */
static unsigned char *free_address(size_t len)
{
    unsigned char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap probe");
    munmap(p, len);
    return p;
}

static void one_case(const char *name, size_t pages, int shim)
{
    size_t len = pages * DT_PAGE, half = len / 2;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap region");
    fill_dup(p, pages / 2);
    dt_fill_random(p + half, half, 11);

    char key[64];
    struct dt_range r = {p, half};
    /* the test checks merged_<case> >= 0.9 of the half: wait for that many */
    if (shim && dt_wait_merged(&r, 1, 0.9, 10000) < 0)
        fprintf(stderr, "%s: only %zu of %zu pages of the first half look merged after 10 s\n", name,
                dt_merged_like(p, half), half / DT_PAGE);
    snprintf(key, sizeof key, "merged_%s", name);
    dt_out(key, "%zu", dt_merged_like(p, half));
    if (madvise(p, half, MADV_UNMERGEABLE) != 0)
        dt_die("madvise unmergeable");
    int split_by_prog = strcmp(name, "split_by_prog") == 0;
    if (split_by_prog && mprotect(p + half, DT_PAGE, PROT_READ) != 0)
        dt_die("mprotect");
    snprintf(key, sizeof key, "%s_vmas", name);
    dt_out(key, "%ld", h_vmas_in(p, len));

    size_t new_len = len;
    void *q;
    if (!strcmp(name, "grow") || split_by_prog) {
        new_len = 2 * len;
        q = mremap(p, len, new_len, MREMAP_MAYMOVE);
    } else if (!strcmp(name, "shrink_fixed")) {
        new_len = half;
        q = mremap(p, len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, free_address(new_len));
    } else {
        q = mremap(p, len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, free_address(new_len));
    }
    int e = q == MAP_FAILED ? errno : 0;
    dt_out(name, "%d:%s", q == MAP_FAILED ? -1 : 0, dt_errname(e));
    unsigned char *at = q == MAP_FAILED ? p : (unsigned char *)q;
    size_t kept = q == MAP_FAILED ? len : (new_len < len ? new_len : len);
    size_t bad = check_dup(at, (kept < half ? kept : half) / DT_PAGE);
    if (kept > half)
        bad += dt_check_random(at + half, kept - half, 11);
    if (new_len > len && q != MAP_FAILED)
        bad += dt_count_not(at + len, new_len - len, 0);
    snprintf(key, sizeof key, "%s_bad_bytes", name);
    dt_out(key, "%zu", bad);
    if (bad)
        dt_fail("%s: %zu bytes differ after mremap", name, bad);
    munmap(at, q == MAP_FAILED ? len : new_len);
}

int main(int argc, char **argv)
{
    size_t pages = (size_t)dt_arg_long(argc, argv, "--pages", 2048) & ~(size_t)1;
    int shim = h_shim_loaded();
    one_case("grow", pages, shim);
    one_case("shrink_fixed", pages, shim);
    one_case("move_fixed", pages, shim);
    one_case("split_by_prog", pages, shim);
    dt_out("result", dt_failed ? "fail" : "ok");
    return dt_failed ? 1 : 0;
}
