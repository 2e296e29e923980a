#include "scanner/domain.h"

#include <atomic>
#include <errno.h>
#include <linux/falloc.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "scanner/domain_layout.h"
#include "scanner/log.h"
#include "scanner/os/clock.h"

namespace dedup {

using namespace domain_layout;

// ---- the lock -----------------------------------------------------------------------

namespace {

// When a member dies holding the lock, the kernel marks the lock's owner
// dead and wakes one waiter. If that waiter is a member being killed too,
// the wake-up dies with it and the others sleep on: so they wait in slices,
// and each slice reads the lock word again, which says its owner died.
int lock_robust(pthread_mutex_t* m) {
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer (GCC 12) does not intercept pthread_mutex_clocklock,
    // and its timedlock ignores EOWNERDEAD: it would take every later
    // unlock for one of an unlocked mutex. Its trylock knows both.
    for (;;) {
        int r = pthread_mutex_trylock(m);
        if (r != EBUSY) return r;
        usleep(1000);
    }
#else
    constexpr uint64_t kSliceNs = 50 * 1000 * 1000;
    for (;;) {
        uint64_t until = monotonic_ns() + kSliceNs;  // a wall-clock step cannot stretch a slice
        struct timespec t = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
        int r = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &t);
        if (r != ETIMEDOUT) return r;
    }
#endif
}

}  // namespace

void Domain::lock() const {
    int r = lock_robust(&shared_->lock);
    if (r != EOWNERDEAD) return;
    // A member died holding the lock: what it changed may be half done.
    // The slot table is the truth (every change to it is one atomic store);
    // the free stack is rebuilt from it.
    DomainShared* d = shared_;
    d->free_count = 0;
    uint64_t live = 0;
    for (uint32_t i = 0; i < d->next_slot; ++i) {
        DomainSlot& s = slots(d)[i];
        uint64_t u = s.users.load();
        if (u && !(u & kFreed)) {
            ++live;
            continue;
        }
        if (!(u & kStacked))  // its last user dropped it, and died or waits for the lock
            sys::call(SYS_fallocate, memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (long)(kDataOff + (uint64_t)i * 4096), 4096);
        s.hash.store(0, std::memory_order_relaxed);
        s.users.store(kFreed | kStacked);
        free_stack(d)[d->free_count++] = i;
    }
    d->live_slots.store(live);
    pthread_mutex_consistent(&d->lock);
}

void Domain::unlock() const { pthread_mutex_unlock(&shared_->lock); }

// ---- slots ----------------------------------------------------------------------------

int Domain::data_fd() const { return memfd_; }
uint64_t Domain::data_offset() const { return kDataOff; }
uint64_t Domain::capacity() const { return kSlots; }

int64_t Domain::alloc_run(uint32_t n) {
    if (!shared_ || n == 0) return -1;
    DomainShared* d = shared_;
    lock();
    int64_t first = -1;
    if (n == 1 && d->free_count) first = free_stack(d)[--d->free_count];
    else if (d->next_slot + n <= kSlots) first = (int64_t)d->next_slot, d->next_slot += n;
    if (first >= 0) {
        for (uint32_t i = 0; i < n; ++i) {
            slots(d)[first + i].hash.store(0, std::memory_order_relaxed);
            slots(d)[first + i].users.store(bit(), std::memory_order_release);
        }
        d->live_slots.fetch_add(n);
    }
    unlock();
    if (first < 0 && !full_warned_) {
        full_warned_ = true;
        log_warning("domain '%s': its store is full (%llu canonical pages); no new merges until some are freed", name_,
                    (unsigned long long)kSlots);
    }
    return first;
}

void Domain::publish(uint32_t slot, uint64_t hash) {
    // The content is in the slot: from now on other members may learn it.
    slots(shared_)[slot].hash.store(hash, std::memory_order_release);
}

void Domain::learn(bool all, void (*fn)(uint64_t hash, uint32_t slot, void* ctx), void* ctx) {
    if (!shared_) return;
    DomainShared* d = shared_;
    uint64_t end = __atomic_load_n(&d->next_slot, __ATOMIC_ACQUIRE);
    // A slot allocated but not yet published (its member is filling and
    // mapping it) is learned on a later call: the next one starts there.
    uint64_t pending = end;
    for (uint64_t i = all ? 0 : learned_; i < end; ++i) {
        uint64_t h = slots(d)[i].hash.load(std::memory_order_acquire);
        if (h && live_with_hash(d, (uint32_t)i, h)) {
            fn(h, (uint32_t)i, ctx);
        } else if (!h && pending == end && i >= learned_) {
            uint64_t u = slots(d)[i].users.load(std::memory_order_acquire);
            if (u && !(u & kFreed) && !(u & bit())) pending = i;
        }
    }
    if (pending > learned_) learned_ = pending;
}

