// Clocks: clock_gettime, from the vDSO where it can (safe anywhere).
#pragma once
#include <stdint.h>
#include <time.h>

namespace dedup {

inline uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
inline uint64_t monotonic_ns() { return clock_ns(CLOCK_MONOTONIC); }
// CPU time of the calling thread.
inline uint64_t thread_cpu_ns() { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }
// CPU time of the whole process, every thread, ended ones included (a
// system call: the vDSO has no CPU-time clocks).
inline uint64_t process_cpu_ns() { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

}  // namespace dedup
