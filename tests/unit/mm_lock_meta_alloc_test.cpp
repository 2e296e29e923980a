// MmLock (the futex lock) and meta_alloc (the shim's own metadata memory).
#include <gtest/gtest.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "scanner/meta_alloc.h"
#include "scanner/mm_lock.h"

using namespace dedup;

TEST(MmLock, CurrentTidIsGettid) {
    EXPECT_EQ(current_tid(), (long)syscall(SYS_gettid));
    long other = 0;
    std::thread t([&] { other = current_tid(); });
    t.join();
    EXPECT_NE(other, current_tid());
    EXPECT_GT(other, 0);
}

TEST(MmLock, HeldByMe) {
    MmLock l;
    EXPECT_FALSE(l.held_by_me());
    l.lock();
    EXPECT_TRUE(l.held_by_me());
    bool other_sees_held_by_me = true;
    std::thread t([&] { other_sees_held_by_me = l.held_by_me(); });
    t.join();
    EXPECT_FALSE(other_sees_held_by_me);
    l.unlock();
    EXPECT_FALSE(l.held_by_me());
    {
        MmLockGuard g(l);
        EXPECT_TRUE(l.held_by_me());
    }
    EXPECT_FALSE(l.held_by_me());
}

TEST(MmLock, MutualExclusionUnderContention) {
    MmLock l;
    long counter = 0;  // plain: protected by the lock only
    const int kIters = 20000;
    auto work = [&] {
        for (int i = 0; i < kIters; ++i) {
            MmLockGuard g(l);
            long v = counter;
            if ((i & 255) == 0) std::this_thread::yield();
            counter = v + 1;
        }
    };
    std::thread a(work), b(work), c(work);
    a.join();
    b.join();
    c.join();
    EXPECT_EQ(counter, 3L * kIters);
    EXPECT_EQ(l.waiters(), 0);
}

TEST(MmLock, WaitersCountsBlockedThreads) {
    MmLock l;
    l.lock();
    std::atomic<bool> got{false};
    std::thread t([&] {
        l.lock();
        got = true;
        l.unlock();
    });
    for (int i = 0; i < 2000 && l.waiters() == 0; ++i) usleep(1000);
    EXPECT_EQ(l.waiters(), 1);
    EXPECT_FALSE(got.load());
    l.unlock();
    t.join();
    EXPECT_TRUE(got.load());
    EXPECT_EQ(l.waiters(), 0);
    EXPECT_FALSE(l.held_by_me());
}

TEST(MmLock, ResetAfterForkFreesTheLock) {
    MmLock l;
    l.lock();
    l.reset_after_fork();
    EXPECT_FALSE(l.held_by_me());
    l.lock();  // would hang if still held
    EXPECT_TRUE(l.held_by_me());
    l.unlock();
}

namespace {
MmLock* g_sig_lock;
std::atomic<long> g_sig_handled{0};
std::atomic<bool> g_sig_stop{false};

// What the exit path does (scanner_stop, reports_at_exit) when exit() is
// called from a signal handler: take the lock unless this thread holds it.
void exit_path_like_handler(int) {
    if (!g_sig_lock->held_by_me()) {
        g_sig_lock->lock();
        g_sig_lock->unlock();
    }
    g_sig_handled.fetch_add(1);
}

void* lock_unlock_loop(void*) {
    while (!g_sig_stop.load(std::memory_order_relaxed)) {
        g_sig_lock->lock();
        g_sig_lock->unlock();
    }
    return nullptr;
}

double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
}  // namespace

// A signal may land at any instruction of lock() and unlock(). held_by_me()
// must be true wherever the lock is held: when "held" and "owner" were two
// words, a handler landing between them waited for its own lock forever
// (exit() from a SIGTERM handler hung in scanner_stop, about one run in 500
// of hostile_life_sigexit). The thread loops lock/unlock; each signal's
// handler does what the exit path does.
TEST(MmLock, HeldByMeHoldsAtEveryInstructionForASignalHandler) {
#if defined(__SANITIZE_THREAD__)
    GTEST_SKIP() << "TSan defers asynchronous signals to its own safe points";
#endif
    static MmLock l;  // static: a thread stuck in the handler must not outlive it
    g_sig_lock = &l;
    g_sig_handled = 0;
    g_sig_stop = false;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = exit_path_like_handler;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, nullptr, lock_unlock_loop, nullptr), 0);
    const long kSignals = 2000;  // the two-word lock failed within the first few
    bool stuck = false;
    for (long i = 0; i < kSignals && !stuck; ++i) {
        long before = g_sig_handled.load();
        pthread_kill(t, SIGUSR1);
        double t0 = now_s();
        while (g_sig_handled.load() == before && !stuck) {
            stuck = now_s() - t0 > 2.0;
            sched_yield();
        }
    }
    g_sig_stop = true;
    if (stuck) {
        pthread_detach(t);  // waits in its handler for ever
    } else {
        pthread_join(t, nullptr);
        sigaction(SIGUSR1, &old, nullptr);
    }
    EXPECT_FALSE(stuck) << "a handler waited for the lock its own thread holds, after "
                        << g_sig_handled.load() << " signals";
}

TEST(MetaAlloc, ZeroFilledPageRounded) {
    EXPECT_EQ(meta_alloc(0), nullptr);
    size_t before = meta_bytes_in_use();
    unsigned char* p = static_cast<unsigned char*>(meta_alloc(10));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ((uintptr_t)p % 4096, 0u);
    EXPECT_EQ(meta_bytes_in_use(), before + 4096);
    for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(p[i], 0) << i;  // the whole page is usable
    memset(p, 0xab, 4096);
    unsigned char* q = static_cast<unsigned char*>(meta_alloc(4097));
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(meta_bytes_in_use(), before + 4096 + 8192);
    meta_free(p, 10);
    meta_free(q, 4097);
    EXPECT_EQ(meta_bytes_in_use(), before);
    meta_free(nullptr, 100);  // no-op
    EXPECT_EQ(meta_bytes_in_use(), before);
}

TEST(MetaAlloc, ReallocKeepsContentsAndZeroesGrowth) {
    size_t before = meta_bytes_in_use();
    unsigned char* p = static_cast<unsigned char*>(meta_realloc(nullptr, 0, 5000));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(meta_bytes_in_use(), before + 8192);
    for (size_t i = 0; i < 5000; ++i) p[i] = (unsigned char)(i * 7);
    // Same rounded size: same block.
    EXPECT_EQ(meta_realloc(p, 5000, 8000), p);
    unsigned char* g = static_cast<unsigned char*>(meta_realloc(p, 8000, 100000));
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(meta_bytes_in_use(), before + 102400);
    for (size_t i = 0; i < 5000; ++i) ASSERT_EQ(g[i], (unsigned char)(i * 7)) << i;
    for (size_t i = 8192; i < 100000; ++i) ASSERT_EQ(g[i], 0) << i;
    unsigned char* s = static_cast<unsigned char*>(meta_realloc(g, 100000, 4096));
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(meta_bytes_in_use(), before + 4096);
    for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(s[i], (unsigned char)(i * 7)) << i;
    EXPECT_EQ(meta_realloc(s, 4096, 0), nullptr);
    EXPECT_EQ(meta_bytes_in_use(), before);
}
