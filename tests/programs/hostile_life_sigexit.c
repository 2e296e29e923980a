/* A SIGTERM handler that calls exit() while threads churn through the
 * shim's wrappers (hostile lifecycle row 1).
 *
 *   hostile_life_sigexit [--threads N] [--status S]
 *
 * Worker threads mmap/write/munmap 64 KiB..256 KiB anonymous regions (sizes
 * the shim registers) and malloc/free 128 KiB blocks (served from the
 * shim's own mappings) in a tight loop, forever. The main thread blocks
 * SIGTERM, so a SIGTERM sent to the process is delivered to a worker,
 * usually while it is inside an interposed mmap/munmap/free. The handler
 * calls exit(S) (default 3), as many daemons do. Without the shim the
 * process exits with status S at once. The main thread prints
 * "ready=churning" once every worker has done some iterations, then sleeps.
 */
#include "dtest.h"
#include <pthread.h>

static volatile sig_atomic_t g_status = 3;
static volatile long g_iters[64];
static int g_touch, g_malloc;

static void on_term(int sig)
{
    (void)sig;
    exit(g_status);
}

static void *churn(void *arg)
{
    long id = (long)arg;
    size_t sizes[] = {64 << 10, 128 << 10, 256 << 10};
    for (unsigned long i = 0;; i++) {
        size_t len = sizes[i % 3];
        unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            dt_die("mmap");
        if (g_touch) {
            p[0] = (unsigned char)i;
            p[len - 1] = (unsigned char)i;
        }
        if (munmap(p, len) != 0)
            dt_die("munmap");
        if (g_malloc) {
            unsigned char *m = malloc(128 << 10);
            if (!m)
                dt_die("malloc");
            m[0] = 1;
            free(m);
        }
        g_iters[id]++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = (int)dt_arg_long(argc, argv, "--threads", 2);
    g_status = (int)dt_arg_long(argc, argv, "--status", 3);
    g_touch = dt_arg_flag(argc, argv, "--touch");
    g_malloc = dt_arg_flag(argc, argv, "--malloc");
    if (threads < 1 || threads > 64)
        return 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        dt_die("sigaction");

    /* Workers inherit an empty mask; the main thread then blocks SIGTERM so
     * the signal lands in a worker. */
    pthread_t t[64];
    for (long i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, churn, (void *)i) != 0)
            dt_die("pthread_create");
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);

    for (int spins = 0; spins < 5000; spins++) {
        int all = 1;
        for (int i = 0; i < threads; i++)
            all &= g_iters[i] > 100;
        if (all)
            break;
        dt_sleep_ms(1);
    }
    dt_out("ready", "churning");
    for (;;)
        dt_sleep_ms(1000);
}
