// Calls that make processes or change what a thread is: new processes made
// without fork() get the fork handlers; calls that need a single-threaded
// process, or change one thread's credentials, run without the scanner
// thread (scanner/runtime.h: rt_without_scanner).
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
