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
    int c = 0;
    if (!word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) {
        waiters_.fetch_add(1, std::memory_order_relaxed);
        if (c != 2) c = word_.exchange(2, std::memory_order_acquire);
        while (c != 0) {
            futex_wait(&word_, 2);
            c = word_.exchange(2, std::memory_order_acquire);
        }
        waiters_.fetch_sub(1, std::memory_order_relaxed);
    }
    owner_.store(current_tid(), std::memory_order_relaxed);
}

void MmLock::unlock() {
    owner_.store(0, std::memory_order_relaxed);
    if (word_.exchange(0, std::memory_order_release) == 2) futex_wake(&word_, 1);
}

bool MmLock::held_by_me() const {
    return owner_.load(std::memory_order_relaxed) == current_tid();
}

void MmLock::reset_after_fork() {
    word_.store(0);
    waiters_.store(0);
    owner_.store(0);
}

}  // namespace dedup
