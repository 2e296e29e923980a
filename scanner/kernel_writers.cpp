// Kernel writers that a pin held for the length of one system call cannot
// hold off (docs/DESIGN.md, "Kernel writers the shim cannot hold off"):
//
//   io_uring     requests complete after io_uring_enter returned, from
//                io-wq workers; registered buffers are pinned for good.
//                Buffers of requests in flight stay pinned until the shim
//                sees their completion (CQE); long-lived targets (registered
//                and provided buffers, multishot accept addresses, requests
//                that post no CQE) are left alone; what the shim cannot see
//                (SQPOLL, rings set up out of its sight, provided-buffer
//                rings, uring_cmd) leaves the whole process alone.
//   Linux AIO    reads on O_DIRECT descriptors (and devices) complete later.
//   userfaultfd  the program's registrations must keep their mapping.
//   /proc/self/mem  writes through it are forced into write-protected pages:
//                the shim pins the destination (shim/proc_mem.cpp); here the
//                table of such descriptors.
//
// Everything here takes only its own spin lock, never across a system call
// or a call that takes the mm lock.
#include <atomic>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "scanner/lifecycle.h"
#include "scanner/log.h"
#include "scanner/os/linux_compat.h"
#include "scanner/os/sys.h"
#include "scanner/registration.h"
#include "scanner/runtime.h"
#include "scanner/state.h"
#include "scanner/unmerge.h"