bool Domain::take(uint32_t slot, uint64_t hash) {
    if (!shared_ || slot >= kSlots || hash == 0) return false;  // 0: not published
    std::atomic<uint64_t>& users = slots(shared_)[slot].users;
    uint64_t u = users.load(std::memory_order_acquire);
    do {
        if ((u & kFreed) || !u) return false;  // freed, or being freed
        if (u & bit()) break;
    } while (!users.compare_exchange_weak(u, u | bit(), std::memory_order_acq_rel));
    // Our bit is set: the slot cannot be freed now. It may have been freed
    // and filled again since it was looked up: then it is not this content.
    if (slots(shared_)[slot].hash.load(std::memory_order_acquire) == hash) return true;
    drop(slot);
    return false;
}

void Domain::drop(uint32_t slot) {
    if (!shared_ || slot >= kSlots) return;
    std::atomic<uint64_t>& users = slots(shared_)[slot].users;
    uint64_t before = users.fetch_and(~bit(), std::memory_order_acq_rel);
    if ((before & ~bit()) != 0 || !(before & bit())) return;
    uint64_t expected = 0;
    if (!users.compare_exchange_strong(expected, kFreed)) return;  // somebody took it meanwhile
    lock();
    free_slot(slot);
    unlock();
}

// Lock held; the slot is marked kFreed by the caller. Pushed once only: a
// member recovering the lock from a dead holder may have stacked it already
// (and someone may even have taken it off again).
void Domain::free_slot(uint32_t slot) {
    DomainShared* d = shared_;
    uint64_t expected = kFreed;
    if (!slots(d)[slot].users.compare_exchange_strong(expected, kFreed | kStacked)) return;
    slots(d)[slot].hash.store(0, std::memory_order_relaxed);
    sys::call(SYS_fallocate, memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (long)(kDataOff + (uint64_t)slot * 4096),
              4096);
    free_stack(d)[d->free_count++] = slot;
    d->live_slots.fetch_sub(1);
}

uint64_t Domain::hash(uint32_t slot) const {
    return shared_ && slot < kSlots ? slots(shared_)[slot].hash.load(std::memory_order_acquire) : 0;
}

bool Domain::used_by_others(uint32_t slot) const {
    if (!shared_ || slot >= kSlots) return false;
    uint64_t u = slots(shared_)[slot].users.load(std::memory_order_relaxed);
    return !(u & kFreed) && (u & ~bit()) != 0;
}

bool Domain::hint(uint64_t hash) {
    if (!shared_) return false;
    // A bucket of kHintWays entries (one cache line): a hint survives until
    // kHintWays other contents landed in its bucket since, so members that
    // scan in the same order do not keep overwriting each other's hints.
    std::atomic<uint64_t>* b = hint_table(shared_) + ((hash * 0x9e3779b97f4a7c15ull) >> kHintShift) * kHintWays;
    const uint64_t tag = hash & ~0xffull;
    int victim = -1;
    for (int i = 0; i < kHintWays; ++i) {
        uint64_t v = b[i].load(std::memory_order_relaxed);
        int who = (int)(v & 0xff) - 1;
        bool alive = v && who >= 0 && who < kMaxMembers && shared_->members[who].state.load(std::memory_order_relaxed) == 1;
        if (alive && (v & ~0xffull) == tag) {
            if (who != member_) return true;
            return false;  // ours already
        }
        if (!alive && victim < 0) victim = i;
    }
    if (victim < 0) victim = (int)(++hint_clock_ % kHintWays);
    b[victim].store(tag | (uint64_t)(member_ + 1), std::memory_order_relaxed);
    return false;
}

// ---- housekeeping ------------------------------------------------------------------------

// Lock held: members whose lock is gone died; their bits are cleared and the
// slots only they used are freed.
void Domain::reap_dead_members() {
    DomainShared* d = shared_;
    for (int m = 0; m < kMaxMembers; ++m) {
        if (m == member_ || d->members[m].state.load() == 0 || byte_locked(member_fd_, m)) continue;
        uint64_t b = 1ull << m;
        for (uint32_t i = 0; i < d->next_slot; ++i) {
            std::atomic<uint64_t>& users = slots(d)[i].users;
            if (!(users.load(std::memory_order_relaxed) & b)) continue;
            uint64_t before = users.fetch_and(~b);
            uint64_t expected = 0;
            if ((before & ~b) == 0 && users.compare_exchange_strong(expected, kFreed)) free_slot(i);
        }
        d->members[m].pages_mapped.store(0);
        d->members[m].state.store(0);
    }
}

