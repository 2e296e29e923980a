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
// Whether initialisation found the runtime off (DEDUP_DISABLE=1, AT_SECURE):
// final once true.
bool runtime_disabled();
// After a registration, without the mm lock, with the bytes it adds to the
// memory the program uses (a mapping of its own in full; a large-heap block
// while allocated, negative when freed; 0 for an arena): once that reaches
// DEDUP_START_MIN, activates the runtime (runtime_activate).
void runtime_after_register(long in_use_bytes);
// Installs the fault handler, opens the kept files while the program has
// descriptors to spare, and starts the scanner thread; at once, whatever was
// registered (madvise(MADV_MERGEABLE) and prctl ask for merging). Without
// the mm lock.
void runtime_activate();
// A large-heap block allocated (bytes > 0) or freed (< 0): counts toward
// DEDUP_START_MIN until the runtime is active; nothing after.
void runtime_heap_use(long bytes);
// Whether runtime_activate ran (here, or in the parent before fork).
bool runtime_active();
// What the scanner and the reports need and a process that never registers
// does not (the zero page's hash, the THP mode, the VMA budget): read once,
// at the first registration or report. Under the mm lock.
void runtime_prepare_scanning();
// At exit: stops the scanner, writes the summary and the stats file. Safe
// from a signal handler that interrupted the shim on this thread (exit()
// from a SIGTERM handler that landed inside an interposed mmap).
void runtime_shutdown();
// A terminating signal with its default action is about to kill the
// process: the exit report, once, from the signal handler.
void runtime_report_at_signal();
// A core-dumping signal is about to dump: merged pages are made part of the
// dump (the kernel skips private file mappings without anonymous pages),
// the shim's own views are kept out of it. Nothing when no core is written.
void runtime_prepare_core_dump();
// The pid the runtime started in; a forked child's differs.
long runtime_original_pid();

}  // namespace dedup
