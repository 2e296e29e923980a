// Keeps kernel writes out of write-protect windows. A kernel write (read(2)
// into a buffer, recv, getdents, ...) that hits a write-protected page does
// not fault: the syscall returns EFAULT, which the application would never
// see without the shim (brief, trap 7).
//
// A Dekker-style handshake closes it:
//   syscall wrapper: pin [buf, buf+len)   ; fence ; wait while a window overlaps it
//   scanner:         publish its window   ; fence ; if any pin overlaps: give up the run
// Either the scanner sees the pin (and skips those pages this time) or the
// wrapper sees the window (and waits the microseconds until it closes). A
// blocked read keeps its pin, so the scanner skips its buffer rather than
// stalling.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

// Pins a user buffer for the duration of a syscall; returns a token for
// unpin (or -1 if the table was full: the caller goes ahead unpinned, and
// the scanner is told to keep out of every window with `g_overflow`).
int kw_pin(uintptr_t buf, size_t len);
void kw_unpin(int token);

// Scanner side: publishes up to two ranges as the open window. False if a
// pinned buffer overlaps them (nothing published then).
bool kw_window_open(uintptr_t a, size_t alen, uintptr_t b, size_t blen);
void kw_window_close();

// RAII for wrappers.
class KernelWritePin {
public:
    KernelWritePin(uintptr_t buf, size_t len) : token_(kw_pin(buf, len)) {}
    ~KernelWritePin() { kw_unpin(token_); }
    KernelWritePin(const KernelWritePin&) = delete;
    KernelWritePin& operator=(const KernelWritePin&) = delete;

private:
    int token_;
};

}  // namespace dedup
