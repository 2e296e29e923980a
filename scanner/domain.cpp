#include "scanner/domain.h"

#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <linux/falloc.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/os/kept_file.h"
#include "scanner/os/sys.h"

namespace dedup {

namespace {

constexpr uint64_t kMagic = 0x6c69626465647570ull;  // "libdedup"
constexpr uint32_t kLayout = 2;
constexpr uint64_t kFreed = 1ull << 63;             // in Slot::users: no member may take it
constexpr uint64_t kStacked = 1ull << 62;           // with kFreed: on the free stack (once)
constexpr uint64_t kSlots = 1ull << 22;             // 16 GiB of canonical pages
// The hint table is small and set-associative: a hash lands in a random bucket,
// so every table page gets touched (allocated) soon; 2 MiB for the whole
// domain. A lost hint only delays a merge to a later pass.
constexpr uint64_t kHintEntries = 1ull << 18;
constexpr int kHintWays = 8;  // entries per bucket: 64 bytes
constexpr int kHintShift = 64 - 15;  // 2^15 buckets
static_assert((kHintEntries >> 15) == kHintWays, "buckets x ways = entries");

// The memfd's layout: header, slot table, free stack, hints, pages. The slot
// table and free stack are filled from the front, so tmpfs allocates only
// what is used.
constexpr uint64_t kHeaderBytes = 64u << 10;
constexpr uint64_t kSlotOff = kHeaderBytes;
constexpr uint64_t kFreeOff = kSlotOff + kSlots * 16;
constexpr uint64_t kHintOff = kFreeOff + kSlots * 4;
constexpr uint64_t kMetaBytes = kHintOff + kHintEntries * 8;
constexpr uint64_t kDataOff = (kMetaBytes + (2u << 20) - 1) & ~uint64_t((2u << 20) - 1);
constexpr uint64_t kFileBytes = kDataOff + kSlots * 4096;

}  // namespace

struct DomainMember {
    std::atomic<uint32_t> state;  // 0 free, 1 alive, 2 reserved for a forked child
    std::atomic<uint32_t> pid;
    std::atomic<uint64_t> pages_mapped;
};

struct DomainSlot {
    std::atomic<uint64_t> users;  // member bits, kFreed
    std::atomic<uint64_t> hash;   // 0 until published
};

struct DomainShared {
    uint64_t magic;
    uint32_t layout;
    uint32_t uid;
    char name[72];
    pthread_mutex_t lock;  // robust, process-shared
    uint64_t next_slot;    // bump pointer (lock)
    uint64_t free_count;   // free stack depth (lock)
    std::atomic<uint64_t> live_slots;
    DomainMember members[Domain::kMaxMembers];
};
static_assert(sizeof(DomainShared) <= kHeaderBytes, "the header fits its page");

namespace {

DomainSlot* slots(DomainShared* d) { return reinterpret_cast<DomainSlot*>(reinterpret_cast<char*>(d) + kSlotOff); }
uint32_t* free_stack(DomainShared* d) { return reinterpret_cast<uint32_t*>(reinterpret_cast<char*>(d) + kFreeOff); }
std::atomic<uint64_t>* hint_table(DomainShared* d) {
    return reinterpret_cast<std::atomic<uint64_t>*>(reinterpret_cast<char*>(d) + kHintOff);
}

bool live_with_hash(DomainShared* d, uint32_t slot, uint64_t hash) {
    if (slot >= kSlots) return false;
    DomainSlot& s = slots(d)[slot];
    uint64_t u = s.users.load(std::memory_order_acquire);
    return u && !(u & kFreed) && s.hash.load(std::memory_order_acquire) == hash;
}

void socket_name(struct sockaddr_un* a, socklen_t* len, const char* name) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "libdedup-domain.%u.%s", (unsigned)sys::call(SYS_geteuid), name);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

bool peer_is_us(int sock) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    return !sys::failed(sys::call(SYS_getsockopt, sock, SOL_SOCKET, SO_PEERCRED, (long)&cred, (long)&len)) &&
           cred.uid == (uid_t)sys::call(SYS_geteuid);
}

bool valid_name(const char* n) {
    size_t len = strlen(n);
    if (len == 0 || len > 64) return false;
    for (const char* c = n; *c; ++c)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
              *c == '_' || *c == '-'))
            return false;
    return true;
}

// A byte-range lock on the member's slot of the memfd: held for the life of
// the member (an OFD lock goes when its last descriptor is closed, also by
// the kernel at death).
bool lock_byte(int fd, int member, bool take) {
    struct flock lk;
    memset(&lk, 0, sizeof(lk));
    lk.l_type = take ? F_WRLCK : F_UNLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = member;
    lk.l_len = 1;
    return !sys::failed(sys::call(SYS_fcntl, fd, F_OFD_SETLK, (long)&lk));
}

