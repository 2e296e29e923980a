// The lock that serialises every change to registered memory: the
// application's munmap/mremap/mprotect/madvise wrappers, large malloc/free,
// and each scanner batch (read, write-protect, compare, remap, restore).
//
// It is a futex lock, not a pthread mutex, because the SIGSEGV handler takes
// it (to wait for the scanner to finish a page it write-protected), and it
// records its owner's tid so the handler can tell "this thread holds the
// lock" (the fault is not the scanner's doing) without deadlocking.
// It never allocates and is never held across a call into malloc.
#pragma once
#include <atomic>
#include <stdint.h>

namespace dedup {

class MmLock {
public:
    void lock();
    void unlock();
    bool held_by_me() const;
    // Number of threads waiting: the scanner yields after a batch if nonzero.
    int waiters() const { return waiters_.load(std::memory_order_relaxed); }
    // After fork the child has one thread and must start with the lock free.
    void reset_after_fork();

private:
    // The owner's tid is the lock word itself (0 free; tid, or tid|kSleepers
    // when a thread may sleep on it), so "held" and "held by whom" change in
    // one atomic step: with a separate owner field a signal landing between
    // taking the word and recording the owner (or between clearing the owner
    // and freeing the word) made held_by_me() false while this thread held
    // the lock, and a handler calling exit() waited for it forever.
    static constexpr int kSleepers = 1 << 30;  // tids stay below 2^22 (PID_MAX_LIMIT)
    std::atomic<int> word_{0};
    std::atomic<int> waiters_{0};
};

// Calling thread's tid, cached in initial-exec TLS (signal-safe).
long current_tid();
// Forget the cached tid (fork child).
void reset_current_tid();

class MmLockGuard {
public:
    explicit MmLockGuard(MmLock& l) : l_(l) { l_.lock(); }
    ~MmLockGuard() { l_.unlock(); }
    MmLockGuard(const MmLockGuard&) = delete;
    MmLockGuard& operator=(const MmLockGuard&) = delete;

private:
    MmLock& l_;
};

}  // namespace dedup
