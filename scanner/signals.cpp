#include "scanner/signals.h"

#include <atomic>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include "scanner/lifecycle.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"
#include "scanner/write_window.h"

extern "C" int __sigaction(int, const struct sigaction*, struct sigaction*);

namespace dedup {
namespace {

SigactionFn g_real_sigaction = nullptr;
std::atomic<bool> g_installed{false};
// The application's SIGSEGV disposition. Written by rt_sigaction under a
// tiny spin flag; read by the handler under the same flag (never torn).
struct sigaction g_app_action;
std::atomic<int> g_app_action_busy{0};

// Whether this thread's application code believes SIGSEGV is blocked.
__thread bool t_app_blocks_segv = false;

void lock_app_action() {
    int expected = 0;
    while (!g_app_action_busy.compare_exchange_weak(expected, 1, std::memory_order_acquire)) expected = 0;
}
void unlock_app_action() { g_app_action_busy.store(0, std::memory_order_release); }

bool is_write_fault(void* uc) {
    return (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
}

void set_default(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    g_real_sigaction(sig, &dfl, nullptr);
}

// A fault that is not the shim's: what the kernel would have done without
// it, through the application's disposition.
void chain(int sig, siginfo_t* si, void* uc) {
    lock_app_action();
    struct sigaction app = g_app_action;
    if (app.sa_flags & SA_RESETHAND) {
        memset(&g_app_action, 0, sizeof(g_app_action));
        g_app_action.sa_handler = SIG_DFL;
    }
    unlock_app_action();
    bool kernel_fault = si->si_code > 0;
    // A fault while the program has SIGSEGV blocked kills it (the kernel
    // forces the default action); its handler is not run.
    bool forced_default = kernel_fault && t_app_blocks_segv;
    if (forced_default || (!(app.sa_flags & SA_SIGINFO) && (app.sa_handler == SIG_DFL || app.sa_handler == SIG_IGN))) {
        if (app.sa_handler == SIG_IGN && !kernel_fault) return;  // kill(SIGSEGV) ignored
        // Default action: uninstall ourselves. A real fault re-executes and
        // kills the process with SIGSEGV; a sent signal is sent again.
        set_default(sig);
        if (!kernel_fault) sys::call(SYS_tgkill, sys::getpid(), sys::gettid(), sig);
        return;
    }
    sigset_t mask = app.sa_mask, old;
    if (!(app.sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
    sys::call(SYS_rt_sigprocmask, SIG_BLOCK, (long)&mask, (long)&old, 8);
    if (app.sa_flags & SA_SIGINFO) app.sa_sigaction(sig, si, uc);
    else app.sa_handler(sig);
    sys::call(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8);
}

void on_fault(int sig, siginfo_t* si, void* uc) {
    int saved_errno = errno;
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && is_write_fault(uc) &&
        window_explains_write_fault(reinterpret_cast<uintptr_t>(si->si_addr))) {
        errno = saved_errno;
        return;  // the write retries on a page that is writable again
    }
    chain(sig, si, uc);
    errno = saved_errno;
}

}  // namespace

void fault_handler_install(SigactionFn real_sigaction) {
    if (g_installed.load(std::memory_order_acquire) || !real_sigaction) return;
    g_real_sigaction = real_sigaction;
    struct sigaction ours, prev;
    memset(&ours, 0, sizeof(ours));
    ours.sa_sigaction = on_fault;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART;
    sigemptyset(&ours.sa_mask);
    lock_app_action();
    if (real_sigaction(SIGSEGV, &ours, &prev) == 0) {
        g_app_action = prev;  // whatever the application had installed before us
        g_installed.store(true, std::memory_order_release);
    }
    unlock_app_action();
}

bool fault_handler_installed() { return g_installed.load(std::memory_order_acquire); }

long rt_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    runtime_ready();  // the handler may already be ours: initialise before answering
    if (sig == SIGSEGV && fault_handler_installed()) {
        struct sigaction copy;
        if (act) memcpy(&copy, act, sizeof(copy));  // a bad pointer faults here, as in libc
        lock_app_action();
        struct sigaction prev = g_app_action;
        if (act) g_app_action = copy;
        unlock_app_action();
        if (old) *old = prev;
        return 0;
    }
    if (act && sig != SIGSEGV && sigismember(&act->sa_mask, SIGSEGV) == 1) {
        // A handler that blocks SIGSEGV while it runs would die on a write
        // to a page mid-merge: keep SIGSEGV deliverable.
        struct sigaction copy = *act;
        sigdelset(&copy.sa_mask, SIGSEGV);
        return __sigaction(sig, &copy, old) == 0 ? 0 : -errno;
    }
    return __sigaction(sig, act, old) == 0 ? 0 : -errno;
}

int rt_sigmask(RtSigmaskFn next, int how, const sigset_t* set, sigset_t* old) {
    if (!fault_handler_installed() && !t_app_blocks_segv &&
        !(set && how != SIG_UNBLOCK && sigismember(set, SIGSEGV) == 1))
        return next(how, set, old);  // not managing SIGSEGV, nor asked to block it: as is
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
    int r = next(how, use, old);
    if (r != 0) {
        t_app_blocks_segv = was_blocked;
        return r;
    }
    if (old && was_blocked) sigaddset(old, SIGSEGV);
    return 0;
}

}  // namespace dedup
