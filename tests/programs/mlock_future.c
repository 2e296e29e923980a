/* mlockall(MCL_FUTURE), then duplicates: locked memory must stay the
 * program's own pages (never merged), and the shim's own mappings must not
 * be locked and populated (its store is a sparse 64 GiB memfd: a locked
 * mapping of it would allocate all of it). RLIMIT_AS bounds the damage a
 * regression could do to the machine.
 * Output: vmlck_kb, region_kb, file_pages, mismatches.
 */
#include "dtest.h"

#include <sys/resource.h>

#define LEN (8UL << 20)

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n))
            v = atol(line + n);
    if (f)
        fclose(f);
    return v;
}

int main(void)
{
    struct rlimit as = {4UL << 30, 4UL << 30};
    setrlimit(RLIMIT_AS, &as);
    if (mlockall(MCL_FUTURE))
        dt_die("mlockall");
    unsigned char *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        dt_die("mmap");
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        dt_fill_random(p + i * DT_PAGE, DT_PAGE, 11 + i % 4);
    dt_sleep_ms(700);  /* several passes at DEDUP_SLEEP_MS=0 */
    dt_out("vmlck_kb", "%ld", status_kb("VmLck:"));
    dt_out("region_kb", "%lu", LEN / 1024);
    dt_out("file_pages", "%zu", dt_file_pages(p, LEN));
    size_t bad = 0;
    for (size_t i = 0; i < LEN / DT_PAGE; i++)
        bad += dt_check_random(p + i * DT_PAGE, DT_PAGE, 11 + i % 4);
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
