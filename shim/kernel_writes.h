// Helpers shared by the interposed functions of shim/ and their syscall()
// numbers (syscall.cpp): what a call writes into, for calls whose arguments
// take more than a line to read.
#pragma once
#include <stddef.h>
#include <sys/uio.h>

#include "shim/span.h"

namespace dedup {

// A write to fd, if fd is open on this process's memory (/proc/self/mem):
// the destination addresses, [off, off+len) (off -1: the file position).
void add_self_mem_write(PinSet& ps, int fd, long long off, size_t len);
// The bytes an iovec array holds (read without faulting).
size_t iov_bytes(const struct iovec* iov, long cnt);
// io_submit: leaves alone the buffers of reads that complete later, pins the
// rest for the call.
void aio_before_submit(PinSet& ps, long nr, const void* iocbpp);
// ioctl: whatever the request hands over (userfaultfd, DMA maps) is left
// alone; the argument is pinned (see ioctl.cpp for the size).
void ioctl_before(PinSet& ps, unsigned long request, void* arg);

}  // namespace dedup
