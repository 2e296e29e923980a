#include "scanner/zero_giveback.h"

#include <atomic>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "scanner/merge.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"

namespace dedup {
namespace {

std::atomic<bool> g_forbidden{false};  // a seccomp filter was (or is being) installed
bool g_thread_may = false;             // the scanner thread started without a filter
bool g_failed = false;                 // the kernel refused a vector call once

// Only the scanner thread, under the lock, uses these.
Region* g_region = nullptr;
size_t g_count = 0;
struct iovec g_iov[kMaxBatch];

bool vector_usable() { return g_thread_may && !g_failed && !g_forbidden.load(std::memory_order_acquire); }

void note_given_back(State& s, Region& r, uintptr_t start, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        PageMeta& m = r.at(start + i * kPageSize);
        m.state = kZeroFreed;
        m.hash32 = 0;
    }
    s.stats.zero_pages += n;
    s.stats.pass_zero_freed += n;
    s.zero_given_back = true;
}

}  // namespace

bool zero_give_back_now(State& s, Region& r, uintptr_t start, size_t n) {
    if (sys::failed(sys::madvise(reinterpret_cast<void*>(start), n * kPageSize, MADV_DONTNEED))) return false;
    note_given_back(s, r, start, n);
    return true;
}

bool zero_give_back_later(Region& r, uintptr_t start, size_t n) {
    if (!vector_usable() || (g_region && g_region != &r) || g_count == kMaxBatch) return false;
    g_region = &r;
    g_iov[g_count].iov_base = reinterpret_cast<void*>(start);
    g_iov[g_count].iov_len = n * kPageSize;
    ++g_count;
    return true;
}

void zero_giveback_flush(State& s) {
    if (g_count == 0) return;
    Region& r = *g_region;
    size_t count = g_count;
    g_count = 0;
    g_region = nullptr;
    // Bytes advised: 0 if the call was forbidden since they were queued, or
    // failed (an error at the first range fails the call whole).
    long done = 0;
    if (vector_usable()) {
        done = sys::call(SYS_process_madvise, PIDFD_SELF_THREAD_GROUP, (long)g_iov, (long)count, MADV_DONTNEED, 0);
        if (sys::failed(done)) {
            g_failed = true;
            done = 0;
        }
    }
    // The kernel advises the vector in order: what it did not reach (an
    // error part way) is given back one range at a time.
    for (size_t i = 0; i < count; ++i) {
        uintptr_t start = reinterpret_cast<uintptr_t>(g_iov[i].iov_base);
        size_t len = g_iov[i].iov_len;
        if ((size_t)done >= len) {
            note_given_back(s, r, start, len / kPageSize);
            done -= (long)len;
            continue;
        }
        done = 0;
        if (!zero_give_back_now(s, r, start, len / kPageSize)) ++s.stats.merge_failures;
    }
    note_saving(s);
}

// The leader's mode, read through the kept status file (no new descriptor):
// a filter inherited across exec, or installed by a constructor that ran
// before ours, is on the leader too. One a non-leader thread installed
// through libc set g_forbidden already.
void zero_giveback_thread_started() { g_thread_may = read_leader_seccomp_mode() == 0; }

void zero_giveback_forbid_vector() { g_forbidden.store(true, std::memory_order_release); }

}  // namespace dedup