namespace dedup {
namespace {

constexpr uintptr_t kWholeSpace = ~uintptr_t(0) & ~kPageMask;

class SpinLock {
public:
    void lock() {
        while (flag_.exchange(true, std::memory_order_acquire))
            while (flag_.load(std::memory_order_relaxed)) sched_yield();
    }
    void unlock() { flag_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> flag_{false};
};

struct SpinGuard {
    explicit SpinGuard(SpinLock& l) : l_(l) { l_.lock(); }
    ~SpinGuard() { l_.unlock(); }
    SpinLock& l_;
};

std::atomic<bool> g_all_alone{false};

void release_all_inflight();

}  // namespace

// The program's memory, read without faulting: a pointer the kernel would
// answer with EFAULT must not crash the program in the shim instead.
bool rt_read_user(void* dst, const void* src, size_t n) {
    if (!src || !n) return false;
    struct iovec l = {dst, n}, r = {(void*)src, n};
    return sys::call(SYS_process_vm_readv, sys::getpid(), (long)&l, 1, (long)&r, 1, 0) == (long)n;
}

// ---- the whole process ---------------------------------------------------------

void rt_leave_all_alone(const char* why) {
    if (g_all_alone.load(std::memory_order_acquire) || !runtime_ready()) return;
    bool expected = false;
    if (!g_all_alone.compare_exchange_strong(expected, true)) return;
    log_warning("%s: the kernel may write where the shim cannot see; this process is left alone from now on "
                "(merged pages made private again, nothing merges)", why);
    State& s = state();
    {
        MmLockGuard g(s.lock);
        unmerge_range(s, 0, kWholeSpace, Unmerge::kAnonymousNow);
        for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegLeftAlone;
        // New registrations come in excluded (as under mlockall(MCL_FUTURE)):
        // the one flag registration.cpp gives new regions.
        s.mlock_future = true;
    }
    // Nothing merges any more, so no window opens over a buffer in flight.
    release_all_inflight();
}

void rt_keep_left_alone() {
    if (!g_all_alone.load(std::memory_order_acquire)) return;
    State& s = state();
    MmLockGuard g(s.lock);
    for (size_t i = 0; i < s.regions.count(); ++i) s.regions[i].flags |= kRegLeftAlone;
    s.mlock_future = true;
}

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

// ---- Linux AIO -----------------------------------------------------------------

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

// ---- descriptors open on our own memory ----------------------------------------

namespace {

constexpr int kFdBits = 1 << 16;
std::atomic<uint64_t> g_mem_fds[kFdBits / 64];
std::atomic<int> g_mem_fd_count{0};
SpinLock g_fd_lock;

bool mem_bit(int fd) {
    return fd >= 0 && fd < kFdBits && (g_mem_fds[fd / 64].load(std::memory_order_relaxed) >> (fd % 64) & 1);
}

// Requires g_fd_lock.
void set_mem_bit(int fd, bool on) {
    if (fd < 0 || fd >= kFdBits || mem_bit(fd) == on) return;
    uint64_t bit = 1ull << (fd % 64);
    if (on) g_mem_fds[fd / 64].fetch_or(bit);
    else g_mem_fds[fd / 64].fetch_and(~bit);
    g_mem_fd_count.fetch_add(on ? 1 : -1);
}

bool skip_prefix(const char*& p, const char* prefix) {
    size_t n = strlen(prefix);
    if (strncmp(p, prefix, n) != 0) return false;
    p += n;
    return true;
}

bool parse_num(const char*& p, long* out) {
    if (*p < '0' || *p > '9') return false;
    long v = 0;
    while (*p >= '0' && *p <= '9' && v < (1l << 40)) v = v * 10 + (*p++ - '0');
    *out = v;
    return true;
}

// Whether /proc/<n> is this process: its pid, or one of its threads.
bool is_our_task(long n) {
    if (n == sys::getpid()) return true;
    char path[64] = "/proc/self/task/";
    char digits[24];
    int k = 0;
    do digits[k++] = (char)('0' + n % 10);
    while ((n /= 10) && k < 20);
    size_t at = strlen(path);
    while (k) path[at++] = digits[--k];
    path[at] = 0;
    return !sys::failed(sys::call(SYS_faccessat, AT_FDCWD, (long)path, F_OK, 0));
}

// /proc/self/mem, /proc/thread-self/mem, /proc/<ours>/mem, and the same
// below task/<tid>/.
bool is_self_mem_path(const char* p) {
    if (!p || !skip_prefix(p, "/proc/")) return false;
    long n = 0;
    if (!skip_prefix(p, "self/") && !skip_prefix(p, "thread-self/")) {
        if (!parse_num(p, &n) || *p++ != '/' || !is_our_task(n)) return false;
    }
    if (skip_prefix(p, "task/")) {
        if (!parse_num(p, &n) || *p++ != '/') return false;
    }
    return strcmp(p, "mem") == 0;
}

}  // namespace

void rt_note_open(int fd, const char* path, int flags) {
    if (fd < 0 || !path) return;
    // RDMA: memory registered with the device (ibv_reg_mr) is pinned and
    // written by the NIC for as long as the registration lives, and
    // registrations go to the kernel in command buffers the shim does not
    // parse.
    if (strncmp(path, "/dev/infiniband/uverbs", 22) == 0) {
        rt_leave_all_alone("an RDMA verbs device was opened");
        return;
    }
    if ((flags & O_ACCMODE) == O_RDONLY || !is_self_mem_path(path)) return;
    SpinGuard g(g_fd_lock);
    set_mem_bit(fd, true);
}

bool rt_is_self_mem_fd(int fd) {
    if (g_mem_fd_count.load(std::memory_order_relaxed) == 0) return false;
    return mem_bit(fd);
}

uintptr_t rt_fd_position(int fd) { return (uintptr_t)sys::call(SYS_lseek, fd, 0, SEEK_CUR); }

namespace {
void uring_fds_closed(unsigned first, unsigned last);
void uring_fd_dup(int oldfd, int newfd);
std::atomic<int> g_nrings{0};
}  // namespace

void rt_note_dup(int oldfd, int newfd) {
    if (g_mem_fd_count.load(std::memory_order_relaxed)) {
        SpinGuard g(g_fd_lock);
        set_mem_bit(newfd, mem_bit(oldfd));
    }
    if (g_nrings.load(std::memory_order_relaxed)) uring_fd_dup(oldfd, newfd);
}

void rt_note_closed(unsigned first, unsigned last) {
    if (g_mem_fd_count.load(std::memory_order_relaxed)) {
        SpinGuard g(g_fd_lock);
        for (unsigned fd = first; fd <= last && fd < (unsigned)kFdBits && g_mem_fd_count.load(); ++fd)
            set_mem_bit((int)fd, false);
    }
    if (g_nrings.load(std::memory_order_relaxed)) uring_fds_closed(first, last);
}

// ---- io_uring ------------------------------------------------------------------
//
// Constants from linux/io_uring.h, as of Linux 6.18 (Debian 12's header is
// 6.1's), and the layout of liburing's struct io_uring (stable since 2.0).

namespace {
namespace uring {

constexpr uint32_t kSetupSqpoll = 1u << 1, kSetupSqe128 = 1u << 10, kSetupCqe32 = 1u << 11,
                   kSetupNoMmap = 1u << 14, kSetupRegisteredFdOnly = 1u << 15, kSetupNoSqarray = 1u << 16,
                   kSetupCqeMixed = 1u << 18, kSetupSqeMixed = 1u << 19;
constexpr uint32_t kFeatSingleMmap = 1u << 0;
constexpr unsigned kEnterRegisteredRing = 1u << 4;
constexpr unsigned kRegisterUseRegisteredRing = 1u << 31;
constexpr uint64_t kOffSqRing = 0, kOffCqRing = 0x8000000ull, kOffSqes = 0x10000000ull;
constexpr uint8_t kSqeBufferSelect = 1u << 5, kSqeCqeSkipSuccess = 1u << 6;
constexpr uint32_t kCqeMore = 1u << 1, kCqeNotif = 1u << 3, kCqe32 = 1u << 15, kCqeSkip = 1u << 16;
constexpr uint16_t kRecvMultishot = 1u << 1, kAcceptMultishot = 1u << 0;
constexpr uint32_t kRsrcRegisterSparse = 1u << 0;

enum Op : uint8_t {
    kReadv = 1, kReadFixed = 4, kRecvmsg = 10, kAccept = 13, kFilesUpdate = 20, kStatx = 21, kRead = 22,
    kMadvise = 25, kRecv = 27, kProvideBuffers = 31, kFgetxattr = 43, kGetxattr = 44, kUringCmd = 46,
    kReadMultishot = 49, kWaitid = 50, kRecvZc = 58, kEpollWait = 59, kReadvFixed = 60, kPipe = 62,
    kNop128 = 63, kUringCmd128 = 64, kLastKnown = 64,
};

enum RegOp : unsigned {
    kRegBuffers = 0, kRegProbe = 8, kRegBuffers2 = 15, kRegBuffersUpdate = 16, kRegIowqMaxWorkers = 19,
    kRegRingFds = 20, kUnregRingFds = 21, kRegPbufRing = 22, kRegPbufStatus = 26, kRegNapi = 27,
    kUnregNapi = 28, kRegZcrxIfq = 32, kRegResizeRings = 33, kRegMemRegion = 34, kRegQuery = 35,
    kRegLastKnown = 37,
};

struct SqOffsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};
struct CqOffsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};
struct Params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
    SqOffsets sq_off;
    CqOffsets cq_off;
};
static_assert(sizeof(Params) == 120, "struct io_uring_params");

struct Sqe {
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;  // addr2
    uint64_t addr;
    uint32_t len;
    uint32_t op_flags;
    uint64_t user_data;
    uint16_t buf_index, personality;
    int32_t splice_fd_in;
    uint64_t addr3, pad2;
};
static_assert(sizeof(Sqe) == 64, "struct io_uring_sqe");

struct Cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct RsrcRegister {  // io_uring_rsrc_register
    uint32_t nr, flags;
    uint64_t resv2, data, tags;
};
struct RsrcUpdate2 {  // io_uring_rsrc_update2
    uint32_t offset, resv;
    uint64_t data, tags;
    uint32_t nr, resv2;
};
struct RsrcUpdate {  // io_uring_rsrc_update (IORING_REGISTER_RING_FDS)
    uint32_t offset, resv;
    uint64_t data;
};
struct QueryHdr {
    uint64_t next_entry, query_data;
    uint32_t query_op, size;
    int32_t result;
    uint32_t resv[3];
};

// liburing's struct io_uring.
struct LibSq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
    void* sqes;
    unsigned sqe_head, sqe_tail;
    size_t ring_sz;
    void* ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct LibCq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
    void* cqes;
    size_t ring_sz;
    void* ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct LibRing {
    LibSq sq;
    LibCq cq;
    unsigned flags;
    int ring_fd;
    unsigned features;
    int enter_ring_fd;
    uint8_t int_flags, pad[3];
    unsigned pad2;
};
static_assert(sizeof(LibRing) == 216, "liburing's struct io_uring");

}  // namespace uring

