// io_uring as the shim follows it: what the kw_uring*.cpp files share.
// Requests complete after io_uring_enter returned, so a pin for the call is
// not enough: the buffers of requests in flight stay pinned until the shim
// sees their completion (CQE), and what it cannot see leaves the process
// alone (docs/DESIGN.md, "Kernel writers the shim cannot hold off").
//
//   kw_uring.cpp           the calls: io_uring_enter and io_uring_register,
//                          raw or through liburing
//   kw_uring_rings.cpp     the rings the shim saw set up: where they are
//                          mapped, their descriptors
//   kw_uring_sqe.cpp       what a request writes into, and until when
//   kw_uring_inflight.cpp  requests in flight: pinned at submission,
//                          released at their completion
//
// g_ring_lock guards the ring table, the requests in flight and the
// completion cursors. Like every lock of the kernel writers it is a spin
// lock, never held across a system call or a call that takes the mm lock.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/kernel_writers.h"
#include "scanner/kw_uring_abi.h"
#include "scanner/runtime.h"

namespace dedup {
namespace uring {

constexpr int kMaxRings = 64;
constexpr int kRegRingSlots = 16;  // registered ring descriptors per thread the shim follows
extern kw::SpinLock g_ring_lock __attribute__((visibility("hidden")));  // in kw_uring_rings.cpp

// A ring as the walk needs it, from a RingRec or from liburing's struct.
struct View {
    uintptr_t key = 0;  // the SQ head's address: one per ring
    const unsigned* khead = nullptr;
    const unsigned* ktail = nullptr;
    unsigned mask = 0;
    const unsigned* array = nullptr;  // null: IORING_SETUP_NO_SQARRAY
    const uint8_t* sqes = nullptr;
    unsigned sqe_shift = 6;
    bool sqe_mixed = false;
    const unsigned* cq_ktail = nullptr;
    unsigned cq_mask = 0;
    const uint8_t* cqes = nullptr;
    unsigned cqe_shift = 4;
    bool cqe_mixed = false;
    bool sqpoll = false;
};

inline unsigned load_acquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

// ---- the rings (kw_uring_rings.cpp) -------------------------------------------------

// The ring of liburing's struct io_uring.
bool view_of_liburing(const void* ring, View* v);
// The ring io_uring_enter(fd, ..., enter_flags) submits to, if the shim saw
// it set up and mapped. Takes g_ring_lock.
bool view_of_entered(unsigned fd, unsigned enter_flags, View* v);
// The ring whose key (SQ head address) is `key`. Takes g_ring_lock.
bool view_of_key(uintptr_t key, View* v);
// This thread's registered ring descriptors (IORING_REGISTER_RING_FDS):
// slot `index` (below kRegRingSlots) now stands for fd (-1: unregistered).
void set_registered_ring(unsigned index, int fd);
// Descriptors duplicated and closed: the rings open on them.
void ring_fd_dup(int oldfd, int newfd);
void ring_fds_closed(unsigned first, unsigned last);

// ---- what a request writes into (kw_uring_sqe.cpp) ----------------------------------

// Up to four ranges; a fifth joins the nearest.
struct Ranges : WriteRanges {
    void add(uint64_t p, uint64_t len) { WriteRanges::add((uintptr_t)p, (size_t)len); }
    void add_iovecs(uint64_t iov, uint64_t cnt);  // the buffers of an iovec array
};

enum class Act { kNone, kPin, kLeaveAlone, kAllAlone };

// What the kernel will write into for this SQE, and until when.
Act classify(const Sqe& q, Ranges& out);

// ---- requests in flight (kw_uring_inflight.cpp) -------------------------------------

// Requests whose buffers are pinned now.
int inflight_count();
// Before SQEs [from, to) of ring v reach the kernel: leaves alone what must
// be, then pins the buffers of requests that will complete later.
void before_submit(RtUringCall* c, const View& v, unsigned from, unsigned to);
// After the call: requests the kernel did not consume are not in flight;
// completions seen release their buffers.
void after_call(RtUringCall* c, const View& v);
// Requires g_ring_lock: the ring is gone (closed, unmapped, exited); the
// pins of its requests are dropped, to be unpinned by unpin_dropped().
void forget_ring(uintptr_t key);
// Requires g_ring_lock.
void unpin_dropped();
// The process is left alone: nothing stays pinned.
void release_all_inflight();

}  // namespace uring
}  // namespace dedup
