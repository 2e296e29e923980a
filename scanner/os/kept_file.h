// Files the shim keeps open (/proc/self/pagemap, /proc/self/maps,
// /proc/self/status for its whole life; the live stats file until it is
// named), each through one descriptor the program never sees (shim/fds.cpp
// answers EBADF for it).
//
// Opening a file takes the lowest free descriptor for a moment, which a
// program at its RLIMIT_NOFILE would need: so each file is opened once, early
// (at the first registration), and then parked where it costs the program
// nothing: above the soft RLIMIT_NOFILE when the hard limit allows (a
// descriptor above the limit stays valid and takes none of the program's
// numbers), else at the highest free number below it, far from the low
// numbers open() hands out. A failed open is retried at most once a second
// and said once. Every use checks that the number still refers to our file
// (a raw close_range the shim cannot see, then an open() of the program's,
// may have reused it).
#pragma once
#include <atomic>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

namespace dedup {

class KeptFile {
public:
    // what names the file in the warning ("/proc/self/pagemap"). Kept in
    // the object, not pointed to: a pointer is a relocation, which ld.so
    // writes at load (a page of .data copied in every process).
    template <size_t N>
    explicit constexpr KeptFile(const char (&what)[N]) : what_{} {
        static_assert(N <= kMaxWhat, "KeptFile: name too long");
        for (size_t i = 0; i < N; ++i) what_[i] = what[i];
    }

    // Opens path (O_CLOEXEC added) unless already open. False if it cannot
    // be had now.
    bool ensure(const char* path, int flags, int mode = 0);
    long pread(void* buf, size_t n, off_t off);
    int fd() const { return fd_.load(std::memory_order_relaxed); }
    // Closes our descriptor (the program dup2s onto its number; in a forked
    // child it describes the parent). Reopened by the next ensure().
    void close();

private:
    bool still_ours(int fd) const;

    static constexpr size_t kMaxWhat = 24;
    char what_[kMaxWhat];
    std::atomic<int> fd_{-1};
    std::atomic<unsigned long> ino_{0}, dev_{0};
    std::atomic<uint64_t> retry_at_ns_{0};
    std::atomic<bool> warned_{false};
};

// Every file the shim keeps, in one place: the fd layer hides them all, and
// a forked child closes them all (each describes its parent).
struct KeptFiles {
    KeptFile pagemap{"/proc/self/pagemap"};
    KeptFile maps{"/proc/self/maps"};
    KeptFile status{"/proc/self/status"};
    KeptFile live{"the live stats file"};

    static constexpr int kCount = 4;
    // All of them, for a loop (an array of pointers would be relocations).
    struct All {
        KeptFile* files[kCount];
        KeptFile* const* begin() const { return files; }
        KeptFile* const* end() const { return files + kCount; }
    };
    All all() { return {{&pagemap, &maps, &status, &live}}; }
};
KeptFiles& kept_files();

// Moves fd where a kept descriptor belongs (see above): returns the new
// number (fd closed) or fd itself if it cannot be moved.
int park_fd(int fd);

}  // namespace dedup
