#include "scanner/scanner_thread.h"

#include <atomic>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/futex.h>

#include "scanner/batch_scan.h"
#include "scanner/busy_wait.h"
#include "scanner/config.h"
#include "scanner/control.h"
#include "scanner/cow_sweep.h"
#include "scanner/large_alloc.h"
#include "scanner/log.h"
#include "scanner/merge.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/reports.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"
#include "scanner/vma_giveback.h"
#include "scanner/zero_giveback.h"

namespace dedup {
namespace {

std::atomic<int> g_started{0};  // 0 no, 1 starting, 2 running
std::atomic<bool> g_stop{false};
// scanner_stop() ran: the process is exiting. Never started again, and a
// pause that ends meanwhile does not clear the stop (it did: a thread in
// rt_without_scanner could restart the scanner under exit()).
std::atomic<bool> g_exiting{false};
// Bumped to wake the scanner from its sleep (stop, pause).
std::atomic<int> g_wake{0};
pthread_t g_thread;
clockid_t g_cpu_clock;
std::atomic<bool> g_have_clock{false};
double g_cpu_before = 0;  // CPU time of scanner threads that ended (paused)
std::atomic<int> g_pausing{0};

// True when the scanner is the only live thread left: /proc/self/status
// counts the thread-group leader even as a zombie (its thread exited with
// pthread_exit while others run), and reports the leader's state.
bool scanner_is_alone() {
    int threads = 0;
    bool leader_zombie = false;
    if (!read_thread_state(&threads, &leader_zombie)) return false;
    return threads == 1 || (threads == 2 && leader_zombie);
}

// The program's last thread left with pthread_exit: without the shim the
// process would now end, "as if exit(0)" (POSIX). Our thread must not keep it
// alive (a forked child's parent waited for it forever).
void exit_if_alone() {
    static uint64_t last_ns = 0;
    uint64_t now = monotonic_ns();
    if (now - last_ns < 100 * 1000000ull) return;
    last_ns = now;
    if (scanner_is_alone()) exit(0);
}

// A merge domain's housekeeping (newcomers, a dead listener, dead members,
// slots other members published), at most every 20 ms. Lock held.
void domain_tick(State& s) {
    static uint64_t last_ns = 0, last_full_ns = 0;
    uint64_t now = monotonic_ns();
    if (!s.store.in_domain() || now - last_ns < 20 * 1000000ull) return;
    last_ns = now;
    s.domain.tick(s.store.total_refs());
    // What other members published; every 10 s all of it (slots freed and
    // filled again since).
    bool all = now - last_full_ns > 10000 * 1000000ull;
    if (all) last_full_ns = now;
    size_t slots_known = s.index.size() - s.index.candidates();
    learn_domain_slots(s, all);
    // New content to merge onto: pages backed off as unique may hold it.
    if (s.index.size() - s.index.candidates() > slots_known) scan_look_at_everything(s);
}

// Whether the program started rewriting merged memory while the scanner
// slept (a few pages probed): then it wakes at once to free canonical pages.
bool rewrites_under_way() {
    State& s = state();
    if (s.store.total_refs() == 0 && !s.store.in_domain()) return false;  // (a stale read is harmless: a hint)
    MmLockGuard g(s.lock);
    domain_tick(s);
    cow_sweep_wakeup(s);
    return s.cow_sweep_due;
}

// A process that is young and has registered little is most often about to
// exit (an interpreter running a short script, a compiler pass): its first
// pass waits until it is kYoungNs old, or has registered kYoungBytes, so that
// it does not pay for scanning memory it is about to give back. (A forked
// child is as old as its parent.)
constexpr uint64_t kYoungNs = 100 * 1000000ull;
constexpr uint64_t kYoungBytes = 64ull << 20;
bool young(const State& s) {
    return monotonic_ns() - s.start_ns < kYoungNs &&
           s.stats.registered_bytes_total.load(std::memory_order_relaxed) < kYoungBytes;
}
// Milliseconds until a young process is kYoungNs old (at least 1): it sleeps
// them at once, rather than looking every 10 ms (each look woke the thread
// and took the lock: 200-500 us of a python3 -c pass's CPU). Registering
// kYoungBytes wakes it (scanner_note_registered).
uint64_t young_left_ms(const State& s) {
    uint64_t age = monotonic_ns() - s.start_ns;
    return age >= kYoungNs ? 1 : (kYoungNs - age + 999999) / 1000000;
}
std::atomic<bool> g_grown{false};  // kYoungBytes registered and the scanner woken, once

// Sleeps ms, or until woken (stop, pause), or until the program rewrites
// merged memory, or (while_young) until the process grew up: a futex wait
// on g_wake, in slices.
void sleep_ms(uint64_t ms, bool while_young = false) {
    // Slices of at most 100 ms, so that exit_if_alone runs often enough, and
    // of 5 ms while merged pages exist, so that a rewrite is noticed at once.
    while (ms > 0 && !g_stop.load(std::memory_order_acquire)) {
        uint64_t slice = ms > 100 ? 100 : ms;
        if ((state().store.total_refs() || state().store.in_domain()) && slice > 5) slice = 5;
        struct timespec ts = {(time_t)(slice / 1000), (long)(slice % 1000) * 1000000L};
        int seen = g_wake.load(std::memory_order_acquire);
        if (!g_stop.load(std::memory_order_acquire))
            sys::call(SYS_futex, (long)&g_wake, FUTEX_WAIT_PRIVATE, seen, (long)&ts, 0, 0);
        ms -= slice;
        exit_if_alone();
        if (ms && (rewrites_under_way() || control_pending() || (while_young && !young(state())))) return;
    }
}

void wake_scanner() {
    g_wake.fetch_add(1, std::memory_order_release);
    sys::call(SYS_futex, (long)&g_wake, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}

// Consecutive quiet passes: passes in which every page hashed was as at its
// last look (none new, none changed), nothing merged, no zero page was given
// back and no merged page was written. On memory like that another pass at
// once finds nothing either: at the end of a quiet pass the scanner rests
// (quiet_rest_ms), even at DEDUP_SLEEP_MS=0, instead of spinning a core on
// passes of backed-off pages. The first pass that sees a change ends it.
uint32_t g_quiet_passes = 0;
uint64_t g_pass_start_breaks = 0;
constexpr uint64_t kMaxQuietRestMs = 64;

// 1 ms after the first quiet pass, doubling with each further one, up to
// kMaxQuietRestMs; 0 after a pass that was not quiet.
uint64_t quiet_rest_ms() {
    if (g_quiet_passes == 0) return 0;
    uint32_t doublings = g_quiet_passes - 1;
    return doublings >= 6 ? kMaxQuietRestMs : (1ull << doublings);
}

// End of a full pass over every region: publish the per-pass counters and
// forget the unstable candidates, as KSM rebuilds its unstable tree.
void end_of_pass(State& s) {
    uint64_t breaks = s.stats.cow_breaks.load(std::memory_order_relaxed);
    bool quiet = s.stats.pass_volatile == 0 && s.stats.pass_first_looks == 0 && s.stats.pass_zero_freed == 0 &&
                 s.stats.merge_runs.load(std::memory_order_relaxed) == s.stats.pass_start_merge_runs &&
                 breaks == g_pass_start_breaks;
    g_quiet_passes = quiet ? g_quiet_passes + 1 : 0;
    g_pass_start_breaks = breaks;
    s.stats.full_scans.fetch_add(1, std::memory_order_relaxed);
    s.stats.pages_volatile.store(s.stats.pass_volatile, std::memory_order_relaxed);
    s.stats.pages_unshared.store(s.stats.pass_unshared, std::memory_order_relaxed);
    uint64_t runs = s.stats.merge_runs.load(std::memory_order_relaxed);
    s.stats.vma_budget_skips.store(s.stats.pass_budget_skips, std::memory_order_relaxed);
    s.stats.budget_bound.store(s.stats.pass_budget_skips > 0 && runs == s.stats.pass_start_merge_runs &&
                                   s.stats.pass_zero_freed == 0,
                               std::memory_order_relaxed);
    s.stats.pass_start_merge_runs = runs;
    s.stats.pass_volatile = s.stats.pass_unshared = s.stats.pass_budget_skips = s.stats.pass_zero_freed = 0;
    s.stats.pass_first_looks = 0;
    s.index.drop_candidates();
    // Exact VMA count for the budget; /proc/self/maps is not cheap, so at
    // most once a second when passes are short.
    s.vmas.recount_if_older(1000 * 1000000ull);
}

// KSM's pages_skipped: pages the scan passed over without hashing them (not
// present, merged, or given back as zero and untouched since).
void note_skipped(State& s, size_t passed, uint64_t hashed) {
    if (passed > hashed) s.stats.pages_skipped.fetch_add(passed - hashed, std::memory_order_relaxed);
}

// One lock hold: up to kPagesPerHold pages, across as many (small) regions
// as that takes. Returns pages looked at; *pass_ended when it reached the end
// of the last region (the wake-up then ends: a small registry must not be
// passed over hundreds of times per wake-up).
constexpr size_t kPagesPerHold = 256;
constexpr size_t kRegionsPerHold = 64;

size_t scan_step(State& s, size_t budget, bool* pass_ended) {
    MmLockGuard guard(s.lock);
    *pass_ended = false;
    // Stopped while we waited for the lock (exit is under way): touch nothing.
    if (g_stop.load(std::memory_order_acquire)) return 0;
    size_t done = 0;
    size_t limit = budget < kPagesPerHold ? budget : kPagesPerHold;
    // Giving back memory kept for forked children, and making anonymous
    // what unmerges left, come first.
    if (size_t moved = rotation_step(s, limit)) return moved;
    if (size_t converted = unmerge_leftovers_step(s, limit)) return converted;
    // A sweep for copy-on-write breaks runs to its end in this wake-up (it
    // is cheap, and memory is at stake): it counts as one page.
    if (cow_sweep_step(s, limit)) return 1;
    if (control_run() != 1) {  // stopped by dedupstat (KSM's run=0 or 2): nothing merges
        *pass_ended = true;
        return done;
    }
    for (size_t regions = 0; done < limit && regions < kRegionsPerHold; ++regions) {
        size_t i = s.regions.lower_bound(s.cursor);
        while (i < s.regions.count() && !region_mergeable(s, s.regions[i])) ++i;
        if (i == s.regions.count()) {
            s.cursor = 0;
            end_of_pass(s);
            *pass_ended = true;
            return done;
        }
        Region& r = s.regions[i];
        uintptr_t from = s.cursor > r.start ? s.cursor : r.start;
        uint64_t breaks = s.stats.cow_breaks.load(std::memory_order_relaxed);
        uint64_t hashed = s.stats.pages_scanned.load(std::memory_order_relaxed);
        size_t n = scan_batch(s, r, from, limit - done);
        cow_sweep_note_breaks(s, s.stats.cow_breaks.load(std::memory_order_relaxed) - breaks);
        note_skipped(s, n, s.stats.pages_scanned.load(std::memory_order_relaxed) - hashed);
        s.cursor = from + n * kPageSize;
        done += n;
        if (s.resync_end) resync_protection(s);  // r may move: after the batch
        if (n == 0) break;
    }
    return done;
}

// DEDUP_CPU_PERCENT: after each wake-up, sleep long enough that the CPU time
// the scanner just spent is that share of the time that passes. Sleeps
// shorter than a millisecond are owed and taken together.
class CpuPacer {
public:
    explicit CpuPacer(uint64_t percent) : percent_(percent), last_cpu_(thread_cpu_ns()) {}
    // Changed at run time (dedupstat --set cpu_percent=N): counts from now.
    void set_percent(uint64_t percent) {
        if (percent == percent_) return;
        percent_ = percent;
        last_cpu_ = thread_cpu_ns();
        owed_ns_ = 0;
    }
    // Milliseconds to sleep now.
    uint64_t owed_ms() {
        uint64_t cpu = thread_cpu_ns();
        uint64_t spent = cpu - last_cpu_;
        last_cpu_ = cpu;
        owed_ns_ += spent * (100 - percent_) / percent_;
        uint64_t ms = owed_ns_ / 1000000;
        owed_ns_ -= ms * 1000000;
        return ms;
    }

private:
    uint64_t percent_;
    uint64_t last_cpu_;
    uint64_t owed_ns_ = 0;
};

void* scanner_main(void*) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are for the application's threads
    pthread_setname_np(pthread_self(), "dedup-scan");
    zero_giveback_thread_started();
    State& s = state();
    ScanPace pace = control_pace();  // config()'s, or what dedupstat --set changed since
    CpuPacer pacer(pace.cpu_percent ? pace.cpu_percent : 100);
    BusyWait busy_wait;
    busy_wait.set_limit_ms(config().busy_wait_ms);
    while (!g_stop.load(std::memory_order_acquire)) {
        pace = control_pace();
        pacer.set_percent(pace.cpu_percent ? pace.cpu_percent : 100);
        size_t done = 0;
        bool pass_ended = false;
        bool cow_storm;
        {
            MmLockGuard g(s.lock);
            domain_tick(s);
            cow_storm = cow_sweep_wakeup(s);
        }
        bool wait_for_age = young(s);  // the rest of the loop (reports, requests) runs as usual
        // The program's threads are busy: merging now would interrupt them
        // (busy_wait.h). Not while they rewrite merged memory, nor while
        // dedupstat has the scanner stopped or unmerging.
        bool wait_for_calm = !wait_for_age && !cow_storm && control_run() == 1 &&
                             busy_wait.should_wait(monotonic_ns(), process_cpu_ns(), thread_cpu_ns());
        while (!wait_for_age && !wait_for_calm && done < pace.pages_to_scan &&
               !g_stop.load(std::memory_order_relaxed)) {
            size_t n = scan_step(s, pace.pages_to_scan - done, &pass_ended);
            done += n;
            if (pass_ended || n == 0) break;
            // Let an application thread that waits for the lock have it.
            if (s.lock.waiters()) sched_yield();
        }
        if (g_stop.load(std::memory_order_acquire)) break;
        exit_if_alone();
        control_tick();
        reports_tick();
        large_trim();  // large blocks' memory free for a second goes back to the kernel
        // The program's own VMAs grew into our budget: give ours back before
        // it reaches the hard limit (where even unmerging needs VMAs).
        relieve_vma_pressure(s);
        uint64_t paced_ms = pace.cpu_percent ? pacer.owed_ms() : 0;
        uint64_t rest_ms = pass_ended ? quiet_rest_ms() : 0;
        if (wait_for_age) {
            sleep_ms(young_left_ms(s), true);
        } else if (wait_for_calm) {
            s.stats.busy_wait_ms.fetch_add(BusyWait::kSliceMs, std::memory_order_relaxed);
            sleep_ms(BusyWait::kSliceMs);
        } else if (cow_storm)
            sleep_ms(1);  // the program is rewriting merged memory: free canonical pages as it goes
        else if (control_run() != 1)
            sleep_ms(100);  // stopped (dedupstat): copy-on-write sweeps and requests only
        else if (s.stats.budget_bound.load(std::memory_order_relaxed))
            sleep_ms(pace.sleep_ms > 250 ? pace.sleep_ms : 250);  // nothing mergeable within the budget
        else if (rest_ms && rest_ms >= (pace.cpu_percent ? paced_ms : pace.sleep_ms))
            sleep_ms(rest_ms);  // a quiet pass: nothing to find at once
        else if (pace.cpu_percent && paced_ms) sleep_ms(paced_ms);
        else if (!pace.cpu_percent && pace.sleep_ms) sleep_ms(pace.sleep_ms);
        else if (pass_ended && done < 64) sleep_ms(1);  // (almost) nothing registered: do not spin
    }
    return nullptr;
}

}  // namespace

__thread bool t_starting = false;

void scanner_note_registered() {
    if (g_grown.load(std::memory_order_relaxed) ||
        state().stats.registered_bytes_total.load(std::memory_order_relaxed) < kYoungBytes)
        return;
    g_grown.store(true, std::memory_order_release);
    wake_scanner();
}

void scanner_ensure_started() {
    if (g_started.load(std::memory_order_acquire) != 0 || g_exiting.load(std::memory_order_acquire)) return;
    int expected = 0;
    if (!g_started.compare_exchange_strong(expected, 1)) return;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);  // joinable: scanner_pause() joins it
    t_starting = true;
    int rc = pthread_create(&g_thread, &attr, scanner_main, nullptr);
    t_starting = false;
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        log_warning("could not start the scanner thread (error %d); memory will not be deduplicated", rc);
        return;  // stays "starting": do not retry on every call
    }
    if (pthread_getcpuclockid(g_thread, &g_cpu_clock) == 0) g_have_clock.store(true);
    g_started.store(2, std::memory_order_release);
}


