// Allocation sites: the call stack that created each registered region
// (mmap, large malloc, MADV_MERGEABLE), captured with libunwind's
// unw_backtrace into a fixed array and deduplicated into a table keyed by
// its instruction pointers, as heaptrack's trace tree is. No malloc on the
// capture path; symbolisation happens only when a report is written.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

constexpr int kSiteFrames = 10;
constexpr uint32_t kMaxSites = 4096;

// The calling thread's stack as a site id (0 = unknown, or capture off).
uint32_t site_capture();
bool sites_enabled();
// True on a thread that is inside site_capture() (libunwind at work).
bool site_capture_in_progress();
void sites_set_enabled(bool on);

// Describes site `id` as "fn (file:line) <- caller (file:line)" (up to
// `frames` frames) into out. Spawns addr2line for file:line where it can:
// call only from report code, never under the mm lock.
void site_describe(uint32_t id, int frames, char* out, size_t cap);
uint32_t site_count();

}  // namespace dedup