using namespace uring;

// What the shim knows of a ring set up through a call it saw: where the
// program mapped it and the offsets io_uring_setup gave.
struct RingRec {
    int fd = -1;  // -1: free; registered-only rings: kRegOnlyFd + index
    uint32_t flags = 0, features = 0;
    Params p{};
    uintptr_t sq_ring = 0, cq_ring = 0, sqes = 0;  // 0: not mapped (yet)
    size_t sq_len = 0, cq_len = 0, sqes_len = 0;
};
constexpr int kMaxRings = 64;
constexpr int kRegOnlyFd = 1 << 30;
RingRec g_rings[kMaxRings];
SpinLock g_ring_lock;  // g_rings, g_inflight, g_cursors

// Registered ring descriptors (IORING_REGISTER_RING_FDS) are per thread:
// index -> fd + 1.
constexpr int kRegRingSlots = 16;
__thread int t_reg_ring[kRegRingSlots];

// A ring as the walk needs it, from a RingRec or from liburing's struct.
struct View {
    uintptr_t key = 0;  // the SQ head's address: one per ring
    const unsigned* khead = nullptr;
    const unsigned* ktail = nullptr;
    unsigned mask = 0;
    const unsigned* array = nullptr;  // null: IORING_SETUP_NO_SQARRAY
    const uint8_t* sqes = nullptr;
    unsigned sqe_shift = 6;
    bool sqe_mixed = false;
    const unsigned* cq_ktail = nullptr;
    unsigned cq_mask = 0;
    const uint8_t* cqes = nullptr;
    unsigned cqe_shift = 4;
    bool cqe_mixed = false;
    bool sqpoll = false;
};

void set_shapes(View& v, uint32_t flags) {
    v.sqe_shift = flags & kSetupSqe128 ? 7 : 6;
    v.cqe_shift = flags & kSetupCqe32 ? 5 : 4;
    v.sqe_mixed = flags & kSetupSqeMixed;
    v.cqe_mixed = flags & kSetupCqeMixed;
    v.sqpoll = flags & kSetupSqpoll;
}

// Requires g_ring_lock.
bool view_of_rec(const RingRec& r, View* v) {
    uintptr_t cq = r.cq_ring ? r.cq_ring : (r.features & kFeatSingleMmap ? r.sq_ring : 0);
    if (!r.sq_ring || !cq || !r.sqes) return false;
    const Params& p = r.p;
    v->key = r.sq_ring + p.sq_off.head;
    v->khead = (const unsigned*)(r.sq_ring + p.sq_off.head);
    v->ktail = (const unsigned*)(r.sq_ring + p.sq_off.tail);
    v->mask = *(const unsigned*)(r.sq_ring + p.sq_off.ring_mask);
    v->array = r.flags & kSetupNoSqarray ? nullptr : (const unsigned*)(r.sq_ring + p.sq_off.array);
    v->sqes = (const uint8_t*)r.sqes;
    v->cq_ktail = (const unsigned*)(cq + p.cq_off.tail);
    v->cq_mask = *(const unsigned*)(cq + p.cq_off.ring_mask);
    v->cqes = (const uint8_t*)(cq + p.cq_off.cqes);
    set_shapes(*v, r.flags);
    return true;
}

bool view_of_liburing(const void* ring, View* v) {
    const LibRing* r = (const LibRing*)ring;
    if (!r || !r->sq.khead || !r->sq.ktail || !r->sq.kring_mask || !r->sq.sqes || !r->cq.ktail ||
        !r->cq.kring_mask || !r->cq.cqes)
        return false;
    v->key = (uintptr_t)r->sq.khead;
    v->khead = r->sq.khead;
    v->ktail = r->sq.ktail;
    v->mask = *r->sq.kring_mask;
    v->array = r->flags & kSetupNoSqarray ? nullptr : r->sq.array;
    v->sqes = (const uint8_t*)r->sq.sqes;
    v->cq_ktail = r->cq.ktail;
    v->cq_mask = *r->cq.kring_mask;
    v->cqes = (const uint8_t*)r->cq.cqes;
    set_shapes(*v, r->flags);
    return true;
}

