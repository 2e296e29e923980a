// What an io_uring request (SQE) writes into, and until when: pinned until
// its completion, left alone (long-lived targets, requests that post no
// completion), or the whole process left alone (what the shim cannot see).
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "scanner/kw_uring.h"
#include "scanner/runtime.h"

namespace dedup {
namespace uring {

void Ranges::add_iovecs(uint64_t iov, uint64_t cnt) {
    struct iovec v[64];
    if (cnt > 1024) cnt = 1024;
    for (uint64_t i = 0; i < cnt; i += 64) {
        size_t k = cnt - i < 64 ? cnt - i : 64;
        if (!rt_read_user(v, (const struct iovec*)iov + i, k * sizeof v[0])) return;
        for (size_t j = 0; j < k; ++j) add((uintptr_t)v[j].iov_base, v[j].iov_len);
    }
}

// What the kernel will write into for this SQE, and until when.
Act classify(const Sqe& q, Ranges& out) {
    bool select = q.flags & kSqeBufferSelect;
    Act pin = q.flags & kSqeCqeSkipSuccess ? Act::kLeaveAlone : Act::kPin;  // no CQE to wait for
    switch (q.opcode) {
        case kRead:
        case kRecv:
            if (select || (q.opcode == kRecv && (q.ioprio & kRecvMultishot))) return Act::kNone;  // provided buffers
            out.add(q.addr, q.len);
            return pin;
        case kReadv:
            if (select) return Act::kNone;
            out.add_iovecs(q.addr, q.len);
            return pin;
        case kRecvmsg: {
            if (q.ioprio & kRecvMultishot) return Act::kNone;  // headers go into provided buffers
            struct msghdr m;
            if (!rt_read_user(&m, (const void*)q.addr, sizeof m)) return Act::kNone;  // the CQE says EFAULT
            out.add(q.addr, sizeof(struct msghdr));  // msg_flags, lengths written back
            out.add((uintptr_t)m.msg_name, m.msg_namelen);
            out.add((uintptr_t)m.msg_control, m.msg_controllen);
            if (!select) out.add_iovecs((uintptr_t)m.msg_iov, m.msg_iovlen);
            return pin;
        }
        case kAccept: {
            uint32_t alen = 0;
            if (q.addr && rt_read_user(&alen, (const void*)q.off, sizeof alen)) out.add(q.addr, alen);
            out.add(q.off, sizeof(uint32_t));
            return q.ioprio & kAcceptMultishot ? Act::kLeaveAlone : pin;
        }
        case kStatx:
            out.add(q.off, 256);  // struct statx
            return pin;
        case kFilesUpdate:
            out.add(q.addr, (uint64_t)q.len * sizeof(int32_t));  // allocated indexes written back
            return pin;
        case kFgetxattr:
        case kGetxattr:
            out.add(q.off, q.len);
            return pin;
        case kWaitid:
            out.add(q.off, 128);  // siginfo_t
            return pin;
        case kEpollWait:
            out.add(q.addr, (uint64_t)q.len * 12);  // struct epoll_event (packed)
            return pin;
        case kPipe:
            out.add(q.addr, 2 * sizeof(int32_t));
            return pin;
        case kMadvise:
            // The kernel's madvise on merged pages would not do what the
            // program asks (DONTNEED brings the canonical page back): the
            // range becomes the program's own memory first.
            out.add(q.addr, q.len);
            return Act::kLeaveAlone;
        case kProvideBuffers:  // written whenever a request selects one, for as long as they are provided
            out.add(q.addr, (uint64_t)q.len * (uint32_t)q.fd);
            return Act::kLeaveAlone;
        case kUringCmd:
        case kUringCmd128:  // driver-specific buffers (NVMe passthrough DMA, socket commands)
            return Act::kAllAlone;
        case kReadFixed:
        case kReadvFixed:  // registered buffers: left alone when registered
        case kReadMultishot:
        case kRecvZc:  // provided buffers, the zero-copy area
            return Act::kNone;
        default:
            return q.opcode > kLastKnown ? Act::kAllAlone : Act::kNone;
    }
}

}  // namespace uring
}  // namespace dedup
