// The next definition of a libc symbol, resolved lazily with
// dlsym(RTLD_NEXT) on first use (as heaptrack's hook<>). Only for symbols
// that are never called during start-up; the allocation and mapping
// wrappers reach libc through __libc_* entry points and raw syscalls instead.
#pragma once
#include <atomic>
#include <dlfcn.h>
#include <stddef.h>

namespace dedup {

template <typename Fn>
class NextSymbol {
public:
    // The name is kept in the object, not pointed to: a pointer would be a
    // relocation that ld.so writes at load, in every process, for each of
    // the ~100 wrappers (a page of .data copied for nothing).
    template <size_t N>
    explicit constexpr NextSymbol(const char (&name)[N]) : name_{} {
        static_assert(N <= kMaxName, "NextSymbol: name too long");
        for (size_t i = 0; i < N; ++i) name_[i] = name[i];
    }
    Fn get() {
        Fn f = fn_.load(std::memory_order_acquire);
        if (!f) {
            f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name_));
            fn_.store(f, std::memory_order_release);
        }
        return f;
    }

private:
    static constexpr size_t kMaxName = 40;
    char name_[kMaxName];
    std::atomic<Fn> fn_{nullptr};
};

}  // namespace dedup
