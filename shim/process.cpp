// Calls that make processes or change what a thread is: new processes made
// without fork() get the fork handlers; calls that need a single-threaded
// process, or change one thread's credentials, run without the scanner
// thread (scanner/runtime.h: rt_without_scanner).
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/types.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"

using namespace dedup;

namespace {
using CloneFn = int (*)(int (*)(void*), void*, int, void*, pid_t*, void*, pid_t*);
using ForkFn = pid_t (*)();
using IntFn = int (*)(int);
using SetnsFn = int (*)(int, int);
using CapsetFn = int (*)(void*, void*);
NextSymbol<CloneFn> next_clone("clone");
NextSymbol<ForkFn> next__Fork("_Fork");
NextSymbol<IntFn> next_unshare("unshare");
NextSymbol<SetnsFn> next_setns("setns");
NextSymbol<CapsetFn> next_capset("capset");

struct Trampoline {
    int (*fn)(void*);
    void* arg;
};
}  // namespace

// clone(2) through glibc: without CLONE_VM the child is a new process, as
// after fork(), and gets the fork handlers (it would otherwise punch the
// parent's canonical pages when it unmaps its copy of merged memory).
EXPORT int clone(int (*fn)(void*), void* stack, int flags, void* arg, ...) {
    va_list ap;
    va_start(ap, arg);
    pid_t* ptid = va_arg(ap, pid_t*);
    void* tls = va_arg(ap, void*);
    pid_t* ctid = va_arg(ap, pid_t*);
    va_end(ap);
    if (flags & CLONE_VM) return next_clone.get()(fn, stack, flags, arg, ptid, tls, ctid);
    Trampoline t = {fn, arg};  // the child has a copy of it
    rt_fork_prepare();
    int r = next_clone.get()([](void* p) {
        Trampoline* c = static_cast<Trampoline*>(p);
        rt_fork_child();
        return c->fn(c->arg);
    }, stack, flags, &t, ptid, tls, ctid);
    rt_fork_parent();  // only the parent returns here
    return r;
}

// glibc's fork without its handlers (2.34): ours still run.
EXPORT pid_t _Fork(void) {
    rt_fork_prepare();
    pid_t r = next__Fork.get()();
    if (r == 0) rt_fork_child();
    else rt_fork_parent();
    return r;
}

EXPORT int unshare(int flags) {
    return (int)rt_without_scanner([](void* f) { return (long)next_unshare.get()(*static_cast<int*>(f)); }, &flags);
}

EXPORT int setns(int fd, int nstype) {
    int args[2] = {fd, nstype};
    return (int)rt_without_scanner([](void* a) {
        int* v = static_cast<int*>(a);
        return (long)next_setns.get()(v[0], v[1]);
    }, args);
}

EXPORT int capset(void* header, void* data) {
    void* args[2] = {header, data};
    return (int)rt_without_scanner([](void* a) {
        void** v = static_cast<void**>(a);
        return (long)next_capset.get()(v[0], v[1]);
    }, args);
}

// ---- exec: no destructor runs, so the live file goes first ---------------------

namespace {
using ExecveFn = int (*)(const char*, char* const*, char* const*);
using ExecvFn = int (*)(const char*, char* const*);
using FexecveFn = int (*)(int, char* const*, char* const*);
using ExecveatFn = int (*)(int, const char*, char* const*, char* const*, int);
NextSymbol<ExecveFn> next_execve("execve"), next_execvpe("execvpe");
NextSymbol<ExecvFn> next_execv("execv"), next_execvp("execvp");
NextSymbol<FexecveFn> next_fexecve("fexecve");
NextSymbol<ExecveatFn> next_execveat("execveat");

// exec returns only when it failed.
template <typename F>
int exec_with(F&& call) {
    rt_before_exec();
    int r = call();
    int saved = errno;
    rt_exec_failed();
    errno = saved;
    return r;
}

// How many arguments execl/execle/execlp were given, up to the NULL.
int count_args(const char* arg0, va_list ap) {
    int n = 0;
    if (!arg0) return 0;
    for (n = 1; va_arg(ap, char*); ++n) {
    }
    return n;
}

void fill_args(const char* arg0, va_list ap, char** argv, int n) {
    if (n) argv[0] = const_cast<char*>(arg0);
    for (int i = 1; i < n; ++i) argv[i] = va_arg(ap, char*);
    argv[n] = nullptr;
    if (n) va_arg(ap, char*);  // the NULL
}
}  // namespace

EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
    return exec_with([&] { return next_execve.get()(path, argv, envp); });
}
EXPORT int execv(const char* path, char* const argv[]) {
    return exec_with([&] { return next_execv.get()(path, argv); });
}
EXPORT int execvp(const char* file, char* const argv[]) {
    return exec_with([&] { return next_execvp.get()(file, argv); });
}
EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
    return exec_with([&] { return next_execvpe.get()(file, argv, envp); });
}
EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
    return exec_with([&] { return next_fexecve.get()(fd, argv, envp); });
}
EXPORT int execveat(int dirfd, const char* path, char* const argv[], char* const envp[], int flags) {
    return exec_with([&] { return next_execveat.get()(dirfd, path, argv, envp, flags); });
}
// execl/execlp/execle: glibc calls its internal execve, which the wrappers
// above never see; as glibc does, the list becomes an argv on the stack.
#define DEDUP_LIST_ARGV(arg, argv)           \
    va_list ap, counting;                    \
    va_start(ap, arg);                       \
    va_copy(counting, ap);                   \
    int argc_ = count_args(arg, counting);   \
    va_end(counting);                        \
    char* argv[argc_ + 1];                   \
    fill_args(arg, ap, argv, argc_)

EXPORT int execl(const char* path, const char* arg, ...) {
    DEDUP_LIST_ARGV(arg, argv);
    va_end(ap);
    return execv(path, argv);
}
EXPORT int execlp(const char* file, const char* arg, ...) {
    DEDUP_LIST_ARGV(arg, argv);
    va_end(ap);
    return execvp(file, argv);
}
EXPORT int execle(const char* path, const char* arg, ...) {
    DEDUP_LIST_ARGV(arg, argv);
    char* const* envp = va_arg(ap, char* const*);
    va_end(ap);
    return execve(path, argv, envp);
}
