// Memory the program hands to another writer for as long as it likes, and
// must keep its mapping meanwhile: ranges it registers with its own
// userfaultfd, and memory handed to a device by ioctl (VFIO and iommufd DMA
// maps, vhost memory tables) or setsockopt (AF_XDP umem). Left alone before
// the call that hands it over.
#include <stdint.h>
#include <sys/mman.h>

#include "scanner/kernel_writers.h"
#include "scanner/lifecycle.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/state.h"

namespace dedup {

using kw::kWholeSpace;

// ---- userfaultfd ---------------------------------------------------------------

long rt_uffd_will_register(const void* addr, size_t len) {
    long r = rt_leave_alone(addr, len);
    if (!runtime_ready() || !len) return r;
    uintptr_t start = (uintptr_t)addr & ~kPageMask, end = page_round_up((uintptr_t)addr + len);
    if (end < start) end = kWholeSpace;
    State& s = state();
    MmLockGuard g(s.lock);
    // A zero page given back is not present: a read would raise a MISSING
    // fault for a page the program wrote. MADV_POPULATE_WRITE gives it a
    // zero-filled page again (pages touched since are left as they are).
    auto repopulate = [&](Region& rg, uintptr_t a, uintptr_t b) {
        if (sys::failed(sys::madvise((void*)a, b - a, MADV_POPULATE_WRITE))) return;
        for (uintptr_t p = a; p < b; p += kPageSize) {
            PageMeta& m = rg.at(p);
            m.state = 0;
            m.hash32 = 0;
            --s.stats.zero_pages;
        }
    };
    for_regions(s, start, end, [&](Region& rg) {
        uintptr_t a = start > rg.start ? start : rg.start, b = end < rg.end ? end : rg.end;
        uintptr_t run = 0;
        for (uintptr_t p = a; p < b; p += kPageSize) {
            if (is_zero_freed(rg.at(p).state)) {
                if (!run) run = p;
            } else if (run) {
                repopulate(rg, run, p);
                run = 0;
            }
        }
        if (run) repopulate(rg, run, b);
    });
    return r;
}

// ---- memory handed to devices ----------------------------------------------------

namespace {

constexpr unsigned long kUffdioRegister = 0xc020aa00;      // _IOWR(0xAA, 0x00, struct uffdio_register)
constexpr unsigned long kVfioIommuMapDma = 0x3b71;         // _IO(';', 100 + 13)
constexpr unsigned long kIommuIoasMap = 0x3b85;            // _IO(';', 0x85)
constexpr unsigned long kVhostSetMemTable = 0x4008af03;    // _IOW(0xAF, 0x03, struct vhost_memory)
constexpr int kSolXdp = 283, kXdpUmemReg = 4;

}  // namespace

void rt_ioctl_will_call(unsigned long request, const void* arg) {
    switch (request) {
        case kUffdioRegister: {
            uint64_t range[2];  // struct uffdio_register: range.start, range.len, mode, ioctls
            if (rt_read_user(range, arg, sizeof range)) rt_uffd_will_register((const void*)range[0], range[1]);
            break;
        }
        case kVfioIommuMapDma: {  // the device DMAs into it until VFIO_IOMMU_UNMAP_DMA
            struct {
                uint32_t argsz, flags;
                uint64_t vaddr, iova, size;
            } m;
            if (rt_read_user(&m, arg, sizeof m) && m.argsz >= sizeof m) rt_leave_alone((const void*)m.vaddr, m.size);
            break;
        }
        case kIommuIoasMap: {
            struct {
                uint32_t size, flags, ioas_id, reserved;
                uint64_t user_va, length, iova;
            } m;
            if (rt_read_user(&m, arg, sizeof m) && m.size >= sizeof m) rt_leave_alone((const void*)m.user_va, m.length);
            break;
        }
        case kVhostSetMemTable: {  // the vhost worker writes guest memory whenever it likes
            uint32_t hdr[2];
            if (!rt_read_user(hdr, arg, sizeof hdr)) break;
            for (uint32_t i = 0; i < hdr[0] && i < 512; ++i) {
                uint64_t region[4];  // guest_phys_addr, memory_size, userspace_addr, flags_padding
                if (!rt_read_user(region, (const uint8_t*)arg + 8 + i * sizeof region, sizeof region)) break;
                rt_leave_alone((const void*)region[2], region[1]);
            }
            break;
        }
        default:
            break;
    }
}

void rt_setsockopt_will_call(int level, int optname, const void* optval, unsigned optlen) {
    if (level != kSolXdp || optname != kXdpUmemReg || optlen < 16) return;
    uint64_t reg[2];  // struct xdp_umem_reg: addr, len, ...: the NIC writes frames into it
    if (rt_read_user(reg, optval, sizeof reg)) rt_leave_alone((const void*)reg[0], reg[1]);
}

}  // namespace dedup
