// The range a syscall writes into: one range covering every buffer of the
// call (an over-approximation is safe: the scanner merely skips more pages
// while the call runs).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "scanner/runtime.h"

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

// The buffers of a call that writes into several, pinned for the call: up to
// four ranges, each pinned on its own (a structure on the stack and a buffer
// on the heap pinned as one span would hold off merging of everything
// between them while the call blocks); a fifth range joins the nearest.
class PinSet {
public:
    PinSet() = default;
    ~PinSet() {
        for (int i = 0; i < ntok_; ++i) rt_kernel_write_unpin(tok_[i]);
    }
    PinSet(const PinSet&) = delete;
    PinSet& operator=(const PinSet&) = delete;

    void add(const void* p, size_t n) { r_.add((uintptr_t)p, n); }
    void add(const Span& s) { add(s.start(), s.len()); }
    // The buffers of an iovec array, as one range (they are usually close).
    void add(const struct iovec* iov, long cnt) {
        Span sp;
        sp.add(iov, cnt);
        add(sp);
    }
    // recvmsg: the header itself (msg_flags and the lengths are written
    // back), the name, the control buffer and the data buffers.
    void add(const struct msghdr* m) {
        if (!m) return;
        add(m, sizeof *m);
        add(m->msg_name, m->msg_namelen);
        add(m->msg_control, m->msg_controllen);
        add(m->msg_iov, (long)m->msg_iovlen);
    }
    // A sockaddr and its length, both written back. The length is read
    // without faulting (a bad pointer is the kernel's EFAULT to report, not a
    // crash in the shim), and not at all when no window can ever open.
    void add_sockaddr(const void* addr, const socklen_t* alen) {
        if (!rt_windows_may_open()) return;
        socklen_t n = 0;
        if (addr && alen && rt_read_user(&n, alen, sizeof n)) add(addr, n);
        add(alen, sizeof *alen);
    }
    // Takes the pins; call once, after every add().
    void pin() {
        for (int i = 0; i < r_.n; ++i) tok_[ntok_++] = rt_kernel_write_pin(r_.lo[i], r_.hi[i] - r_.lo[i]);
    }

private:
    WriteRanges r_;
    int tok_[WriteRanges::kMax];
    int ntok_ = 0;
};

}  // namespace dedup
