// Signals. The shim keeps SIGSEGV for its fault handler, whose first question
// is the write path's (write_window.h): is this a write that hit a page being
// merged? Then it returns and the write retries. Every other fault goes to
// the application's own handler, or to the default action, exactly as
// without the shim. The application's view of SIGSEGV is kept for it: what
// it installs is recorded (not installed) and what it asks for is reported.
// And SIGSEGV is never really blocked: a write to a page mid-merge while it
// is blocked would make the kernel kill the process; the program still sees
// the mask it asked for.
#pragma once
#include <signal.h>

namespace dedup {

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);

// Installs the handler (once). `real_sigaction` is libc's sigaction.
void fault_handler_install(SigactionFn real_sigaction);
bool fault_handler_installed();

// The application's side (sigaction, sigprocmask) is rt_sigaction and
// rt_sigmask in runtime.h, implemented in signals.cpp.

}  // namespace dedup
