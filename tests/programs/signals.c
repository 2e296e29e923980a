/* Signals under the shim.
 *
 *   signals blocked-writers   worker threads that block every signal keep
 *                             rewriting duplicate pages the scanner merges;
 *                             must survive (prints survived=1)
 *   signals segv-default      a deliberate write to a read-only page: must die
 *                             of SIGSEGV, exactly as without the shim
 *   signals segv-handler      the program's own SIGSEGV handler (sigaction)
 *                             runs for its own fault and sees its siginfo;
 *                             sigaction reports the handler back; exit 42
 *   signals segv-blocked      SIGSEGV blocked, then a deliberate fault: dies of
 *                             SIGSEGV (the kernel forces the default action)
 */
#include "dtest.h"
#include <pthread.h>
#include <setjmp.h>

static char *region;
static volatile int stop;

static void *writer(void *arg)
{
    sigset_t all, now;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    if (!sigismember(&now, SIGSEGV)) { fprintf(stderr, "FAIL: mask does not show SIGSEGV blocked\n"); _exit(3); }
    unsigned long n = 0;
    while (!stop) {
        for (int p = 0; p < 256; p++)
            if (p % 7 == (int)(n % 7)) memset(region + (size_t)p * DT_PAGE, (int)(intptr_t)arg, DT_PAGE);
        n++;
        usleep(200);
    }
    return NULL;
}

static void *fault_addr;
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig == SIGSEGV && si->si_addr == fault_addr) _exit(42);
    _exit(43);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    region = mmap(NULL, 256 * DT_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(region, 1, 256 * DT_PAGE);
    if (!strcmp(mode, "blocked-writers")) {
        pthread_t t[2];
        for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, writer, (void *)(i + 2));
        sleep(3);
        stop = 1;
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        dt_out("survived", "1");
        return 0;
    }
    usleep(200 * 1000); /* let the scanner start and merge */
    char *ro = mmap(NULL, 16 * DT_PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fault_addr = ro + 5;
    if (!strcmp(mode, "segv-handler")) {
        struct sigaction sa, back;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        if (sigaction(SIGSEGV, &sa, NULL) != 0) return 2;
        if (sigaction(SIGSEGV, NULL, &back) != 0 || back.sa_sigaction != on_segv) {
            fprintf(stderr, "FAIL: sigaction does not report the program's handler\n");
            return 3;
        }
    }
    if (!strcmp(mode, "segv-blocked")) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGSEGV);
        sigprocmask(SIG_BLOCK, &s, NULL);
    }
    *(volatile char *)fault_addr = 1; /* the program's own bug */
    fprintf(stderr, "FAIL: the write to a read-only page did not fault\n");
    return 4;
}
