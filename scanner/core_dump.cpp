// Core dumps as they would be without the shim. With the default
// coredump_filter (0x33) the kernel dumps a private file mapping only if it
// has anonymous pages (an anon_vma): a merged piece that was never written
// would be missing from the core, and gdb would read zeros there. So, when a
// core is about to be written, one page of each merged VMA is given a
// private copy (MADV_POPULATE_WRITE): the kernel then dumps the whole VMA,
// reading the rest from the memfd. Beyond kMaxVmas pieces that would copy
// too much at crash time, and the process's filter gets "file-backed
// private" instead (libraries' text is dumped too). The store's views are
// never dumped.
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "scanner/lifecycle.h"
#include "scanner/meta_alloc.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/proc.h"
#include "scanner/os/sys.h"
#include "scanner/state.h"

namespace dedup {
namespace {

constexpr long kMaxVmas = 4096;

bool core_will_be_written() {
    char pattern[8] = "";
    long fd = sys::call(SYS_open, (long)"/proc/sys/kernel/core_pattern", O_RDONLY | O_CLOEXEC);
    if (!sys::failed(fd)) {
        sys::call(SYS_read, fd, (long)pattern, sizeof(pattern) - 1);
        sys::close((int)fd);
    }
    return pattern[0] == '|' || rlimit_soft(RLIMIT_CORE) != 0;
}

// coredump_filter |= bit 2 (file-backed private mappings).
void dump_file_backed_private() {
    char buf[32] = "";
    long fd = sys::call(SYS_open, (long)"/proc/self/coredump_filter", O_RDWR | O_CLOEXEC);
    if (sys::failed(fd)) return;
    long n = sys::call(SYS_read, fd, (long)buf, sizeof(buf) - 1);
    unsigned long filter = 0x33;
    if (n > 0) sscanf(buf, "%lx", &filter);
    n = snprintf(buf, sizeof(buf), "0x%lx", filter | 4);
    sys::call(SYS_pwrite64, fd, (long)buf, n, 0);
    sys::close((int)fd);
}

// One private page in each VMA of a canonical memfd (inode ino, 0: any);
// false if that could not be done for every one of them.
bool give_each_vma_an_anon_page(uint64_t ino, uintptr_t* lo, uintptr_t* hi) {
    long n = find_vmas_of_file(ino, SlotStore::kMemfdName, lo, hi, kMaxVmas);
    if (n < 0 || n > kMaxVmas) return false;
    bool all = true;
    for (long i = 0; i < n; ++i)
        all &= !sys::failed(sys::madvise((void*)lo[i], kPageSize, MADV_POPULATE_WRITE));
    return all;
}

}  // namespace

void runtime_prepare_core_dump() {
    static std::atomic<bool> done{false};
    if (!runtime_initialised() || done.exchange(true) || !core_will_be_written()) return;
    State& s = state();
    // Interrupted inside the shim on this thread, the registry and the store
    // may be half changed: leave the dump as the kernel makes it.
    if (s.lock.held_by_me()) return;
    MmLockGuard g(s.lock);
    s.store.exclude_views_from_core();
    uintptr_t* ranges = static_cast<uintptr_t*>(meta_alloc(2 * kMaxVmas * sizeof(uintptr_t)));
    bool done_all = ranges != nullptr;
    // Every memfd of ours: the current and a retiring store, and in a forked
    // child its parent's.
    if (done_all) done_all = give_each_vma_an_anon_page(0, ranges, ranges + kMaxVmas);
    if (!done_all) dump_file_backed_private();
    meta_free(ranges, 2 * kMaxVmas * sizeof(uintptr_t));
}

}  // namespace dedup
