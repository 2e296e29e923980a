// Runtime control of a running process, as KSM's sysfs files control ksmd:
// `dedupstat PID --set sleep_ms=0|pages_to_scan=N|cpu_percent=N|run=0|1|2`,
// `--unmerge` (run=2) and `--merge` (run=1).
//
// The channel is a request file beside the live file,
// /dev/shm/libdedup.<pidns>.<pid>.ctl, which dedupstat puts there whole
// (written under another name, then linked: never seen half written) and
// removes once answered. The scanner thread looks for it with stat() every
// 100 ms (in its sleep too), so it takes no descriptor of the program's
// except while it answers a request: a program at its RLIMIT_NOFILE never
// loses one to it otherwise. It acts only on a regular file owned by its
// own effective user, which no other user can read or write (mode 0600):
// so only that user, or root (dedupstat gives the file to the process's
// user), can control it, and a file someone else put there is ignored.
//
// Protocol (256 bytes): byte 0 is the state, then the text. A request reads
// '?' then "sleep_ms=0", "pages_to_scan=N", "cpu_percent=N", "run=0|1|2",
// "unmerge" or "merge"; the answer text is written, then '+' (done) or '-'
// (refused) at byte 0.
//
// What can change: the scanner's pace, with the options' ranges, and KSM's
// run: 1 merges; 0 stops merging and keeps what is merged; 2 unmerges
// everything now (through the runtime's unmerge path, as
// prctl(PR_SET_MEMORY_MERGE, 0) does) and stops merging until run=1. The
// program's own advice (MADV_MERGEABLE, PR_SET_MEMORY_MERGE) is kept
// meanwhile, as KSM keeps it. A forked child inherits the settings.
#pragma once
#include <stdint.h>

namespace dedup {

// The scanner's pace: config()'s values, unless changed at run time.
struct ScanPace {
    uint64_t pages_to_scan, sleep_ms, cpu_percent;
};
ScanPace control_pace();
// KSM's run: 1 merging (the default), 0 stopped, 2 unmerged and stopped.
uint64_t control_run();

// The scanner thread only (no lock held), each wake-up: answers a request
// waiting in the request file (looked for at most every 100 ms).
void control_tick();
// The scanner thread, in its sleep: whether a request waits (it then cuts
// its sleep short). One stat() at most every 50 ms.
bool control_pending();

}  // namespace dedup