bool byte_locked(int fd, int member) {
    struct flock lk;
    memset(&lk, 0, sizeof(lk));
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = member;
    lk.l_len = 1;
    if (sys::failed(sys::call(SYS_fcntl, fd, F_OFD_GETLK, (long)&lk))) return true;  // unknown: alive
    return lk.l_type != F_UNLCK;
}

// A new open file description of the memfd (for a member's lock).
int reopen(int fd) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    long r = sys::call(SYS_open, (long)path, O_RDWR | O_CLOEXEC);
    return sys::failed(r) ? -1 : park_fd((int)r);
}

}  // namespace

// ---- joining ----------------------------------------------------------------------

bool Domain::join(const char* name) {
    if (!valid_name(name)) {
        log_warning("DEDUP_DOMAIN='%.80s' is not 1-64 characters of A-Z a-z 0-9 . _ -; merging alone", name);
        return false;
    }
    snprintf(name_, sizeof(name_), "%s", name);
    for (int attempt = 0; attempt < 5; ++attempt) {
        int memfd = -1;
        if (connect_and_receive(&memfd)) return attach(memfd, false);
        if (memfd == -2) return false;  // refused (said)
        if (create_and_listen(&memfd)) return attach(memfd, true);
        struct timespec ts = {0, 20 * 1000000L};  // somebody just took the name: ask them
        nanosleep(&ts, nullptr);
    }
    log_warning("domain '%s': could not reach or create it; merging alone", name_);
    return false;
}

// *memfd = -2 when the holder of the name is not us or hands an unsafe file.
bool Domain::connect_and_receive(int* memfd) {
    long sock = sys::call(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sys::failed(sock)) return false;
    struct sockaddr_un addr;
    socklen_t alen;
    socket_name(&addr, &alen, name_);
    bool ok = !sys::failed(sys::call(SYS_connect, sock, (long)&addr, alen));
    if (ok && !peer_is_us((int)sock)) {
        log_warning("domain '%s': its socket is held by another user; merging alone", name_);
        *memfd = -2;
        ok = false;
    }
    if (ok) {
        // The listening member hands the memfd over from its scanner's
        // housekeeping, every 20 ms; a listener that is stopped (SIGSTOP, a
        // frozen cgroup) costs this process's first mmap at most 5 x 300 ms,
        // then it merges alone.
        struct timeval tv = {0, 300 * 1000};
        sys::call(SYS_setsockopt, sock, SOL_SOCKET, SO_RCVTIMEO, (long)&tv, sizeof(tv));
        uint64_t magic = 0;
        struct iovec iov = {&magic, sizeof(magic)};
        alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
        struct msghdr msg;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof(ctl);
        long n = sys::call(SYS_recvmsg, sock, (long)&msg, MSG_CMSG_CLOEXEC);
        struct cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
        ok = c && c->cmsg_type == SCM_RIGHTS && magic == kMagic;
        if (ok) memcpy(memfd, CMSG_DATA(c), sizeof(int));
    }
    sys::close((int)sock);
    return ok;
}

bool Domain::create_and_listen(int* memfd) {
    long sock = sys::call(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sys::failed(sock)) return false;
    struct sockaddr_un addr;
    socklen_t alen;
    socket_name(&addr, &alen, name_);
    if (sys::failed(sys::call(SYS_bind, sock, (long)&addr, alen)) || sys::failed(sys::call(SYS_listen, sock, 64))) {
        sys::close((int)sock);
        return false;
    }
    long fd = sys::call(SYS_memfd_create, (long)"libdedup-domain", MFD_CLOEXEC);
    if (sys::failed(fd) || sys::failed(sys::call(SYS_fchmod, fd, 0600)) ||
        sys::failed(sys::call(SYS_ftruncate, fd, (long)kFileBytes))) {
        if (!sys::failed(fd)) sys::close((int)fd);
        sys::close((int)sock);
        log_warning("domain '%s': cannot create its memory (%s); merging alone", name_, strerror(ENOMEM));
        return false;
    }
    listen_fd_ = park_fd((int)sock);
    *memfd = (int)fd;
    return true;
}

