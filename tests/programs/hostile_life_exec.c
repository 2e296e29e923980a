/* A preloaded process that execs another program once its live file is
 * there (further hostile lifecycle case: exec runs no destructor).
 *
 *   hostile_life_exec [--keep-preload]
 *
 * Merges some duplicates, waits up to 5 s for /dev/shm/libdedup.<pidns>.<pid>.json
 * (live_before=1|0), then execs /bin/sleep 0.2, with LD_PRELOAD removed from
 * the environment (a program started by a wrapper that strips it, or a
 * set-user-ID one, where the loader ignores it) or, with --keep-preload,
 * kept (the new image is preloaded too, but registers nothing).
 */
#include "dtest.h"

extern char **environ;

int main(int argc, char **argv)
{
    size_t buf = 1 << 20, total = 8 * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    for (int i = 0; i < 8; i++)
        dt_fill_random(region + (size_t)i * buf, buf, 31);
    struct dt_range r = {region, total};
    dt_out("merge_wait_ms", "%.0f", dt_wait_merged(&r, 1, 0.8, 8000));
    char path[64];
    dt_live_path(path, sizeof path, (long)getpid());
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        seen = access(path, F_OK) == 0;
        if (!seen)
            dt_sleep_ms(10);
    }
    dt_out("live_before", "%d", seen);
    if (!dt_arg_flag(argc, argv, "--keep-preload"))
        unsetenv("LD_PRELOAD");
    fflush(stdout);
    execle("/bin/sleep", "sleep", "0.2", (char *)NULL, environ);
    dt_die("exec /bin/sleep");
}
