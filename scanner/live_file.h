// The live file: the process's counters as JSON in
// /dev/shm/libdedup.<pidns>.<pid>.json, rewritten every second by the
// scanner and read by dedupstat (no variable needed).
//
// - Created unnamed (O_TMPFILE) with the other kept files at the first
//   registration, sized and mapped, and written through the mapping, padded
//   with spaces (trailing spaces are valid JSON): no write of ours goes
//   through a descriptor number the program may have reused.
// - Named at its first write, a second in, so that short processes leave
//   nothing. Before it is named the process takes an OFD write lock on its
//   first byte and holds it for its whole life (the descriptor is kept,
//   hidden): a reader tells a live process's file from a dead one's by the
//   lock (F_OFD_GETLK), which works across PID namespaces sharing one
//   /dev/shm (a pod's containers), where pids and kill(pid, 0) mean nothing.
//   The PID namespace's inode in the name keeps two containers whose
//   programs are PID 1 apart.
// - Removed at exit, at a signal that ends the process, and before an exec
//   (named again if the exec fails): exec runs no destructor.
// All calls require the mm lock.
#pragma once
#include <stddef.h>

namespace dedup {

bool live_file_open();
void live_file_write(const char* json, size_t n);
void live_file_remove();
void live_file_relink();  // after a failed exec
void live_file_reset_in_child();
// The inode of this process's PID namespace (0 if unknown).
unsigned long live_file_pidns();

}  // namespace dedup