void Domain::tick(uint64_t pages_mapped) {
    if (!shared_) return;
    shared_->members[member_].pages_mapped.store(pages_mapped, std::memory_order_relaxed);
    uint64_t now = monotonic_ns();
    if (listen_fd_ >= 0) accept_newcomers();
    else if (now >= next_take_over_ns_) take_over_name(), next_take_over_ns_ = now + 20 * 1000000ull;
    if (now >= next_reap_ns_) {
        next_reap_ns_ = now + 1000 * 1000000ull;
        lock();
        reap_dead_members();
        unlock();
    }
}

// ---- fork -------------------------------------------------------------------------------

void Domain::before_fork() {
    if (!shared_) return;
    lock();
    reap_dead_members();
    int c = -1;
    int fd = reopen(memfd_);
    for (int i = 0; fd >= 0 && i < kMaxMembers && c < 0; ++i)
        if (shared_->members[i].state.load() == 0 && lock_byte(fd, i, true)) c = i;
    if (c >= 0) {
        shared_->members[c].state.store(2);
        uint64_t cb = 1ull << c;
        for (uint32_t i = 0; i < shared_->next_slot; ++i) {
            std::atomic<uint64_t>& users = slots(shared_)[i].users;
            uint64_t u = users.load();
            if ((u & bit()) && !(u & kFreed)) users.fetch_or(cb);
        }
        child_member_ = c;
        child_fd_ = fd;
    } else if (fd >= 0) {
        sys::close(fd);
    }
    unlock();
}

void Domain::after_fork_parent() {
    // The child holds its lock alone now (its copy of child_fd_).
    if (child_fd_ >= 0) sys::close(child_fd_);
    child_fd_ = -1;
    child_member_ = -1;
}

void Domain::after_fork_child() {
    if (!shared_) return;
    // The parent's lock must not live on in us; the listening socket stays
    // the parent's.
    sys::close(member_fd_);
    if (listen_fd_ >= 0) sys::close(listen_fd_);
    listen_fd_ = -1;
    if (child_member_ < 0) {  // no slot for us: merging alone
        shared_ = nullptr;
        return;
    }
    member_ = child_member_;
    member_fd_ = child_fd_;
    child_fd_ = -1;
    child_member_ = -1;
    shared_->members[member_].pid.store((uint32_t)sys::getpid());
    shared_->members[member_].state.store(1);
}

void Domain::vanish_for_test() {
    int* mine[] = {&memfd_, &member_fd_, &listen_fd_};
    for (int* m : mine)
        if (*m >= 0) sys::close(*m), *m = -1;
    shared_ = nullptr;  // the mapping stays: a dead process's would go, nothing reads it here
}

int* Domain::lose_wakeup_for_test(int (*wait_for_waiter)(void*), void* arg) {
    // A thread holds the lock; once wait_for_waiter says another waits on
    // it, the word is made what a killed holder leaves (owner died, waiters
    // bit kept), with no wake-up: the one the kernel sent went to a waiter
    // that was killed too. The holding thread then ends without unlocking
    // (its robust list no longer matches the word).
    struct Args {
        DomainShared* d;
        int (*wait)(void*);
        void* arg;
    } a{shared_, wait_for_waiter, arg};
    pthread_t t;
    pthread_create(&t, nullptr, [](void* p) -> void* {
        Args* a = static_cast<Args*>(p);
        pthread_mutex_lock(&a->d->lock);
        a->wait(a->arg);
        int* word = &a->d->lock.__data.__lock;
        __atomic_store_n(word, (int)(FUTEX_OWNER_DIED | FUTEX_WAITERS), __ATOMIC_SEQ_CST);
        return nullptr;
    }, &a);
    pthread_join(t, nullptr);
    return &shared_->lock.__data.__lock;
}

void Domain::abandon_lock_for_test() {
    pthread_t t;
    pthread_create(&t, nullptr, [](void* d) -> void* {
        pthread_mutex_lock(&static_cast<DomainShared*>(d)->lock);
        return nullptr;  // exits holding it: the next locker gets EOWNERDEAD
    }, shared_);
    pthread_join(t, nullptr);
}

// ---- counters ------------------------------------------------------------------------------

uint32_t Domain::members() const {
    uint32_t n = 0;
    for (int i = 0; shared_ && i < kMaxMembers; ++i) n += shared_->members[i].state.load(std::memory_order_relaxed) == 1;
    return n;
}

uint64_t Domain::canonical_pages() const { return shared_ ? shared_->live_slots.load() : 0; }

uint64_t Domain::pages_mapped_all() const {
    uint64_t n = 0;
    for (int i = 0; shared_ && i < kMaxMembers; ++i)
        if (shared_->members[i].state.load(std::memory_order_relaxed) == 1)
            n += shared_->members[i].pages_mapped.load(std::memory_order_relaxed);
    return n;
}

}  // namespace dedup
