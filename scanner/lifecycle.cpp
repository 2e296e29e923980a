#include "scanner/lifecycle.h"

#include <atomic>
#include <errno.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <new>
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include "scanner/config.h"
#include "scanner/large_alloc.h"
#include "scanner/large_bss.h"
#include "scanner/live_file.h"
#include "scanner/log.h"
#include "scanner/merge.h"
#include "scanner/os/clock.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/plt_bind.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/reports.h"
#include "scanner/runtime.h"
#include "scanner/scanner_thread.h"
#include "scanner/signals.h"
#include "scanner/sites.h"
#include "scanner/state.h"
#include "scanner/write_window.h"
#include "scanner/zero_giveback.h"

namespace dedup {

// Built on first use and never destroyed: the detached scanner thread may
// still be running while the process exits and static destructors run. The
// guard is ours, not the C++ runtime's (__cxa_guard_*), so that the library
// needs no libstdc++.
State& state() {
    alignas(State) static unsigned char storage[sizeof(State)];
    static std::atomic<int> built{0};  // 0 no, 1 being built, 2 built
    State* s = reinterpret_cast<State*>(storage);
    if (__builtin_expect(built.load(std::memory_order_acquire) == 2, 1)) return *s;
    int expected = 0;
    if (built.compare_exchange_strong(expected, 1)) {
        new (storage) State();
        built.store(2, std::memory_order_release);
    }
    while (built.load(std::memory_order_acquire) != 2) {
    }
    return *s;
}

namespace {

enum InitState { kUninit = 0, kIniting = 1, kReady = 2, kDisabled = 3 };
std::atomic<int> g_init{kUninit};
__thread bool t_initialising = false;
// A forked child inherits registered memory but no scanner thread: the first
// mapping call it makes starts one (not the fork itself: most children exec).
std::atomic<bool> g_child_needs_scanner{false};
long g_original_pid = 0;
std::atomic<bool> g_descriptors_had{false};  // reset in a forked child
// Whether anything was registered or advised (runtime_after_register ran,
// here or in the parent before fork): before that there is no scanner, no
// live file, no domain, and nothing to report unless a file or the summary
// was asked for.
std::atomic<bool> g_activated{false};
// Until then, the memory the program uses of what was registered
// (runtime_after_register): most processes a shell or a build starts that
// register anything make a few large mallocs, each of which maps a 4 MiB
// arena, and exit before a scan could pay for a thread, a memfd and kept
// files (git: 30 of 339 processes of test-apps' workload, x1.2 of its time).
std::atomic<long> g_in_use{0};

// Whether fork_prepare took the lock (not when this thread held it already:
// _Fork from a signal handler that interrupted the shim).
__thread bool t_fork_locked = false;

void fork_prepare() {
    if (g_init.load() != kReady) return;
    t_fork_locked = !state().lock.held_by_me();
    if (t_fork_locked) state().lock.lock();  // no batch in flight while the address space is copied
    state().domain.before_fork();  // a member slot, holding our slots, for the child
}

void fork_parent() {
    if (g_init.load() != kReady) return;
    State& s = state();
    s.domain.after_fork_parent();
    s.store.pin_for_fork();  // the child may map every slot in use now
    if (t_fork_locked) s.lock.unlock();
    t_fork_locked = false;
}

// A forked child outside a domain: its pages map the parent's canonical
// pages, which it must never punch or rewrite; it builds its own store. A
// child that could not become a member of its parent's domain (63 at most)
// holds no slot of it: its merged pages get private copies at once, while
// the parent still holds them.
void forget_parents_store(State& s) {
    bool was_member = s.store.in_domain();
    for (size_t i = 0; i < s.regions.count(); ++i) {
        Region& r = s.regions[i];
        for (size_t p = 0; p < r.pages(); ++p) {
            if (!has_slot(r.meta[p].state)) continue;
            r.meta[p].state = kFileVma;  // maps the parent's canonical page
            if (was_member && (r.prot & PROT_WRITE))
                sys::madvise((void*)(r.start + p * kPageSize), kPageSize, MADV_POPULATE_WRITE);
        }
    }
    s.store.reset_in_child();
    rotation_reset_in_child(s.rotation);
    s.index.clear();
}

// Every import of the library bound before the fault handler is installed,
// a window opened or the scanner started (os/plt_bind.h): none of the shim's
// code enters ld.so's lazy resolver from then on. A second thread waits for
// the first. The binding thread does not come back here through its own
// allocations: g_activated is already set.
std::atomic<int> g_imports{0};  // 0 lazily bound, 1 binding, 2 bound

void bind_imports_once() {
    if (g_imports.load(std::memory_order_acquire) == 2) return;
    int expected = 0;
    if (g_imports.compare_exchange_strong(expected, 1)) {
        if (plt_bind_all() < 0) log_warning("cannot read the library's imports; each is bound on its first call");
        g_imports.store(2, std::memory_order_release);
        return;
    }
    while (g_imports.load(std::memory_order_acquire) != 2) sys::call(SYS_sched_yield);
}

// The child has one thread, a copy of the registry, and mappings of the
// parent's memfd that it must never write to or punch: it forgets the
// parent's store and builds its own on demand.
void fork_child() {
    reset_current_tid();
    // Forked while another thread was binding: the child must not wait for
    // a thread it does not have. It binds before its scanner starts.
    if (g_imports.load() == 1) g_imports.store(0);
    if (g_init.load() != kReady) return;
    State& s = state();
    s.lock.reset_after_fork();
    s.domain.after_fork_child();
    if (!s.domain.joined() || !s.store.in_domain()) forget_parents_store(s);
    // Kept files opened by the parent describe the parent (a child reading
    // its parent's pagemap once skipped every page it had rewritten).
    for (KeptFile* f : kept_files().all()) f->close();
    reports_reset_in_child();
    g_descriptors_had.store(false);
    scanner_forget_after_fork();
    g_child_needs_scanner.store(s.regions.count() > 0 && g_activated.load(std::memory_order_relaxed));
}


// DEDUP_DOMAIN: the store's slots become the domain's, before its first use.
void join_domain(State& s) {
    const char* name = config().domain;
    if (!name[0] || s.domain.joined() || s.store.ready()) return;
    if (s.domain.join(name)) s.store.use_domain(&s.domain);
}

// Off for good: a pass-through from here on, with no window ever opened.
bool stay_off() {
    write_windows_never_open();
    t_initialising = false;
    g_init.store(kDisabled, std::memory_order_release);
    return false;
}

bool init_now() {
    t_initialising = true;
    // A set-user-ID, set-group-ID or file-capability program (AT_SECURE):
    // off altogether, as with DEDUP_DISABLE=1. Such a program must take no
    // file name, and no setting, from the environment of whoever started it.
    if (getauxval(AT_SECURE)) {
        return stay_off();
    }
    // DEDUP_DISABLE=1: a pass-through after one look at the environment.
    // Every process of a container or service with the variable set pays
    // for what happens here, so nothing else does: no other option is
    // parsed and no log file opened.
    if (config_says_disabled(environ)) {
        return stay_off();
    }
    // The log destination first, so that warnings about other options land there.
    const Config& cfg = config();  // opens DEDUP_LOG, then parses the rest of the environment
    if (cfg.disable) {
        return stay_off();
    }
    // What only scanning needs (the zero page's hash, the THP mode, the VMA
    // budget: two files and /proc/self/maps read) waits for the first
    // registration or report (runtime_prepare_scanning): most processes a
    // shell or a build starts never register anything.
    State& s = state();
    s.merge_all = cfg.scope == Scope::kAll;
    sites_set_enabled(cfg.sites);
    s.start_ns = monotonic_ns();
    g_original_pid = sys::getpid();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    t_initialising = false;
    g_init.store(kReady, std::memory_order_release);
    return true;
}

void start_scanner_in_child() {
    if (!g_child_needs_scanner.exchange(false)) return;
    if (state().lock.held_by_me()) {  // not under the lock: retry on the next call
        g_child_needs_scanner.store(true);
        return;
    }
    bind_imports_once();  // forked while another thread of the parent was binding
    scanner_ensure_started();
}

}  // namespace

bool runtime_ready() {
    int st = g_init.load(std::memory_order_acquire);
    if (st == kReady) {
        if (__builtin_expect(g_child_needs_scanner.load(std::memory_order_relaxed), 0)) start_scanner_in_child();
        return true;
    }
    if (st == kDisabled || t_initialising) return false;
    int expected = kUninit;
    if (g_init.compare_exchange_strong(expected, kIniting)) return init_now();
    while ((st = g_init.load(std::memory_order_acquire)) == kIniting) {
    }
    return st == kReady;
}

bool runtime_initialised() { return g_init.load(std::memory_order_acquire) == kReady; }

bool runtime_disabled() { return g_init.load(std::memory_order_acquire) == kDisabled; }

long runtime_original_pid() { return g_original_pid; }

// Once, before the first scan and before a report reads the VMA budget:
// what init_now leaves for later. Under the mm lock.
void runtime_prepare_scanning() {
    static std::atomic<bool> prepared{false};
    if (prepared.load(std::memory_order_acquire)) return;
    State& s = state();
    DEDUP_LARGE_BSS static char zero[kPageSize];
    s.zero_hash = page_hash(zero);
    s.thp_always = thp_enabled_always();
    s.vmas.init(config().vma_reserve);
    prepared.store(true, std::memory_order_release);
}

void runtime_after_register(long in_use_bytes) {
    if (!g_activated.load(std::memory_order_relaxed)) {
        long total = g_in_use.fetch_add(in_use_bytes, std::memory_order_relaxed) + in_use_bytes;
        const Config& cfg = config();
        // A domain, or live lines every N ms, are asked for: at once.
        uint64_t min = cfg.domain[0] || cfg.stats_interval_ms ? 0 : cfg.start_min;
        if (total < 0 || (uint64_t)total < min) return;
    }
    runtime_activate();
}

bool runtime_active() { return g_activated.load(std::memory_order_relaxed); }

void runtime_heap_use(long bytes) {
    if (!g_activated.load(std::memory_order_relaxed)) runtime_after_register(bytes);
}

void runtime_activate() {
    g_activated.store(true, std::memory_order_relaxed);
    bind_imports_once();
    fault_handler_install();
    // The shim's descriptors are had now, while the program is likely to
    // have some to spare, rather than first by the scanner later, when it
    // might take the program's last free one.
    if (!g_descriptors_had.load(std::memory_order_relaxed)) {
        State& s = state();
        MmLockGuard g(s.lock);
        runtime_prepare_scanning();
        join_domain(s);
        bool had = s.store.ensure_ready() & open_pagemap() & open_maps() &
                   kept_files().status.ensure("/proc/self/status", O_RDONLY) & reports_open_live_file();
        g_descriptors_had.store(had, std::memory_order_relaxed);
    }
    scanner_ensure_started();
    scanner_note_registered();
}

namespace {
std::atomic<bool> g_reported{false};

void report_once(bool from_signal) {
    if (!runtime_initialised() || g_reported.exchange(true)) return;
    // Most processes a shell or a build starts register nothing: they exit
    // without the report's reads of /proc (maps, comm, the pid namespace).
    if (!g_activated.load(std::memory_order_relaxed) && !reports_wanted_without_registration()) return;
    double cpu = scanner_cpu_seconds();
    scanner_stop();
    reports_at_exit(cpu, from_signal);
}
}  // namespace

void runtime_shutdown() { report_once(false); }

// A fork by a raw clone/fork syscall: glibc's atfork list is not run, so
// the large-block heap's handlers are called here, in the order glibc would
// (registered later, its prepare runs first and its parent/child last).
void rt_fork_prepare() {
    large_fork_prepare();
    fork_prepare();
}
void rt_fork_parent() {
    fork_parent();
    large_fork_parent();
}
void rt_fork_child() {
    fork_child();
    large_fork_child();
}

long rt_without_scanner(long (*fn)(void*), void* ctx) {
    bool paused = runtime_initialised() && scanner_pause();
    long r = fn(ctx);
    int saved = errno;
    if (paused) scanner_resume();
    errno = saved;
    return r;
}

namespace {
// Runs f under the mm lock, unless this thread holds it already (a signal
// handler that interrupted the shim).
template <typename F>
void under_lock(F&& f) {
    if (!runtime_initialised()) return;
    MmLock& lock = state().lock;
    bool take = !lock.held_by_me();
    if (take) lock.lock();
    f();
    if (take) lock.unlock();
}
}  // namespace

void rt_before_seccomp() {
    zero_giveback_forbid_vector();
    under_lock([] {});  // a batch in flight may be about to make the call
}

void rt_before_exec() { under_lock([] { live_file_remove(); }); }
void rt_exec_failed() { under_lock([] { live_file_relink(); }); }

bool rt_prctl_is_per_thread_credential(int option) {
    return option == PR_SET_KEEPCAPS || option == PR_CAPBSET_DROP || option == PR_SET_SECUREBITS ||
           option == PR_CAP_AMBIENT;
}

void runtime_report_at_signal() { report_once(true); }

}  // namespace dedup
