// Linux AIO: a read io_submit queues may complete after the call returned,
// when the kernel is no longer held off by the pin the shim takes for the
// call (shim/aio.cpp leaves such buffers alone instead).
#include <fcntl.h>
#include <sys/stat.h>

#include "scanner/os/sys.h"
#include "scanner/runtime.h"

namespace dedup {

bool rt_aio_read_completes_later(int fd) {
    long fl = sys::call(SYS_fcntl, fd, F_GETFL);
    if (sys::failed(fl)) return false;  // io_submit fails with EBADF
    if (fl & O_DIRECT) return true;
    struct stat st;
    if (sys::failed(sys::call(SYS_fstat, fd, (long)&st))) return false;
    // Buffered reads of files, pipes and sockets copy inside io_submit; a
    // device driver's read_iter may queue the request.
    return S_ISCHR(st.st_mode);
}

}  // namespace dedup
