// io_uring requests in flight: the buffers of a request that completes
// after the call that submitted it stay pinned until the shim sees its
// completion (CQE) on the ring's completion queue, which it looks at after
// every call that may submit or reap. A request that cannot be pinned is
// left alone instead.
#include <atomic>
#include <stdint.h>
#include <string.h>

#include "scanner/kw_uring.h"
#include "scanner/large_bss.h"
#include "scanner/log.h"
#include "scanner/runtime.h"

namespace dedup {
namespace uring {
namespace {

using kw::g_all_alone;
using kw::SpinGuard;

// A request whose buffers are pinned until its completion is seen. Matched
// by user_data: when several requests in flight share one, all stay pinned
// until as many completions with it have been seen.
struct Inflight {
    uintptr_t key = 0;  // 0: free
    uint64_t user_data = 0;
    uint32_t sq_index = 0, gen = 0;
    bool confirmed = false;  // the kernel consumed the SQE
    bool done = false;       // a completion with its user_data was seen
    int pins[4] = {-2, -2, -2, -2};
};
constexpr int kMaxInflight = 256;
// Pins the table may hold at once: the pin table has 512 slots shared with
// every synchronous call; beyond this, buffers are left alone instead.
constexpr int kInflightSoftCap = 192;
Inflight g_inflight[kMaxInflight];
std::atomic<int> g_ninflight{0};

struct Cursor {
    uintptr_t key = 0;
    unsigned seen = 0;  // CQ index the shim has looked at up to
    bool lost = false;  // CQEs were overwritten before the shim saw them
};
DEDUP_LARGE_BSS Cursor g_cursors[kMaxRings];
std::atomic<uint32_t> g_gen{0};

// Requires g_ring_lock.
Cursor* cursor_of(uintptr_t key, bool create, const View* v) {
    Cursor* free_slot = nullptr;
    for (Cursor& c : g_cursors) {
        if (c.key == key) return &c;
        if (!c.key && !free_slot) free_slot = &c;
    }
    if (!create || !free_slot) return nullptr;
    free_slot->key = key;
    free_slot->seen = load_acquire(v->cq_ktail);
    free_slot->lost = false;
    return free_slot;
}

// Requires g_ring_lock: collects the pins of requests no longer in flight.
struct Drops {
    int tok[kMaxInflight * 4] = {};
    int n = 0;
    void take(Inflight& e) {
        for (int& t : e.pins) {
            if (t != -2 && n < (int)(sizeof tok / sizeof tok[0])) tok[n++] = t;
            t = -2;
        }
        e = Inflight{};
        g_ninflight.fetch_sub(1);
    }
    void unpin() {
        for (int i = 0; i < n; ++i) rt_kernel_write_unpin(tok[i]);
        n = 0;
    }
};
DEDUP_LARGE_BSS Drops g_drops;  // used under g_ring_lock only

// Requires g_ring_lock: a completion with user_data ud on ring key.
void complete(uintptr_t key, uint64_t ud, Drops& d) {
    Inflight* hit = nullptr;
    bool others = false;
    for (Inflight& e : g_inflight) {
        if (e.key != key || e.user_data != ud) continue;
        if (!e.done && !hit) hit = &e;
        else if (!e.done) others = true;
    }
    if (!hit) return;
    hit->done = true;
    if (others) return;
    for (Inflight& e : g_inflight)
        if (e.key == key && e.user_data == ud && e.done) d.take(e);
}

// Requires g_ring_lock: looks at the completions posted since the last look.
void scan_cqes(const View& v, Drops& d) {
    Cursor* c = cursor_of(v.key, false, &v);
    if (!c) return;
    unsigned entries = v.cq_mask + 1;
    unsigned tail = load_acquire(v.cq_ktail);
    if (tail - c->seen > entries) {  // overwritten before we looked: stays pinned
        c->lost = true;
        c->seen = tail - entries;
    }
    while (c->seen != tail) {
        unsigned i = c->seen;
        const Cqe* cqe = (const Cqe*)(v.cqes + ((size_t)(i & v.cq_mask) << v.cqe_shift));
        // Acquire loads: the tail is read again only after the entry was.
        uint64_t ud = __atomic_load_n(&cqe->user_data, __ATOMIC_ACQUIRE);
        uint32_t fl = __atomic_load_n(&cqe->flags, __ATOMIC_ACQUIRE);
        // Read before the kernel could reuse the slot?
        if (load_acquire(v.cq_ktail) - i > entries) {
            c->lost = true;
            tail = load_acquire(v.cq_ktail);
            c->seen = tail - entries;
            continue;
        }
        unsigned step = v.cqe_mixed && (fl & kCqe32) ? 2 : 1;
        if (!(fl & (kCqeMore | kCqeNotif)) && !(v.cqe_mixed && (fl & kCqeSkip))) complete(v.key, ud, d);
        c->seen = i + step;
        if ((int)(tail - c->seen) < 0) c->seen = tail;
    }
}

bool ring_has_inflight(uintptr_t key) {
    for (const Inflight& e : g_inflight)
        if (e.key == key) return true;
    return false;
}

// The SQEs [from, to) of a ring, in submission order.
template <typename F>
void walk(const View& v, unsigned from, unsigned to, F&& f) {
    unsigned entries = v.mask + 1;
    if (to - from > entries) to = from + entries;
    for (unsigned i = from; i != to; ++i) {
        unsigned slot = v.array ? __atomic_load_n(&v.array[i & v.mask], __ATOMIC_RELAXED) : (i & v.mask);
        if (slot >= entries) continue;  // the kernel drops it
        const Sqe* q = (const Sqe*)(v.sqes + ((size_t)slot << v.sqe_shift));
        Sqe copy;
        memcpy(&copy, q, sizeof copy);
        f(i, copy);
        if (v.sqe_mixed && (copy.opcode == kNop128 || copy.opcode == kUringCmd128) && i + 1 != to) ++i;
    }
}

void leave_alone(const Ranges& r) {
    for (int i = 0; i < r.n; ++i) rt_leave_alone((const void*)r.lo[i], r.hi[i] - r.lo[i]);
}

}  // namespace

int inflight_count() { return g_ninflight.load(std::memory_order_relaxed); }

void forget_ring(uintptr_t key) {
    if (!key) return;
    for (Inflight& e : g_inflight)
        if (e.key == key) g_drops.take(e);
    for (Cursor& c : g_cursors)
        if (c.key == key) c = Cursor{};
}

void unpin_dropped() { g_drops.unpin(); }

void release_all_inflight() {
    SpinGuard g(g_ring_lock);
    for (Inflight& e : g_inflight)
        if (e.key) g_drops.take(e);
    for (Cursor& c : g_cursors) c = Cursor{};
    g_drops.unpin();
}

// Before SQEs [from, to) of ring v reach the kernel: leaves alone what must
// be, then pins the buffers of requests that will complete later.
void before_submit(RtUringCall* c, const View& v, unsigned from, unsigned to) {
    if (v.sqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    // 1. No pin of this call is held yet: leave alone (which waits for pins
    //    over merged pages), and find how many will want pins.
    int want = 0;
    bool all = false;
    walk(v, from, to, [&](unsigned, const Sqe& q) {
        Ranges r;
        Act a = classify(q, r);
        if (a == Act::kAllAlone) all = true;
        else if (a == Act::kLeaveAlone) leave_alone(r);
        else if (a == Act::kPin) ++want;
    });
    if (all) rt_leave_all_alone("an io_uring command whose buffers the shim cannot see (IORING_OP_URING_CMD)");
    if (g_all_alone.load(std::memory_order_acquire) || !want) return;
    int room;
    {
        SpinGuard g(g_ring_lock);
        room = kInflightSoftCap - g_ninflight.load();
    }
    // Beyond the room: left alone, in submission order.
    int k = 0;
    if (want > room) {
        static std::atomic<bool> said{false};
        if (!said.exchange(true))
            log_warning("more io_uring requests in flight than the shim pins; their buffers are left alone");
        walk(v, from, to, [&](unsigned, const Sqe& q) {
            Ranges r;
            if (classify(q, r) == Act::kPin && k++ >= room) leave_alone(r);
        });
    }
    // 2. Pins, taken outside the lock (a pin waits for an open window).
    c->ring = v.key;
    c->head = from;
    c->gen = g_gen.fetch_add(1) + 1;
    k = 0;
    walk(v, from, to, [&](unsigned i, const Sqe& q) {
        Ranges r;
        if (classify(q, r) != Act::kPin || k++ >= room) return;
        Inflight e;
        e.key = v.key;
        e.user_data = q.user_data;
        e.sq_index = i;
        e.gen = c->gen;
        for (int j = 0; j < r.n; ++j) e.pins[j] = rt_kernel_write_pin(r.lo[j], r.hi[j] - r.lo[j]);
        SpinGuard g(g_ring_lock);
        // The completions to look at start after the tail as it is now.
        Cursor* cur = cursor_of(v.key, true, &v);
        if (cur && !ring_has_inflight(v.key)) {
            cur->seen = load_acquire(v.cq_ktail);
            cur->lost = false;
        }
        Inflight* slot = nullptr;
        for (Inflight& x : g_inflight)
            if (!x.key) {
                slot = &x;
                break;
            }
        if (slot && cur) {
            *slot = e;
            g_ninflight.fetch_add(1);
        } else {  // cannot happen below the soft cap; unprotected rather than stuck
            for (int t : e.pins) rt_kernel_write_unpin(t);
        }
    });
}

// After the call: requests the kernel did not consume are not in flight;
// completions seen release their buffers.
void after_call(RtUringCall* c, const View& v) {
    SpinGuard g(g_ring_lock);
    if (c->gen) {
        unsigned consumed = load_acquire(v.khead) - c->head;
        for (Inflight& e : g_inflight) {
            if (e.key != v.key || e.gen != c->gen || e.confirmed) continue;
            if (e.sq_index - c->head < consumed) e.confirmed = true;
            else g_drops.take(e);
        }
    }
    if (ring_has_inflight(v.key)) scan_cqes(v, g_drops);
    if (!ring_has_inflight(v.key))  // nothing to match: the next request starts from the tail then
        for (Cursor& cur : g_cursors)
            if (cur.key == v.key) cur = Cursor{};
    g_drops.unpin();
}

}  // namespace uring
}  // namespace dedup
