/* Merges duplicates, then holds them until the driver lets it go (or kills
 * it). Used by the hostile lifecycle tests that look at the process from
 * outside: death by a signal, set-user-ID runs, planted symlinks.
 *
 *   hostile_life_hold [--copies N] [--buf-kib K] [--wait-live] [--no-wait-merge]
 *                     [--no-pagemap] [--timeout-ms T]
 *
 * Prints at_secure=<getauxval(AT_SECURE)>, euid, merged=<pages that look
 * merged>/<pages>, merge_wait_ms (-1 when they did not merge in time; with
 * --no-pagemap neither: it sleeps 300 ms instead, for processes that may
 * not read their own pagemap), for each of SIGTERM, SIGINT, SIGHUP the
 * disposition the program sees (disp_<n>=default|other), and with
 * --wait-live whether /dev/shm/libdedup.<pidns>.<pid>.json appeared
 * (live_file=1|0). Then "ready=held", waits on stdin, verifies the copies
 * (mismatches=<bytes>) and exits 0.
 */
#include "dtest.h"
#include <sys/auxv.h>

int main(int argc, char **argv)
{
    long copies = dt_arg_long(argc, argv, "--copies", 8);
    size_t buf = (size_t)dt_arg_long(argc, argv, "--buf-kib", 1024) * 1024;
    double timeout = (double)dt_arg_long(argc, argv, "--timeout-ms", 8000);
    if (copies < 2 || copies > 256)
        return 2;

    dt_out("at_secure", "%lu", getauxval(AT_SECURE));
    dt_out("euid", "%u", (unsigned)geteuid());
    size_t total = (size_t)copies * buf;
    unsigned char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        dt_die("mmap");
    for (long i = 0; i < copies; i++)
        dt_fill_random(region + (size_t)i * buf, buf, 4242);
    struct dt_range r = {region, total};
    if (dt_arg_flag(argc, argv, "--no-pagemap")) {
        /* A set-group-ID process is not dumpable: its /proc/self/pagemap
         * belongs to root. Give the scanner some time instead. */
        dt_sleep_ms(300);
    } else {
        if (!dt_arg_flag(argc, argv, "--no-wait-merge")) {
            double w = dt_wait_merged(&r, 1, 0.8, timeout);
            dt_out("merge_wait_ms", "%.0f", w);
        }
        dt_out("merged", "%zu/%zu", dt_merged_like(region, total), total / DT_PAGE);
    }

    int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        struct sigaction old;
        char key[32];
        snprintf(key, sizeof key, "disp_%d", sigs[i]);
        if (sigaction(sigs[i], NULL, &old) != 0)
            dt_die("sigaction");
        dt_out(key, "%s", old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO) ? "default" : "other");
    }

    if (dt_arg_flag(argc, argv, "--wait-live")) {
        char path[64];
        dt_live_path(path, sizeof path, (long)getpid());
        int seen = 0;
        for (int i = 0; i < 500 && !seen; i++) {
            seen = access(path, F_OK) == 0;
            if (!seen)
                dt_sleep_ms(10);
        }
        dt_out("live_file", "%d", seen);
    }

    dt_ready("held");
    size_t bad = 0;
    for (long i = 0; i < copies; i++)
        bad += dt_check_random(region + (size_t)i * buf, buf, 4242);
    dt_out("mismatches", "%zu", bad);
    return bad ? 1 : 0;
}
