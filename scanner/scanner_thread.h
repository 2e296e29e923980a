// The background thread `dedup-scan`: walks the registered regions in
// batches of DEDUP_PAGES_TO_SCAN pages, then sleeps DEDUP_SLEEP_MS, as ksmd
// does with pages_to_scan / sleep_millisecs.
#pragma once
#include <stdint.h>

namespace dedup {

// Starts the thread if it is not running (lazily, on first registration).
// Must be called without the mm lock held. Safe to call often.
void scanner_ensure_started();
// After a registration: a young process's thread, waiting to grow up,
// starts at once once kYoungBytes are registered.
void scanner_note_registered();
// Asks the thread to stop after its current batch and waits for that batch.
void scanner_stop();
// Stops the thread and waits until it is gone (joined, and out of the
// process's thread group). Returns whether it was running.
bool scanner_pause();
// Starts it again after scanner_pause().
void scanner_resume();
// The scanner thread's CPU time so far, in seconds.
double scanner_cpu_seconds();
// Fork child: the thread does not exist there.
void scanner_forget_after_fork();
// True while this thread is inside pthread_create for the scanner. The
// allocator serves allocations made then (the new thread's TLS vector) from
// its own buffer: the registration that triggers the start may come from
// inside the program's allocator (jemalloc maps memory under its init lock),
// and calling back into that allocator would deadlock. A variable, not a
// function: the small-malloc fast path reads it (one initial-exec TLS load).
extern __thread bool t_starting __attribute__((visibility("hidden")));

}  // namespace dedup
