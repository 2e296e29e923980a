// Signal interposition: sigaction and the functions built on it, and the
// signal masks. The policy (SIGSEGV kept for the fault handler, never really
// blocked) is the runtime's: scanner/signals.h.
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"

using namespace dedup;

EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    return (int)set_errno(rt_sigaction(sig, act, old));
}

namespace {
using sighandler_fn = void (*)(int);

// signal(), bsd_signal() and sysv_signal() as glibc builds them on sigaction.
sighandler_fn install_handler(int sig, sighandler_fn h, int flags) {
    struct sigaction act, old;
    memset(&act, 0, sizeof(act));
    act.sa_handler = h;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (sig > 0 && sig < NSIG && h != SIG_DFL && h != SIG_IGN && !(flags & SA_NODEFER)) sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) < 0) return SIG_ERR;
    return old.sa_handler;
}

NextSymbol<RtSigmaskFn> next_sigprocmask("sigprocmask");
NextSymbol<RtSigmaskFn> next_pthread_sigmask("pthread_sigmask");
}  // namespace

EXPORT sighandler_fn signal(int sig, sighandler_fn h) { return install_handler(sig, h, SA_RESTART); }
EXPORT sighandler_fn bsd_signal(int sig, sighandler_fn h) { return install_handler(sig, h, SA_RESTART); }
EXPORT sighandler_fn sysv_signal(int sig, sighandler_fn h) {
    return install_handler(sig, h, SA_RESETHAND | SA_NODEFER);
}

EXPORT int sigprocmask(int how, const sigset_t* set, sigset_t* old) {
    return rt_sigmask(next_sigprocmask.get(), how, set, old);
}
EXPORT int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) {
    return rt_sigmask(next_pthread_sigmask.get(), how, set, old);
}
