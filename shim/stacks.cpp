// Stacks the program gives the kernel: an alternate signal stack
// (sigaltstack) and a thread's stack it allocated itself
// (pthread_attr_setstack). The kernel writes a signal frame onto
// the stack a handler runs on, and for a thread the rseq area and the
// cleared tid in its TCB at the top of that stack, at moments no wrapper
// sees: a write-protect window there makes the kernel kill the process with
// SIGSEGV (it cannot build the frame). Memory of the program's own that it
// hands over as a stack is therefore left alone (rt_leave_alone) first.
// Stacks glibc maps itself (MAP_STACK) are never registered; a coroutine
// stack switched to with makecontext or assembly is not seen (DESIGN.md).
#include <pthread.h>
#include <signal.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"

using namespace dedup;

namespace {
using SigaltstackFn = int (*)(const stack_t*, stack_t*);
using SetstackFn = int (*)(pthread_attr_t*, void*, size_t);
NextSymbol<SigaltstackFn> next_sigaltstack("sigaltstack");
NextSymbol<SetstackFn> next_pthread_attr_setstack("pthread_attr_setstack");

void leave_stack_alone(const void* sp, size_t size) {
    int saved = errno;
    rt_leave_alone(sp, size);
    errno = saved;
}
}  // namespace

EXPORT int sigaltstack(const stack_t* ss, stack_t* old) {
    if (ss && !(ss->ss_flags & SS_DISABLE)) leave_stack_alone(ss->ss_sp, ss->ss_size);
    KernelWritePin pin(old, old ? sizeof *old : 0);
    return next_sigaltstack.get()(ss, old);
}

EXPORT int pthread_attr_setstack(pthread_attr_t* attr, void* addr, size_t size) {
    leave_stack_alone(addr, size);
    return next_pthread_attr_setstack.get()(attr, addr, size);
}
