// Runtime control of a running process, as KSM's sysfs files control ksmd:
// `dedupstat PID --set sleep_ms=0|pages_to_scan=N|cpu_percent=N|run=0|1|2`,
// `--unmerge` (run=2) and `--merge` (run=1).
//
// The channel is a control file beside the live file,
// /dev/shm/libdedup.<pidns>.<pid>.ctl: created by the process, mode 0600,
// with O_EXCL|O_NOFOLLOW (never a file someone else made or a link), so
// only its user (or root) can write to it. It is named and removed with the
// live file (live_file.h), mapped (DONTFORK) and its descriptor closed: no
// descriptor of ours for the program to trip over.
//
// Protocol (one page): byte 0 is the state, bytes 1..255 the text.
// dedupstat writes the request text, then '?' at byte 0 (two writes, so that
// the request is whole when '?' shows). The scanner thread, each wake-up
// and every 100 ms of its sleep, applies it and writes its answer text,
// then '+' (done) or '-' (refused) at byte 0.
//
// What can change: the scanner's pace (pages_to_scan, sleep_ms, cpu_percent,
// with the options' ranges), and KSM's run: 1 merges; 0 stops merging and
// keeps what is merged; 2 unmerges everything now (through the runtime's
// unmerge path, as prctl(PR_SET_MEMORY_MERGE, 0) does) and stops merging
// until run=1. The program's own advice (MADV_MERGEABLE, PR_SET_MEMORY_MERGE)
// is kept meanwhile, as KSM keeps it. A forked child inherits the settings.
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

// The scanner thread, without the mm lock: applies a waiting request.
void control_tick();
// Whether a request waits (the scanner cuts its sleep short). Takes the lock.
bool control_pending();

// The control file, named and removed with the live file (mm lock held).
void control_file_link();
void control_file_unlink();
// In a forked child: the parent's file is not ours (the mapping is not
// inherited).
void control_reset_in_child();

}  // namespace dedup
