/* The program's last thread leaves with pthread_exit: the process must end
 * with status 0, as without the shim (POSIX: as if exit(0)). The parent
 * forks a child from a non-main thread; in the child that thread returns
 * through pthread_exit after registering memory (so the child has a
 * scanner). The parent waits at most 10 s for the child and prints
 * child_status=<exit status> or child_status=hung.
 */
#include "dtest.h"
#include <pthread.h>

static void *forker(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        memset(p, 7, 1 << 20);  /* registered: the child's scanner starts */
        usleep(200 * 1000);
        pthread_exit(NULL);     /* the child's only program thread leaves */
    }
    for (int i = 0; i < 100; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r < 0) { dt_out("waitpid_error", "%s", strerror(errno)); return NULL; }
        if (r == pid) {
            dt_out("child_status", "%d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return NULL;
        }
        usleep(100 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    dt_out("child_status", "hung");
    return NULL;
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, forker, NULL);
    pthread_join(t, NULL);
    return 0;
}
