// What every interposition file needs: the attribute that exports a symbol
// from the hidden-by-default library, and the conversion of a kernel-style
// result (-errno on failure) to libc's convention.
#pragma once
#include <errno.h>
#include <sys/mman.h>

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace dedup {

inline long set_errno(long r) {
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

// For calls that return an address, or MAP_FAILED.
inline void* set_errno_ptr(long r) {
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    return (void*)r;
}

}  // namespace dedup
