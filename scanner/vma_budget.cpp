#include "scanner/vma_budget.h"

#include "scanner/log.h"
#include "scanner/os/clock.h"
#include "scanner/os/proc.h"

namespace dedup {

void VmaBudget::init(uint64_t reserve) {
    max_ = read_number_file("/proc/sys/vm/max_map_count", 65530);
    if (reserve == 0) reserve = max_ / 8;
    if (reserve >= max_) {
        log_warning("DEDUP_VMA_RESERVE=%llu is not below vm.max_map_count=%llu; using default %llu",
                    (unsigned long long)reserve, (unsigned long long)max_, (unsigned long long)(max_ / 8));
        reserve = max_ / 8;
    }
    limit_ = max_ - reserve;
    recount();
}

void VmaBudget::recount() {
    uint64_t t0 = monotonic_ns();
    uint64_t n = count_vmas();
    if (n) estimate_ = last_count_ = n;
    last_recount_ns_ = monotonic_ns();
    last_cost_ns_ = last_recount_ns_ - t0;
}

uint64_t VmaBudget::predicted_cost_ns() const {
    // What the last count took per VMA, times the VMAs there are now (the
    // estimate grows with every merge). The last count's own cost would
    // let the counts of a growing process come ever closer in proportion:
    // while 196,000 isolated merges were made, counts at 20,000 and 70,000
    // VMAs allowed a 200 ms count at 190,000 before 99% of the saving, a
    // twentieth of the scanner's CPU.
    if (last_count_ == 0 || estimate_ <= last_count_) return last_cost_ns_;
    return (uint64_t)((double)last_cost_ns_ * (double)estimate_ / (double)last_count_);
}

bool VmaBudget::recount_if_older(uint64_t min_age_ns, uint64_t cost_factor) {
    uint64_t age = cost_factor * predicted_cost_ns();
    if (age < min_age_ns) age = min_age_ns;
    if (monotonic_ns() - last_recount_ns_ < age) return false;
    recount();
    return true;
}

void VmaBudget::hold_off(uint64_t ns) { hold_until_ns_ = monotonic_ns() + ns; }

bool VmaBudget::can_afford(uint64_t cost) {
    if (hold_until_ns_ && monotonic_ns() < hold_until_ns_) return false;
    return can_afford_under(cost, limit_);
}

bool VmaBudget::can_afford_briefly(uint64_t cost) {
    constexpr uint64_t kMargin = 64;  // VMAs the program's other threads may add meanwhile
    return can_afford_under(cost, max_ > kMargin ? max_ - kMargin : 0);
}

bool VmaBudget::can_afford_under(uint64_t cost, uint64_t ceiling) {
    if (estimate_ + cost <= ceiling) return true;
    // The estimate only grows between recounts; look again, at most every
    // 50 ms and no more than a tenth of the time.
    recount_if_older(50 * 1000000ull, kAtBudgetCostFactor);
    return estimate_ + cost <= ceiling;
}

}  // namespace dedup
