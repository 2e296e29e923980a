#include "scanner/write_window.h"

#include <atomic>
#include <sched.h>
#include <sys/mman.h>

#include "scanner/large_bss.h"
#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/runtime.h"
#include "scanner/state.h"

#ifdef DEDUP_BROKEN_MERGE
// Test-only build (build/libdedup-broken.so): windows do not write-protect,
// so a write between compare and remap is lost. Proves the race test can fail.
#define DEDUP_WRITE_PROTECT 0
#else
#define DEDUP_WRITE_PROTECT 1
#endif

namespace dedup {
namespace {

// ---- the kernel-write guard: pins and the published window -----------------

constexpr int kPinSlots = 512;
struct Pin {
    std::atomic<uintptr_t> start{0};
    std::atomic<uintptr_t> end{0};
};
DEDUP_LARGE_BSS Pin g_pins[kPinSlots];
std::atomic<int> g_active_pins{0};  // pins in use (the window's fast path)
std::atomic<int> g_overflow{0};     // wrappers running unpinned because the table was full

// The open window's ranges ([a, a_end) and [b, b_end)), published for pins.
// Every access to these and to the pins is sequentially consistent (the
// default): that total order is the handshake's fence (a pin's store before
// its load of the window, a window's stores before its loads of the pins),
// so one of the two sides always sees the other.
std::atomic<uintptr_t> g_pub_a{0}, g_pub_a_end{0}, g_pub_b{0}, g_pub_b_end{0};

// Bumped when a window opens and again when it closes, so that the fault
// handler can tell a repeated fault that no window explains.
std::atomic<uint64_t> g_window_seq{0};

// An unmerge that must happen now waits at most this long for a syscall
// writing into its range (a read blocked on a socket holds its pin for as
// long as no data comes). It then goes ahead: the alternative, failing the
// program's own call, is a certain wrong answer; a blocked read writes
// nothing until data arrives in the microseconds the window is open.
constexpr uint64_t kPinWaitNs = 200 * 1000000ull;

bool overlaps(uintptr_t s1, uintptr_t e1, uintptr_t s2, uintptr_t e2) { return s1 < e2 && s2 < e1; }

bool published_overlaps(uintptr_t s, uintptr_t e) {
    return overlaps(s, e, g_pub_a.load(), g_pub_a_end.load()) || overlaps(s, e, g_pub_b.load(), g_pub_b_end.load());
}

void publish(uintptr_t a, size_t alen, uintptr_t b, size_t blen) {
    g_pub_a_end.store(a + alen);
    g_pub_a.store(a);
    g_pub_b_end.store(b + blen);
    g_pub_b.store(b);
}

void unpublish() {
    g_pub_a.store(0);
    g_pub_a_end.store(0);
    g_pub_b.store(0);
    g_pub_b_end.store(0);
}

// Whether a pinned buffer overlaps the published ranges (after publish()).
bool pinned(uintptr_t a, size_t alen, uintptr_t b, size_t blen) {
#ifdef DEDUP_BROKEN_NO_PIN
    (void)a, (void)alen, (void)b, (void)blen;
    return false;  // test-only build: ignore pins (proves the EFAULT test can fail)
#endif
    if (g_active_pins.load() == 0) return false;
    if (g_overflow.load() > 0) return true;
    for (int i = 0; i < kPinSlots; ++i) {
        uintptr_t s = g_pins[i].start.load();
        if (!s) continue;
        uintptr_t e = g_pins[i].end.load();
        if (e == 0) e = UINTPTR_MAX;  // being published: assume the worst
        if (overlaps(s, e, a, a + alen) || (blen && overlaps(s, e, b, b + blen))) return true;
    }
    return false;
}

// Publishes the ranges and settles the pins: true when no pinned buffer
// overlaps them (they stay published), false when the caller gives up (they
// are unpublished). Waiting keeps them published, so new syscalls into them
// wait for the window instead of starting.
bool publish_unpinned(uintptr_t a, size_t alen, uintptr_t b, size_t blen, WriteWindow::IfPinned if_pinned) {
    publish(a, alen, b, blen);
    if (!pinned(a, alen, b, blen)) return true;
    if (if_pinned == WriteWindow::IfPinned::kGiveUp) {
        unpublish();
        return false;
    }
    uint64_t deadline = monotonic_ns() + kPinWaitNs;
    while (pinned(a, alen, b, blen)) {
        if (monotonic_ns() > deadline) {
            state().stats.pin_wait_timeouts.fetch_add(1, std::memory_order_relaxed);
            log_warning("an unmerge waited %llu ms for a system call writing into %p+%zu and went ahead",
                        (unsigned long long)(kPinWaitNs / 1000000), (void*)a, alen);
            break;
        }
        sched_yield();
    }
    return true;
}

// ---- the fault side ----------------------------------------------------------

// Loop breaker: the page and the window sequence of this thread's last fault
// that a window explained.
__thread uintptr_t t_last_fault_page = 0;
__thread uint64_t t_last_fault_seq = ~0ull;

}  // namespace

// ---- pins (syscall wrappers) -------------------------------------------------

namespace {
std::atomic<bool> g_never_open{false};

int pin_once(uintptr_t s, uintptr_t e) {
    g_active_pins.fetch_add(1);
    for (int i = 0; i < kPinSlots; ++i) {
        uintptr_t expected = 0;
        if (g_pins[i].start.load(std::memory_order_relaxed) == 0 &&
            g_pins[i].start.compare_exchange_strong(expected, s)) {
            g_pins[i].end.store(e);
            return i;
        }
    }
    g_overflow.fetch_add(1);
    return -1;
}
}  // namespace

int rt_kernel_write_pin(uintptr_t buf, size_t len) {
    if (!buf || !len || g_never_open.load(std::memory_order_relaxed)) return -2;
    uintptr_t s = buf, e = s + len;
    if (e < s) e = UINTPTR_MAX;
    // Pin, then look for a window (the window's side publishes, then looks
    // for pins: one of the two sees the other). A window opened before our
    // pin was visible: take the pin back while it is open, or an unmerge
    // waiting for pins to go and this call waiting for the window to close
    // would each wait for the other.
    for (;;) {
        int token = pin_once(s, e);
        if (!published_overlaps(s, e)) return token;
        rt_kernel_write_unpin(token);
        while (published_overlaps(s, e)) sched_yield();
    }
}

void write_windows_never_open() { g_never_open.store(true, std::memory_order_relaxed); }
bool rt_windows_may_open() { return !g_never_open.load(std::memory_order_relaxed); }

void rt_kernel_write_unpin(int token) {
    if (token == -2) return;
    if (token >= 0) {
        g_pins[token].end.store(0);
        g_pins[token].start.store(0);
    } else {
        g_overflow.fetch_sub(1);
    }
    g_active_pins.fetch_sub(1);
}

// ---- the window --------------------------------------------------------------

bool WriteWindow::protect(Range& r) {
    if (!DEDUP_WRITE_PROTECT) return true;
    int ro = (r.prot & ~PROT_WRITE) | PROT_READ;
    return !sys::failed(sys::mprotect((void*)r.start, r.len, ro));
}

bool WriteWindow::open(uintptr_t a, size_t len, int app_prot, IfPinned if_pinned) {
    return open_ranges(Range{a, len, app_prot, false}, Range{}, if_pinned);
}

bool WriteWindow::open_pair(uintptr_t a, size_t alen, int aprot, uintptr_t b, size_t blen, int bprot) {
    return open_ranges(Range{a, alen, aprot, false}, Range{b, blen, bprot, false}, IfPinned::kGiveUp);
}

bool WriteWindow::open_ranges(const Range& r0, const Range& r1, IfPinned if_pinned) {
    close();
    gave_up_for_pin_ = false;
    // Restoring the recorded protection over one the program set with a raw
    // syscall would undo it: the kernel is asked (one ioctl a VMA).
    protection_changed_ = !kernel_protection_is(r0.start, r0.len, r0.prot) ||
                          (r1.len && !kernel_protection_is(r1.start, r1.len, r1.prot));
    if (protection_changed_) return false;
    gave_up_for_pin_ = !publish_unpinned(r0.start, r0.len, r1.start, r1.len, if_pinned);
    if (gave_up_for_pin_) return false;
    range_[0] = r0;
    range_[1] = r1;
    g_window_seq.fetch_add(1, std::memory_order_release);
    open_ = true;
    if (protect(range_[0]) && (!range_[1].len || protect(range_[1]))) return true;
    close();  // an mprotect may have changed part of a range before failing: restore all
    return false;
}

bool WriteWindow::covers(uintptr_t a, size_t len) const {
    return open_ && range_[0].start <= a && a + len <= range_[0].start + range_[0].len;
}

void WriteWindow::replaced(uintptr_t a, size_t len) {
    for (Range& r : range_)
        if (r.len && r.start == a && r.len == len) r.replaced = true;
}

void WriteWindow::close() {
    if (!open_) return;
    for (Range& r : range_) {
        if (!r.len || r.replaced || !DEDUP_WRITE_PROTECT) continue;
        // Retried: a page left read-only would crash the program on its next
        // write (brief, trap 2).
        long e = 0;
        for (int i = 0; i < 1000; ++i) {
            e = sys::mprotect((void*)r.start, r.len, r.prot);
            if (!sys::failed(e)) break;
        }
        if (sys::failed(e)) log_warning("could not restore protection of %p+%zu (errno %ld)", (void*)r.start, r.len, -e);
    }
    g_window_seq.fetch_add(1, std::memory_order_release);
    unpublish();
    range_[0] = range_[1] = Range{};
    open_ = false;
}

// ---- the fault handler's question ---------------------------------------------

bool window_explains_write_fault(uintptr_t addr) {
    State& s = state();
    if (s.lock.held_by_me()) return false;  // the shim itself faulted: not a window
    uintptr_t pg = addr & ~(kPageSize - 1);
    uint64_t seq = g_window_seq.load(std::memory_order_acquire);
    if (pg == t_last_fault_page && seq == t_last_fault_seq) return false;
    s.lock.lock();  // waits for the window's owner to close it
    Region* r = s.regions.find(pg);
    bool writable = r && (r->prot & PROT_WRITE);
    // Read under the lock, where no window is open: a window opened after we
    // let go (the scanner may cover this page again before the write
    // retries) changes it, so the retry's fault is still recognised.
    uint64_t closed_seq = g_window_seq.load(std::memory_order_acquire);
    s.lock.unlock();
    if (!writable) return false;
    t_last_fault_page = pg;
    t_last_fault_seq = closed_seq;
    return true;
}

}  // namespace dedup
