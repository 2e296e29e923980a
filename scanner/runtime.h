// The C++ entry points the interposition layer (shim/) calls: one per
// intercepted operation, kernel-style results (value or -errno) so the shim
// alone decides what errno the application sees. Everything here is safe to
// call before initialisation and from any thread.
#pragma once
#include <sys/uio.h>
#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

namespace dedup {

// False when DEDUP_DISABLE=1 or while this thread is initialising the
// runtime (calls then go straight to the kernel / libc).
bool rt_active();

long rt_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off);
long rt_munmap(void* addr, size_t len);
long rt_mremap(void* old_addr, size_t old_len, size_t new_len, int flags, void* new_addr);
long rt_mprotect(void* addr, size_t len, int prot);
long rt_madvise(void* addr, size_t len, int advice);
// process_madvise(2): on this process, prepares merged ranges for COLLAPSE.
long rt_process_madvise(int pidfd, const struct iovec* iov, size_t n, int advice, unsigned flags);
long rt_mlock(void* addr, size_t len, unsigned flags);  // mlock / mlock2
long rt_munlock(void* addr, size_t len);
long rt_mlockall(int flags);
long rt_munlockall();

// prctl(PR_SET_MEMORY_MERGE / PR_GET_MEMORY_MERGE), as the kernel documents
// them since 6.4: 1 merges every registered region (as DEDUP_SCOPE=all), 0
// stops merging and unmerges everything. Returns the prctl result or -errno;
// *handled is false for every other option (the shim passes those on).
long rt_prctl_memory_merge(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5,
                           bool* handled);

// Signals: the shim keeps SIGSEGV for itself and shows the application its
// own disposition.
long rt_sigaction(int sig, const struct sigaction* act, struct sigaction* old);

// The shim's private file descriptors (its kept files, scanner/kept_file.h,
// and the DEDUP_LOG file).
bool rt_owns_fd(int fd);
// The shim's descriptors, ascending; returns how many (at most kMaxShimFds).
constexpr int kMaxShimFds = 5;
int rt_fds(int out[kMaxShimFds]);
// Moves the shim's fd away from `fd` (the application dup2s onto it).
void rt_vacate_fd(int fd);

// At exit: stops the scanner, writes the summary and the stats file.
void rt_shutdown();

// Called by the scanner thread between batches (no lock held): refreshes the
// live stats file in /dev/shm every second, and with DEDUP_STATS_INTERVAL_MS
// logs a line and refreshes DEDUP_STATS_FILE.
void rt_live_tick();

// Called by the scanner (no lock held) after an exact VMA count showed the
// process past the budget because the program itself grew: gives VMAs back
// (unmerges the most fragmented regions) while there is still room to.
bool rt_relieve_vma_pressure();

}  // namespace dedup
