// The range a syscall writes into: one range covering every buffer of the
// call (an over-approximation is safe: the scanner merely skips more pages
// while the call runs).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace dedup {

struct Span {
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    void add(const void* p, size_t n) {
        if (!p || !n) return;
        uintptr_t s = (uintptr_t)p;
        if (s < lo) lo = s;
        if (s + n > hi) hi = s + n;
    }
    void add(const struct iovec* iov, long cnt) {
        if (!iov || cnt <= 0 || cnt > 1024) return;
        for (long i = 0; i < cnt; ++i) add(iov[i].iov_base, iov[i].iov_len);
    }
    void add(const struct msghdr* m) {
        if (!m) return;
        add(m->msg_iov, (long)m->msg_iovlen);
        add(m->msg_control, m->msg_controllen);
        add(m->msg_name, m->msg_namelen);
    }
    const void* start() const { return hi ? (const void*)lo : nullptr; }
    size_t len() const { return hi ? hi - lo : 0; }
};


}  // namespace dedup