void scanner_stop() {
    g_exiting.store(true, std::memory_order_release);
    g_stop.store(true, std::memory_order_release);
    wake_scanner();
    // The scanner checks the flag between batches; taking the lock waits for
    // the batch in flight. If this thread holds it (exit() from a signal
    // handler that landed inside the shim), no batch is in flight.
    State& s = state();
    if (s.lock.held_by_me()) return;
    s.lock.lock();
    s.lock.unlock();
}

double scanner_cpu_seconds() {
    if (!g_have_clock.load()) return g_cpu_before;
    struct timespec ts;
    if (clock_gettime(g_cpu_clock, &ts) != 0) return g_cpu_before;
    return g_cpu_before + (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool scanner_pause() {
    int expected = 0;
    while (!g_pausing.compare_exchange_weak(expected, 1)) {  // one pause at a time
        expected = 0;
        sched_yield();
    }
    bool was_running = g_started.load(std::memory_order_acquire) == 2;
    if (was_running) {
        int threads = 0;
        bool zombie = false;
        bool counted = read_thread_state(&threads, &zombie);
        g_stop.store(true, std::memory_order_release);
        wake_scanner();
        double cpu = scanner_cpu_seconds();
        pthread_join(g_thread, nullptr);
        g_have_clock.store(false);
        g_cpu_before = cpu;
        // The joined thread leaves the thread group a moment after join
        // returns; unshare(CLONE_NEWUSER) needs it gone.
        uint64_t deadline = monotonic_ns() + 100 * 1000000ull;
        int now = threads;
        while (counted && read_thread_state(&now, &zombie) && now >= threads && monotonic_ns() < deadline)
            sched_yield();
        g_stop.store(g_exiting.load(), std::memory_order_release);
        g_started.store(0, std::memory_order_release);
    }
    g_pausing.store(0);
    return was_running;
}

void scanner_resume() { scanner_ensure_started(); }

void scanner_forget_after_fork() {
    g_started.store(0);
    g_stop.store(false);
    g_have_clock.store(false);
    g_pausing.store(0);
    g_cpu_before = 0;
}

}  // namespace dedup
