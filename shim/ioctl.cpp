// ioctl and setsockopt: the control calls whose argument is a structure.
//
// ioctl writes into its argument (any request whose direction has _IOC_READ,
// and the old requests that carry no size at all: FIONREAD, TCGETS,
// TIOCGWINSZ...), so the argument is pinned for the call. How much: the
// request's _IOC_SIZE, and never less than 4096 bytes. The old requests
// write small structures (an int, a termios of 60 bytes, an ifreq of 40, a
// loop_info64 of 232); 4096 bytes covers any of them and still touches at
// most the two pages under [arg, arg+4096): a pin that is too long only
// makes merges skip those pages while the call runs, one that is too short
// lets a window meet the write. Arguments below 4096 are integers, not
// pointers: nothing to pin. Buffers a structure points to (SG_IO's data,
// SIOCGIFCONF's list) are not followed.
//
// Some requests hand memory over for the kernel to write into later
// (userfaultfd registrations, VFIO and iommufd DMA maps, vhost memory
// tables), and setsockopt(SOL_XDP, XDP_UMEM_REG) does for an AF_XDP umem:
// the runtime leaves that memory alone before the call.
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "scanner/runtime.h"
#include "shim/export.h"
#include "shim/hook.h"
#include "shim/kernel_writes.h"
#include "shim/span.h"

using namespace dedup;

namespace dedup {

void ioctl_before(PinSet& ps, unsigned long request, void* arg) {
    if ((uintptr_t)arg < 4096) return;
    rt_ioctl_will_call(request, arg);
    size_t len = _IOC_SIZE(request);
    ps.add(arg, len > 4096 ? len : 4096);
}

}  // namespace dedup

namespace {
using IoctlFn = int (*)(int, unsigned long, ...);
using SetsockoptFn = int (*)(int, int, int, const void*, socklen_t);
NextSymbol<IoctlFn> next_ioctl("ioctl");
NextSymbol<SetsockoptFn> next_setsockopt("setsockopt");
}  // namespace

EXPORT int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void* arg = va_arg(ap, void*);  // the third register, whatever the request (as glibc)
    va_end(ap);
    PinSet ps;
    ioctl_before(ps, request, arg);
    ps.pin();
    return next_ioctl.get()(fd, request, arg);
}

EXPORT int setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
    rt_setsockopt_will_call(level, name, val, len);
    return next_setsockopt.get()(fd, level, name, val, len);
}
