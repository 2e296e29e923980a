// Non-allocating logger: formats into a stack buffer and write(2)s one line.
// Safe from any thread and from inside interposed malloc; never writes stdout.
#pragma once
#include <stdarg.h>

namespace dedup {

// Where log lines go; set once from DEDUP_LOG. -1 means "off".
void log_set_fd(int fd);
int log_fd();

// Writes "libdedup: <message>\n" to the log.
void log_line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Like log_line, but at most `kMaxWarnings` warnings are printed per process.
void log_warning(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace dedup
