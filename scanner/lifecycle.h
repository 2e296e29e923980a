// The runtime's life: initialisation (lazy, on the first call that needs it,
// from any thread), what the first registration starts (the fault handler,
// the kept files, the scanner thread), fork, and exit.
#pragma once

namespace dedup {

// Initialises on first use. False when DEDUP_DISABLE=1, or while this
// thread is initialising (calls then go straight to the kernel or libc).
bool runtime_ready();
// Whether initialisation has finished and the runtime is on (never
// initialises).
bool runtime_initialised();
// After a registration, without the mm lock: installs the fault handler,
// opens the kept files while the program has descriptors to spare, and
// starts the scanner thread.
void runtime_after_register();
// At exit: stops the scanner, writes the summary and the stats file.
void runtime_shutdown();
// The pid the runtime started in; a forked child's differs.
long runtime_original_pid();

}  // namespace dedup
