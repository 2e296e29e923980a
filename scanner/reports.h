// What the shim tells about itself: the exit summary and stats file, the
// live file in /dev/shm that dedupstat reads (refreshed every second), the
// DEDUP_STATS_INTERVAL_MS lines, and the allocation sites behind the savings.
#pragma once

namespace dedup {

// The live file, created unnamed with the other kept files at the first
// registration (mm lock held). False if it cannot be had now.
bool reports_open_live_file();
// The scanner's call between batches (no lock held): refreshes the live
// file every second, and with DEDUP_STATS_INTERVAL_MS logs a line and
// refreshes DEDUP_STATS_FILE.
void reports_tick();
// At exit (scanner stopped): the summary, the stats file; removes the live
// file. scanner_cpu is the scanner thread's CPU time. from_signal: in a
// signal handler (no allocation sites: naming them spawns addr2line). If
// this thread holds the mm lock (exit() from a handler that interrupted the
// shim), the registry may be half changed: the report is made from the
// counters alone.
void reports_at_exit(double scanner_cpu, bool from_signal);
// Whether the exit report is wanted even from a process that never
// registered anything: a stats or series file, or DEDUP_SUMMARY=always.
bool reports_wanted_without_registration();
// In a forked child: the parent's live file is not ours.
void reports_reset_in_child();

}  // namespace dedup
