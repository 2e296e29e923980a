// Giving VMAs back: when the program itself grows towards vm.max_map_count
// while merged pieces hold VMAs, the most fragmented merged regions are made
// single anonymous mappings again (unmerge.h), while there is still room to
// (at the hard limit even unmerging needs VMAs). Beside vma_budget.h, which
// keeps merges themselves within the budget.
#pragma once

#include "scanner/state.h"

namespace dedup {

// at_limit: the program's own call just failed with ENOMEM (give back now,
// waiting for syscalls writing into a region if need be); else the scanner
// saw the count past VmaBudget::pressure_threshold(). True if any VMA was
// freed (the caller then retries its call once). Lock held.
bool give_back_vmas(State& s, bool at_limit);

// The scanner's check, no lock held: twice a second, recounts the VMAs and
// gives back when the program is a quarter of the way into the reserve.
void relieve_vma_pressure(State& s);

}  // namespace dedup
