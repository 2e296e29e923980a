// Finding and joining a merge domain: the abstract socket rendezvous, the
// memfd handed over with SCM_RIGHTS and checked before use, a member's entry
// and lock byte, and the listener's side (newcomers, taking the name over).
// See domain.h and docs/DESIGN.md ("Merge domains").
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <errno.h>
#include <time.h>

#include "scanner/domain_layout.h"
#include "scanner/log.h"

namespace dedup {

using namespace domain_layout;

namespace {

void socket_name(struct sockaddr_un* a, socklen_t* len, const char* name) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "libdedup-domain.%u.%s", (unsigned)sys::call(SYS_geteuid), name);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

// A socket bound and listening on the domain's name (non-blocking: the
// scanner's housekeeping accepts), or -1 when somebody holds the name.
int listen_on_name(const char* name) {
    long sock = sys::call(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sys::failed(sock)) return -1;
    struct sockaddr_un addr;
    socklen_t alen;
    socket_name(&addr, &alen, name);
    if (sys::failed(sys::call(SYS_bind, sock, (long)&addr, alen)) || sys::failed(sys::call(SYS_listen, sock, 64))) {
        sys::close((int)sock);
        return -1;
    }
    return (int)sock;
}

// The one message of the handover: a magic number, and the domain's memfd
// as SCM_RIGHTS (filled by the sender, by the kernel on receipt).
struct FdMessage {
    uint64_t magic;
    struct iovec iov;
    alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    struct msghdr msg;
    explicit FdMessage(uint64_t m) : magic(m) {
        iov = {&magic, sizeof(magic)};
        memset(ctl, 0, sizeof(ctl));
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl;
        msg.msg_controllen = sizeof(ctl);
    }
    FdMessage(const FdMessage&) = delete;  // iov and msg point into it
};

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
        if (memfd == -2) return false;  // could not create its memory (said)
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
        FdMessage m(0);
        long n = sys::call(SYS_recvmsg, sock, (long)&m.msg, MSG_CMSG_CLOEXEC);
        struct cmsghdr* c = n > 0 ? CMSG_FIRSTHDR(&m.msg) : nullptr;
        ok = c && c->cmsg_type == SCM_RIGHTS && m.magic == kMagic;
        if (ok) memcpy(memfd, CMSG_DATA(c), sizeof(int));
    }
    sys::close((int)sock);
    return ok;
}

// *memfd = -2 when the domain's memory cannot be created (said).
bool Domain::create_and_listen(int* memfd) {
    int sock = listen_on_name(name_);
    if (sock < 0) return false;
    long fd = sys::call(SYS_memfd_create, (long)"libdedup-domain", MFD_CLOEXEC);
    long err = fd;
    if (!sys::failed(fd)) err = sys::call(SYS_fchmod, fd, 0600);
    if (!sys::failed(err)) err = sys::call(SYS_ftruncate, fd, (long)kFileBytes);
    if (sys::failed(err)) {
        if (!sys::failed(fd)) sys::close((int)fd);
        sys::close((int)sock);
        log_warning("domain '%s': cannot create its memory (%s); merging alone", name_, strerror((int)-err));
        *memfd = -2;  // said: no retry
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

// ---- the listener ---------------------------------------------------------------------

void Domain::accept_newcomers() {
    for (;;) {
        long c = sys::call(SYS_accept4, listen_fd_, 0, 0, SOCK_CLOEXEC);
        if (sys::failed(c)) return;
        if (peer_is_us((int)c)) {
            FdMessage m(kMagic);
            struct cmsghdr* h = CMSG_FIRSTHDR(&m.msg);
            h->cmsg_level = SOL_SOCKET;
            h->cmsg_type = SCM_RIGHTS;
            h->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(h), &memfd_, sizeof(int));
            sys::call(SYS_sendmsg, c, (long)&m.msg, MSG_NOSIGNAL);
        }
        sys::close((int)c);
    }
}

void Domain::take_over_name() {
    int sock = listen_on_name(name_);
    if (sock >= 0) listen_fd_ = park_fd(sock);
}

// ---- descriptors ----------------------------------------------------------------------

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

}  // namespace dedup
