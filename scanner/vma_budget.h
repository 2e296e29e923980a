// Keeps the process clear of vm.max_map_count. An isolated merged page costs
// two VMAs (the split before and after it); at the limit the application's
// own munmap/mprotect start failing with ENOMEM, so the scanner never goes
// within DEDUP_VMA_RESERVE of it. The count is exact at each recount
// (/proc/self/maps) and a conservative estimate in between.
#pragma once
#include <stdint.h>

#include "scanner/os/proc.h"  // count_vmas

namespace dedup {

class VmaBudget {
public:
    void init(uint64_t reserve);  // reserve 0 = max_map_count / 8
    // True if `cost` more VMAs fit within the budget; may recount when the
    // estimate is near.
    bool can_afford(uint64_t cost);
    // True if `cost` more VMAs fit for a moment (a write-protect window that
    // is closed again at once, its pieces merging back): within the reserve
    // too, short of the hard limit by a margin.
    bool can_afford_briefly(uint64_t cost);
    void spent(uint64_t cost) { estimate_ += cost; }
    // After VMAs were given back to the program: no VMA-costing merge for a
    // while, so the scanner does not take them straight back (churn).
    void hold_off(uint64_t ns);
    void recount();
    // Recounts unless the last count is younger than min_age_ns, or than
    // kCountCostFactor times what a count would take now (the last count's
    // cost per VMA times the estimate): reading
    // /proc/self/maps costs about a microsecond a VMA, and a process with
    // 200,000 merged pieces must not spend its scanner on counting them.
    // Returns true if it counted. Where the count decides whether merging
    // may go on (the estimate at the budget), a smaller factor is passed.
    bool recount_if_older(uint64_t min_age_ns, uint64_t cost_factor = kCountCostFactor);
    // The exact count at the last recount.
    uint64_t last_count() const { return last_count_; }
    uint64_t estimate() const { return estimate_; }
    uint64_t max_map_count() const { return max_; }
    uint64_t limit() const { return limit_; }
    // Where the program, not our merges, has grown into the reserve enough
    // that merged pieces must be given back: a quarter of the way in. (Our
    // merges stop at limit(); a threshold right there made the program's
    // first new VMA undo every merge once the estimate was exact.)
    uint64_t pressure_threshold() const { return limit_ + (max_ - limit_) / 4; }

    static constexpr uint64_t kCountCostFactor = 50;  // counting: at most 2% of the time
    static constexpr uint64_t kAtBudgetCostFactor = 10;  // at the budget: at most 10%

private:
    bool can_afford_under(uint64_t cost, uint64_t ceiling);
    uint64_t predicted_cost_ns() const;

    uint64_t max_ = 65530, limit_ = 65530 - 8191, estimate_ = 0;
    uint64_t last_count_ = 0;
    uint64_t last_recount_ns_ = 0;
    uint64_t last_cost_ns_ = 0;  // what the last count took
    uint64_t hold_until_ns_ = 0;
};

}  // namespace dedup
