// Signals. The shim keeps SIGSEGV for its fault handler, whose first question
// is the write path's (write_window.h): is this a write that hit a page being
// merged? Then it returns and the write retries. Every other fault goes to
// the application's own handler, or to the default action, exactly as
// without the shim. The application's view of SIGSEGV is kept for it: what
// it installs is recorded (not installed) and what it asks for is reported.
// And SIGSEGV is never really blocked: a write to a page mid-merge while it
// is blocked would make the kernel kill the process; the program still sees
// the mask it asked for.
//
// While the program leaves them at their default action, the shim also
// catches the signals that end the process: SIGTERM, SIGINT and SIGHUP get
// the exit report (summary, stats file, live file removed), the
// core-dumping ones (SIGABRT, SIGQUIT, SIGBUS, ...) get merged pages made
// dumpable; then the process dies of the same signal, with the same status.
// The program sees SIG_DFL for them; a handler it installs is installed.
#pragma once
#include <signal.h>

namespace dedup {


// Installs the handlers (once, at the first registration).
void fault_handler_install();
bool fault_handler_installed();

// The application's side (sigaction, sigprocmask) is rt_sigaction and
// rt_sigmask in runtime.h, implemented in signals.cpp.

}  // namespace dedup
