/* madvise / mremap / mmap by raw system call on memory the shim merged.
 *
 *   hostile_raw_calls --call dontneed|mremap_grow --how glibc|inline
 *
 * Calls made through glibc's syscall() or a `syscall` instruction of the
 * program's own bypass the shim's wrappers, so the kernel acts on the
 * memfd pieces the shim put there, with their semantics instead of those
 * of the private anonymous memory the program mapped:
 *
 *   dontneed     MADV_DONTNEED on merged pages: anonymous memory reads
 *                zeros afterwards; a private file mapping brings the
 *                canonical page back. Prints dontneed_ret, nonzero_pages
 *                (of 32 discarded pages, those not reading zeros).
 *   mremap_grow  mremap(R, 64 pages, 80 pages, 0), growing in place into
 *                free pages: on one anonymous VMA the new pages read zeros,
 *                until the program writes them. On memfd pieces it fails
 *                (EFAULT: the range is several VMAs), or a memfd piece
 *                grows over the next slots of the canonical store: the new
 *                pages read zeros at first, and then, as the shim fills
 *                those slots with other merged pages (the program merges
 *                64 more pages), the contents of those pages. Prints
 *                mremap_errno, tail_nonzero_at_once, tail_nonzero_later,
 *                bad_pages.
 *
 * R (64 pages, every page different) and its twin T hold the same bytes,
 * so R merges (the program waits for it, at most 5 s). Exits 1 on any
 * difference from what the kernel does without the shim.
 */
#include "hostile.h"

#include <sys/syscall.h>

#define NP 64

static const char *how;

static long raw6(long nr, long a, long b, long c, long d, long e, long f)
{
    if (!strcmp(how, "glibc"))
        return syscall(nr, a, b, c, d, e, f);
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

static unsigned char *map_pair(size_t pages, unsigned char **twin, uint64_t seed)
{
    unsigned char *r = h_map(pages);
    *twin = h_map(pages);
    for (size_t i = 0; i < pages; i++)
        dt_fill_random(r + i * DT_PAGE, DT_PAGE, seed + i);
    memcpy(*twin, r, pages * DT_PAGE);
    return r;
}

static int wait_merged(int shim, const void *r, size_t len)
{
    if (!shim)
        return 0;
    int ok = h_wait_file_vmas(r, len, len, 5000);
    if (!ok)
        fprintf(stderr, "not merged in time (%zu of %zu bytes in memfd pieces)\n", h_file_vma_bytes(r, len), len);
    return ok;
}

static int do_dontneed(int shim)
{
    unsigned char *t, *r = map_pair(NP, &t, 1000);
    size_t len = NP * DT_PAGE;
    dt_out("merged", "%d", wait_merged(shim, r, len));
    long ret = raw6(SYS_madvise, (long)(r + 16 * DT_PAGE), 32 * DT_PAGE, MADV_DONTNEED, 0, 0, 0);
    dt_out("dontneed_ret", "%ld", ret);
    long nonzero = 0;
    for (size_t i = 16; i < 48; i++)
        nonzero += dt_count_not(r + i * DT_PAGE, DT_PAGE, 0) != 0;
    long bad_kept = 0;
    for (size_t i = 0; i < NP; i++) {
        if (i >= 16 && i < 48)
            continue;
        unsigned char e[DT_PAGE];
        dt_fill_random(e, DT_PAGE, 1000 + i);
        bad_kept += memcmp(r + i * DT_PAGE, e, DT_PAGE) != 0;
    }
    dt_out("nonzero_pages", "%ld", nonzero);
    dt_out("bad_pages", "%ld", bad_kept);
    return ret != 0 || nonzero || bad_kept;
}

#define GROW 16

static int do_mremap_grow(int shim)
{
    unsigned char *t;
    unsigned char *r = h_map(NP + GROW);
    size_t len = NP * DT_PAGE, glen = GROW * DT_PAGE;
    t = h_map(NP);
    for (size_t i = 0; i < NP; i++)
        dt_fill_random(r + i * DT_PAGE, DT_PAGE, 2000 + i);
    memcpy(t, r, len);
    dt_out("merged", "%d", wait_merged(shim, r, len));
    dt_out("vmas_before", "%ld", h_vmas_in(r, len));
    /* The pages to grow into were mapped until now, so that nothing else
     * (the shim's metadata) was put there. */
    if (munmap(r + len, glen) != 0)
        dt_die("munmap tail");
    long ret = raw6(SYS_mremap, (long)r, (long)len, (long)(len + glen), 0, 0, 0);
    int err = ret == -1 ? errno : 0;
    dt_out("mremap_errno", "%s", dt_errname(err));
    if (ret == -1)
        return 1;
    if (ret != (long)r)
        dt_die("mremap moved");
    long at_once = 0, later = 0, bad = 0;
    for (size_t i = 0; i < GROW; i++)
        at_once += dt_count_not(r + len + i * DT_PAGE, DT_PAGE, 0) != 0;
    /* More merging: the store fills its next slots. */
    unsigned char *t2, *r2 = map_pair(NP, &t2, 5000);
    wait_merged(shim, r2, len);
    for (size_t i = 0; i < GROW; i++)
        later += dt_count_not(r + len + i * DT_PAGE, DT_PAGE, 0) != 0;
    for (size_t i = 0; i < NP; i++) {
        unsigned char e[DT_PAGE];
        dt_fill_random(e, DT_PAGE, 2000 + i);
        bad += memcmp(r + i * DT_PAGE, e, DT_PAGE) != 0;
    }
    dt_out("tail_nonzero_at_once", "%ld", at_once);
    dt_out("tail_nonzero_later", "%ld", later);
    dt_out("bad_pages", "%ld", bad);
    return at_once || later || bad;
}

int main(int argc, char **argv)
{
    const char *call = dt_arg_str(argc, argv, "--call", "dontneed");
    how = dt_arg_str(argc, argv, "--how", "glibc");
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    int bad;
    if (!strcmp(call, "dontneed"))
        bad = do_dontneed(shim);
    else if (!strcmp(call, "mremap_grow"))
        bad = do_mremap_grow(shim);
    else {
        fprintf(stderr, "unknown --call %s\n", call);
        return 2;
    }
    return bad ? 1 : 0;
}
