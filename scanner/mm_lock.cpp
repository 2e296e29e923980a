#include "scanner/mm_lock.h"

#include <linux/futex.h>

#include "scanner/os/sys.h"

namespace dedup {
namespace {
__thread long t_tid = 0;

void futex_wait(std::atomic<int>* w, int val) {
    sys::call(SYS_futex, (long)w, FUTEX_WAIT_PRIVATE, val, 0, 0, 0);
}
void futex_wake(std::atomic<int>* w, int n) {
    sys::call(SYS_futex, (long)w, FUTEX_WAKE_PRIVATE, n, 0, 0, 0);
}
}  // namespace

long current_tid() {
    if (t_tid == 0) t_tid = sys::gettid();
    return t_tid;
}
void reset_current_tid() { t_tid = 0; }

void MmLock::lock() {
    const int me = (int)current_tid();
    int c = 0;
    if (word_.compare_exchange_strong(c, me, std::memory_order_acquire)) return;
    waiters_.fetch_add(1, std::memory_order_relaxed);
    for (;;) {
        if (c == 0) {
            // Taken with the sleepers flag: others may still sleep on it.
            if (word_.compare_exchange_weak(c, me | kSleepers, std::memory_order_acquire)) break;
            continue;
        }
        if (!(c & kSleepers) && !word_.compare_exchange_weak(c, c | kSleepers, std::memory_order_relaxed)) continue;
        futex_wait(&word_, c | kSleepers);
        c = word_.load(std::memory_order_relaxed);
    }
    waiters_.fetch_sub(1, std::memory_order_relaxed);
}

void MmLock::unlock() {
    if (word_.exchange(0, std::memory_order_release) & kSleepers) futex_wake(&word_, 1);
}

bool MmLock::held_by_me() const {
    return (word_.load(std::memory_order_relaxed) & ~kSleepers) == current_tid();
}

void MmLock::reset_after_fork() {
    word_.store(0);
    waiters_.store(0);
}

}  // namespace dedup
