// Non-allocating logger: formats into a stack buffer and write(2)s one line.
// Safe from any thread and from inside interposed malloc; never writes stdout.
#pragma once
#include <stdarg.h>

namespace dedup {

// Where log lines go; set once from DEDUP_LOG. -1 means "off".
void log_set_fd(int fd);
int log_fd();

// Applies a DEDUP_LOG value: "stderr" (or empty), "off", or a file path
// (opened for appending, close-on-exec, moved to a high fd). Returns false if
// the file could not be opened (the log stays on stderr). Done before any
// other option is parsed, so warnings about them go where the user asked.
bool log_open(const char* spec);
// The log file's descriptor, or -1 (the shim hides it from close()).
int log_file_fd();
void log_set_file_fd(int fd);

// Writes "libdedup[PID]: <message>\n" to the log.
void log_line(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Like log_line, for warnings: a process prints each warning once (the same
// text again is left out), and at most `kMaxWarnings` of them. Warnings
// about DEDUP_* values are also left out when the parent process printed
// them (config.cpp, parent_process.h): once per process tree.
void log_warning(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_vwarning(const char* fmt, va_list ap);

}  // namespace dedup
