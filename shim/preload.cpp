// The library's entry and exit: the constructor initialises the runtime (reads
// DEDUP_*), the destructor writes its summary. The interposed symbols are in
// the other files of shim/, one concern each; all of them forward to the
// runtime's API (scanner/runtime.h) and nothing deeper.
#include <errno.h>

#include "scanner/runtime.h"

__attribute__((constructor)) static void dedup_constructor() {
    int saved = errno;
    dedup::rt_start();
    errno = saved;
}

__attribute__((destructor)) static void dedup_destructor() {
    int saved = errno;
    dedup::rt_shutdown();
    errno = saved;
}

// DT_FINI, which ld.so calls after the destructors (-Wl,-fini=dedup_fini in
// the Makefile): crti's _fini is at the end of .text, a page fault of its
// own at every exit; this one is linked next to the constructor.
extern "C" __attribute__((visibility("hidden"), used)) void dedup_fini() {}
