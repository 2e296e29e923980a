#include "scanner/fault_handler.h"

#include <atomic>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "scanner/state.h"
#include "scanner/sys.h"

namespace dedup {
namespace {

SigactionFn g_real_sigaction = nullptr;
std::atomic<bool> g_installed{false};
// The application's SIGSEGV disposition. Written by app_sigaction under a
// tiny spin flag; read by the handler (a torn read is impossible: we copy
// under the same flag).
struct sigaction g_app_action;
std::atomic<int> g_app_action_busy{0};

// Loop breaker: a thread that faults twice at the same page with no window
// opened or closed in between was not stopped by the scanner.
__thread uintptr_t t_last_fault_page = 0;
__thread uint64_t t_last_fault_seq = ~0ull;

void lock_app_action() {
    int expected = 0;
    while (!g_app_action_busy.compare_exchange_weak(expected, 1, std::memory_order_acquire)) expected = 0;
}
void unlock_app_action() { g_app_action_busy.store(0, std::memory_order_release); }

bool is_write_fault(void* uc) {
#if defined(__x86_64__)
    return (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)uc;
    return true;
#endif
}

bool fault_is_ours(siginfo_t* si, void* uc) {
    if (si->si_code != SEGV_ACCERR || !is_write_fault(uc)) return false;
    State& s = state();
    if (s.lock.held_by_me()) return false;  // the shim itself faulted: not a window
    uintptr_t pg = reinterpret_cast<uintptr_t>(si->si_addr) & ~(kPageSize - 1);
    uint64_t seq = s.window_seq.load(std::memory_order_acquire);
    if (pg == t_last_fault_page && seq == t_last_fault_seq) return false;
    s.lock.lock();  // waits for the scanner's window to close
    Region* r = s.regions.find(pg);
    bool writable = r && (r->prot & PROT_WRITE);
    // Read under the lock, where no window is open: a window opened after we
    // let go (the scanner may cover this page again before the write
    // retries) changes it, so the retry's fault is still recognised.
    uint64_t closed_seq = s.window_seq.load(std::memory_order_acquire);
    s.lock.unlock();
    if (!writable) return false;
    t_last_fault_page = pg;
    t_last_fault_seq = closed_seq;
    return true;
}

void set_default_and_return(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    g_real_sigaction(sig, &dfl, nullptr);
}

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
    bool forced_default = kernel_fault && app_blocks_segv && app_blocks_segv();
    if (forced_default || (!(app.sa_flags & SA_SIGINFO) && (app.sa_handler == SIG_DFL || app.sa_handler == SIG_IGN))) {
        if (app.sa_handler == SIG_IGN && !kernel_fault) return;  // kill(SIGSEGV) ignored
        // Default action: uninstall ourselves. A real fault re-executes and
        // kills the process with SIGSEGV; a sent signal is sent again.
        set_default_and_return(sig);
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
    if (sig == SIGSEGV && fault_is_ours(si, uc)) {
        errno = saved_errno;
        return;  // the write retries on a page that is writable again
    }
    chain(sig, si, uc);
    errno = saved_errno;
}

}  // namespace

bool signal_is_managed(int sig) { return sig == SIGSEGV && g_installed.load(std::memory_order_acquire); }

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

int app_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
    (void)sig;
    struct sigaction copy;
    if (act) memcpy(&copy, act, sizeof(copy));  // a bad pointer faults here, as in libc
    lock_app_action();
    struct sigaction prev = g_app_action;
    if (act) g_app_action = copy;
    unlock_app_action();
    if (old) *old = prev;
    return 0;
}

}  // namespace dedup
