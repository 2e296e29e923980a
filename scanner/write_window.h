// The write path, in one place: the write-protect window that every merge,
// unmerge, rotation and VMA give-back opens over the pages it copies or
// remaps, and everything that keeps a write from being lost, or failing,
// because of it.
//
//   open:   the kernel's protection of the range is the one the caller
//           recorded (else the program changed it behind the shim's back, and
//           closing would undo that) ; publish the range (kernel-write guard) ; no pinned syscall
//           buffer overlaps it (or wait for them) ; window_seq++ ;
//           mprotect(range, PROT_READ)
//   ...     the owner compares, copies, remaps, all under the mm lock
//   close:  mprotect(range, app_prot) (retried; skipped where the range was
//           replaced by a mapping that has app_prot already) ; window_seq++ ;
//           unpublish
//
// A user-mode write into the window faults (SEGV_ACCERR). The SIGSEGV handler
// asks window_explains_write_fault(): it waits for the mm lock, which the
// window's owner holds until close, and says yes, so the handler returns and
// the write re-executes on the final mapping (the canonical page, which
// copy-on-writes, or the untouched page if the merge did not happen).
//
// A kernel write into the window (read(2) into the buffer) does not fault:
// the syscall would fail with EFAULT. So the wrappers of such syscalls pin
// their buffer for the duration of the call (rt_kernel_write_pin in
// runtime.h, implemented in write_window.cpp), and a window never
// opens over a pinned range. A Dekker-style handshake makes that exact:
//   wrapper: pin [buf, buf+len)  ; fence ; wait while a published window overlaps it
//   window:  publish its ranges  ; fence ; if a pin overlaps: give up (or wait)
// Either the window sees the pin, or the wrapper sees the window and waits
// the microseconds until it closes. A blocked read keeps its pin, so a merge
// gives up that buffer rather than stall.
//
// Every window is opened and closed under the mm lock, so at most one is open
// at a time; it covers up to two ranges (a page run and the candidate run it
// pairs with).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

class WriteWindow {
public:
    // When a syscall is writing into the range right now: give up (merges:
    // the pages are looked at again later), or wait for it to finish (an
    // unmerge that must happen now; bounded, see write_window.cpp).
    enum class IfPinned { kGiveUp, kWait };

    WriteWindow() = default;
    ~WriteWindow() { close(); }
    WriteWindow(const WriteWindow&) = delete;
    WriteWindow& operator=(const WriteWindow&) = delete;

    // Write-protects [a, a+len), whose application protection is app_prot
    // (the window keeps PROT_READ and PROT_EXEC). False, with nothing changed,
    // if a kernel write into it is in flight (kGiveUp) or mprotect failed.
    bool open(uintptr_t a, size_t len, int app_prot, IfPinned if_pinned = IfPinned::kGiveUp);
    // Both ranges at once (a pair merge). Gives up if either is pinned.
    bool open_pair(uintptr_t a, size_t alen, int aprot, uintptr_t b, size_t blen, int bprot);
    bool is_open() const { return open_; }
    // After a failed open: whether it gave up because a syscall was writing
    // into the range, or because the kernel's protection of the range is not
    // the one given (the program changed it with a raw mprotect syscall: the
    // caller's record is stale); else an mprotect failed.
    bool gave_up_for_pin() const { return gave_up_for_pin_; }
    bool protection_changed() const { return protection_changed_; }
    // Whether [a, a+len) lies inside the first range.
    bool covers(uintptr_t a, size_t len) const;
    // [a, a+len), a whole range of this window, was just replaced by a
    // mapping that already has the application's protection: close() need
    // not mprotect it (one system call a merge saves).
    void replaced(uintptr_t a, size_t len);
    // Gives every page its application protection back, whatever happened
    // in between, then lets syscalls in. No-op when not open.
    void close();

private:
    struct Range {
        uintptr_t start = 0;
        size_t len = 0;
        int prot = 0;
        bool replaced = false;
    };
    bool open_ranges(const Range& r0, const Range& r1, IfPinned if_pinned);
    bool protect(Range& r);
    Range range_[2];
    bool open_ = false;
    bool gave_up_for_pin_ = false;
    bool protection_changed_ = false;
};

// Called by the SIGSEGV handler for a write fault (SEGV_ACCERR) at addr on a
// thread that does not hold the mm lock: waits until no window is open and
// says whether the fault is explained by one (the page is registered and
// writable for the application), so that returning retries the write. A
// second fault at the same page with no window opened or closed in between
// is not the shim's (a guard page, a genuine crash): false.
bool window_explains_write_fault(uintptr_t addr);

// The runtime is off for good in this process (DEDUP_DISABLE): no window will
// ever open, so the syscall wrappers' pins are skipped (and the pin table,
// never touched, costs no page).
void write_windows_never_open();

}  // namespace dedup
