// The OS layer's readers of /proc and /sys: everything the shim learns about
// the process and the machine from files, in one place. Files read often
// (pagemap, maps, status) are kept open (os/kept_file.h); the others are
// opened for one read. Nothing here allocates or takes the mm lock.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace dedup {

// A small decimal number from a file such as /proc/sys/vm/max_map_count, or
// fallback if it cannot be read.
uint64_t read_number_file(const char* path, uint64_t fallback);
// Whether transparent huge pages are "always" (every anonymous mapping may
// get huge pages, advised or not).
bool thp_enabled_always();
// The soft limit of an rlimit, page-aligned down; UINT64_MAX if unlimited
// or unreadable.
uint64_t rlimit_soft(int resource);

// /proc/self/pagemap, kept open.
bool open_pagemap();
// The pagemap entries of n pages from addr. False if unreadable now.
bool read_pagemap(uintptr_t addr, size_t n, uint64_t* out);
constexpr uint64_t kPmPresent = 1ull << 63;
constexpr uint64_t kPmFile = 1ull << 61;  // file page or shared anonymous
// PAGEMAP_SCAN (Linux 6.7): the ranges within [lo, hi) mapped by huge
// pages, at most max of them into ranges[i] = {start, end}. Returns how
// many, or -errno.
long pagemap_huge_ranges(uintptr_t lo, uintptr_t hi, uintptr_t (*ranges)[2], long max);

// /proc/self/maps, kept open. The readers of it below share one buffer:
// callers hold the mm lock.
bool open_maps();
// Lines in /proc/self/maps (the process's VMA count), or 0 on error.
uint64_t count_vmas();
// The VMAs mapping the file with inode ino (0: any) whose path contains name: the
// first max into lo[]/hi[]. Returns how many there are in all, or -1 if the
// maps could not be read.
long find_vmas_of_file(uint64_t ino, const char* name, uintptr_t* lo, uintptr_t* hi, long max);

// The protection the kernel has for the VMA containing addr (PROCMAP_QUERY,
// Linux 6.11: one ioctl, no text): its bounds and PROT_* bits. False if
// addr is not mapped or the query failed.
bool vma_at(uintptr_t addr, uintptr_t* start, uintptr_t* end, int* prot);
// Whether every page of [a, a+len) has protection prot in the kernel (a
// program's raw mprotect syscall changes it without the shim seeing). True
// on a kernel without PROCMAP_QUERY: the shim's record stands.
bool kernel_protection_is(uintptr_t a, size_t len, int prot);

// A private anonymous VMA as /proc/self/smaps describes it, with the VmFlags
// the shim cares about.
struct AnonVma {
    uintptr_t start, end;
    int prot;
    uint32_t vm_flags;  // VmFlag bits below
};
enum VmFlag : uint32_t {
    kVmDontfork = 1u << 0,    // dc
    kVmDontdump = 1u << 1,    // dd
    kVmHugepage = 1u << 2,    // hg
    kVmNohugepage = 1u << 3,  // nh
    kVmRandom = 1u << 4,      // rr
    kVmSequential = 1u << 5,  // sr
    kVmWipeonfork = 1u << 6,  // wf
    kVmLocked = 1u << 7,      // lo
};
// Calls fn(const AnonVma&) for each private anonymous VMA (no file, not
// [heap] or [stack]) overlapping [start, end), clipped to it. Reads
// /proc/self/smaps, opened for this call only. False if it cannot be read.
template <typename F>
bool for_each_anon_vma(uintptr_t start, uintptr_t end, F&& fn);
using AnonVmaFn = void (*)(const AnonVma&, void* ctx);
bool for_each_anon_vma_fn(uintptr_t start, uintptr_t end, AnonVmaFn fn, void* ctx);
template <typename F>
bool for_each_anon_vma(uintptr_t start, uintptr_t end, F&& fn) {
    return for_each_anon_vma_fn(
        start, end, [](const AnonVma& v, void* ctx) { (*static_cast<F*>(ctx))(v); }, &fn);
}

// /proc/self/status, kept open: the number of threads, and whether the
// thread-group leader is a zombie (it left with pthread_exit). False if it
// cannot be read.
bool read_thread_state(int* threads, bool* leader_zombie);
// The thread-group leader's seccomp mode from the same file ("Seccomp:": 0
// none, 1 strict, 2 filter); -1 if it cannot be read.
int read_leader_seccomp_mode();

// The process's name (the thread-group leader's comm, as /proc/self/comm
// has it) from the Name line of the kept /proc/self/status: no descriptor
// is opened, even for a moment (the program may be at its limit). "" if it
// cannot be read.
void read_process_name(char* out, size_t cap);

// Whether pidfd names this process: the PIDFD_SELF sentinels (6.15), or a
// pidfd whose PIDFD_GET_INFO says our thread group.
bool pidfd_is_self(int pidfd);

}  // namespace dedup
