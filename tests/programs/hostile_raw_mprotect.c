/* mprotect by raw system call inside a region the shim merges.
 *
 *   hostile_raw_mprotect --how glibc|inline --prot read|none [--wait-ms T]
 *
 * Programs change protections without calling mprotect(): through glibc's
 * syscall(SYS_mprotect, ...) (the shim wraps syscall() only for the read
 * family), or with a `syscall` instruction of their own (Go's runtime, JITs,
 * inline assembly), which no interposer sees. The shim then still believes
 * the page is read-write.
 *
 * R (64 pages, every page different) and its twin T hold the same bytes,
 * so every page of R merges. Page 20 of R is made PROT_READ (or PROT_NONE)
 * by the raw call before T is written; page 40 is made PROT_READ by the
 * ordinary mprotect() (which the shim sees: an in-program control). The
 * program waits until R is merged around them (at most T ms), then checks:
 *   - /proc/self/maps still says page 20 is "r--p" ("---p");
 *   - a forked child that writes (reads, for PROT_NONE) page 20 dies of
 *     SIGSEGV;
 *   - page 20 holds its bytes (PROT_READ);
 *   - the process is alive: with PROT_NONE, a scanner that hashes the page
 *     kills it with SIGSEGV.
 * Today a merge window's restore, or the merge's remap itself, gives page 20
 * the protection the shim recorded for the region: read-write again.
 *
 * Prints merged_pages (pages of R in memfd pieces), page20_perms,
 * page40_perms, child_signal (20), content_ok; exits 1 if page 20 lost its
 * protection.
 */
#include "hostile.h"

#include <sys/syscall.h>

#define NP 64
#define RAW 20
#define LIBC 40

static long raw_mprotect(const char *how, void *addr, size_t len, int prot)
{
    if (!strcmp(how, "glibc"))
        return syscall(SYS_mprotect, addr, len, prot);
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"((long)SYS_mprotect), "D"(addr), "S"(len), "d"((long)prot)
                     : "rcx", "r11", "memory");
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

static unsigned char *page20;
static int touch_write;

static void child_touch(void *arg)
{
    (void)arg;
    if (touch_write)
        page20[100] = 0x5a;
    else
        (void)*(volatile unsigned char *)(page20 + 100);
}

int main(int argc, char **argv)
{
    const char *how = dt_arg_str(argc, argv, "--how", "glibc");
    const char *prots = dt_arg_str(argc, argv, "--prot", "read");
    long wait_ms = dt_arg_long(argc, argv, "--wait-ms", 5000);
    int prot = !strcmp(prots, "none") ? PROT_NONE : PROT_READ;
    const char *want = prot == PROT_NONE ? "---p" : "r--p";
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);

    unsigned char *r = h_map(NP), *t = h_map(NP);
    for (size_t i = 0; i < NP; i++)
        dt_fill_random(r + i * DT_PAGE, DT_PAGE, 0xC0FFEE00u + i);
    page20 = r + RAW * DT_PAGE;
    if (raw_mprotect(how, page20, DT_PAGE, prot) != 0)
        dt_die("raw mprotect");
    if (mprotect(r + LIBC * DT_PAGE, DT_PAGE, PROT_READ) != 0)
        dt_die("mprotect");
    dt_out("page20_perms_before", "%s", dt_perms(page20, DT_PAGE));
    memcpy(t, r, RAW * DT_PAGE); /* T = R, page 20 included (T's copy is readable) */
    for (size_t i = RAW; i < NP; i++)
        dt_fill_random(t + i * DT_PAGE, DT_PAGE, 0xC0FFEE00u + i);

    size_t len = NP * DT_PAGE;
    if (shim) {
        /* all but the two protected pages */
        if (!h_wait_file_vmas(r, len, (NP - 2) * DT_PAGE, wait_ms))
            fprintf(stderr, "R not merged in time (%zu bytes in memfd pieces)\n", h_file_vma_bytes(r, len));
        dt_sleep_ms(200); /* more passes, more windows around page 20 */
    }
    dt_out("merged_pages", "%zu", h_file_vma_bytes(r, len) / DT_PAGE);
    const char *p20 = dt_perms(page20, DT_PAGE);
    char perms20[16];
    snprintf(perms20, sizeof perms20, "%s", p20);
    dt_out("page20_perms", "%s", perms20);
    dt_out("page40_perms", "%s", dt_perms(r + LIBC * DT_PAGE, DT_PAGE));

    touch_write = prot == PROT_READ;
    int st = dt_in_child(child_touch, NULL);
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    dt_out("child_signal", "%d", sig);
    int content_ok = 1;
    if (prot == PROT_READ) {
        unsigned char expect[DT_PAGE];
        dt_fill_random(expect, DT_PAGE, 0xC0FFEE00u + RAW);
        content_ok = memcmp(page20, expect, DT_PAGE) == 0;
    }
    dt_out("content_ok", "%d", content_ok);
    int ok = !strcmp(perms20, want) && sig == SIGSEGV && content_ok;
    if (!ok)
        dt_fail("page 20 should be %s and fault in a child; it is %s (child signal %d)", want, perms20, sig);
    return ok ? 0 : 1;
}
