// The files a report is written to besides the live file: the stats file
// (DEDUP_STATS_FILE, replaced whole) and the series file (DEDUP_SERIES_FILE,
// one JSON line appended per DEDUP_STATS_INTERVAL_MS and at exit: every
// line names its process, so the processes of a tree may share one). `%p`
// in either path becomes the pid.
//
// Whose report the stats file is. Every process of a tree inherits the
// variable, and the program a wrapper runs (timeout, a shell, a Python
// launcher) exits before the wrapper does: if each wrote at exit, the
// wrapper's empty report would replace the program's. So a process whose
// report is not worth telling (report_worth_telling: less than 1 MiB saved
// at its peak and less than 16 MiB registered) leaves the file alone when it
// holds another process's report written since this process started. A
// process with something to tell always writes (the last to exit wins), and
// any process replaces a report older than itself (an earlier run's).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "scanner/stats.h"

namespace dedup {

// pattern with %p replaced by this process's pid.
void report_path(const char* pattern, char* out, size_t cap);

// Whether rep may replace the stats file whose content (n bytes of it) and
// modification time are given: see above. started_ns: when this process
// started, on the same clock as mtime_ns (CLOCK_REALTIME).
bool stats_file_ours_to_write(const Report& rep, const char* existing, size_t n, uint64_t mtime_ns,
                              uint64_t started_ns);

// Writes rep to the stats file at path (atomically, report_write_file) if it
// is ours to write. Returns 0 when written, 1 when left to another
// process's report, -errno on failure.
long stats_file_write(const Report& rep, const char* path);

// Appends rep as one JSON line to the series file at path (created 0644,
// never through a link, O_APPEND: lines of several processes do not mix).
// Returns 0 or -errno.
long series_append(const Report& rep, const char* path);

}  // namespace dedup
