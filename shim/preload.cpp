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
