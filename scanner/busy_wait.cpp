#include "scanner/busy_wait.h"

namespace dedup {
namespace {
// Shorter looks than this tell little (a thread that just blocked, the
// clock's granularity): the verdict of the last longer look stands.
constexpr uint64_t kMinLookNs = 2 * 1000000ull;
}  // namespace

void BusyWait::set_limit_ms(uint64_t limit_ms) {
    limit_ns_ = limit_ms * 1000000ull;
    allowance_ns_ = limit_ns_;
}

bool BusyWait::should_wait(uint64_t wall_ns, uint64_t process_cpu_ns, uint64_t own_cpu_ns) {
    if (limit_ns_ == 0) return false;
    uint64_t slice = kSliceMs * 1000000ull;
    if (last_wall_ == 0) {
        // The first look starts the clocks and waits a slice to see: most
        // programs are busy when they start (loading what they will use).
        last_wall_ = wall_ns, last_process_ = process_cpu_ns, last_own_ = own_cpu_ns;
        allowance_ns_ -= slice < allowance_ns_ ? slice : allowance_ns_;
        return true;
    }
    if (wall_ns < last_wall_ + kMinLookNs) return false;
    uint64_t elapsed = wall_ns - last_wall_;
    uint64_t process = process_cpu_ns > last_process_ ? process_cpu_ns - last_process_ : 0;
    uint64_t own = own_cpu_ns > last_own_ ? own_cpu_ns - last_own_ : 0;
    uint64_t others = process > own ? process - own : 0;
    busy_ = others * 2 >= elapsed;
    last_wall_ = wall_ns, last_process_ = process_cpu_ns, last_own_ = own_cpu_ns;
    // Calm time gives the allowance back one for one; busy time an eighth of
    // itself, so that a program that stays busy waits at most an eighth of the
    // time once the allowance is spent.
    allowance_ns_ += busy_ ? elapsed / 8 : elapsed;
    if (allowance_ns_ > limit_ns_) allowance_ns_ = limit_ns_;
    if (!busy_ || allowance_ns_ < slice) return false;
    allowance_ns_ -= slice;
    return true;
}

}  // namespace dedup