bool Domain::attach(int memfd, bool fresh) {
    struct stat st;
    if (sys::failed(sys::call(SYS_fstat, memfd, (long)&st)) || st.st_uid != (uid_t)sys::call(SYS_geteuid) ||
        (st.st_mode & 077) || (uint64_t)st.st_size != kFileBytes) {
        log_warning("domain '%s': its memory is not this user's alone (owner %u, mode %o); merging alone", name_,
                    (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        sys::close(memfd);
        return false;
    }
    long err = 0;
    void* m = sys::mmap(nullptr, kMetaBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, memfd, 0, &err);
    if (m == MAP_FAILED) {
        sys::close(memfd);
        return false;
    }
    DomainShared* d = static_cast<DomainShared*>(m);
    if (fresh) {
        d->magic = kMagic;
        d->layout = kLayout;
        d->uid = (uint32_t)sys::call(SYS_geteuid);
        snprintf(d->name, sizeof(d->name), "%s", name_);
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&d->lock, &a);
        pthread_mutexattr_destroy(&a);
    } else if (d->magic != kMagic || d->layout != kLayout || d->uid != (uint32_t)sys::call(SYS_geteuid) ||
               strncmp(d->name, name_, sizeof(d->name))) {
        log_warning("domain '%s': its memory is not a domain of this version and user; merging alone", name_);
        sys::munmap(m, kMetaBytes);
        sys::close(memfd);
        return false;
    }
    shared_ = d;
    memfd_ = park_fd(memfd);
    member_fd_ = reopen(memfd_);
    if (member_fd_ < 0 || !claim_member()) {
        log_warning("domain '%s': no member slot (at most %d members); merging alone", name_, kMaxMembers);
        sys::munmap(m, kMetaBytes);
        shared_ = nullptr;
        int* fds[] = {&memfd_, &member_fd_, &listen_fd_};
        for (int* f : fds)
            if (*f >= 0) sys::close(*f), *f = -1;
        return false;
    }
    return true;
}

bool Domain::claim_member() {
    lock();
    reap_dead_members();
    int found = -1;
    for (int i = 0; i < kMaxMembers && found < 0; ++i)
        if (shared_->members[i].state.load() == 0 && lock_byte(member_fd_, i, true)) found = i;
    if (found >= 0) {
        shared_->members[found].pid.store((uint32_t)sys::getpid());
        shared_->members[found].pages_mapped.store(0);
        shared_->members[found].state.store(1);
        member_ = found;
    }
    unlock();
    return found >= 0;
}

// ---- the lock -----------------------------------------------------------------------

void Domain::lock() const {
    int r = pthread_mutex_lock(&shared_->lock);
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

void Domain::accept_newcomers() {
    for (;;) {
        long c = sys::call(SYS_accept4, listen_fd_, 0, 0, SOCK_CLOEXEC);
        if (sys::failed(c)) return;
        if (peer_is_us((int)c)) {
            uint64_t magic = kMagic;
            struct iovec iov = {&magic, sizeof(magic)};
            alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
            memset(ctl, 0, sizeof(ctl));
            struct msghdr msg;
            memset(&msg, 0, sizeof(msg));
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctl;
            msg.msg_controllen = sizeof(ctl);
            struct cmsghdr* h = CMSG_FIRSTHDR(&msg);
            h->cmsg_level = SOL_SOCKET;
            h->cmsg_type = SCM_RIGHTS;
            h->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(h), &memfd_, sizeof(int));
            sys::call(SYS_sendmsg, c, (long)&msg, MSG_NOSIGNAL);
        }
        sys::close((int)c);
    }
}

void Domain::take_over_name() {
    long sock = sys::call(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sys::failed(sock)) return;
    struct sockaddr_un addr;
    socklen_t alen;
    socket_name(&addr, &alen, name_);
    if (!sys::failed(sys::call(SYS_bind, sock, (long)&addr, alen)) && !sys::failed(sys::call(SYS_listen, sock, 64)))
        listen_fd_ = park_fd((int)sock);
    else
        sys::close((int)sock);
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

int Domain::fds(int out[3]) const {
    int n = 0;
    const int mine[] = {memfd_, member_fd_, listen_fd_};
    for (int fd : mine)
        if (fd >= 0) out[n++] = fd;
    return n;
}

void Domain::vacate_fd(int fd) {
    int* mine[] = {&memfd_, &member_fd_, &listen_fd_};
    for (int* m : mine) {
        if (*m != fd) continue;
        long moved = sys::call(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 0);
        *m = sys::failed(moved) ? -1 : park_fd((int)moved);
        sys::close(fd);
    }
}

void Domain::vanish_for_test() {
    int* mine[] = {&memfd_, &member_fd_, &listen_fd_};
    for (int* m : mine)
        if (*m >= 0) sys::close(*m), *m = -1;
    shared_ = nullptr;  // the mapping stays: a dead process's would go, nothing reads it here
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
