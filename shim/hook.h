// The next definition of a libc symbol, resolved lazily with
// dlsym(RTLD_NEXT) on first use (as heaptrack's hook<>). Only for symbols
// that are never called during start-up; the allocation and mapping
// wrappers reach libc through __libc_* entry points and raw syscalls instead.
#pragma once
#include <atomic>
#include <dlfcn.h>

namespace dedup {

template <typename Fn>
class NextSymbol {
public:
    explicit constexpr NextSymbol(const char* name) : name_(name) {}
    Fn get() {
        Fn f = fn_.load(std::memory_order_acquire);
        if (!f) {
            f = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name_));
            fn_.store(f, std::memory_order_release);
        }
        return f;
    }

private:
    const char* name_;
    std::atomic<Fn> fn_{nullptr};
};

}  // namespace dedup
