#include "scanner/kernel_write_guard.h"

#include <atomic>
#include <sched.h>

namespace dedup {
namespace {

constexpr int kSlots = 512;
struct Pin {
    std::atomic<uintptr_t> start{0};
    std::atomic<uintptr_t> end{0};
};
Pin g_pins[kSlots];
std::atomic<int> g_active{0};    // pins in use (the scanner's fast path)
std::atomic<int> g_overflow{0};  // wrappers running unpinned because the table was full

std::atomic<uintptr_t> g_win_a{0}, g_win_a_end{0}, g_win_b{0}, g_win_b_end{0};

bool overlaps(uintptr_t s1, uintptr_t e1, uintptr_t s2, uintptr_t e2) { return s1 < e2 && s2 < e1; }

bool window_overlaps(uintptr_t s, uintptr_t e) {
    return overlaps(s, e, g_win_a.load(), g_win_a_end.load()) || overlaps(s, e, g_win_b.load(), g_win_b_end.load());
}

}  // namespace

int kw_pin(uintptr_t buf, size_t len) {
    if (!buf || !len) return -2;
    uintptr_t s = buf, e = s + len;
    if (e < s) e = UINTPTR_MAX;
    g_active.fetch_add(1);
    int token = -1;
    for (int i = 0; i < kSlots; ++i) {
        uintptr_t expected = 0;
        if (g_pins[i].start.load(std::memory_order_relaxed) == 0 &&
            g_pins[i].start.compare_exchange_strong(expected, s)) {
            g_pins[i].end.store(e);
            token = i;
            break;
        }
    }
    if (token < 0) g_overflow.fetch_add(1);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // A window opened before our pin was visible: wait for it to close.
    while (window_overlaps(s, e)) sched_yield();
    return token;
}

void kw_unpin(int token) {
    if (token == -2) return;
    if (token >= 0) {
        g_pins[token].end.store(0);
        g_pins[token].start.store(0);
    } else {
        g_overflow.fetch_sub(1);
    }
    g_active.fetch_sub(1);
}

bool kw_window_open(uintptr_t a, size_t alen, uintptr_t b, size_t blen) {
    g_win_a_end.store(a + alen);
    g_win_a.store(a);
    g_win_b_end.store(b + blen);
    g_win_b.store(b);
    std::atomic_thread_fence(std::memory_order_seq_cst);
#ifdef DEDUP_BROKEN_NO_PIN
    return true;  // test-only build: ignore pins (proves the EFAULT test can fail)
#endif
    if (g_active.load() == 0) return true;
    bool busy = g_overflow.load() > 0;
    for (int i = 0; i < kSlots && !busy; ++i) {
        uintptr_t s = g_pins[i].start.load();
        if (!s) continue;
        uintptr_t e = g_pins[i].end.load();
        if (e == 0) e = UINTPTR_MAX;  // being published: assume the worst
        busy = overlaps(s, e, a, a + alen) || (blen && overlaps(s, e, b, b + blen));
    }
    if (busy) kw_window_close();
    return !busy;
}

void kw_window_close() {
    g_win_a.store(0);
    g_win_a_end.store(0);
    g_win_b.store(0);
    g_win_b_end.store(0);
}

}  // namespace dedup
