// Signal interposition: the shim keeps SIGSEGV for its fault handler.
// sigaction/signal/sysv_signal/bsd_signal for SIGSEGV are answered from the
// application's recorded disposition (scanner/fault_handler.cpp), and
// sigprocmask/pthread_sigmask never really block SIGSEGV: a write fault on a
// page mid-merge while SIGSEGV is blocked would make the kernel kill the
// process. The application still sees the mask it asked for, and its own
// faults get the default action, as a blocked SIGSEGV would.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "shim/export.h"
#include "scanner/fault_handler.h"
#include "scanner/runtime.h"
#include "shim/hook.h"


using namespace dedup;

EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    if (act && sig != SIGSEGV && sigismember(&act->sa_mask, SIGSEGV) == 1) {
        // A handler that blocks SIGSEGV while it runs would die on a write to
        // a page mid-merge: keep SIGSEGV deliverable.
        struct sigaction copy = *act;
        sigdelset(&copy.sa_mask, SIGSEGV);
        long r = rt_sigaction(sig, &copy, old);
        if (r < 0) { errno = (int)-r; return -1; }
        return 0;
    }
    long r = rt_sigaction(sig, act, old);
    if (r < 0) { errno = (int)-r; return -1; }
    return 0;
}

namespace {
using sighandler_fn = void (*)(int);
sighandler_fn install_bsd(int sig, sighandler_fn h, int flags) {
    struct sigaction act, old;
    memset(&act, 0, sizeof(act));
    act.sa_handler = h;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (sig > 0 && sig < NSIG && h != SIG_DFL && h != SIG_IGN && !(flags & SA_NODEFER)) sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) < 0) return SIG_ERR;
    return old.sa_handler;
}

using MaskFn = int (*)(int, const sigset_t*, sigset_t*);
NextSymbol<MaskFn> next_sigprocmask("sigprocmask");
NextSymbol<MaskFn> next_pthread_sigmask("pthread_sigmask");

// Whether this thread's application code believes SIGSEGV is blocked.
__thread bool t_app_blocks_segv = false;

int masked(MaskFn real, int how, const sigset_t* set, sigset_t* old) {
    if (!fault_handler_installed() && !t_app_blocks_segv) {
        if (set && how != SIG_UNBLOCK && sigismember(set, SIGSEGV) == 1) {
            // Not yet managing SIGSEGV: remember, in case we start later.
        } else {
            return real(how, set, old);
        }
    }
    bool was_blocked = t_app_blocks_segv;
    sigset_t copy;
    const sigset_t* use = set;
    if (set) {
        copy = *set;
        bool has = sigismember(&copy, SIGSEGV) == 1;
        if (how == SIG_BLOCK && has) t_app_blocks_segv = true;
        else if (how == SIG_UNBLOCK && has) t_app_blocks_segv = false;
        else if (how == SIG_SETMASK) t_app_blocks_segv = has;
        if (how != SIG_UNBLOCK) sigdelset(&copy, SIGSEGV);
        use = &copy;
    }
    int r = real(how, use, old);
    if (r != 0) {
        t_app_blocks_segv = was_blocked;
        return r;
    }
    if (old && was_blocked) sigaddset(old, SIGSEGV);
    return 0;
}
}  // namespace

namespace dedup {
// Read by the fault handler's chaining: the application's own fault with
// SIGSEGV "blocked" gets the default action, as the kernel would give it.
bool app_blocks_segv() { return t_app_blocks_segv; }
}  // namespace dedup

EXPORT int sigprocmask(int how, const sigset_t* set, sigset_t* old) {
    return masked(next_sigprocmask.get(), how, set, old);
}
EXPORT int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) {
    return masked(next_pthread_sigmask.get(), how, set, old);
}

EXPORT sighandler_fn signal(int sig, sighandler_fn h) { return install_bsd(sig, h, SA_RESTART); }
EXPORT sighandler_fn bsd_signal(int sig, sighandler_fn h) { return install_bsd(sig, h, SA_RESTART); }
EXPORT sighandler_fn sysv_signal(int sig, sighandler_fn h) {
    return install_bsd(sig, h, SA_RESETHAND | SA_NODEFER);
}
