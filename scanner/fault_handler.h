// The SIGSEGV handler. Its first question (as in Mesh): is this a write that
// hit a page the scanner write-protected? Then wait for the scanner to finish
// (by taking the mm lock) and return so the write retries. Every other fault
// goes to the application's own handler, or to the default action, exactly
// as without the shim.
#pragma once
#include <signal.h>

namespace dedup {

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);

// Installs the handler (once). `real_sigaction` is libc's sigaction.
void fault_handler_install(SigactionFn real_sigaction);
bool fault_handler_installed();

// The application's view of SIGSEGV, which the shim keeps for it: what it
// installs is recorded (not installed) and what it asks for is reported.
// Return 0 or -errno.
int app_sigaction(int sig, const struct sigaction* act, struct sigaction* old);
bool signal_is_managed(int sig);

// Whether the calling thread's application code believes it has SIGSEGV
// blocked (shim/signals.cpp keeps it really unblocked). Weak: the unit tests
// link the scanner without the shim.
bool app_blocks_segv() __attribute__((weak));

}  // namespace dedup
