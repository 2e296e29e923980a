#include "scanner/signals.h"

#include <atomic>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include "scanner/batch_scan.h"
#include "scanner/large_bss.h"
#include "scanner/lifecycle.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"
#include "scanner/write_window.h"

extern "C" int __sigaction(int, const struct sigaction*, struct sigaction*);

namespace dedup {
namespace {

constexpr int kMaxSig = 65;

// The application's disposition of every signal the shim may catch, and
// whether the shim's handler is the one installed. Written under a tiny spin
// flag; read by the handlers under the same flag (never torn).
DEDUP_LARGE_BSS struct sigaction g_app[kMaxSig];
bool g_ours[kMaxSig];
std::atomic<int> g_app_busy{0};
std::atomic<bool> g_installed{false};

// Whether this thread's application code believes SIGSEGV is blocked.
__thread bool t_app_blocks_segv = false;

void lock_app() {
    int expected = 0;
    while (!g_app_busy.compare_exchange_weak(expected, 1, std::memory_order_acquire)) expected = 0;
}
void unlock_app() { g_app_busy.store(0, std::memory_order_release); }

// Signals whose default action ends the process, which the shim catches
// while the program leaves them at SIG_DFL: terminating ones get the exit
// report first, core-dumping ones get merged pages made dumpable. Then the
// process dies of the same signal.
bool terminates(int sig) { return sig == SIGTERM || sig == SIGINT || sig == SIGHUP; }
bool dumps_core(int sig) {
    switch (sig) {
        case SIGQUIT: case SIGILL: case SIGTRAP: case SIGABRT: case SIGBUS:
        case SIGFPE: case SIGSYS: case SIGXCPU: case SIGXFSZ: return true;
        default: return false;
    }
}
bool caught_while_default(int sig) { return terminates(sig) || dumps_core(sig); }

bool is_default(const struct sigaction& a) { return !(a.sa_flags & SA_SIGINFO) && a.sa_handler == SIG_DFL; }

bool is_write_fault(void* uc) {
    return (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
}

void set_default(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    __sigaction(sig, &dfl, nullptr);
}

// Dies of sig, as its default action would have made it: a fault re-executes
// (and faults again, now with the default action), a sent signal is sent
// again. The caller has set SIG_DFL.
void redeliver(int sig, siginfo_t* si) {
    bool refaults = si->si_code > 0 && (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    sys::call(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&one, 0, 8);
    if (!refaults) sys::call(SYS_tgkill, sys::getpid(), sys::gettid(), sig);
}

// A fault that is not the shim's: what the kernel would have done without
// it, through the application's disposition.
void chain(int sig, siginfo_t* si, void* uc) {
    lock_app();
    struct sigaction app = g_app[sig];
    if (app.sa_flags & SA_RESETHAND) {
        memset(&g_app[sig], 0, sizeof(g_app[sig]));
        g_app[sig].sa_handler = SIG_DFL;
    }
    unlock_app();
    bool kernel_fault = si->si_code > 0;
    // A fault while the program has SIGSEGV blocked kills it (the kernel
    // forces the default action); its handler is not run.
    bool forced_default = kernel_fault && t_app_blocks_segv;
    if (forced_default || (!(app.sa_flags & SA_SIGINFO) && (app.sa_handler == SIG_DFL || app.sa_handler == SIG_IGN))) {
        if (app.sa_handler == SIG_IGN && !kernel_fault) return;  // kill(SIGSEGV) ignored
        runtime_prepare_core_dump();
        set_default(sig);
        redeliver(sig, si);
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
    scan_recover_from_fault();  // the scanner reading a page it may not: does not return
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && is_write_fault(uc) &&
        window_explains_write_fault(reinterpret_cast<uintptr_t>(si->si_addr))) {
        errno = saved_errno;
        return;  // the write retries on a page that is writable again
    }
    chain(sig, si, uc);
    errno = saved_errno;
}

// A signal the program left at its default action, which ends the process.
void on_default_signal(int sig, siginfo_t* si, void*) {
    int saved_errno = errno;
    if (sig == SIGBUS) scan_recover_from_fault();  // as in on_fault
    if (terminates(sig)) runtime_report_at_signal();
    if (dumps_core(sig)) runtime_prepare_core_dump();
    lock_app();
    bool still_default = is_default(g_app[sig]);
    if (still_default) {
        set_default(sig);
        g_ours[sig] = false;
    }
    unlock_app();
    if (still_default) redeliver(sig, si);  // else the program installed a handler meanwhile: it had its chance
    errno = saved_errno;
}

int install(int sig, void (*handler)(int, siginfo_t*, void*), struct sigaction* prev) {
    struct sigaction ours;
    memset(&ours, 0, sizeof(ours));
    ours.sa_sigaction = handler;
    // The fault handler on the program's alternate stack, if it has one (a
    // stack overflow faults); the exit report needs more room than such a
    // stack may have, and runs on the thread's own.
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART | (sig == SIGSEGV ? SA_ONSTACK : 0);
    sigemptyset(&ours.sa_mask);
    return __sigaction(sig, &ours, prev);
}

}  // namespace

void fault_handler_install() {
    if (g_installed.load(std::memory_order_acquire)) return;
    lock_app();
    if (!g_installed.load(std::memory_order_relaxed)) {
        for (int sig = 1; sig < kMaxSig; ++sig) {
            if (sig != SIGSEGV && !caught_while_default(sig)) continue;
            struct sigaction cur;
            if (__sigaction(sig, nullptr, &cur) != 0) continue;
            g_app[sig] = cur;  // whatever the application had installed before us
            if (sig == SIGSEGV || is_default(cur)) g_ours[sig] = install(sig, sig == SIGSEGV ? on_fault : on_default_signal, nullptr) == 0;
        }
        g_installed.store(g_ours[SIGSEGV], std::memory_order_release);
    }
    unlock_app();
}

bool fault_handler_installed() { return g_installed.load(std::memory_order_acquire); }

long rt_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    runtime_ready();  // the handler may already be ours: initialise before answering
    bool managed = sig > 0 && sig < kMaxSig && fault_handler_installed() && (sig == SIGSEGV || caught_while_default(sig));
    struct sigaction copy;
    if (act) {
        memcpy(&copy, act, sizeof(copy));  // a bad pointer faults here, as in libc
        // A handler that blocks SIGSEGV while it runs would die on a write to
        // a page mid-merge: keep SIGSEGV deliverable.
        if (sig != SIGSEGV) sigdelset(&copy.sa_mask, SIGSEGV);
    }
    if (!managed) return __sigaction(sig, act ? &copy : nullptr, old) == 0 ? 0 : -errno;
    lock_app();
    struct sigaction prev = g_app[sig];
    long r = 0;
    if (act && sig != SIGSEGV) {
        // The program's own handler (or SIG_IGN) is installed as it asked;
        // SIG_DFL leaves (or puts back) the shim's.
        if (is_default(copy)) r = g_ours[sig] ? 0 : install(sig, on_default_signal, nullptr);
        else r = __sigaction(sig, &copy, nullptr);
        if (r == 0) g_ours[sig] = is_default(copy);
        else r = -errno;
    }
    if (act && r == 0) g_app[sig] = copy;
    unlock_app();
    if (old && r == 0) *old = prev;
    return r;
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
