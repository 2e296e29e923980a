/* Merging after the program called mlockall(MCL_CURRENT).
 *
 *   hostile_mlockall_merge --mode cycle|locked
 *
 * mlockall(MCL_CURRENT) locks and populates every mapping of the process,
 * the shim's own views of its canonical store included. The store's
 * MAP_PRIVATE view is where every merge takes its piece from (mremap with
 * MREMAP_DONTUNMAP moves its page tables onto the duplicates), on the
 * premise that nothing ever touches it, so its page tables are empty. After
 * the populate they hold pages captured when the slots were still empty:
 * every later merge maps them, and the merged pages read zeros.
 *
 * The program first merges a small pair (so the shim's store exists), then
 * calls mlockall(MCL_CURRENT) (cycle: and munlockall() at once; locked:
 * stays locked, the new regions below are not: no MCL_FUTURE), then writes
 * A (64 different pages) and its copy B, waits until both are merged and
 * checks every byte.
 *
 * Prints merged (1: A and B were merged), bad_pages (pages of A and B not
 * holding what the program wrote), zero_pages (of those, all zero),
 * vm_rss_kb (the process's VmRSS afterwards); exits 1 if a page is wrong.
 */
#include "hostile.h"

#define NP 64

static long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *mode = dt_arg_str(argc, argv, "--mode", "cycle");
    int shim = h_shim_loaded();
    dt_out("with_shim", "%d", shim);
    size_t len = NP * DT_PAGE;

    unsigned char *w = h_map(16), *w2 = h_map(16);
    for (size_t i = 0; i < 16; i++)
        dt_fill_random(w + i * DT_PAGE, DT_PAGE, 0xAAAA0000u + i);
    memcpy(w2, w, 16 * DT_PAGE);
    if (shim)
        h_wait_file_vmas(w2, 16 * DT_PAGE, 16 * DT_PAGE, 5000);

    if (mlockall(MCL_CURRENT) != 0)
        dt_die("mlockall");
    if (!strcmp(mode, "cycle") && munlockall() != 0)
        dt_die("munlockall");

    unsigned char *a = h_map(NP), *b = h_map(NP);
    for (size_t i = 0; i < NP; i++)
        dt_fill_random(a + i * DT_PAGE, DT_PAGE, 0xBBBB0000u + i);
    memcpy(b, a, len);
    int merged = shim ? h_wait_file_vmas(a, len, len, 5000) && h_wait_file_vmas(b, len, len, 5000) : 0;
    dt_out("merged", "%d", merged);
    long bad = 0, zero = 0;
    for (size_t i = 0; i < NP; i++) {
        unsigned char e[DT_PAGE];
        dt_fill_random(e, DT_PAGE, 0xBBBB0000u + i);
        for (int side = 0; side < 2; side++) {
            const unsigned char *p = (side ? b : a) + i * DT_PAGE;
            if (memcmp(p, e, DT_PAGE) != 0) {
                bad++;
                zero += dt_count_not(p, DT_PAGE, 0) == 0;
            }
        }
    }
    dt_out("bad_pages", "%ld", bad);
    dt_out("zero_pages", "%ld", zero);
    dt_out("vm_rss_kb", "%ld", vm_rss_kb());
    if (!strcmp(mode, "locked"))
        munlockall();
    return bad ? 1 : 0;
}