unsigned load_acquire(const unsigned* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

// Requires g_ring_lock.
RingRec* rec_of_fd(int fd) {
    if (fd < 0) return nullptr;
    for (RingRec& r : g_rings)
        if (r.fd == fd) return &r;
    return nullptr;
}

// Requires g_ring_lock.
RingRec* new_rec(int fd) {
    RingRec* r = rec_of_fd(fd);
    if (!r)
        for (RingRec& x : g_rings)
            if (x.fd < 0) {
                r = &x;
                g_nrings.fetch_add(1);
                break;
            }
    if (r) {
        *r = RingRec{};
        r->fd = fd;
    }
    return r;
}

// Requires g_ring_lock.
void free_rec(RingRec& r) {
    if (r.fd < 0) return;
    r = RingRec{};
    g_nrings.fetch_sub(1);
}

// ---- buffers in flight ----

// A request whose buffers are pinned until its completion is seen. Matched
// by user_data: when several requests in flight share one, all stay pinned
// until as many completions with it have been seen.
struct Inflight {
    uintptr_t key = 0;  // 0: free
    uint64_t user_data = 0;
    uint32_t sq_index = 0, gen = 0;
    bool confirmed = false;  // the kernel consumed the SQE
    bool done = false;       // a completion with its user_data was seen
    int pins[4] = {-2, -2, -2, -2};
};
constexpr int kMaxInflight = 256;
// Pins the table may hold at once: the pin table has 512 slots shared with
// every synchronous call; beyond this, buffers are left alone instead.
constexpr int kInflightSoftCap = 192;
Inflight g_inflight[kMaxInflight];
std::atomic<int> g_ninflight{0};

struct Cursor {
    uintptr_t key = 0;
    unsigned seen = 0;  // CQ index the shim has looked at up to
    bool lost = false;  // CQEs were overwritten before the shim saw them
};
Cursor g_cursors[kMaxRings];
std::atomic<uint32_t> g_gen{0};

// Requires g_ring_lock.
Cursor* cursor_of(uintptr_t key, bool create, const View* v) {
    Cursor* free_slot = nullptr;
    for (Cursor& c : g_cursors) {
        if (c.key == key) return &c;
        if (!c.key && !free_slot) free_slot = &c;
    }
    if (!create || !free_slot) return nullptr;
    free_slot->key = key;
    free_slot->seen = load_acquire(v->cq_ktail);
    free_slot->lost = false;
    return free_slot;
}

// Requires g_ring_lock: collects the pins of requests no longer in flight.
struct Drops {
    int tok[kMaxInflight * 4];
    int n = 0;
    void take(Inflight& e) {
        for (int& t : e.pins) {
            if (t != -2 && n < (int)(sizeof tok / sizeof tok[0])) tok[n++] = t;
            t = -2;
        }
        e = Inflight{};
        g_ninflight.fetch_sub(1);
    }
    void unpin() {
        for (int i = 0; i < n; ++i) rt_kernel_write_unpin(tok[i]);
        n = 0;
    }
};
Drops g_drops;  // used under g_ring_lock only

// Requires g_ring_lock: a completion with user_data ud on ring key.
void complete(uintptr_t key, uint64_t ud, Drops& d) {
    Inflight* hit = nullptr;
    bool others = false;
    for (Inflight& e : g_inflight) {
        if (e.key != key || e.user_data != ud) continue;
        if (!e.done && !hit) hit = &e;
        else if (!e.done) others = true;
    }
    if (!hit) return;
    hit->done = true;
    if (others) return;
    for (Inflight& e : g_inflight)
        if (e.key == key && e.user_data == ud && e.done) d.take(e);
}

// Requires g_ring_lock: looks at the completions posted since the last look.
void scan_cqes(const View& v, Drops& d) {
    Cursor* c = cursor_of(v.key, false, &v);
    if (!c) return;
    unsigned entries = v.cq_mask + 1;
    unsigned tail = load_acquire(v.cq_ktail);
    if (tail - c->seen > entries) {  // overwritten before we looked: stays pinned
        c->lost = true;
        c->seen = tail - entries;
    }
    while (c->seen != tail) {
        unsigned i = c->seen;
        const Cqe* cqe = (const Cqe*)(v.cqes + ((size_t)(i & v.cq_mask) << v.cqe_shift));
        uint64_t ud = __atomic_load_n(&cqe->user_data, __ATOMIC_RELAXED);
        uint32_t fl = __atomic_load_n(&cqe->flags, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        // Read before the kernel could reuse the slot?
        if (load_acquire(v.cq_ktail) - i > entries) {
            c->lost = true;
            tail = load_acquire(v.cq_ktail);
            c->seen = tail - entries;
            continue;
        }
        unsigned step = v.cqe_mixed && (fl & kCqe32) ? 2 : 1;
        if (!(fl & (kCqeMore | kCqeNotif)) && !(v.cqe_mixed && (fl & kCqeSkip))) complete(v.key, ud, d);
        c->seen = i + step;
        if ((int)(tail - c->seen) < 0) c->seen = tail;
    }
}

bool ring_has_inflight(uintptr_t key) {
    for (const Inflight& e : g_inflight)
        if (e.key == key) return true;
    return false;
}

// Requires g_ring_lock: the ring is gone (closed, exited).
void forget_ring(uintptr_t key, Drops& d) {
    if (!key) return;
    for (Inflight& e : g_inflight)
        if (e.key == key) d.take(e);
    for (Cursor& c : g_cursors)
        if (c.key == key) c = Cursor{};
}

void release_all_inflight() {
    SpinGuard g(g_ring_lock);
    for (Inflight& e : g_inflight)
        if (e.key) g_drops.take(e);
    for (Cursor& c : g_cursors) c = Cursor{};
    g_drops.unpin();
}

// ---- what a request writes into ----

// Up to four ranges; a fifth joins the nearest.
struct Ranges {
    uintptr_t lo[4], hi[4];
    int n = 0;
    void add(uint64_t p, uint64_t len) {
        if (!p || !len) return;
        uintptr_t s = (uintptr_t)p, e = s + (uintptr_t)len;
        if (e < s) e = UINTPTR_MAX;
        if (n < 4) {
            lo[n] = s;
            hi[n++] = e;
            return;
        }
        int best = 0;
        uintptr_t best_gap = UINTPTR_MAX;
        for (int i = 0; i < n; ++i) {
            uintptr_t gap = s > hi[i] ? s - hi[i] : (lo[i] > e ? lo[i] - e : 0);
            if (gap < best_gap) best_gap = gap, best = i;
        }
        if (s < lo[best]) lo[best] = s;
        if (e > hi[best]) hi[best] = e;
    }
    void add_iovecs(uint64_t iov, uint64_t cnt) {
        struct iovec v[64];
        if (cnt > 1024) cnt = 1024;
        for (uint64_t i = 0; i < cnt; i += 64) {
            size_t k = cnt - i < 64 ? cnt - i : 64;
            if (!rt_read_user(v, (const struct iovec*)iov + i, k * sizeof v[0])) return;
            for (size_t j = 0; j < k; ++j) add((uintptr_t)v[j].iov_base, v[j].iov_len);
        }
    }
};

enum class Act { kNone, kPin, kLeaveAlone, kAllAlone };

// What the kernel will write into for this SQE, and until when.
Act classify(const Sqe& q, Ranges& out) {
    bool select = q.flags & kSqeBufferSelect;
    Act pin = q.flags & kSqeCqeSkipSuccess ? Act::kLeaveAlone : Act::kPin;  // no CQE to wait for
    switch (q.opcode) {
        case kRead:
        case kRecv:
            if (select || (q.opcode == kRecv && (q.ioprio & kRecvMultishot))) return Act::kNone;  // provided buffers
            out.add(q.addr, q.len);
            return pin;
        case kReadv:
            if (select) return Act::kNone;
            out.add_iovecs(q.addr, q.len);
            return pin;
        case kRecvmsg: {
            if (q.ioprio & kRecvMultishot) return Act::kNone;  // headers go into provided buffers
            struct msghdr m;
            if (!rt_read_user(&m, (const void*)q.addr, sizeof m)) return Act::kNone;  // the CQE says EFAULT
            out.add(q.addr, sizeof(struct msghdr));  // msg_flags, lengths written back
            out.add((uintptr_t)m.msg_name, m.msg_namelen);
            out.add((uintptr_t)m.msg_control, m.msg_controllen);
            if (!select) out.add_iovecs((uintptr_t)m.msg_iov, m.msg_iovlen);
            return pin;
        }
        case kAccept: {
            uint32_t alen = 0;
            if (q.addr && rt_read_user(&alen, (const void*)q.off, sizeof alen)) out.add(q.addr, alen);
            out.add(q.off, sizeof(uint32_t));
            return q.ioprio & kAcceptMultishot ? Act::kLeaveAlone : pin;
        }
        case kStatx:
            out.add(q.off, 256);  // struct statx
            return pin;
        case kFilesUpdate:
            out.add(q.addr, (uint64_t)q.len * sizeof(int32_t));  // allocated indexes written back
            return pin;
        case kFgetxattr:
        case kGetxattr:
            out.add(q.off, q.len);
            return pin;
        case kWaitid:
            out.add(q.off, 128);  // siginfo_t
            return pin;
        case kEpollWait:
            out.add(q.addr, (uint64_t)q.len * 12);  // struct epoll_event (packed)
            return pin;
        case kPipe:
            out.add(q.addr, 2 * sizeof(int32_t));
            return pin;
        case kMadvise:
            // The kernel's madvise on merged pages would not do what the
            // program asks (DONTNEED brings the canonical page back): the
            // range becomes the program's own memory first.
            out.add(q.addr, q.len);
            return Act::kLeaveAlone;
        case kProvideBuffers:  // written whenever a request selects one, for as long as they are provided
            out.add(q.addr, (uint64_t)q.len * (uint32_t)q.fd);
            return Act::kLeaveAlone;
        case kUringCmd:
        case kUringCmd128:  // driver-specific buffers (NVMe passthrough DMA, socket commands)
            return Act::kAllAlone;
        case kReadFixed:
        case kReadvFixed:  // registered buffers: left alone when registered
        case kReadMultishot:
        case kRecvZc:  // provided buffers, the zero-copy area
            return Act::kNone;
        default:
            return q.opcode > kLastKnown ? Act::kAllAlone : Act::kNone;
    }
}

// The SQEs [from, to) of a ring, in submission order.
template <typename F>
void walk(const View& v, unsigned from, unsigned to, F&& f) {
    unsigned entries = v.mask + 1;
    if (to - from > entries) to = from + entries;
    for (unsigned i = from; i != to; ++i) {
        unsigned slot = v.array ? __atomic_load_n(&v.array[i & v.mask], __ATOMIC_RELAXED) : (i & v.mask);
        if (slot >= entries) continue;  // the kernel drops it
        const Sqe* q = (const Sqe*)(v.sqes + ((size_t)slot << v.sqe_shift));
        Sqe copy;
        memcpy(&copy, q, sizeof copy);
        f(i, copy);
        if (v.sqe_mixed && (copy.opcode == kNop128 || copy.opcode == kUringCmd128) && i + 1 != to) ++i;
    }
}

void leave_alone(const Ranges& r) {
    for (int i = 0; i < r.n; ++i) rt_leave_alone((const void*)r.lo[i], r.hi[i] - r.lo[i]);
}

// Before SQEs [from, to) of ring v reach the kernel: leaves alone what must
// be, then pins the buffers of requests that will complete later.
void before_submit(RtUringCall* c, const View& v, unsigned from, unsigned to) {
    if (v.sqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    // 1. No pin of this call is held yet: leave alone (which waits for pins
    //    over merged pages), and find how many will want pins.
    int want = 0;
    bool all = false;
    walk(v, from, to, [&](unsigned, const Sqe& q) {
        Ranges r;
        Act a = classify(q, r);
        if (a == Act::kAllAlone) all = true;
        else if (a == Act::kLeaveAlone) leave_alone(r);
        else if (a == Act::kPin) ++want;
    });
    if (all) rt_leave_all_alone("an io_uring command whose buffers the shim cannot see (IORING_OP_URING_CMD)");
    if (g_all_alone.load(std::memory_order_acquire) || !want) return;
    int room;
    {
        SpinGuard g(g_ring_lock);
        room = kInflightSoftCap - g_ninflight.load();
    }
    // Beyond the room: left alone, in submission order.
    int k = 0;
    if (want > room) {
        static std::atomic<bool> said{false};
        if (!said.exchange(true))
            log_warning("more io_uring requests in flight than the shim pins; their buffers are left alone");
        walk(v, from, to, [&](unsigned, const Sqe& q) {
            Ranges r;
            if (classify(q, r) == Act::kPin && k++ >= room) leave_alone(r);
        });
    }
    // 2. Pins, taken outside the lock (a pin waits for an open window).
    c->ring = v.key;
    c->head = from;
    c->gen = g_gen.fetch_add(1) + 1;
    k = 0;
    walk(v, from, to, [&](unsigned i, const Sqe& q) {
        Ranges r;
        if (classify(q, r) != Act::kPin || k++ >= room) return;
        Inflight e;
        e.key = v.key;
        e.user_data = q.user_data;
        e.sq_index = i;
        e.gen = c->gen;
        for (int j = 0; j < r.n; ++j) e.pins[j] = rt_kernel_write_pin(r.lo[j], r.hi[j] - r.lo[j]);
        SpinGuard g(g_ring_lock);
        // The completions to look at start after the tail as it is now.
        Cursor* cur = cursor_of(v.key, true, &v);
        if (cur && !ring_has_inflight(v.key)) {
            cur->seen = load_acquire(v.cq_ktail);
            cur->lost = false;
        }
        Inflight* slot = nullptr;
        for (Inflight& x : g_inflight)
            if (!x.key) {
                slot = &x;
                break;
            }
        if (slot && cur) {
            *slot = e;
            g_ninflight.fetch_add(1);
        } else {  // cannot happen below the soft cap; unprotected rather than stuck
            for (int t : e.pins) rt_kernel_write_unpin(t);
        }
    });
}

// After the call: requests the kernel did not consume are not in flight;
// completions seen release their buffers.
void after_call(RtUringCall* c, const View& v) {
    SpinGuard g(g_ring_lock);
    if (c->gen) {
        unsigned consumed = load_acquire(v.khead) - c->head;
        for (Inflight& e : g_inflight) {
            if (e.key != v.key || e.gen != c->gen || e.confirmed) continue;
            if (e.sq_index - c->head < consumed) e.confirmed = true;
            else g_drops.take(e);
        }
    }
    if (ring_has_inflight(v.key)) scan_cqes(v, g_drops);
    if (!ring_has_inflight(v.key))  // nothing to match: the next request starts from the tail then
        for (Cursor& cur : g_cursors)
            if (cur.key == v.key) cur = Cursor{};
    g_drops.unpin();
}

// Requires g_ring_lock.
int fd_of_registered(unsigned index) {
    if (index >= (unsigned)kRegRingSlots) return -1;
    return t_reg_ring[index] - 1;
}

void uring_fds_closed(unsigned first, unsigned last) {
    SpinGuard g(g_ring_lock);
    for (RingRec& r : g_rings) {
        if (r.fd < 0 || r.fd >= kRegOnlyFd || (unsigned)r.fd < first || (unsigned)r.fd > last) continue;
        View v;
        if (view_of_rec(r, &v)) forget_ring(v.key, g_drops);
        free_rec(r);
    }
    g_drops.unpin();
}

void uring_fd_dup(int oldfd, int newfd) {
    SpinGuard g(g_ring_lock);
    RingRec* o = rec_of_fd(oldfd);
    if (!o || oldfd == newfd) return;
    RingRec copy = *o;
    RingRec* n = new_rec(newfd);
    if (!n) return;
    *n = copy;
    n->fd = newfd;
}

// The bound of what io_uring_setup pins of the program's memory with
// IORING_SETUP_NO_MMAP, before the kernel has said the sizes.
void leave_alone_no_mmap_memory(const Params* p) {
    uint64_t sq = p->sq_entries ? p->sq_entries : 1, cq = p->cq_entries;
    sq = sq > 32768 ? 32768 : sq;
    uint64_t sq2 = 1;
    while (sq2 < sq) sq2 <<= 1;
    if (!cq || !(p->flags & (1u << 3))) cq = 2 * sq2;  // IORING_SETUP_CQSIZE
    cq = cq > 65536 ? 65536 : cq;
    uint64_t sqe_size = p->flags & kSetupSqe128 ? 128 : 64, cqe_size = p->flags & kSetupCqe32 ? 32 : 16;
    if (p->cq_off.user_addr) rt_leave_alone((const void*)p->cq_off.user_addr, 4096 + cq * 2 * cqe_size + sq2 * 4);
    if (p->sq_off.user_addr) rt_leave_alone((const void*)p->sq_off.user_addr, sq2 * sqe_size * 2);
}

}  // namespace

void rt_uring_setup_begin(const void* params) {
    const Params* p = (const Params*)params;
    if (!p || g_all_alone.load(std::memory_order_relaxed)) return;
    if (p->flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (p->flags & kSetupNoMmap) leave_alone_no_mmap_memory(p);
}

void rt_uring_setup_end(long result, const void* params) {
    const Params* p = (const Params*)params;
    if (result < 0 || !p || (p->flags & kSetupSqpoll) || g_all_alone.load(std::memory_order_relaxed)) return;
    SpinGuard g(g_ring_lock);
    int fd = (int)result;
    if (p->flags & kSetupRegisteredFdOnly) {
        if (result >= kRegRingSlots) return;
        fd = kRegOnlyFd + (int)result;
        t_reg_ring[result] = fd + 1;
    }
    RingRec* r = new_rec(fd);
    if (!r) return;  // more rings than the shim tracks: their submissions leave everything alone
    r->flags = p->flags;
    r->features = p->features;
    r->p = *p;
    if (p->flags & kSetupNoMmap) {
        r->sq_ring = r->cq_ring = (uintptr_t)p->cq_off.user_addr;
        r->sqes = (uintptr_t)p->sq_off.user_addr;
    }
}

void rt_uring_enter_begin(RtUringCall* c, unsigned fd, unsigned to_submit, unsigned flags) {
    if (!to_submit || g_all_alone.load(std::memory_order_relaxed)) {
        // Only waiting: completions may release buffers afterwards.
        if (g_ninflight.load(std::memory_order_relaxed) == 0) return;
    }
    View v;
    bool known;
    {
        SpinGuard g(g_ring_lock);
        int real = flags & kEnterRegisteredRing ? fd_of_registered(fd) : (int)fd;
        RingRec* r = rec_of_fd(real);
        known = r && view_of_rec(*r, &v);
        if (known && r->flags & kSetupSqpoll) v.sqpoll = true;
    }
    if (!known) {
        if (to_submit && !g_all_alone.load(std::memory_order_relaxed))
            rt_leave_all_alone("io_uring submissions to a ring the shim did not see set up");
        return;
    }
    if (!to_submit || g_all_alone.load(std::memory_order_relaxed)) {
        c->ring = v.key;  // scan completions after the call
        return;
    }
    unsigned head = load_acquire(v.khead), tail = load_acquire(v.ktail);
    unsigned n = tail - head < to_submit ? tail - head : to_submit;
    c->ring = v.key;
    before_submit(c, v, head, head + n);
}

namespace {

// A liburing call carries its ring; calls it makes to other exported
// liburing functions are not looked at twice.
__thread const void* t_liburing_ring = nullptr;
__thread int t_liburing_depth = 0;

void unpin_call(RtUringCall* c) {
    for (int& t : c->pins) {
        if (t != -2) rt_kernel_write_unpin(t);
        t = -2;
    }
}

void raw_end(RtUringCall* c) {
    unpin_call(c);
    if (!c->ring) return;
    View v;
    bool ok = false;
    {
        SpinGuard g(g_ring_lock);
        for (RingRec& r : g_rings) {
            View x;
            if (r.fd >= 0 && view_of_rec(r, &x) && x.key == c->ring) {
                v = x;
                ok = true;
                break;
            }
        }
    }
    if (ok) after_call(c, v);
    c->ring = 0;
}

void liburing_end(RtUringCall* c) {
    unpin_call(c);
    const void* ring = t_liburing_ring;
    t_liburing_ring = nullptr;
    View v;
    if (ring && c->ring && view_of_liburing(ring, &v)) after_call(c, v);
    c->ring = 0;
}

}  // namespace

void rt_uring_end(RtUringCall* c) {
    if (t_liburing_depth > 0) {
        if (--t_liburing_depth == 0) liburing_end(c);
        return;
    }
    raw_end(c);
}

void rt_liburing_init_begin(unsigned setup_flags, const void* mem, size_t mem_len) {
    if (g_all_alone.load(std::memory_order_relaxed)) return;
    if (setup_flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (mem && mem_len) rt_leave_alone(mem, mem_len);  // io_uring_queue_init_mem: the rings themselves
}

void rt_liburing_init_end(long result, const void* ring) {
    if (result < 0 || !ring || g_all_alone.load(std::memory_order_relaxed)) return;
    const LibRing* lr = (const LibRing*)ring;
    if (lr->flags & kSetupSqpoll) {
        rt_leave_all_alone("an io_uring submission queue polled by a kernel thread (IORING_SETUP_SQPOLL)");
        return;
    }
    if (lr->ring_fd < 0) return;
    // Known by its descriptor too, for syscall(__NR_io_uring_enter, ring->ring_fd, ...).
    SpinGuard g(g_ring_lock);
    RingRec* r = new_rec(lr->ring_fd);
    if (!r) return;
    r->flags = lr->flags;
    r->features = lr->features;
    uintptr_t sq = (uintptr_t)lr->sq.ring_ptr, cq = (uintptr_t)lr->cq.ring_ptr;
    if (!sq || !cq) return;
    r->sq_ring = sq;
    r->cq_ring = cq;
    r->sqes = (uintptr_t)lr->sq.sqes;
    Params& p = r->p;
    p.sq_off.head = (uint32_t)((uintptr_t)lr->sq.khead - sq);
    p.sq_off.tail = (uint32_t)((uintptr_t)lr->sq.ktail - sq);
    p.sq_off.ring_mask = (uint32_t)((uintptr_t)lr->sq.kring_mask - sq);
    p.sq_off.array = lr->sq.array ? (uint32_t)((uintptr_t)lr->sq.array - sq) : 0;
    p.cq_off.tail = (uint32_t)((uintptr_t)lr->cq.ktail - cq);
    p.cq_off.ring_mask = (uint32_t)((uintptr_t)lr->cq.kring_mask - cq);
    p.cq_off.cqes = (uint32_t)((uintptr_t)lr->cq.cqes - cq);
}

void rt_liburing_begin(RtUringCall* c, const void* ring) {
    if (t_liburing_depth++ > 0) return;  // one liburing function calling another
    t_liburing_ring = nullptr;
    if (g_all_alone.load(std::memory_order_relaxed)) return;
    View v;
    if (!view_of_liburing(ring, &v)) return;
    t_liburing_ring = ring;
    c->ring = v.key;
    const LibRing* lr = (const LibRing*)ring;
    unsigned head = load_acquire(v.khead);
    unsigned end = lr->sq.sqe_tail;  // queued with io_uring_get_sqe, flushed or not
    unsigned ktail = load_acquire(v.ktail);
    if ((int)(ktail - end) > 0) end = ktail;
    if (end != head) before_submit(c, v, head, end);
}

void rt_liburing_exit(const void* ring) {
    View v;
    if (!view_of_liburing(ring, &v)) return;
    SpinGuard g(g_ring_lock);
    forget_ring(v.key, g_drops);
    const LibRing* lr = (const LibRing*)ring;
    if (RingRec* r = rec_of_fd(lr->ring_fd)) free_rec(*r);
    g_drops.unpin();
}

void rt_uring_register_begin(RtUringCall* c, unsigned fd, unsigned opcode, const void* arg, unsigned nr_args) {
    (void)fd;
    unsigned op = opcode & ~kRegisterUseRegisteredRing;
    int np = 0;
    auto pin = [&](const void* p, size_t len) {
        if (p && len && np < 4) c->pins[np++] = rt_kernel_write_pin((uintptr_t)p, len);
    };
    auto leave_iovecs = [](uint64_t iov, uint64_t n) {
        for (uint64_t i = 0; iov && i < n && i < 65536; ++i) {
            struct iovec v;
            if (!rt_read_user(&v, (const struct iovec*)iov + i, sizeof v)) return;
            if (v.iov_base && v.iov_len) rt_leave_alone(v.iov_base, v.iov_len);
        }
    };
    switch (op) {
        case kRegBuffers:  // pinned for as long as they are registered: never remapped again
            leave_iovecs((uintptr_t)arg, nr_args);
            break;
        case kRegBuffers2: {
            RsrcRegister rr;
            if (rt_read_user(&rr, arg, sizeof rr) && !(rr.flags & kRsrcRegisterSparse)) leave_iovecs(rr.data, rr.nr);
            break;
        }
        case kRegBuffersUpdate: {
            RsrcUpdate2 up;
            if (rt_read_user(&up, arg, sizeof up)) leave_iovecs(up.data, up.nr);
            break;
        }
        case kRegPbufRing:
            rt_leave_all_alone("an io_uring provided-buffer ring (buffers are added without a system call)");
            break;
        case kRegZcrxIfq:
        case kRegMemRegion:
        case kRegResizeRings:
            rt_leave_all_alone("io_uring memory registered for the kernel to write into later");
            break;
        case kRegRingFds:
            pin(arg, (size_t)nr_args * sizeof(RsrcUpdate));  // offsets written back
            break;
        case kRegProbe:
            pin(arg, 16 + (size_t)nr_args * 8);
            break;
        case kRegIowqMaxWorkers:
            pin(arg, 2 * sizeof(uint32_t));
            break;
        case kRegPbufStatus:
            pin(arg, 32);
            break;
        case kRegNapi:
        case kUnregNapi:
            pin(arg, 16);
            break;
        case kRegQuery: {
            const void* at = arg;
            QueryHdr h;
            for (int i = 0; at && i < 2 && rt_read_user(&h, at, sizeof h); ++i, at = (const void*)h.next_entry) {
                pin(at, sizeof h);
                pin((const void*)h.query_data, h.size);
            }
            break;
        }
        default:
            if (op > kRegLastKnown) rt_leave_all_alone("an io_uring registration the shim does not know");
            break;
    }
}

void rt_uring_register_end(RtUringCall* c, unsigned opcode, const void* arg, long result) {
    unsigned op = opcode & ~kRegisterUseRegisteredRing;
    if (result > 0 && arg && (op == kRegRingFds || op == kUnregRingFds)) {
        for (long i = 0; i < result && i < kRegRingSlots; ++i) {
            RsrcUpdate up;
            if (!rt_read_user(&up, (const RsrcUpdate*)arg + i, sizeof up)) break;
            if (up.offset >= (unsigned)kRegRingSlots) continue;
            t_reg_ring[up.offset] = op == kRegRingFds ? (int)up.data + 1 : 0;
        }
    }
    raw_end(c);
}

void rt_note_mapping(uintptr_t addr, size_t len, int flags, int fd, off_t off) {
    if (fd < 0 || (flags & MAP_TYPE) != MAP_SHARED) return;
    uint64_t o = (uint64_t)off;
    if (o != kOffSqRing && o != kOffCqRing && o != kOffSqes) return;
    if (g_nrings.load(std::memory_order_relaxed)) {
        SpinGuard g(g_ring_lock);
        if (RingRec* r = rec_of_fd(fd)) {
            if (o == kOffSqRing) r->sq_ring = addr, r->sq_len = len;
            else if (o == kOffCqRing) r->cq_ring = addr, r->cq_len = len;
            else r->sqes = addr, r->sqes_len = len;
            return;
        }
    }
    // The SQE array of a ring set up by a system call the shim did not see
    // (a `syscall` instruction): its submissions will be invisible.
    if (o != kOffSqes || g_all_alone.load(std::memory_order_relaxed)) return;
    char path[32] = "/proc/self/fd/", target[32];
    size_t at = strlen(path);
    char digits[12];
    int k = 0, n = fd;
    do digits[k++] = (char)('0' + n % 10);
    while ((n /= 10) && k < 11);
    while (k) path[at++] = digits[--k];
    path[at] = 0;
    long r = sys::call(SYS_readlink, (long)path, (long)target, sizeof target - 1);
    if (r > 0 && (size_t)r < sizeof target) {
        target[r] = 0;
        if (strcmp(target, "anon_inode:[io_uring]") == 0)
            rt_leave_all_alone("an io_uring ring set up out of the shim's sight");
    }
}

void rt_note_unmapping(uintptr_t addr, size_t len) {
    if (!g_nrings.load(std::memory_order_relaxed)) return;
    uintptr_t end = addr + len;
    SpinGuard g(g_ring_lock);
    for (RingRec& r : g_rings) {
        if (r.fd < 0) continue;
        bool hit = (r.sq_ring >= addr && r.sq_ring < end) || (r.cq_ring >= addr && r.cq_ring < end) ||
                   (r.sqes >= addr && r.sqes < end);
        if (!hit) continue;
        View v;
        if (view_of_rec(r, &v)) forget_ring(v.key, g_drops);
        if (r.sq_ring >= addr && r.sq_ring < end) r.sq_ring = 0;
        if (r.cq_ring >= addr && r.cq_ring < end) r.cq_ring = 0;
        if (r.sqes >= addr && r.sqes < end) r.sqes = 0;
    }
    g_drops.unpin();
}

}  // namespace dedup
